"""ReSample: latent DDIM with hard data consistency and stochastic resampling (Song, Kwon, Zhang, Hu, Qu and Shen,
"Solving Inverse Problems with Latent Diffusion Models via Hard Data Consistency", ICLR 2024).

Read against the paper (Algorithm 1, Eq. 8-10 and Prop. 2) and the authors' code (``soominkwon/resample``,
``ldm/models/diffusion/ddim.py``: ``resample_sampling``, ``pixel_optimization``, ``latent_optimization``,
``stochastic_resample``; ``ldm_inverse/condition_methods.py``: the DPS step). ``N`` particles per measurement start
from ``z_T ~ N(0, I)`` and walk down :func:`~dwgf.sampling.ddim_timesteps` (``num_steps`` of them, ``t -> t'``):

1. **DDIM step** (their ``p_sample_ddim``): ``eps_hat, z0_hat = predict(z_t, t)`` (Tweedie), then
   ``z'_t' = sqrt(abar') z0_hat + sqrt(1 - abar' - s^2) eps_hat + s e`` (``eta``; their default 0, deterministic).
2. **DPS step** at every step (their ``measurement_cond_fn``, "ps"): ``z'_t' -= guidance * abar_t * grad_{z_t} d``,
   ``d = ||y - A(D(z0_hat(z_t)))||`` the data term's distance (:meth:`~dwgf.likelihoods.DataTerm.distance`; the
   residual norm for the default term). Their script passes ``scale = 0.5 * a_t``: ``guidance`` 0.5 by default.
3. **Hard data consistency** every ``every`` steps (their ``index % 10 == 0``) while ``0 < index <= K - K // 3``,
   ``index = K - 1 - i`` the steps left (their three "stages": none in the first third of the chain):

   - *Look ahead* (their "time travel", ``inter_timesteps = 5``): from ``z'_t'``, ``lookahead`` more unconditional
     DDIM steps; ``z0_hat`` is the Tweedie estimate at the last of them (without look-ahead: step 1's ``z0_hat``).
   - *Optimise* (``index >= K // 3``, the middle third, with ``pixel_stage``: their ``pixel_optimization``): AdamW
     (lr ``pixel_lr`` 1e-2, weight decay 0.01: torch's default, which they keep) on the image
     ``x`` from ``D(z0_hat)`` on ``mean (y - A x)^2`` for at most ``pixel_iters`` (2000) iterations, stopping
     when it falls below ``tolerance^2`` (1e-3 squared); ``z0_y = E(x)``. Otherwise (the last third; their
     ``latent_optimization``): AdamW (lr ``latent_lr`` 5e-3) on the latent from ``z0_hat`` on
     ``mean (y - A(D(z)))^2`` for at most ``latent_iters`` (500), stopping below ``tolerance^2`` or once the loss
     is above the loss 200 iterations before.
   - *Stochastic resampling* (Eq. 10, their ``stochastic_resample``): with
     ``sigma^2 = gamma (1 - abar') / (1 - abar) (1 - abar / abar')`` (their ``40 * ...``),
     ``z_t' ~ N((sigma^2 sqrt(abar') z0_y + (1 - abar') z'_t') / (sigma^2 + 1 - abar'),
     sigma^2 (1 - abar') / (sigma^2 + 1 - abar') I)``.
4. **At the end** (``final_optimization``): their last ``latent_optimization`` from ``z_0``.

The mean squared residual is ``||y - A x||^2`` (the data term's distance, squared) over the measurement's entries
(``y``'s size per item), the authors' ``MSELoss``. Every optimisation is per item (Adam is elementwise; each item
stops on its own loss), so an item's result does not depend on its batch.

**Where this differs from their code, and why.** (a) Their "Tweedie" estimate in ``p_sample_ddim`` is
``(x - (1 - abar) eps) / sqrt(abar)``, with ``1 - abar`` where the formula (and the paper, Eq. 5) has its square root;
here it is the paper's (:meth:`~dwgf.priors.LatentPrior.predict`). (b) Their look-ahead calls the network at
the next step's time with the current step's ``abar`` (an index one off); here each look-ahead step evaluates the
latent at its own time. (c) Their look-ahead uses the sampler's ``eta``; here it is deterministic (the same at their
default ``eta = 0``). (d) NaNs are left to ``failed_at`` rather than replaced.

**Defaults** are the authors': ``eta`` 0, ``guidance`` 0.5, ``every`` 10, ``lookahead`` 5, ``gamma`` 40, the
optimisers' rates, iterations and tolerance. Their script runs all 1000 DDPM steps (``ddim_use_original_steps``);
``num_steps`` defaults to 500 here (their ``--ddim_steps``), which the comparison configs lower to the common budget.

**Cost** per step: one network call with its backward (the DPS step) and one decoder forward and VJP; every
``every`` steps in the last two thirds, ``lookahead`` more network calls (no gradient) and up to ``latent_iters``
decoder forwards and VJPs (latent stage) or ``pixel_iters`` operator passes and one encoder pass (pixel stage).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import torch

from dwgf.draws import ItemDraws, item_generators
from dwgf.precision import float32_but_the_unet, unet_precision
from dwgf.priors.base import LatentPrior
from dwgf.problem import Problem, SamplerState, first_failures
from dwgf.sampling import ddim_step, ddim_timesteps
from dwgf.settings import Settings, at_least_zero, check_ddim_steps, positive, within

# the latent optimisation stops once its loss is above the loss this many iterations before (the authors' rule)
PATIENCE = 200


@dataclass(frozen=True, kw_only=True)
class ReSampleConfig(Settings):
    """ReSample's settings (the module docstring gives each one's place in the algorithm).

    Attributes:
        num_steps: DDIM steps ``K`` (>= 1, at most the prior's training timesteps). Default 500.
        eta: DDIM's stochasticity in ``[0, 1]``. Default 0.
        guidance: the DPS step's scale (times ``abar_t``), >= 0; 0 turns the DPS step off. Default 0.5.
        every: hard data consistency every this many steps (>= 1). Default 10.
        lookahead: unconditional DDIM steps before the estimate that is made consistent (>= 0). Default 5.
        gamma: the resampling variance's scale, > 0. Default 40.
        pixel_stage: optimise in pixels (then encode) in the middle third of the chain; false: the latent everywhere. Default true.
        pixel_iters, pixel_lr: the pixel optimisation's AdamW iterations (>= 1) and rate (> 0). Default 2000, 0.01.
        latent_iters, latent_lr: the latent optimisation's AdamW iterations (>= 1) and rate (> 0). Default 500, 0.005.
        tolerance: both optimisations stop when the mean squared residual is below its square (>= 0). Default 1e-3.
        final_optimization: the latent optimisation once more from the final latent. Default true.
    """

    num_steps: int = 500
    eta: float = 0.0
    guidance: float = 0.5
    every: int = 10
    lookahead: int = 5
    gamma: float = 40.0
    pixel_stage: bool = True
    pixel_iters: int = 2000
    pixel_lr: float = 1e-2
    latent_iters: int = 500
    latent_lr: float = 5e-3
    tolerance: float = 1e-3
    final_optimization: bool = True

    def check(self) -> None:
        positive(self, "num_steps", "every", "pixel_iters", "latent_iters")
        at_least_zero(self, "guidance", "lookahead", "tolerance")
        within(self, "eta", 0, 1)
        for name in ("gamma", "pixel_lr", "latent_lr"):
            if not getattr(self, name) > 0:
                raise self.error(name, f" must be > 0, got {getattr(self, name)}")

    def check_prior(self, prior) -> None:
        check_ddim_steps(self, prior)


def consistency_steps(num_steps: int, every: int) -> dict[int, str]:
    """The steps ``i`` (``0 .. K-1``) that get hard data consistency, each with its stage (``"pixel"`` or
    ``"latent"``): the authors' ``0 < index <= K - K // 3`` and ``index % every == 0`` for ``index = K - 1 - i``,
    pixels while ``index >= K // 3``."""
    third = num_steps // 3
    steps = {}
    for i in range(num_steps):
        index = num_steps - 1 - i
        if 0 < index <= num_steps - third and index % every == 0:
            steps[i] = "pixel" if index >= third else "latent"
    return steps


def resample_mix(z0_y: torch.Tensor, z_prime: torch.Tensor, abar: torch.Tensor, abar_prev: torch.Tensor, gamma: float,
                 noise: torch.Tensor) -> torch.Tensor:
    """Stochastic resampling (the paper's Eq. 10): a draw of ``N(mean, var)`` with ``sigma^2 = gamma (1 - abar') / (1 - abar)
    (1 - abar / abar')``, ``mean = (sigma^2 sqrt(abar') z0_y + (1 - abar') z'_t') / (sigma^2 + 1 - abar')`` and
    ``var = sigma^2 (1 - abar') / (sigma^2 + 1 - abar')``; ``abar`` at the step's time, ``abar_prev`` (``abar'``) at the next."""
    sigma2 = gamma * (1 - abar_prev) / (1 - abar) * (1 - abar / abar_prev)
    mean = (sigma2 * abar_prev.sqrt() * z0_y + (1 - abar_prev) * z_prime) / (sigma2 + 1 - abar_prev)
    return mean + (sigma2 * (1 - abar_prev) / (sigma2 + 1 - abar_prev)).sqrt() * noise


def adamw_per_row(start: torch.Tensor, loss: Callable[[torch.Tensor], torch.Tensor], iterations: int, lr: float, tolerance: float,
                  patience: Optional[int] = None, weight_decay: float = 0.01, betas: tuple[float, float] = (0.9, 0.999),
                  eps: float = 1e-8) -> torch.Tensor:
    """``torch.optim.AdamW`` (its defaults) on each row of ``start`` (``M x ...``) for ``loss(values, rows) -> (len(rows),)``
    (``rows``: the indices of the rows given), every row stopping on its own: after the step whose loss (taken before it)
    is below ``tolerance^2``, or, with ``patience``, is above the loss ``patience`` iterations before. Rows still running
    are evaluated together; returns all the rows."""
    x = start.detach().clone()
    m, v = torch.zeros_like(x), torch.zeros_like(x)
    active = torch.arange(x.shape[0], device=x.device)
    history: list[torch.Tensor] = []  # per iteration, every row's loss (NaN once it stopped)
    b1, b2 = betas
    for k in range(iterations):
        with torch.enable_grad():
            leaf = x[active].requires_grad_(True)
            loss_rows = loss(leaf, active)
            (grad,) = torch.autograd.grad(loss_rows.sum(), leaf)
        loss_rows = loss_rows.detach()
        step = k + 1  # every running row has taken the same number of steps
        rows = x[active] * (1 - lr * weight_decay)
        m_a = b1 * m[active] + (1 - b1) * grad
        v_a = b2 * v[active] + (1 - b2) * grad.square()
        rows = rows - lr * (m_a / (1 - b1**step)) / ((v_a / (1 - b2**step)).sqrt() + eps)
        x[active], m[active], v[active] = rows, m_a, v_a
        full = torch.full((x.shape[0],), float("nan"), device=x.device)
        full[active] = loss_rows
        history.append(full)
        stop = loss_rows < tolerance**2
        if patience is not None and k >= patience:
            stop = stop | (history[k - patience][active] < loss_rows)
        active = active[~stop]
        if active.numel() == 0:
            break
    return x


def resample(prior: LatentPrior, problem: Problem, draw: Optional[ItemDraws] = None, *,
             callback: Optional[Callable[[SamplerState], None]] = None, **settings) -> tuple[torch.Tensor, torch.Tensor]:
    """Posterior samples ``B x N x C x H x W`` by ReSample, and ``failed_at`` ``(B,)`` (the first step at which an
    item's latents were not finite; ``-1``: never). ``settings``: :class:`ReSampleConfig`'s fields."""
    config = ReSampleConfig(**settings)
    config.check_prior(prior)
    b, n = problem.batch, problem.num_particles
    device = problem.y.device
    draw = draw if draw is not None else ItemDraws(item_generators(range(b), "cpu"), device)
    operator, likelihood, y, params, prompt = problem.operator, problem.likelihood, problem.y_n, problem.params_n, problem.prompt_n
    entries = y[0].numel()  # the authors' MSELoss averages over the measurement's entries
    failed_at = torch.full((b,), -1, dtype=torch.long, device=device)

    def mean_square(x: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        return likelihood.distance(operator, x, y[rows], _rows(params, rows)).square() / entries

    with float32_but_the_unet(device.type) as unet_dtype:
        latent_shape = prior.latent_shape_at(problem.size)
        shape = (n, *latent_shape)
        z = draw(shape).flatten(0, 1)
        ts = ddim_timesteps(config.num_steps, prior.num_train_timesteps).to(device)
        m = z.shape[0]
        abars = [prior.abar(t.repeat(m), z).view(-1, 1, 1, 1) for t in ts] + [torch.ones(m, 1, 1, 1, device=device)]
        stages = consistency_steps(config.num_steps, config.every)

        def predict(latent: torch.Tensor, i: int) -> tuple[torch.Tensor, torch.Tensor]:
            with unet_precision(device.type, unet_dtype):
                return prior.predict(latent, ts[i].repeat(m), prompt)

        for i in range(config.num_steps):
            abar, abar_prev = abars[i], abars[i + 1]
            z_in = z.detach().requires_grad_(config.guidance > 0)
            with torch.set_grad_enabled(config.guidance > 0):
                eps, z0 = predict(z_in, i)
            z_next = ddim_step(z0.detach(), eps.detach(), abar, abar_prev, config.eta, lambda: draw(shape).flatten(0, 1))
            if config.guidance > 0:  # the DPS step, through the network and the decoder
                distance = likelihood.distance(operator, prior.flow_decode(z0), y, params)
                (grad,) = torch.autograd.grad(distance.sum(), z_in)
                z_next = z_next - config.guidance * abar * grad
            z_next = z_next.detach()
            stage = stages.get(i)
            if stage is not None:
                estimate = z0.detach()
                ahead = z_next
                with torch.no_grad():
                    for k in range(i + 1, min(i + 1 + config.lookahead, config.num_steps)):
                        eps_k, estimate = predict(ahead, k)
                        ahead = ddim_step(estimate, eps_k, abars[k], abars[k + 1], 0.0, None)
                if stage == "pixel":
                    with torch.no_grad():
                        start = prior.decode(estimate)
                    pixels = adamw_per_row(start, mean_square, config.pixel_iters, config.pixel_lr, config.tolerance)
                    with torch.no_grad():
                        consistent = prior.encode(pixels)
                else:
                    consistent = adamw_per_row(estimate, lambda lat, rows: mean_square(prior.flow_decode(lat), rows), config.latent_iters,
                                               config.latent_lr, config.tolerance, PATIENCE)
                z_next = resample_mix(consistent, z_next, abar, abar_prev, config.gamma, draw(shape).flatten(0, 1))
            z = z_next
            z_items = z.view(b, n, *z.shape[1:])
            failed_at = first_failures(failed_at, z_items, i)
            if callback is not None:
                callback(SamplerState(z_items, ts[i].repeat(b), i, config.num_steps))
        if config.final_optimization:
            z = adamw_per_row(z, lambda lat, rows: mean_square(prior.flow_decode(lat), rows), config.latent_iters, config.latent_lr,
                              config.tolerance, PATIENCE)
        with torch.no_grad():
            x = prior.decode(z)
    return x.view(b, n, *x.shape[1:]), failed_at


resample.settings_class = ReSampleConfig  # type: ignore[attr-defined] - the solver checks --model.settings before a run


def _rows(params: dict, rows: torch.Tensor) -> dict:
    return {k: v[rows] for k, v in params.items()}
