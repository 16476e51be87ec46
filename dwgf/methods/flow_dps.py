"""FlowDPS: posterior sampling with a flow prior by splitting its velocity (Kim, Kim and Ye, "FlowDPS: Flow-Driven
Posterior Sampling for Inverse Problems", ICCV 2025).

Read against the paper (Sec. 4, Algorithm 1) and the authors' code (``FlowDPS-Inverse/FlowDPS``, ``sd3_sampler.py``'s
``SD3FlowDPS``: ``sample`` and ``data_consistency``; ``solve.py``'s defaults). A rectified flow ``z_s = (1 - s) z0 + s z1``
(``z1 ~ N(0, I)``) with velocity ``v``; ``N`` particles per measurement start from ``z_1 ~ N(0, I)`` and at each of
``num_steps`` flow times ``s -> s'`` (``s'`` = 0 at the last):

1. **Split the velocity** (their ``z0t``, ``z1t``): the clean estimate ``z0_hat = z_s - s v`` and the noise estimate
   ``z1_hat = z_s + (1 - s) v`` (:meth:`~dwgf.priors.LatentPrior.predict`'s ``z0_hat`` and ``eps_hat``, which a
   rectified-flow prior computes from its velocity).
2. **Likelihood step on the clean estimate** (their ``data_consistency``): ``dc_steps`` (3) gradient steps
   ``z0 <- z0 - step_size grad_z0 ||y - A(D(z0))||`` from ``z0_hat`` (the data term's distance,
   :meth:`~dwgf.likelihoods.DataTerm.distance`, per item), then the mix ``z0_y = (1 - s) z0_hat + s z0``.
3. **Stochastic re-mixing** (their "renoising"): ``z1_tilde = sqrt(s') z1_hat + sqrt(1 - s') e`` and
   ``z_s' = (1 - s') z0_y + s' z1_tilde``; with ``renoise = false``, ``z1_tilde = z1_hat`` (the deterministic Euler step
   from the corrected estimate).

**Flow times.** The steps are at the prior's training times ``t_i = round(u_i' T)`` (at most ``T - 1``) for ``K`` values
``u_i`` evenly spaced from 1 to ``1 / T`` (the grid of diffusers' ``FlowMatchEulerDiscreteScheduler.set_timesteps``, which
their code calls) shifted by ``time_shift``: ``u' = a u / (1 + (a - 1) u)``. The prior's schedule already holds its own shift (SD3: 3), and shifts
compose by multiplying, so the authors' shift 4 for SD3 is ``time_shift: 1.3333``; ``s`` is the flow time the prior
gives that training time.

**Any prior as a flow.** Every prior here is presented in variance-preserving coordinates ``z_t = sqrt(abar) z0 +
sqrt(1 - abar) e`` (:class:`~dwgf.priors.LatentPrior`); dividing by ``sqrt(abar) + sqrt(1 - abar)`` gives the rectified
flow ``z_s = (1 - s) z0 + s e`` with ``s = sqrt(1 - abar) / (sqrt(abar) + sqrt(1 - abar))``, the same clean and noise
components, so FlowDPS runs on a noise-prediction prior (the shipped MNIST prior) unchanged: its implied velocity is
``eps_hat - z0_hat``. What differs from a prior trained as a flow is only what the network learned: the same marginals
on another time axis, trained to predict the noise rather than the velocity (at low noise its clean estimate is the
accurate one, at high noise its noise estimate), and the uniform grid over its own times is not the flow's.

**Where this differs from their code.** Their data term is ``||A^+ y - A^+ A(x)||`` (super-resolution) or
``||A^T y - A^T A(x)||`` (other tasks) over the whole batch (one image per batch in their scripts); here it is the data
term's distance per item (for inpainting the same norm; for average-pool super-resolution ``A^+`` scales it by the
factor, so their step sizes carry over divided by it). Their code casts the gradient to float16; here it stays float32.

**Defaults** are the authors': 28 steps (``--NFE``), ``step_size`` 15 (``solve.py``'s ``--step_size``), 3 gradient
steps, re-noising on.

**Cost** per step: one network call (no gradient) and ``dc_steps`` decoder forwards and VJPs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import torch

from dwgf.draws import ItemDraws, item_generators
from dwgf.precision import float32_but_the_unet, unet_precision
from dwgf.priors.base import LatentPrior
from dwgf.problem import Problem, SamplerState, first_failures
from dwgf.settings import Settings, at_least_zero, check_ddim_steps, positive


@dataclass(frozen=True, kw_only=True)
class FlowDPSConfig(Settings):
    """FlowDPS's settings (the module docstring gives each one's place in the algorithm).

    Attributes:
        num_steps: flow steps ``K`` (>= 1, at most the prior's training timesteps; one network call each). Default 28.
        step_size: the likelihood step's size (>= 0; 0: the prior's flow alone). Default 15.
        dc_steps: gradient steps on the clean estimate per flow step (>= 1). Default 3.
        time_shift: the extra shift of the time grid (> 0; 1: the prior's own). Default 1.
        renoise: the stochastic re-mixing of the noise estimate. Default true.
    """

    num_steps: int = 28
    step_size: float = 15.0
    dc_steps: int = 3
    time_shift: float = 1.0
    renoise: bool = True

    def check(self) -> None:
        positive(self, "num_steps", "dc_steps")
        at_least_zero(self, "step_size")
        if not self.time_shift > 0:
            raise self.error("time_shift", f" must be > 0, got {self.time_shift}")

    def check_prior(self, prior) -> None:
        check_ddim_steps(self, prior)


def flow_times(num_steps: int, num_train_timesteps: int, time_shift: float = 1.0) -> torch.Tensor:
    """The steps' training times (descending, on the CPU): ``round(u' T)``, at most ``T - 1``, for ``K`` values ``u`` evenly
    spaced from 1 to ``1 / T`` (diffusers' flow-matching grid) shifted by ``time_shift`` (``u' = a u / (1 + (a - 1) u)``)."""
    # on the CPU: a schedule of integer training times, read as indices into the prior's tables
    u = torch.linspace(1, 1 / num_train_timesteps, num_steps, dtype=torch.float64)
    shifted = time_shift * u / (1 + (time_shift - 1) * u)
    return (shifted * num_train_timesteps).round().long().clamp(0, num_train_timesteps - 1)


def flow_time(abar: torch.Tensor) -> torch.Tensor:
    """The rectified-flow time ``s = sqrt(1 - abar) / (sqrt(abar) + sqrt(1 - abar))`` of a variance-preserving ``abar``."""
    a, c = abar.sqrt(), (1 - abar).clamp_min(0).sqrt()
    return c / (a + c)


def flow_dps(prior: LatentPrior, problem: Problem, draw: Optional[ItemDraws] = None, *,
             callback: Optional[Callable[[SamplerState], None]] = None, **settings) -> tuple[torch.Tensor, torch.Tensor]:
    """Posterior samples ``B x N x C x H x W`` by FlowDPS, and ``failed_at`` ``(B,)`` (the first step at which an item's
    latents were not finite; ``-1``: never). ``settings``: :class:`FlowDPSConfig`'s fields."""
    config = FlowDPSConfig(**settings)
    config.check_prior(prior)
    b, n = problem.batch, problem.num_particles
    device = problem.y.device
    draw = draw if draw is not None else ItemDraws(item_generators(range(b), "cpu"), device)
    operator, likelihood, y, params, prompt = problem.operator, problem.likelihood, problem.y_n, problem.params_n, problem.prompt_n
    failed_at = torch.full((b,), -1, dtype=torch.long, device=device)
    with float32_but_the_unet(device.type) as unet_dtype:
        latent_shape = prior.latent_shape_at(problem.size)
        shape = (n, *latent_shape)
        z = draw(shape).flatten(0, 1)  # z_1 ~ N(0, I); z is kept in the flow's coordinates throughout
        m = z.shape[0]
        ts = flow_times(config.num_steps, prior.num_train_timesteps, config.time_shift).to(device)
        for i, t in enumerate(ts):
            tt = t.repeat(m)
            abar = prior.abar(tt, z).view(-1, 1, 1, 1)
            s = flow_time(abar)
            s_next = flow_time(prior.abar(ts[i + 1].repeat(m), z).view(-1, 1, 1, 1)) if i + 1 < len(ts) else torch.zeros_like(s)
            z_t = (abar.sqrt() + (1 - abar).sqrt()) * z  # the flow's z_s in the prior's coordinates (z_t = z_s / c_s)
            with torch.no_grad(), unet_precision(device.type, unet_dtype):
                z1_hat, z0_hat = prior.predict(z_t, tt, prompt)
            z0 = z0_hat
            if config.step_size > 0:
                for _ in range(config.dc_steps):
                    leaf = z0.detach().requires_grad_(True)
                    distance = likelihood.distance(operator, prior.flow_decode(leaf), y, params)
                    (grad,) = torch.autograd.grad(distance.sum(), leaf)
                    z0 = z0.detach() - config.step_size * grad
            z0_y = (1 - s) * z0_hat + s * z0.detach()
            z1 = (s_next.sqrt() * z1_hat + (1 - s_next).sqrt() * draw(shape).flatten(0, 1)) if config.renoise else z1_hat
            z = (1 - s_next) * z0_y + s_next * z1  # z_s' in flow coordinates
            z_items = z.view(b, n, *z.shape[1:])
            failed_at = first_failures(failed_at, z_items, i)
            if callback is not None:
                callback(SamplerState(z_items, t.repeat(b), i, config.num_steps))
        with torch.no_grad():
            x = prior.decode(z)
    return x.view(b, n, *x.shape[1:]), failed_at


flow_dps.settings_class = FlowDPSConfig  # type: ignore[attr-defined] - the solver checks --model.settings before a run
