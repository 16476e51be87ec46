"""Super-resolution: the measurement is a downsampled image."""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F

from dwgf.errors import argument_error
from dwgf.operators.base import ForwardOperator, Params


def _cubic(u: torch.Tensor, a: float = -0.5) -> torch.Tensor:
    """Keys' cubic convolution kernel (``a = -0.5``, as in MATLAB/PIL bicubic)."""
    u = u.abs()
    near = (a + 2) * u**3 - (a + 3) * u**2 + 1
    far = a * u**3 - 5 * a * u**2 + 8 * a * u - 4 * a
    return torch.where(u <= 1, near, torch.where(u < 2, far, torch.zeros_like(u)))


def bicubic_taps(factor: int) -> tuple[torch.Tensor, int]:
    """1-D antialiased bicubic taps for downsampling by ``factor`` and the left offset.

    Output pixel ``i`` is ``sum_k taps[k] * x[i * factor + k - offset]``: the cubic kernel,
    stretched by ``factor``, centred on the output pixel's centre ``(i + 1/2) factor - 1/2``.
    """
    half = 2 * factor  # support of the stretched kernel, in input pixels
    centre = (factor - 1) / 2
    first = math.floor(centre - half) + 1
    last = math.ceil(centre + half) - 1
    # on the CPU: the taps are built once and cast to the image's device where used
    positions = torch.arange(first, last + 1, dtype=torch.float64)
    taps = _cubic((positions - centre) / factor)
    return taps / taps.sum(), -first  # float64: cast to the image's dtype where used


class SuperResolution(ForwardOperator):
    """Downsampling by an integer ``factor``: block averaging or antialiased bicubic.

    ``kernel="box"`` averages each ``factor x factor`` block (the paper's x8 task, 512 -> 64).
    ``kernel="bicubic"`` filters with the antialiased bicubic kernel (``a = -0.5``) and keeps one
    pixel per block; at the borders the filter is renormalised over the pixels inside the image.
    Both are linear; the measurement is ``C x H/factor x W/factor`` and ``measurement.png`` shows it
    at that size.

    Args:
        factor: integer downsampling factor; it must divide the image size.
        kernel: ``"box"`` (default) or ``"bicubic"``.
        sigma_y: measurement noise (see :class:`ForwardOperator`).

    Example:
        >>> op = SuperResolution(factor=2)
        >>> op(torch.arange(16.0).view(1, 1, 4, 4), {})[0, 0]
        tensor([[ 2.5000,  4.5000],
                [10.5000, 12.5000]])
    """

    linear = True

    def __init__(self, factor: int = 4, kernel: Literal["box", "bicubic"] = "box", sigma_y: float = 0.0):
        super().__init__(sigma_y)
        if int(factor) != factor or factor < 1:
            raise argument_error("SuperResolution", "factor", f" must be a positive integer, got {factor}")
        if kernel not in ("box", "bicubic"):
            raise argument_error("SuperResolution", "kernel", f" must be 'box' or 'bicubic', got {kernel!r}")
        self.factor = int(factor)
        self.kernel = kernel
        self._taps, self._offset = bicubic_taps(self.factor)

    def measurement_shape(self, shape: tuple[int, int, int]) -> tuple[int, int, int]:
        c, h, w = shape
        if h % self.factor or w % self.factor:
            raise argument_error("SuperResolution", "factor", f" {self.factor} does not divide the {h}x{w} image size")
        return (c, h // self.factor, w // self.factor)

    def input_shape(self, measurement_shape: tuple[int, ...]) -> tuple[int, ...]:
        c, h, w = measurement_shape
        return (c, h * self.factor, w * self.factor)

    def _bicubic_axis(self, x: torch.Tensor, dim: int, transpose: bool) -> torch.Tensor:
        """Filter-and-subsample (or its transpose) along one spatial axis (``dim`` = -1 or -2)."""
        f, k, off = self.factor, self._taps.to(x.device, x.dtype), self._offset
        moved = x.movedim(dim, -1)
        lead = moved.shape[:-1]
        n = moved.shape[-1] * (f if transpose else 1)
        flat = moved.reshape(-1, 1, moved.shape[-1])
        pad_right = len(k) - 1 - off - (f - 1)
        if transpose:
            full = F.conv_transpose1d(flat, k.view(1, 1, -1), stride=f)
            out = full[..., off : off + n]
        else:
            out = F.conv1d(F.pad(flat, (off, pad_right)), k.view(1, 1, -1), stride=f)
        return out.reshape(*lead, -1).movedim(-1, dim)

    def _bicubic(self, x: torch.Tensor, transpose: bool) -> torch.Tensor:
        return self._bicubic_axis(self._bicubic_axis(x, -1, transpose), -2, transpose)

    def _norm(self, h: int, w: int, like: torch.Tensor) -> torch.Tensor:
        """Per-output-pixel sum of the taps that fall inside the image (1 away from the borders)."""
        return self._bicubic(torch.ones(1, 1, h, w, device=like.device, dtype=like.dtype), False)

    def forward(self, x: torch.Tensor, params: Params) -> torch.Tensor:
        self.measurement_shape(tuple(x.shape[1:]))
        if self.kernel == "box":
            return F.avg_pool2d(x, self.factor)
        return self._bicubic(x, False) / self._norm(x.shape[-2], x.shape[-1], x)

    def adjoint(self, y: torch.Tensor, params: Params) -> torch.Tensor:
        f = self.factor
        if self.kernel == "box":
            return y.repeat_interleave(f, -2).repeat_interleave(f, -1) / f**2
        h, w = y.shape[-2] * f, y.shape[-1] * f
        full = self._bicubic(y / self._norm(h, w, y), True)
        return full[..., :h, :w]

    def project(self, x: torch.Tensor, y: torch.Tensor, params: Params) -> torch.Tensor:
        """Exact projection onto ``{x : A x = y}`` for block averaging (``A^+ = factor^2 A^T``)."""
        if self.kernel == "box":
            return x + self.factor**2 * self.adjoint(y - self.forward(x, params), params)
        return super().project(x, y, params)
