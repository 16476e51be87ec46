"""What every method shares: the :class:`Problem` it solves and the state its callback sees.

A method (:mod:`dwgf.methods`) is a function ``(prior, problem, draw, *, callback, **settings) ->
(particles, failed_at)``. The problem holds the measurements, their forward operator and data term,
and the number of particles; the states (:class:`SamplerState`, :class:`FlowState`) hold tensors and
the iteration only: plug-ins (regularizers, optimisers, feature maps) get the prior, the problem and
the noise once per batch through their ``start`` hook, never through the state.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Optional

import torch

from dwgf.likelihoods.base import DataTerm, MeanSquaredError
from dwgf.operators.base import ForwardOperator, Params, repeat_params


@dataclass(frozen=True)
class Problem:
    """What is solved: measurements ``y`` (``B x ...``) of ``operator`` with per-item ``params``, the data
    term that scores them, and how many particles each item gets.

    Attributes:
        operator: the forward operator.
        y: the measurements, ``B x ...``; params: their per-item operator parameters.
        likelihood: the data term (:class:`~dwgf.likelihoods.DataTerm`). Default
            :class:`~dwgf.likelihoods.MeanSquaredError`, the paper's ``1/2 mean (y - A x)^2``.
        num_particles: ``N``, particles per item. Default 4.
        size: ``(H, W)`` of the batch's images (:meth:`~dwgf.priors.LatentPrior.latent_shape_at`);
            ``None``: the prior's native size.
        prompt: ``(B,)`` rows of the prior's prompt table, one per item; ``None``: the prior's own prompt.

    The per-particle views (``y_n``, ``params_n``, ``prompt_n``: ``B*N`` rows, item-major) are made once.
    """

    operator: ForwardOperator
    y: torch.Tensor
    params: Params
    likelihood: DataTerm = field(default_factory=MeanSquaredError)
    num_particles: int = 4
    size: Optional[tuple[int, int]] = None
    prompt: Optional[torch.Tensor] = None

    @property
    def batch(self) -> int:
        return int(self.y.shape[0])

    @cached_property
    def y_n(self) -> torch.Tensor:
        return self.y.repeat_interleave(self.num_particles, dim=0)

    @cached_property
    def params_n(self) -> Params:
        return repeat_params(self.params, self.num_particles)

    @cached_property
    def prompt_n(self) -> Optional[torch.Tensor]:
        return None if self.prompt is None else self.prompt.to(self.y.device).repeat_interleave(self.num_particles)


@dataclass
class SamplerState:
    """What a method's callback sees after step ``iteration`` (``0 .. num_iterations - 1``).

    Attributes:
        z: the latents after the step, ``B x N x c x h x w`` (detached).
        t: the step's timesteps, ``(B,)``.
        report: per-item figures for ``metrics.csv`` (``{column: (B,) tensor}``), e.g. a resampling method's
            ``ancestors`` and ``min_ess``; the last iteration's are written. ``None``: none.
    """

    z: torch.Tensor
    t: torch.Tensor
    iteration: int
    num_iterations: int
    report: Optional[dict[str, torch.Tensor]] = None


@dataclass
class FlowState(SamplerState):
    """One DWGF iteration, as regularizers, optimisers and callbacks see it: tensors and the iteration. Tensors are detached.

    Attributes:
        z: particles, ``B x N x c x h x w``.
        t: integer timesteps, ``(B,)``.
        iteration: ``k``, in ``0 .. K-1``.
        num_iterations: ``K``.
        x: decoded particles ``D(z)``, ``B x N x C x H x W``.
        x_noise: the iteration's decoder noise ``n`` (already scaled by ``decoder_noise``).
        abar: ``abar_t``, ``(B,)`` float32.
        eps: the noise used to diffuse ``z`` to ``z_t`` (times ``query_noise``); z_t: the diffused particles.
        eps_hat: the network's noise prediction at ``z_t`` (``None`` if no regularizer needs it).
        data_loss: per-particle data term ``B x N``.
        forces: after the regularizers ran, each one's force (latent- or image-shaped, as it
            returned it), keyed by class name (forces of one class add up; ``<class>_<space>`` when
            the same class also acts in the other space).
        step_size: the step-size schedule's value at this iteration.
        prior_curvature: for an optimiser that asks for it (``needs_curvature``), the sum of the
            regularizers' known curvature bounds at this iteration, ``(B,)`` (``None``: none known).
        data_curvature_factor: likewise, the data term's curvature at this iteration relative to its
            end (:meth:`~dwgf.likelihoods.DataTerm.relative_curvature`), ``(B,)`` or ``None``.
    """

    x: torch.Tensor = None
    x_noise: torch.Tensor = None
    abar: torch.Tensor = None
    eps: Optional[torch.Tensor] = None
    z_t: Optional[torch.Tensor] = None
    eps_hat: Optional[torch.Tensor] = None
    data_loss: Optional[torch.Tensor] = None
    forces: Optional[dict[str, torch.Tensor]] = None
    step_size: Optional[float] = None
    prior_curvature: Optional[torch.Tensor] = None
    data_curvature_factor: Optional[torch.Tensor] = None

    def abar_view(self, like: torch.Tensor) -> torch.Tensor:
        """``abar`` shaped ``B x 1 x ...`` to broadcast against ``like``."""
        return self.abar.view(-1, *([1] * (like.dim() - 1)))


def first_failures(failed_at: torch.Tensor, z: torch.Tensor, iteration: int) -> torch.Tensor:
    """``failed_at`` (``(B,)``, ``-1``: fine so far) with ``iteration`` set for the items of ``z``
    (``B x ...``) whose values stopped being finite at this iteration."""
    bad = ~torch.isfinite(z).flatten(1).all(1)
    return torch.where(bad & (failed_at < 0), iteration, failed_at)
