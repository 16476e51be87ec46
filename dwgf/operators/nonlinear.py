"""Nonlinear forward operators: saturation (clipping), Fourier phase retrieval, and a user's own function.

The flow needs only the data term's gradient, which the data terms (:meth:`dwgf.likelihoods.DataTerm.grad`) take by
autograd through :meth:`forward`; so any differentiable ``forward`` is an operator. These have no
adjoint (``linear = False``): PSLD refuses them, DWGF, Latent DPS, RED-diff and inversion take them.
"""

from __future__ import annotations

import importlib
import math
from typing import Any, Callable, Optional

import torch

from dwgf.errors import argument_error
from dwgf.operators.base import ForwardOperator, Params


class Saturation(ForwardOperator):
    """A sensor that clips: ``A(x) = clamp(gain x, -level, level)``.

    With ``gain > 1`` highlights and shadows saturate (an over-exposed photo); where a pixel is
    clipped its measurement says only that it lies beyond ``level / gain``, and the data term's
    gradient there is zero, so the prior fills it in.

    Args:
        gain: exposure gain (> 0). Default 2.
        level: the clipping level, in ``(0, 1]`` of the ``[-1, 1]`` range. Default 1.
        sigma_y: measurement noise. Default 0.01.
    """

    def __init__(self, gain: float = 2.0, level: float = 1.0, sigma_y: float = 0.01):
        super().__init__(sigma_y)
        if not gain > 0 or not math.isfinite(gain):
            raise argument_error(self, "gain", f" must be a finite number > 0, got {gain}")
        if not 0 < level <= 1:
            raise argument_error(self, "level", f" must be in (0, 1], got {level}")
        self.gain, self.level = float(gain), float(level)

    def forward(self, x: torch.Tensor, params: Params) -> torch.Tensor:
        return (self.gain * x).clamp(-self.level, self.level)


