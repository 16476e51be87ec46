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
