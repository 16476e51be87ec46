"""Denoising: ``A`` is the identity; only the noise ``sigma_y`` degrades the image."""

from __future__ import annotations

import torch

from dwgf.operators.base import ForwardOperator, Params


class Denoising(ForwardOperator):
    """``A(x) = x``; the measurement is ``x + sigma_y e``.

    Args:
        sigma_y: measurement noise in ``[-1, 1]`` units. Default ``0.1``.
    """

    linear = True

    def __init__(self, sigma_y: float = 0.1):
        super().__init__(sigma_y)

    def forward(self, x: torch.Tensor, params: Params) -> torch.Tensor:
        return x

    def adjoint(self, y: torch.Tensor, params: Params) -> torch.Tensor:
        return y
