"""The DWGF iteration (Wang & Akyildiz 2025, arXiv 2509.19276) in plain torch, batched over B items x N particles.

Nothing here knows about Lightning: :class:`dwgf.solver.DWGF` calls :func:`dwgf_flow` from its
predict step, and a notebook can call it directly.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Callable, Optional

import torch

from dwgf.errors import DWGFError
from dwgf.draws import ItemDraws, item_generators  # noqa: F401 - item_generators: dwgf.flow's API since 0.1
from dwgf.optimizers.base import Adam, FlowOptimizer
from dwgf.optimizers.noise import LangevinNoise
from dwgf.precision import autoencoder_dtype, float32_but_the_unet, unet_precision
from dwgf.priors.base import LatentPrior
from dwgf.problem import FlowState, Problem  # noqa: F401 - both importable from dwgf.flow since 0.1
from dwgf.regularizers.base import Regularizer
from dwgf.regularizers.encoder_consistency import EncoderConsistency
from dwgf.regularizers.kl_prior import KLPrior
from dwgf.schedules.step_size import ConstantStepSize, StepSizeSchedule
from dwgf.schedules.timesteps import DescendingTimesteps, TimestepSchedule
from dwgf.settings import Settings, at_least_zero, positive, within


@dataclass(frozen=True, kw_only=True)
class FlowSteps(Settings):
    """How a flow moves its particles, all but the forces: the settings that DWGF, RED-diff and decoder inversion share.

    Attributes:
        num_steps: ``K``, flow iterations (>= 1). Default 998 (the paper's).
        step_size: the optimiser's step size per iteration. Default ``ConstantStepSize(1.0)``.
        timesteps: the diffusion time per iteration. Default ``DescendingTimesteps()`` (999 -> 2).
        optimizer: how the particles move (:class:`~dwgf.optimizers.FlowOptimizer`). Default ``Adam()``.
        decoder_noise: ``sigma_dec`` (>= 0), std of the noise added to decoded images in the data and
            encoder terms, in ``[-1, 1]`` units. Default 0.01.
        query_noise: in ``[0, 1]``: the network is asked at ``z_t = sqrt(abar) z + query_noise sqrt(1 - abar) eps``
            (1, the default: the paper's diffused particles; 0: at ``sqrt(abar) z``, for a Langevin sampler).
        float32_autoencoder: under mixed precision, keep the decoder pass and the encoder term in
            float32 (:func:`dwgf.precision.autoencoder_dtype`). Default ``False``: the network's low precision.
        decoder_chunk: particles decoded and differentiated at once (>= 1; :class:`DecoderPass`). ``None`` (default):
            all on the CPU, as many as fit on a GPU (decided once, at the start of a run).
    """

    num_steps: int = 998
    step_size: StepSizeSchedule = field(default_factory=lambda: ConstantStepSize(1.0))
    timesteps: TimestepSchedule = field(default_factory=DescendingTimesteps)
    optimizer: FlowOptimizer = field(default_factory=Adam)
    decoder_noise: float = 0.01
    query_noise: float = 1.0
    float32_autoencoder: bool = False
    decoder_chunk: Optional[int] = None

    def check(self) -> None:
        positive(self, "num_steps")
        at_least_zero(self, "decoder_noise")
        within(self, "query_noise", 0, 1)
        if self.decoder_chunk is not None:
            positive(self, "decoder_chunk")

    def flow_config(self) -> "FlowConfig":
        """The :class:`FlowConfig` that :func:`dwgf_flow` runs (a method's forces added to these settings)."""
        raise NotImplementedError

    def steps(self) -> dict:
        """The :class:`FlowSteps` fields of these settings, as keywords."""
        return {name: getattr(self, name) for name in FlowSteps.names()}


@dataclass(frozen=True, kw_only=True)
class FlowConfig(FlowSteps):
    """DWGF's settings: every setting of the flow but the problem, in one place, with the paper's defaults (Stable
    Diffusion 2.1-base: 998 iterations, Adam with step 1.0, ``KLPrior(0.15)`` and ``EncoderConsistency(0.1)``, decoder
    noise 0.01, the diffusion time walking 999 -> 2). :class:`dwgf.solver.DWGF`'s options are these settings.

    Attributes:
        regularizers: latent- and image-space forces (:class:`~dwgf.regularizers.Regularizer`). Default
            ``(KLPrior(), EncoderConsistency())``.
        num_steps: see :class:`FlowSteps` (likewise the other settings).
    """

    regularizers: tuple[Regularizer, ...] = field(default_factory=lambda: (KLPrior(), EncoderConsistency()))

    def type_hint(self, name: str, value: object) -> str:
        if name == "regularizers" and isinstance(value, LangevinNoise):
            return ": injected noise is the optimiser's noise, e.g. Adam(noise=LangevinNoise(...))"
        return ""

    def flow_config(self) -> "FlowConfig":
        return self

    def start(self, prior: LatentPrior, problem: Problem, draw: ItemDraws) -> None:
        """Gives the regularizers what they work on for one batch (:meth:`~dwgf.regularizers.Regularizer.start`);
        :func:`dwgf_flow` calls it, a caller of :func:`flow_gradient` alone calls it first."""
        for reg in self.regularizers:
            reg.start(prior, problem, draw)


def dwgf_flow(prior: LatentPrior, problem: Problem, config: Optional[FlowConfig] = None, draw: Optional[ItemDraws] = None,
              callback: Optional[Callable[[FlowState], None]] = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Runs DWGF on one batch of measurements; returns ``(particles, latents, failed_at)``.

    Each iteration: diffuse the particles to ``t`` and evaluate the network once (no gradient),
    decode once, sum the image-space gradients (data term + image regularizers) and pull them back
    through the decoder in one vector-Jacobian product, add the latent-space forces, take one
    optimiser step (with the optimiser's own noise, if any). Frozen weights never receive
    gradients.

    Args:
        prior: the frozen latent prior.
        problem: the measurements, their operator and data term, and ``N`` (:class:`Problem`).
        config: the flow's settings (:class:`FlowConfig`); ``None``: the paper's.
        draw: per-item noise (:class:`~dwgf.draws.ItemDraws`); it supplies the initial particles
            ``N(0, I)`` and every per-iteration draw, in a fixed order (:func:`flow_gradient`'s, then
            the optimiser's draws). ``None``: CPU generators seeded 0 .. B-1.
        callback: called with the :class:`FlowState` after every iteration's step.

    Returns:
        Particles ``B x N x C x H x W`` (decoded, unclamped), latents ``B x N x c x h x w``, and
        ``failed_at`` ``(B,)``: the first iteration at which an item's particles were not finite
        (``-1``: never). Such an item is frozen at zero from then on (items never affect each
        other), and its particles must not be used.
    """
    if torch.is_inference_mode_enabled():
        raise RuntimeError("dwgf_flow needs autograd: run it outside torch.inference_mode (Trainer(inference_mode=False))")
    config = config if config is not None else FlowConfig()
    draw = draw if draw is not None else ItemDraws(item_generators(range(problem.batch), "cpu"), problem.y.device)
    # under mixed precision the network and the autoencoder work run in the low precision (dwgf.precision)
    with float32_but_the_unet(problem.y.device.type) as unet_dtype:
        return _flow(prior, problem, config, draw, callback, unet_dtype)


def flow_gradient(prior: LatentPrior, problem: Problem, config: FlowConfig, z: torch.Tensor, t: torch.Tensor, draw: ItemDraws, *,
                  iteration: int = 0, num_iterations: int = 1, unet_dtype: Optional[torch.dtype] = None) -> tuple[torch.Tensor, FlowState]:
    """The gradient of one DWGF iteration on particles ``z`` (``B x N x c x h x w``) at times ``t`` (``(B,)``).

    Draws, in this order: the diffusion noise ``eps``, the decoder noise ``n``, then whatever the
    regularizers draw. With ``unet_dtype`` (e.g. ``torch.bfloat16``) the network runs under autocast
    to that dtype, and so do the decoder pass and the encoder term unless ``config.float32_autoencoder``;
    everything else runs in the caller's precision. The regularizers must have been started for this
    problem (:meth:`FlowConfig.start`; :func:`dwgf_flow` does it). Returns the latent gradient (float32) and the
    iteration's state.
    """
    b, n = z.shape[:2]
    regularizers = config.regularizers
    abar = prior.abar(t, z)
    eps = draw(z.shape[1:])
    if config.query_noise != 1.0:
        eps = eps * config.query_noise
    x_noise = draw((n, *prior.image_shape_of(z))) * config.decoder_noise
    z = z.detach()
    with torch.no_grad():
        z_t = prior.diffuse(z, eps, t, abar)
        eps_hat = None
        if any(r.needs_eps for r in regularizers):
            with unet_precision(z.device.type, unet_dtype):
                eps_hat = prior.eps(z_t.flatten(0, 1), t.repeat_interleave(n), problem.prompt_n).view_as(z)

    autoencoder = autoencoder_dtype(unet_dtype, prior, config.float32_autoencoder)
    with prior.autoencoder_autocast(autoencoder):  # mixed precision: the decoder pass and the encoder term too
        decoder = DecoderPass(prior, z.flatten(0, 1), config.decoder_chunk)
        x_d = decoder.images
        g_x, loss = problem.likelihood.grad(problem.operator, x_d + x_noise.flatten(0, 1), problem.y_n, problem.params_n,
                                            abar.repeat_interleave(n))
        state = FlowState(z=z, t=t, iteration=iteration, num_iterations=num_iterations, x=x_d.view(b, n, *x_d.shape[1:]),
                          x_noise=x_noise, abar=abar, eps=eps, z_t=z_t, eps_hat=eps_hat, data_loss=loss.view(b, n))
        g_z = torch.zeros_like(z)
        state.forces = {}
        for reg in regularizers:
            force = reg.force(state)
            name = type(reg).__name__
            if name in state.forces and state.forces[name].shape != force.shape:  # the same class in both spaces
                name = f"{name}_{reg.space}"
            state.forces[name] = state.forces[name] + force if name in state.forces else force
            if reg.space == "image":
                g_x = g_x + force.flatten(0, 1)
            else:
                g_z = g_z + force
        return g_z + decoder.pull_back(g_x).view_as(z), state  # the one vector-Jacobian product


class DecoderPass:
    """The iteration's decoder forward and its vector-Jacobian product, ``chunk`` particles at a time.

    ``images`` (float32, detached) is ``D(z)`` of the ``B*N`` latents ``z``; :meth:`pull_back`
    returns ``J_D(z)^T g`` for an image gradient ``g``. When every particle fits in one chunk (the
    default on the CPU) it is one forward with a graph and one VJP. Otherwise the forward runs
    without a graph chunk by chunk (the regularizers may need every particle's image before any
    gradient exists), and :meth:`pull_back` runs each chunk's forward again with a graph and its
    VJP: one more decoder forward per iteration for a memory that no longer grows with ``B x N``.
    The decoder runs in the precision the prior is set to (:meth:`~dwgf.priors.LatentPrior.autoencoder_autocast`).
    """

    def __init__(self, prior: LatentPrior, z: torch.Tensor, chunk: Optional[int] = None):
        self.prior, self.z = prior, z.detach()
        self.chunk = decoder_chunk_of(prior, self.z, chunk)
        if self.chunk >= z.shape[0]:
            self._leaf = self.z.requires_grad_(True)
            self._x = prior.flow_decode(self._leaf)  # (B*N, C, H, W), the one decoder forward with a graph
            self.images = self._x.detach()
        else:
            with torch.no_grad():
                self.images = torch.cat([prior.flow_decode(part) for part in self.z.split(self.chunk)])

    def pull_back(self, g_x: torch.Tensor) -> torch.Tensor:
        """The latent gradient ``J_D(z)^T g_x`` (float32), ``B*N x c x h x w``."""
        if self.chunk >= self.z.shape[0]:
            return torch.autograd.grad(self._x, self._leaf, grad_outputs=g_x)[0]
        parts = []
        for part, g in zip(self.z.split(self.chunk), g_x.split(self.chunk)):
            leaf = part.detach().requires_grad_(True)
            parts.append(torch.autograd.grad(self.prior.flow_decode(leaf), leaf, grad_outputs=g)[0])
        return torch.cat(parts)


def decoder_chunk_of(prior: LatentPrior, z: torch.Tensor, chunk: Optional[int] = None) -> int:
    """How many of the latents ``z`` (``rows x c x h x w``) to decode and differentiate at once.

    ``chunk`` given: that (at least 1). ``None``: every row on the CPU; on a CUDA device as many as
    fit in 80% of the memory free now, at the cost of one row's forward and VJP, measured once per
    latent shape, precision and device (:func:`_vjp_bytes_per_row`).
    """
    rows = int(z.shape[0])
    if chunk is not None:
        return max(1, min(rows, int(chunk)))
    if z.device.type != "cuda":
        return rows
    free, _ = torch.cuda.mem_get_info(z.device)
    free += torch.cuda.memory_reserved(z.device) - torch.cuda.memory_allocated(z.device)  # held by torch's cache, reusable
    per_row = _vjp_bytes_per_row(prior, z)
    return max(1, min(rows, int(0.8 * free // max(per_row, 1))))


def _vjp_bytes_per_row(prior: LatentPrior, z: torch.Tensor) -> int:
    """Peak CUDA memory of one row's decoder forward and VJP (a probe on zeros, cached on the prior)."""
    key = (tuple(z.shape[1:]), prior.__dict__.get("_autoencoder_autocast"), str(z.device))
    cache = prior.__dict__.setdefault("_vjp_bytes", {})
    if key not in cache:
        torch.cuda.synchronize(z.device)
        base = torch.cuda.memory_allocated(z.device)
        torch.cuda.reset_peak_memory_stats(z.device)
        leaf = torch.zeros_like(z[:1], requires_grad=True)
        x = prior.flow_decode(leaf)
        torch.autograd.grad(x, leaf, grad_outputs=torch.ones_like(x))
        del x, leaf
        cache[key] = int(torch.cuda.max_memory_allocated(z.device) - base)
    return cache[key]


def prior_curvature(regularizers, state: FlowState) -> Optional[torch.Tensor]:
    """The sum of the regularizers' known curvature bounds at the iteration, ``(B,)``, or ``None`` (none known)."""
    bounds = [c for c in (r.curvature(state) for r in regularizers) if c is not None]
    return torch.stack(bounds).sum(0) if bounds else None


def data_gradient_of(prior: LatentPrior, problem: Problem):
    """The data term's gradient in latent space as a function of the particles (no decoder noise), for
    optimisers that probe its curvature: each call is one decoder forward and one vector-Jacobian product."""

    def data_gradient(z: torch.Tensor) -> torch.Tensor:
        with torch.enable_grad():
            leaf = z.detach().flatten(0, 1).requires_grad_(True)
            x = prior.flow_decode(leaf)
            g_x, _ = problem.likelihood.grad(problem.operator, x.detach(), problem.y_n, problem.params_n)
            (g,) = torch.autograd.grad(x, leaf, grad_outputs=g_x)
        return g.view_as(z)

    return data_gradient


def _flow(prior: LatentPrior, problem: Problem, config: FlowConfig, draw: ItemDraws, callback: Optional[Callable[[FlowState], None]],
          unet_dtype: Optional[torch.dtype]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """:func:`dwgf_flow`'s loop, already in float32 with gradients on (``unet_dtype``: the network call's)."""
    b, n, num_steps = problem.batch, problem.num_particles, config.num_steps
    device = problem.y.device
    z = draw((n, *prior.latent_shape_at(problem.size))).requires_grad_(True)
    failed_at = torch.full((b,), -1, dtype=torch.long, device=device)  # first non-finite iteration per item
    ts = config.timesteps(num_steps, prior.num_train_timesteps, draw.generators, device=device).to(device)
    if config.regularizers and bool((prior.abar(ts.flatten(), z) >= 1).any()):
        raise DWGFError(f"{type(config.timesteps).__name__}: time {int(ts.min())} is the clean data for {type(prior).__name__} (abar = 1), "
                        "where the diffusion terms are undefined; use t_min >= 1")
    # the chunk is decided once per run (in the precision the decoder pass runs in), not once per iteration
    with prior.autoencoder_autocast(autoencoder_dtype(unet_dtype, prior, config.float32_autoencoder)):
        config = replace(config, decoder_chunk=decoder_chunk_of(prior, z.detach().flatten(0, 1), config.decoder_chunk))
    config.start(prior, problem, draw)
    optimizer = config.optimizer
    optimizer.start(z, config.step_size(0, num_steps), data_gradient_of(prior, problem), draw)
    curvature = getattr(optimizer, "needs_curvature", False)
    draw.next_iteration(more=False)  # the draws before the loop are no iteration's: nothing to draw ahead from them
    try:
        for k in range(num_steps):
            lr = config.step_size(k, num_steps)
            grad, state = flow_gradient(prior, problem, config, z, ts[:, k], draw, iteration=k, num_iterations=num_steps, unet_dtype=unet_dtype)
            state.step_size = float(lr)
            if curvature:  # what a step bounded by the curvature needs, given to it explicitly
                state.prior_curvature = prior_curvature(config.regularizers, state)
                state.data_curvature_factor = problem.likelihood.relative_curvature(problem.operator, state.abar)
            with torch.no_grad():
                optimizer.move(z, grad, lr, state, draw)
            with torch.no_grad():  # an item whose particles stop being finite is frozen at 0 and reported
                bad = ~torch.isfinite(z).flatten(1).all(1) | (failed_at >= 0)
                failed_at = torch.where(bad & (failed_at < 0), k, failed_at)
                z.masked_fill_(bad.view(b, *([1] * (z.dim() - 1))), 0.0)
            draw.next_iteration(more=k + 1 < num_steps)  # with CPU generators for a GPU, the next iteration's noise is drawn meanwhile
            if callback is not None:
                callback(state)
    finally:
        draw.close()  # draws made ahead and not used are given back

    with torch.no_grad():
        rows = z.detach().flatten(0, 1)
        # the final images, in float32 whatever the iterations ran in, chunked as the decoder pass is
        particles = torch.cat([prior.decode(part) for part in rows.split(config.decoder_chunk)])
        particles = particles.view(b, n, *particles.shape[1:])
    return particles, z.detach(), failed_at
