"""Latent DAPS: decoupled annealing posterior sampling in the latent space (Zhang, Chu, Berner, Sun, Yue and
Anandkumar, "Improving Diffusion Inverse Problem Solving with Decoupled Noise Annealing", CVPR 2025).

Read against the paper (Algorithm 1, Eq. 8-11) and the authors' code (``zhangbingliang2019/DAPS``: ``sampler.py``'s
``LatentDAPS``, ``cores/mcmc.py``'s ``MCMCSampler``, ``cores/scheduler.py``'s EDM scheduler and ``DiffusionPFODE``,
``forward_operator``'s ``LatentWrapper``). The sampler works in EDM's variance-exploding coordinates, ``x_sigma = z0 +
sigma e``; a prior's latent at time ``t`` is ``sqrt(abar_t) x_sigma`` with ``sigma_t = sqrt((1 - abar_t) / abar_t)``.

1. **Annealing schedule** (their ``EDMScheduler``, ``timestep: poly-7``): ``sigma_k = (sigma_max^(1/rho) +
   k/K (sigma_min^(1/rho) - sigma_max^(1/rho)))^rho`` for ``k = 0 .. K``, the last replaced by 0; the start is
   ``x = sigma_0 e``.
2. At each level ``k < K`` (one iteration here):

   - **Clean estimate** (their ``DiffusionPFODE(..., solver="euler")``): the probability-flow ODE from ``sigma_k`` to 0
     in ``ode_steps`` Euler steps on the same poly-7 grid down to ``ode_sigma_min`` (the last point replaced by 0):
     ``x <- x + (sigma' - sigma) (x - D(x; sigma)) / sigma``, ``D`` the network's clean estimate
     (:meth:`~dwgf.priors.LatentPrior.predict`). Gives ``z0_hat``.
   - **MCMC on the clean latent** (their ``MCMCSampler.sample``, ``prior_solver: gaussian``), from ``z0_hat``,
     ``mc_steps`` steps on ``log p(z0 | x_k, y) = -|z0 - z0_hat|^2 / (2 sigma_k^2) - |y - A(D(z0))|^2 / tau^2 ...``
     with the score ``s = -clip(grad |y - A(D(z0))|^2) / tau^2 + (z0_hat - z0) / sigma_k^2`` (their
     ``LatentWrapper.gradient`` clamps the data gradient to ``[-clip, clip]`` elementwise) and the step size
     ``lr_k = lr (1 + k/K (lr_min_ratio - 1))`` (their ``get_lr``):
     ``"langevin"``: ``z0 <- z0 + lr_k s + sqrt(2 lr_k) e``; ``"hmc"`` (their damped Hamiltonian Monte Carlo, the
     code's newer sampler), a velocity ``v ~ N(0, I)`` drawn at each level: ``v <- momentum v + sqrt(lr_k) s +
     sqrt(2 (1 - momentum)) e``, ``z0 <- z0 + sqrt(lr_k) v``.
   - **Re-noise**: ``x_{k+1} = z0 + sigma_{k+1} e`` (``sigma_K = 0``: the last level returns its MCMC sample).

``|y - A(D(z0))|^2`` is the data term's distance, squared (:meth:`~dwgf.likelihoods.DataTerm.distance`; the
default term's residual norm over the measured entries: the authors' sum of squares).

**Where this differs from their code, and why.** Their latent diffusion models take a continuous noise level;
the priors here are called at integer training times, so every ``sigma`` of both grids is moved to the
training time with the nearest ``log sigma_t`` and that time's own ``sigma_t`` is used (in the ODE step, the
Gaussian term and the re-noising), so the network always sees a latent at exactly its noise level. The
sampler's NaN check (their code returns zeros) is left to ``failed_at``.

**Defaults** are the authors' for latent diffusion (``configs/sampler/latent_edm_daps.yaml`` with
``commands/ldm_ffhq.sh``: 50 levels, 2 ODE steps, ``sigma_max`` 10, ``sigma_min`` 0.1, ``ode_sigma_min`` 0.001;
``configs/task/inpainting.yaml``'s ``ldm`` block: HMC, 15 steps, ``lr`` 9.02e-6, ``lr_min_ratio`` 0.13,
``momentum`` 0.74, ``tau`` 0.01). Other tasks' blocks are in their ``configs/task``; the MNIST overlays are tuned here.

**Cost** per level: ``ode_steps`` network calls (no gradient) and ``mc_steps`` decoder forwards and VJPs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Literal, Optional

import torch

from dwgf.draws import ItemDraws, item_generators
from dwgf.precision import float32_but_the_unet, unet_precision
from dwgf.priors.base import LatentPrior
from dwgf.problem import Problem, SamplerState, first_failures
from dwgf.settings import Settings, at_least_zero, positive, within


@dataclass(frozen=True, kw_only=True)
class LatentDAPSConfig(Settings):
    """Latent DAPS's settings (the module docstring gives each one's place in the algorithm).

    Attributes:
        num_steps: annealing levels ``K`` (>= 1). Default 50.
        ode_steps: Euler steps of the clean estimate (>= 1; network calls per level). Default 2.
        sigma_max, sigma_min: the annealing grid's ends (``sigma_max > sigma_min > 0``). Default 10, 0.1.
        ode_sigma_min: the ODE grid's last nonzero point (> 0). Default 0.001.
        rho: the grids' polynomial exponent (> 0). Default 7.
        mc_steps: MCMC steps per level (>= 0). Default 15.
        algorithm: ``"hmc"`` or ``"langevin"``. Default ``"hmc"``.
        lr: the MCMC step size at the first level (> 0). Default 9.02e-6.
        lr_min_ratio: the step size at the last level over ``lr`` (> 0). Default 0.13.
        tau: the data term's scale (> 0). Default 0.01.
        momentum: HMC's damping, in ``[0, 1)``. Default 0.74.
        clip: the data gradient is clamped to ``[-clip, clip]`` elementwise (> 0); ``None``: not clamped. Default 1.
    """

    num_steps: int = 50
    ode_steps: int = 2
    sigma_max: float = 10.0
    sigma_min: float = 0.1
    ode_sigma_min: float = 0.001
    rho: float = 7.0
    mc_steps: int = 15
    algorithm: Literal["hmc", "langevin"] = "hmc"
    lr: float = 9.02e-6
    lr_min_ratio: float = 0.13
    tau: float = 0.01
    momentum: float = 0.74
    clip: Optional[float] = 1.0

    def check(self) -> None:
        positive(self, "num_steps", "ode_steps")
        at_least_zero(self, "mc_steps")
        for name in ("sigma_min", "ode_sigma_min", "rho", "lr", "lr_min_ratio", "tau"):
            if not getattr(self, name) > 0:
                raise self.error(name, f" must be > 0, got {getattr(self, name)}")
        if not self.sigma_max > self.sigma_min:
            raise self.error("sigma_max", f" must be > sigma_min ({self.sigma_min}), got {self.sigma_max}")
        within(self, "momentum", 0, 1)
        if self.momentum == 1:
            raise self.error("momentum", " must be < 1, got 1.0")
        if self.clip is not None and not self.clip > 0:
            raise self.error("clip", f" must be > 0 (or null: no clamp), got {self.clip}")


def poly_sigmas(sigma_max: float, sigma_min: float, steps: int, rho: float) -> list[float]:
    """EDM's poly-``rho`` grid of ``steps + 1`` noise levels from ``sigma_max`` to ``sigma_min``, the last replaced by 0
    (the authors' ``EDMScheduler.sigma_steps``)."""
    grid = [(sigma_max ** (1 / rho) + k / steps * (sigma_min ** (1 / rho) - sigma_max ** (1 / rho))) ** rho for k in range(steps + 1)]
    return grid[:-1] + [0.0]


class NoiseLevels:
    """A prior's training times as EDM noise levels ``sigma_t = sqrt((1 - abar_t) / abar_t)``: :meth:`snap` moves a
    level to the time whose ``log sigma_t`` is nearest (0 stays 0: the clean end)."""

    def __init__(self, prior: LatentPrior, latent: torch.Tensor):
        times = torch.arange(prior.num_train_timesteps, device=latent.device)
        abar = prior.abar(times, latent[:1]).double().cpu()
        self.sigmas = ((1 - abar) / abar).clamp_min(0).sqrt()
        self.valid = self.sigmas > 0

    def snap(self, sigma: float) -> tuple[int, float]:
        """``(t, sigma_t)`` for a level ``sigma`` (``(-1, 0.0)`` for ``sigma = 0``)."""
        if sigma <= 0:
            return -1, 0.0
        gap = (self.sigmas.clamp_min(1e-30).log() - math.log(sigma)).abs()
        t = int(torch.where(self.valid, gap, torch.inf).argmin())
        return t, float(self.sigmas[t])


def latent_daps(prior: LatentPrior, problem: Problem, draw: Optional[ItemDraws] = None, *,
                callback: Optional[Callable[[SamplerState], None]] = None, **settings) -> tuple[torch.Tensor, torch.Tensor]:
    """Posterior samples ``B x N x C x H x W`` by Latent DAPS, and ``failed_at`` ``(B,)`` (the first level at which an
    item's latents were not finite; ``-1``: never). ``settings``: :class:`LatentDAPSConfig`'s fields."""
    config = LatentDAPSConfig(**settings)
    b, n = problem.batch, problem.num_particles
    device = problem.y.device
    draw = draw if draw is not None else ItemDraws(item_generators(range(b), "cpu"), device)
    operator, likelihood, y, params, prompt = problem.operator, problem.likelihood, problem.y_n, problem.params_n, problem.prompt_n
    failed_at = torch.full((b,), -1, dtype=torch.long, device=device)
    with float32_but_the_unet(device.type) as unet_dtype:
        latent_shape = prior.latent_shape_at(problem.size)
        shape = (n, *latent_shape)

        def noise() -> torch.Tensor:
            return draw(shape).flatten(0, 1)

        x = noise()
        m = x.shape[0]
        levels = NoiseLevels(prior, x)
        anneal = [levels.snap(s) for s in poly_sigmas(config.sigma_max, config.sigma_min, config.num_steps, config.rho)]
        x = x * anneal[0][1]

        def denoise(x_ve: torch.Tensor, t: int) -> torch.Tensor:
            tt = torch.full((m,), t, device=device, dtype=torch.long)
            abar = prior.abar(tt, x_ve).view(-1, 1, 1, 1)
            with torch.no_grad(), unet_precision(device.type, unet_dtype):
                return prior.predict(abar.sqrt() * x_ve, tt, prompt)[1]

        def data_gradient(z0: torch.Tensor) -> torch.Tensor:
            leaf = z0.detach().requires_grad_(True)
            distance = likelihood.distance(operator, prior.flow_decode(leaf), y, params)
            (grad,) = torch.autograd.grad(distance.square().sum(), leaf)
            return grad if config.clip is None else grad.clamp(-config.clip, config.clip)

        for k in range(config.num_steps):
            t_k, sigma_k = anneal[k]
            ode = [levels.snap(s) for s in poly_sigmas(sigma_k, config.ode_sigma_min, config.ode_steps, config.rho)]
            ode[0] = (t_k, sigma_k)
            z0_hat = x
            for (t_j, sigma_j), (_, sigma_next) in zip(ode[:-1], ode[1:]):
                clean = denoise(z0_hat, t_j)
                z0_hat = clean if sigma_next == 0 else z0_hat + (sigma_next - sigma_j) * (z0_hat - clean) / sigma_j
            lr = config.lr * (1 + k / config.num_steps * (config.lr_min_ratio - 1))
            z0 = z0_hat.detach()
            velocity = noise() if config.algorithm == "hmc" and config.mc_steps > 0 else None
            for _ in range(config.mc_steps):
                score = -data_gradient(z0) / config.tau**2 + (z0_hat - z0) / sigma_k**2
                e = noise()
                if velocity is None:
                    z0 = z0 + lr * score + math.sqrt(2 * lr) * e
                else:
                    velocity = config.momentum * velocity + math.sqrt(lr) * score + math.sqrt(2 * (1 - config.momentum)) * e
                    z0 = z0 + math.sqrt(lr) * velocity
            z0 = z0.detach()
            sigma_next = anneal[k + 1][1]
            x = z0 + sigma_next * noise() if sigma_next > 0 else z0
            z_items = z0.view(b, n, *z0.shape[1:])
            failed_at = first_failures(failed_at, z_items, k)
            if callback is not None:
                callback(SamplerState(z_items, torch.full((b,), t_k, device=device, dtype=torch.long), k, config.num_steps))
        with torch.no_grad():
            images = prior.decode(x)
    return images.view(b, n, *images.shape[1:]), failed_at


latent_daps.settings_class = LatentDAPSConfig  # type: ignore[attr-defined] - the solver checks --model.settings before a run
