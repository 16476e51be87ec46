"""An explicit linear operator: ``y = A vec(x) + sigma_y e`` with a given ``m x n`` matrix."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Optional, Sequence

import torch

from dwgf.errors import argument_error
from dwgf.operators.base import ForwardOperator, Params


def _load_matrix(owner: object, matrix: str | Sequence[Sequence[float]] | torch.Tensor) -> torch.Tensor:
    if isinstance(matrix, torch.Tensor):
        value = matrix
    elif isinstance(matrix, (str, Path)):
        path = Path(matrix).expanduser()
        if not path.is_file():
            raise argument_error(owner, "matrix", f" {str(matrix)!r}: no such file (expected a .npy or .pt file holding an m x n matrix)")
        if path.suffix == ".npy":
            import numpy as np

            value = torch.from_numpy(np.load(path, allow_pickle=False))
        else:
            value = torch.load(path, weights_only=True)
    else:
        # on the CPU: the user's matrix is kept there and cast to each device and dtype where it is used
        value = torch.as_tensor(matrix)
    if not isinstance(value, torch.Tensor) or value.dim() != 2 or value.numel() == 0:
        shape = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
        raise argument_error(owner, "matrix", f": expected an m x n matrix, got shape {shape}")
    if not value.is_floating_point() and value.dtype not in (torch.int32, torch.int64):
        raise argument_error(owner, "matrix", f": expected numbers, got {value.dtype}")
    value = value.to(torch.float64)
    if not torch.isfinite(value).all():
        raise argument_error(owner, "matrix", ": contains NaN or Inf")
    return value


class MatrixOperator(ForwardOperator):
    """``A(x) = M vec(x)``: any linear measurement given as an explicit ``m x n`` matrix ``M``.

    ``vec`` flattens an image ``C x H x W`` (``n = C H W``, row-major); the measurement of one image is
    ``m x 1 x 1``. The adjoint is ``M^T y`` reshaped to the image. Meant for small problems where a
    closed-form posterior is known (:class:`~dwgf.priors.GaussianMixturePrior`) and for operators no
    built-in covers.

    Args:
        matrix: ``M``: a nested list, a tensor, or the path of a ``.npy`` / ``.pt`` file holding it.
        image_shape: ``(C, H, W)`` of the images it measures (``C H W = n``); default ``(n, 1, 1)``.
        sigma_y: measurement noise. Default ``0``.

    Example:
        >>> op = MatrixOperator([[1.0, 0.0, 0.0], [0.0, 0.5, 0.5]], sigma_y=0.1)
        >>> op(torch.tensor([[[[1.0]], [[2.0]], [[4.0]]]]), {}).flatten().tolist()
        [1.0, 3.0]
    """

    linear = True

    def __init__(self, matrix: str | list[list[float]] | torch.Tensor, image_shape: Optional[list[int]] = None, sigma_y: float = 0.0):
        super().__init__(sigma_y)
        self.matrix = _load_matrix(self, matrix)
        n = self.matrix.shape[1]
        shape = tuple(int(v) for v in image_shape) if image_shape is not None else (n, 1, 1)
        if len(shape) != 3 or math.prod(shape) != n or min(shape) < 1:
            raise argument_error(self, "image_shape", f" {list(shape)}: expected [C, H, W] with C*H*W = {n}, the matrix's columns")
        self.image_shape = shape
        self._cast: dict[tuple[torch.device, torch.dtype], torch.Tensor] = {}
        self._pinv_cast: dict[tuple[torch.device, torch.dtype], torch.Tensor] = {}

    def __repr__(self) -> str:
        m, n = self.matrix.shape
        return f"MatrixOperator(matrix=<{m}x{n}>, image_shape={list(self.image_shape)}, sigma_y={self.sigma_y})"

    def _m(self, like: torch.Tensor) -> torch.Tensor:
        key = (like.device, like.dtype)
        if key not in self._cast:
            self._cast[key] = self.matrix.to(device=like.device, dtype=like.dtype)
        return self._cast[key]

    def measurement_shape(self, shape: tuple[int, int, int]) -> tuple[int, int, int]:
        if math.prod(shape) != self.matrix.shape[1]:
            raise argument_error(self, "matrix", f" has {self.matrix.shape[1]} columns; images of shape {tuple(shape)} have "
                                 f"{math.prod(shape)} pixels")
        return (int(self.matrix.shape[0]), 1, 1)

    def input_shape(self, measurement_shape: tuple[int, ...]) -> tuple[int, ...]:
        return self.image_shape

    def forward(self, x: torch.Tensor, params: Params) -> torch.Tensor:
        return (x.reshape(x.shape[0], -1) @ self._m(x).T).reshape(x.shape[0], -1, 1, 1)

    def adjoint(self, y: torch.Tensor, params: Params) -> torch.Tensor:
        return (y.reshape(y.shape[0], -1) @ self._m(y)).reshape(y.shape[0], *self.image_shape)

    def project(self, x: torch.Tensor, y: torch.Tensor, params: Params) -> torch.Tensor:
        """Exact projection onto ``{x : A x = y}``: ``x + A^+ (y - A x)`` with the pseudo-inverse ``A^+``
        (computed once, in float64)."""
        key = (x.device, x.dtype)
        if key not in self._pinv_cast:
            self._pinv_cast[key] = torch.linalg.pinv(self.matrix.double()).to(device=x.device, dtype=x.dtype)
        r = (y - self.forward(x, params)).reshape(x.shape[0], -1)
        return x + (r @ self._pinv_cast[key].T).reshape(x.shape)
