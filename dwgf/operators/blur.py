"""Deblurring: the measurement is the image convolved with a (per-item) kernel."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from dwgf.errors import argument_error
from dwgf.operators.base import ForwardOperator, Params


def gaussian_kernel(size: int, sigma: float) -> torch.Tensor:
    """A normalised ``size x size`` isotropic Gaussian kernel of standard deviation ``sigma`` pixels."""
    # on the CPU: kernels are operator parameters, built once (in float64) and cast where they meet an image
    r = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(r**2) / (2 * sigma**2))
    k = torch.outer(g, g)
    return (k / k.sum()).float()


def motion_kernel(size: int, intensity: float, generator: torch.Generator) -> torch.Tensor:
    """A random camera-shake kernel: a smooth random trajectory rasterised into ``size x size``.

    The trajectory is a random walk with momentum: its direction turns by Gaussian angles whose
    spread grows with ``intensity`` (0: a straight line, 1: a strongly curved path). It is centred,
    scaled to span the kernel, splatted bilinearly and normalised to sum 1.
    """
    steps = 8 * size
    angle0 = float(torch.rand((), generator=generator, device=generator.device)) * 2 * math.pi
    turns = torch.randn(steps, generator=generator, dtype=torch.float64, device=generator.device) * (0.05 + intensity * 0.6)
    angles = angle0 + torch.cumsum(turns, 0)
    pts = torch.cumsum(torch.stack([torch.cos(angles), torch.sin(angles)], 1), 0)
    pts = pts - (pts.max(0).values + pts.min(0).values) / 2
    extent = pts.abs().max().clamp_min(1e-8)
    pts = pts / extent * (size - 1) / 2 + (size - 1) / 2
    k = torch.zeros(size, size, dtype=torch.float64, device=pts.device)
    x0, y0 = pts[:, 0].floor().long().clamp(0, size - 1), pts[:, 1].floor().long().clamp(0, size - 1)
    fx, fy = pts[:, 0] - x0, pts[:, 1] - y0
    x1, y1 = (x0 + 1).clamp(max=size - 1), (y0 + 1).clamp(max=size - 1)
    for xi, yi, w in ((x0, y0, (1 - fx) * (1 - fy)), (x1, y0, fx * (1 - fy)), (x0, y1, (1 - fx) * fy), (x1, y1, fx * fy)):
        k.index_put_((yi, xi), w, accumulate=True)
    return (k / k.sum()).float()


class Blur(ForwardOperator):
    """``A(x) = k * x``: convolution with a per-item kernel ``params["kernel"]`` (``k x k``).

    Same-size output with zero padding (a gray border in ``[-1, 1]`` images); the adjoint is the
    transposed convolution. Subclasses choose the kernel.
    """

    linear = True

    def __init__(self, kernel_size: int, sigma_y: float = 0.0):
        super().__init__(sigma_y)
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise argument_error(self, "kernel_size", f" must be a positive odd integer, got {kernel_size}")
        self.kernel_size = int(kernel_size)

    def _conv(self, x: torch.Tensor, kernel: torch.Tensor, transpose: bool) -> torch.Tensor:
        b, c, h, w = x.shape
        weight = kernel.to(x.dtype).repeat_interleave(c, 0).unsqueeze(1)  # (B*C, 1, k, k)
        flat = x.reshape(1, b * c, h, w)
        pad = self.kernel_size // 2
        conv = F.conv_transpose2d if transpose else F.conv2d
        return conv(flat, weight, padding=pad, groups=b * c).view(b, c, h, w)

    def forward(self, x: torch.Tensor, params: Params) -> torch.Tensor:
        return self._conv(x, params["kernel"], False)

    def adjoint(self, y: torch.Tensor, params: Params) -> torch.Tensor:
        return self._conv(y, params["kernel"], True)


class GaussianBlur(Blur):
    """Gaussian blur with a fixed ``kernel_size x kernel_size`` kernel of std ``sigma`` pixels.

    Args:
        kernel_size: odd kernel side. Default 61 (the usual 256-pixel benchmark setting).
        sigma: kernel standard deviation in pixels. Default 3.0.
        sigma_y: measurement noise (see :class:`ForwardOperator`).
    """

    def __init__(self, kernel_size: int = 61, sigma: float = 3.0, sigma_y: float = 0.0):
        super().__init__(kernel_size, sigma_y)
        if not sigma > 0:
            raise argument_error("GaussianBlur", "sigma", f" must be > 0, got {sigma}")
        self.sigma = float(sigma)
        self._kernel = gaussian_kernel(self.kernel_size, self.sigma)

    def sample_params(self, shape: tuple[int, int, int], generator: torch.Generator) -> Params:
        return {"kernel": self._kernel.clone()}


class MotionBlur(Blur):
    """Motion blur with a random camera-shake kernel drawn per item from the item's generator.

    Args:
        kernel_size: odd kernel side. Default 61.
        intensity: in ``[0, 1]``, how curved the trajectory is (0: a straight streak). Default 0.5.
        sigma_y: measurement noise (see :class:`ForwardOperator`).
    """

    def __init__(self, kernel_size: int = 61, intensity: float = 0.5, sigma_y: float = 0.0):
        super().__init__(kernel_size, sigma_y)
        if not 0.0 <= intensity <= 1.0:
            raise argument_error("MotionBlur", "intensity", f" must be in [0, 1], got {intensity}")
        self.intensity = float(intensity)

    def sample_params(self, shape: tuple[int, int, int], generator: torch.Generator) -> Params:
        return {"kernel": motion_kernel(self.kernel_size, self.intensity, generator)}
