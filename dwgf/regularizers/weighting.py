"""Time weightings ``lambda(abar_t)`` of the diffusion regularizer."""

from __future__ import annotations

import torch
from dwgf.reprs import ArgumentsRepr


class TimeWeighting(ArgumentsRepr):
    """``lambda(abar)``, the weight of the diffusion term at noise level ``abar = abar_t``.

    Subclass and implement :meth:`__call__` to add one.
    """

    def __call__(self, abar: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError



class DWGFWeighting(TimeWeighting):
    """The reference DWGF weighting ``(1 - abar) / sqrt(abar)``."""

    def __call__(self, abar: torch.Tensor) -> torch.Tensor:
        return (1 - abar) / abar.sqrt()


class ConstantWeighting(TimeWeighting):
    """``1`` at every noise level."""

    def __call__(self, abar: torch.Tensor) -> torch.Tensor:
        return torch.ones_like(abar)


class SqrtInverseSNRWeighting(TimeWeighting):
    """``sqrt((1 - abar) / abar)``, the inverse square-root SNR (RED-diff's "linear" weighting)."""

    def __call__(self, abar: torch.Tensor) -> torch.Tensor:
        return ((1 - abar) / abar).sqrt()


class ScoreWeighting(TimeWeighting):
    """``sqrt(abar)``: makes :class:`~dwgf.regularizers.KLPrior`'s force a score in the particles' own scale.

    With ``KLPrior(weight=1, weighting=ScoreWeighting, particle_term=False, per_element=False)`` the
    force is ``sqrt(abar) (eps_hat - eps) / sqrt(1 - abar)``; where the flow asks the network at
    ``sqrt(abar) z`` (``query_noise: 0``, so ``eps = 0``) it is exactly ``-grad log p~_t(z)``, the
    negative score of the prior smoothed by Gaussian noise of variance ``(1 - abar) / abar`` at
    the particles' scale: the annealed prior that a Langevin sampler
    (:class:`~dwgf.optimizers.Langevin`) samples together with a likelihood.
    """

    def __call__(self, abar: torch.Tensor) -> torch.Tensor:
        return abar.sqrt()

