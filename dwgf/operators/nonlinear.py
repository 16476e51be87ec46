"""Nonlinear forward operators: saturation (clipping), Fourier phase retrieval, and a user's own function.

The flow needs only the data term's gradient, which :meth:`ForwardOperator.data_grad` takes by
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
    defined only up to those symmetries: compare results up to them, as the field reports them.

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
        h, w = x.shape[-2:]
        ph, pw = self.padded(h, w)
        top, left = (ph - h) // 2, (pw - w) // 2
        u = torch.nn.functional.pad((x + 1) / 2, (left, pw - w - left, top, ph - h - top))
        return torch.fft.fft2(u, norm="ortho").abs()

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
                self._shapes[key] = tuple(self.forward(torch.zeros(1, *key), {}).shape[1:])
        return self._shapes[key]

    def to_image(self, y: torch.Tensor, params: Params) -> torch.Tensor:
        return y
