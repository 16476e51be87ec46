"""Injected noise: a Langevin-type move of the latents after an optimiser's every step, with a schedule."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Literal, Optional

import torch

from dwgf.errors import argument_error
from dwgf.reprs import ArgumentsRepr

if TYPE_CHECKING:
    from dwgf.draws import ItemDraws
    from dwgf.problem import FlowState


class LangevinNoise(ArgumentsRepr):
    """Adds ``sigma_k * xi`` (``xi`` standard normal, per particle) to the latents after the optimiser's step of iteration ``k``.

    Give it to an optimiser: ``Adam(noise=LangevinNoise(0.1))`` (``--model.optimizer.noise``). The
    spelling of earlier versions, ``LangevinNoise`` listed under ``model.regularizers``, still loads
    and gives the same particles: :class:`~dwgf.solver.DWGF` hands it to its optimiser.

    Langevin dynamics for a density ``exp(-U / T)`` moves ``z <- z - eta grad U + sqrt(2 eta T) xi``:
    the noise is the entropy's Wasserstein gradient, in its stochastic form, and what keeps a
    gradient flow's particles spread around a mode instead of on it. The flow's step is Adam's, whose
    per-coordinate step is about its learning rate ``lr_k`` whatever the gradient's scale, so the
    noise follows the learning rate:

        ``sigma_k = scale * sqrt(2 * lr_k) * g_k``

    with ``g_k`` the ``anneal`` schedule: ``"constant"`` (``1``), ``"noise_level"``
    (``sqrt(1 - abar_t)``, shrinking with the diffusion time, as in annealed Langevin sampling),
    ``"linear"`` (``1 - k / K``: no noise on the last step). ``final`` keeps
    ``g_k >= final`` so that particles still move at the end (the default ``0`` lets them settle).
    The noise is drawn from each item's generator, after the iteration's other draws. Costs one
    standard normal draw of the latent per particle per iteration.

    Args:
        scale: the temperature-like factor. Default 0.1.
        anneal: ``"noise_level"`` (default), ``"constant"`` or ``"linear"``.
        final: floor of the schedule ``g_k``. Default 0.
    """

    def __init__(self, scale: float = 0.1, anneal: Literal["noise_level", "constant", "linear"] = "noise_level", final: float = 0.0):
        if scale < 0:
            raise argument_error(self, "scale", f" must be >= 0, got {scale}")
        if anneal not in ("noise_level", "constant", "linear"):
            raise argument_error(self, "anneal", f" must be 'noise_level', 'constant' or 'linear', got {anneal!r}")
        if not 0 <= final <= 1:
            raise argument_error(self, "final", f" must be in [0, 1], got {final}")
        self.scale = float(scale)
        self.anneal = anneal
        self.final = float(final)

    def schedule(self, state: "FlowState") -> torch.Tensor:
        """``g_k`` per item, ``(B,)``."""
        if self.anneal == "noise_level":
            g = (1 - state.abar).clamp_min(0).sqrt()
        elif self.anneal == "linear":
            g = torch.full_like(state.abar, 1 - state.iteration / state.num_iterations)
        else:
            g = torch.ones_like(state.abar)
        return g.clamp_min(self.final)

    def sample(self, state: "FlowState", lr: float, draw: "ItemDraws") -> Optional[torch.Tensor]:
        """The displacement after the step with step size ``lr`` (``B x N x c x h x w``), or ``None`` when ``scale = 0``."""
        if self.scale == 0:  # no draw either: the particles are the plain flow's
            return None
        sigma = self.scale * math.sqrt(2 * lr) * self.schedule(state).to(state.z.dtype)
        xi = draw(state.z.shape[1:])
        return sigma.view(-1, *([1] * (state.z.dim() - 1))) * xi
