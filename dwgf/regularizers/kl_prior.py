"""The diffusion regularizer: time-weighted KL between the diffused particles and the prior."""

from __future__ import annotations

from typing import TYPE_CHECKING, Optional

import torch

from dwgf.regularizers.base import Regularizer
from dwgf.regularizers.weighting import DWGFWeighting, TimeWeighting

if TYPE_CHECKING:
    from dwgf.problem import FlowState


def particle_score(z_t: torch.Tensor, means: torch.Tensor, var: torch.Tensor) -> torch.Tensor:
    """Score of the particles' diffused distribution, a Gaussian mixture, at each ``z_t^i``.

    The mixture of one item is ``(1/N) sum_j N(means^j, var I)``; its score at ``z_t^i`` is
    ``f^i = sum_j w_ij (means^j - z_t^i) / var`` with ``w_ij = softmax_j(-||z_t^i - means^j||^2 / (2 var))``.
    Particles only interact within their item.

    Args:
        z_t: ``B x N x ...`` points at which to evaluate the score.
        means: ``B x N x ...`` mixture means, ``sqrt(abar) z^j``.
        var: ``B``-shaped (or broadcastable ``B x 1 x ...``) variance ``1 - abar``.

    Returns:
        ``B x N x ...`` scores.
    """
    b, n = z_t.shape[:2]
    var = var.reshape(b, *([1] * (z_t.dim() - 1)))
    flat_z, flat_m = z_t.reshape(b, n, -1), means.reshape(b, n, -1)
    sq = (flat_z.unsqueeze(2) - flat_m.unsqueeze(1)).square().sum(-1)  # (B, N, N): ||z_i - m_j||^2
    w = torch.softmax(-sq / (2 * var.reshape(b, 1, 1)), dim=-1)
    mixed = torch.bmm(w, flat_m).view_as(z_t)  # sum_j w_ij m_j
    return (mixed - z_t) / var


class KLPrior(Regularizer):
    """DWGF's diffusion regularizer (the paper's time-weighted KL to the diffused prior, arXiv 2509.19276).

    Its Wasserstein gradient on particle ``z^i`` at diffusion time ``t`` is

        ``weight * lambda(abar_t) * (f^i - s^i) / d``

    where ``f`` is :func:`particle_score` of the diffused particles, ``s^i = -eps_theta(z_t^i, t) /
    sqrt(1 - abar_t)`` is the model's score (no gradient through the network), ``d`` the number of
    elements of one latent, and ``lambda`` the :class:`TimeWeighting`. With one particle this is the
    score-distillation (RED-diff) gradient ``weight * lambda * (eps_hat - eps) / sqrt(1 - abar) / d``.

    Args:
        weight: ``w``, the regularizer weight. Default 0.15 (the reference).
        weighting: ``lambda(abar)``. Default :class:`DWGFWeighting`, ``(1 - abar) / sqrt(abar)``.
        particle_term: include the particles' own score ``f`` (default). ``False`` replaces it by
            ``-eps / sqrt(1 - abar)`` for every particle: independent score distillation.
        per_element: divide by ``d`` (default: the paper's normalisation, a mean over the latent's
            elements). ``False``: no division, so that the force is in the units of a log density,
            as a likelihood (:class:`~dwgf.likelihoods.GaussianLikelihood`) and a sampler
            (:class:`~dwgf.optimizers.Langevin`) need.
    """

    space = "latent"
    needs_eps = True

    def __init__(self, weight: float = 0.15, weighting: Optional[TimeWeighting] = None, particle_term: bool = True,
                 per_element: bool = True):
        self.weight = float(weight)
        self.weighting = weighting if weighting is not None else DWGFWeighting()
        self.particle_term = bool(particle_term)
        self.per_element = bool(per_element)

    def curvature(self, state: "FlowState") -> Optional[torch.Tensor]:
        """``weight * lambda(abar) * sqrt(abar) / (1 - abar)`` (over ``d`` with ``per_element``): the force is
        ``weight * lambda / sqrt(abar)`` times ``-grad log p~_t``, the prior smoothed by variance
        ``gamma^2 = (1 - abar) / abar``, whose Hessian never exceeds ``I / gamma^2``; the particle
        term's own (negative) curvature is left out."""
        abar = state.abar.to(state.z.dtype)
        bound = self.weight * self.weighting(abar) * abar.sqrt() / (1 - abar).clamp_min(1e-12)
        return bound / state.z[0, 0].numel() if self.per_element else bound

    def force(self, state: "FlowState") -> torch.Tensor:
        abar = state.abar_view(state.z)
        var = 1 - abar
        if self.particle_term:
            f = particle_score(state.z_t, abar.sqrt() * state.z, var)
        else:
            f = -state.eps / var.sqrt()
        s = -state.eps_hat / var.sqrt()
        lam = self.weight * self.weighting(abar)
        return lam * (f - s) / state.z[0, 0].numel() if self.per_element else lam * (f - s)