class PhaseRetrieval(ForwardOperator):
    """Fourier phase retrieval: ``A(x) = |F(pad(u))|`` with ``u = (x + 1) / 2`` (the image in ``[0, 1]``).

    Each channel is zero-padded to ``oversample`` times its height and width (centred) and
    transformed with the orthonormal 2-D FFT; the measurement is the magnitude,
    ``C x round(oversample H) x round(oversample W)``. The magnitude does not change when the image is
    shifted (within the padding) or rotated by 180 degrees with conjugation, so a solution is
    defined only up to those symmetries. ``dwgf predict`` takes its metrics up to them, as the field
    reports them: :meth:`align` moves each particle to its best shift and twin before PSNR, SSIM and
    the uncertainty figures are computed; the saved images are the particles as found.

    Args:
        oversample: the padded size over the image size (>= 1). Default 2 (the usual oversampling).
        sigma_y: measurement noise. Default 0.01.
    """

    def __init__(self, oversample: float = 2.0, sigma_y: float = 0.01):
        super().__init__(sigma_y)
        if not oversample >= 1 or not math.isfinite(oversample):
            raise argument_error(self, "oversample", f" must be a finite number >= 1, got {oversample}")
        self.oversample = float(oversample)

    def padded(self, h: int, w: int) -> tuple[int, int]:
        return int(round(self.oversample * h)), int(round(self.oversample * w))

    def measurement_shape(self, shape: tuple[int, int, int]) -> tuple[int, int, int]:
        c, h, w = shape
        return (c, *self.padded(h, w))

    def input_shape(self, measurement_shape: tuple[int, ...]) -> tuple[int, ...]:
        c, ph, pw = measurement_shape
        return (c, int(round(ph / self.oversample)), int(round(pw / self.oversample)))

    def forward(self, x: torch.Tensor, params: Params) -> torch.Tensor:
        return torch.fft.fft2(self._pad((x + 1) / 2), norm="ortho").abs()

    def _pad(self, u: torch.Tensor) -> torch.Tensor:
        h, w = u.shape[-2:]
        ph, pw = self.padded(h, w)
        top, left = (ph - h) // 2, (pw - w) // 2
        return torch.nn.functional.pad(u, (left, pw - w - left, top, ph - h - top))

    def align(self, estimate: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
        """Each estimate, or its 180-degree twin, circularly shifted on the padded canvas and cropped back
        to the image: the one of those closest to ``truth`` in mean squared error. Every candidate has
        the estimate's measurement (the magnitude ignores shifts and the twin), except for what a
        shift carries out of the image's window, which is lost, as it should be for a metric.

        The squared error of every shift comes from two FFT correlations (no loop over shifts)."""
        n = estimate.shape[0]
        h, w = estimate.shape[-2:]
        u = self._pad((estimate.double() + 1) / 2)  # N x C x Ph x Pw, zero off the image's window
        t = self._pad((truth.double()[None] + 1) / 2)
        window = self._pad(torch.ones_like(truth.double()[None, :1]))
        # the 180-degree twin of the padded image: u(-n) on the canvas, a flip then a one-pixel roll (the shift search absorbs it)
        candidates = torch.cat([u, u.flip(-2, -1)])  # 2N x C x Ph x Pw
        fft2, ifft2 = torch.fft.fft2, torch.fft.ifft2
        # for the shift s, the candidate rolled by s: crop energy sum(W roll(P, s)^2) and overlap sum(T roll(P, s))
        energy = ifft2(fft2(window) * fft2(candidates.square()).conj()).real.sum(1)
        overlap = ifft2(fft2(t) * fft2(candidates).conj()).real.sum(1)
        cost = (energy - 2 * overlap).flatten(1)  # 2N x (Ph Pw), up to the truth's own energy
        cost = torch.stack([cost[:n], cost[n:]], 1).flatten(1)  # N x (2 Ph Pw): no twin, then twin
        best = cost.argmin(1)
        ph, pw = u.shape[-2:]
        top, left = (ph - h) // 2, (pw - w) // 2
        out = []
        for i, k in enumerate(best.tolist()):
            twin, s = divmod(k, ph * pw)
            dy, dx = divmod(s, pw)
            moved = candidates[i + twin * n].roll((dy, dx), (-2, -1))
            out.append(moved[..., top : top + h, left : left + w])
        return (2 * torch.stack(out) - 1).to(estimate.dtype)

    def to_image(self, y: torch.Tensor, params: Params) -> torch.Tensor:
        """``log(1 + |F|)`` scaled to ``[-1, 1]`` by its largest possible value (the padded image's sum
        of ones), so that the scale is fixed for a size and :meth:`from_image` inverts it."""
        top = math.log1p(self._largest(y))
        return 2 * torch.log1p(y.clamp_min(0)) / top - 1

    def from_image(self, image: torch.Tensor, params: Params) -> torch.Tensor:
        top = math.log1p(self._largest(image))
        return torch.expm1((image + 1) / 2 * top)

    def _largest(self, y: torch.Tensor) -> float:
        ph, pw = y.shape[-2:]
        h, w = self.input_shape((1, ph, pw))[1:]
        return h * w / math.sqrt(ph * pw)  # |F(u)| <= sum(u) / sqrt(N) <= H W / sqrt(N)


class FunctionOperator(ForwardOperator):
    """A forward operator from a plain Python function ``forward(x, params) -> y``: the quickest way to a new operator.

    Write the function in a module of your own (``my_ops.py``)::

        def square_law(x, params):
            return x.square()

    and name it in a config::

        data:
          init_args:
            operator:
              class_path: dwgf.operators.FunctionOperator
              init_args: {function: my_ops.square_law, sigma_y: 0.01}

    The data term's gradient comes from autograd through the function, so it must be
    differentiable in ``x`` (``B x C x H x W`` in ``[-1, 1]``) and act on each item of the batch
    alone. It gets the ``kwargs`` of the config as keyword arguments. It has no per-item
    parameters (``params`` is empty; subclass :class:`ForwardOperator` for those) and no adjoint
    (PSLD refuses it). The measurement's shape is found by calling it once on zeros.

    Args:
        function: ``"module.name"`` of the function (importable from the working directory or
            ``PYTHONPATH``), or the function itself (Python API).
        kwargs: keyword arguments passed to every call. Default none.
        sigma_y: measurement noise. Default 0.
    """

    def __init__(self, function: str | Callable[..., torch.Tensor], kwargs: Optional[dict[str, Any]] = None, sigma_y: float = 0.0):
        super().__init__(sigma_y)
        self.function = function if isinstance(function, str) else f"{function.__module__}.{function.__qualname__}"
        self.kwargs = dict(kwargs or {})
        self._fn = self._resolve(function)
        self._shapes: dict[tuple[int, ...], tuple[int, ...]] = {}

    def _resolve(self, function: Any) -> Callable[..., torch.Tensor]:
        if callable(function):
            return function
        if not isinstance(function, str) or "." not in function:
            raise argument_error(self, "function", f" must be 'module.name' of a Python function, got {function!r}")
        module, _, name = function.rpartition(".")
        try:
            fn = getattr(importlib.import_module(module), name)
        except ImportError as err:
            raise argument_error(self, "function", f" {function!r}: cannot import module {module!r} ({err}); is it on PYTHONPATH "
                                 "or in the working directory?") from None
        except AttributeError:
            raise argument_error(self, "function", f" {function!r}: module {module!r} has no {name!r}") from None
        if not callable(fn):
            raise argument_error(self, "function", f" {function!r} is a {type(fn).__name__}, not a function")
        return fn

    def forward(self, x: torch.Tensor, params: Params) -> torch.Tensor:
        y = self._fn(x, params, **self.kwargs)
        if not isinstance(y, torch.Tensor) or y.dim() < 1 or y.shape[0] != x.shape[0]:
            got = tuple(y.shape) if isinstance(y, torch.Tensor) else type(y).__name__
            raise argument_error(self, "function", f" {self.function!r} returned {got} for a batch of {x.shape[0]}; it must return a "
                                 "tensor with one row per image")
        return y

    def measurement_shape(self, shape: tuple[int, int, int]) -> tuple[int, ...]:
        key = tuple(int(s) for s in shape)
        if key not in self._shapes:
            with torch.no_grad():
                # on the CPU: a probe of the output's shape, nothing more
                self._shapes[key] = tuple(self.forward(torch.zeros(1, *key), {}).shape[1:])
        return self._shapes[key]


# The JPEG standard's base quantisation tables (ITU-T T.81, Annex K), luminance and chrominance.
_LUMA = [16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55, 14, 13, 16, 24, 40, 57, 69, 56, 14, 17, 22, 29, 51, 87, 80, 62,
         18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92, 49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100,
         103, 99]
_CHROMA = [17, 18, 24, 47, 99, 99, 99, 99, 18, 21, 26, 66, 99, 99, 99, 99, 24, 26, 56, 99, 99, 99, 99, 99, 47, 66, 99, 99, 99, 99, 99, 99]
_CHROMA += [99] * (64 - len(_CHROMA))
_RGB_TO_YCBCR = [[0.299, 0.587, 0.114], [-0.168736, -0.331264, 0.5], [0.5, -0.418688, -0.081312]]


def _dct_matrix(dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """The orthonormal 8-point DCT-II matrix ``D`` (rows: frequencies); a block's transform is ``D B D^T``."""
    k = torch.arange(8, dtype=torch.float64, device=device)
    d = torch.cos((2 * k[None, :] + 1) * k[:, None] * math.pi / 16) * math.sqrt(2 / 8)
    d[0] /= math.sqrt(2)
    return d.to(device=device, dtype=dtype)


class JPEG(ForwardOperator):
    """JPEG compression at a quality: the decoded image of what a baseline JPEG encoder keeps.

    As libjpeg's baseline encoder, without chroma subsampling (4:4:4) and without the lossless
    entropy coding: pixels to ``[0, 255]``, RGB to YCbCr (full range, JFIF), minus 128, the 8x8
    block DCT, division by the standard tables scaled for ``quality`` (IJG's rule) and rounding;
    then back (multiply, inverse DCT, plus 128, YCbCr to RGB, to ``[-1, 1]``, clipped to it).
    Grayscale images use the luminance path only. Sides that are not multiples of 8 are padded by
    replication, as encoders do, and cropped back.

    The measurement uses exact rounding. The data term's gradient goes through a smooth surrogate,
    ``round(v) + (v - round(v))^3`` (Shin and Song 2017), whose value is replaced by the exact
    rounding (so the loss is the exact one and its gradient the surrogate's). A JPEG file read in
    measurement-only mode is its own measurement.

    Args:
        quality: 1..100 (libjpeg's scale). Default 10 (strong compression).
        sigma_y: additive noise on the decoded image. Default 0.
    """

    surrogate_gradient = True  # the data term's gradient is the smooth surrogate's, not a finite difference of the exact loss
    smooth = False  # True: the surrogate's value too (a smooth operator, for checking its gradient)

    def __init__(self, quality: int = 10, sigma_y: float = 0.0):
        super().__init__(sigma_y)
        if isinstance(quality, bool) or not isinstance(quality, int) or not 1 <= quality <= 100:
            raise argument_error(self, "quality", f" must be an integer in 1..100, got {quality!r}")
        self.quality = int(quality)

    def tables(self, dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
        """The luminance and chrominance quantisation tables (8 x 8) at this quality, as libjpeg scales them."""
        scale = 5000 / self.quality if self.quality < 50 else 200 - 2 * self.quality
        out = []
        for base in (_LUMA, _CHROMA):
            # on the CPU in float64 (libjpeg's integer rounding), then moved
            t = torch.tensor(base, dtype=torch.float64).view(8, 8)
            out.append(((t * scale + 50) / 100).floor().clamp(1, 255).to(device=device, dtype=dtype))
        return out[0], out[1]

    def _constants(self, dtype: torch.dtype, device: torch.device):
        """The colour matrix and its inverse, the level shift, the tables and the DCT matrix, built once per dtype and device."""
        key = (dtype, torch.device(device))
        cache = self.__dict__.setdefault("_cache", {})
        if key not in cache:
            # on the CPU in float64, once per dtype and device, then moved (below)
            m = torch.tensor(_RGB_TO_YCBCR, dtype=torch.float64)
            # centred YCbCr: Y - 128 (the level shift); Cb and Cr are centred by the matrix (their +128 and -128 cancel)
            shift = torch.tensor([128.0, 0.0, 0.0], dtype=torch.float64, device=m.device).view(1, 3, 1, 1)
            luma, chroma = self.tables(torch.float64)
            tensors = (m, torch.linalg.inv(m), shift, torch.stack([luma, chroma, chroma]), _dct_matrix(torch.float64, torch.device("cpu")))
            cache[key] = tuple(v.to(device=device, dtype=dtype) for v in tensors)
        return cache[key]

    def _round(self, v: torch.Tensor) -> torch.Tensor:
        r = torch.round(v)
        smooth = r + (v - r) ** 3
        if self.smooth:
            return smooth
        return smooth + (r - smooth).detach()  # the exact rounding's value, the surrogate's gradient

    def forward(self, x: torch.Tensor, params: Params) -> torch.Tensor:
        b, c, h, w = x.shape
        if c not in (1, 3):
            raise argument_error(self, "quality", f": JPEG takes grayscale or RGB images, got {c} channels")
        ph, pw = -h % 8, -w % 8
        p = torch.nn.functional.pad((x + 1) * 127.5, (0, pw, 0, ph), mode="replicate") if ph or pw else (x + 1) * 127.5
        m, m_inv, shift, q, d = self._constants(x.dtype, x.device)
        shift, q = shift[:, :c], q[:c]
        ycc = (torch.einsum("ij,bjhw->bihw", m, p) if c == 3 else p) - shift
        H, W = ycc.shape[-2:]
        blocks = ycc.reshape(b, c, H // 8, 8, W // 8, 8).permute(0, 1, 2, 4, 3, 5)  # b c nh nw 8 8
        coef = d @ blocks @ d.T
        q = q[None, :, None, None]
        kept = self._round(coef / q) * q
        back = (d.T @ kept @ d).permute(0, 1, 2, 4, 3, 5).reshape(b, c, H, W) + shift
        rgb = torch.einsum("ij,bjhw->bihw", m_inv, back) if c == 3 else back
        return (rgb[..., :h, :w] / 127.5 - 1).clamp(-1, 1)
