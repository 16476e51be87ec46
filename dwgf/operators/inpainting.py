"""Inpainting: the measurement keeps the observed pixels of the image."""

from __future__ import annotations

from typing import Optional

import torch

from dwgf.errors import DWGFError, argument_error
from dwgf.operators.base import ForwardOperator, Params


class _MaskOperator(ForwardOperator):
    """``A(x) = m * x`` with a per-item 0/1 mask ``m`` (``1 x H x W``, shared by channels).

    ``A`` is linear and self-adjoint; only the observed pixels count in the data term.
    """

    linear = True

    def forward(self, x: torch.Tensor, params: Params) -> torch.Tensor:
        return x * params["mask"]

    def adjoint(self, y: torch.Tensor, params: Params) -> torch.Tensor:
        return y * params["mask"]

    def measured(self, params: Params) -> Optional[torch.Tensor]:
        return params["mask"]

    def unobserved(self, params: Params) -> Optional[torch.Tensor]:
        return 1 - params["mask"]

    def params_from_mask(self, mask: torch.Tensor) -> Params:
        return {"mask": (mask > 0.5).float()}

    def from_image(self, image: torch.Tensor, params: Params) -> torch.Tensor:
        return image * params["mask"]


class BoxInpainting(_MaskOperator):
    """A rectangular box of missing pixels, fixed or at a random position per item.

    With ``reference_size`` set, ``size`` and ``position`` are in pixels of a
    ``reference_size x reference_size`` image and scale with the actual image (the paper's box,
    rows 150-449 by columns 250-449 of a 512 image, is ``size=[300, 200], position=[150, 250],
    reference_size=512``; on a 64 image it becomes rows 19-56 by columns 31-55). Without it they
    are pixels of the actual image.

    Args:
        size: ``[height, width]`` of the box.
        position: ``[top, left]`` of the box; ``None`` (default) draws it uniformly per item, from
            the item's generator, so that the box lies inside the image.
        reference_size: the image side that ``size`` and ``position`` refer to; ``None``: actual pixels.
        sigma_y: measurement noise (see :class:`ForwardOperator`).

    Example:
        >>> op = BoxInpainting(size=[2, 2], position=[1, 1])
        >>> p = {k: v[None] for k, v in op.sample_params((1, 4, 4), torch.Generator()).items()}
        >>> op(torch.ones(1, 1, 4, 4), p)[0, 0]
        tensor([[1., 1., 1., 1.],
                [1., 0., 0., 1.],
                [1., 0., 0., 1.],
                [1., 1., 1., 1.]])
    """

    def __init__(
        self,
        size: tuple[int, int] = (128, 128),
        position: Optional[tuple[int, int]] = None,
        reference_size: Optional[int] = None,
        sigma_y: float = 0.0,
    ):
        super().__init__(sigma_y)
        if len(size) != 2 or min(size) < 1:
            raise argument_error("BoxInpainting", "size", f" must be [height, width] of positive integers, got {list(size)}")
        if position is not None and (len(position) != 2 or min(position) < 0):
            raise argument_error("BoxInpainting", "position", f" must be [top, left] of integers >= 0, got {list(position)}")
        if reference_size is not None:
            if reference_size < 1:
                raise argument_error("BoxInpainting", "reference_size", f" must be positive, got {reference_size}")
            far = [(position or (0, 0))[i] + size[i] for i in range(2)]
            if max(far) > reference_size:
                raise DWGFError(f"BoxInpainting: box of size {list(size)} at {list(position or (0, 0))} does not fit in the "
                    f"{reference_size}x{reference_size} reference image")
        self.size = tuple(int(s) for s in size)
        self.position = None if position is None else tuple(int(p) for p in position)
        self.reference_size = reference_size

    def box(self, height: int, width: int, generator: Optional[torch.Generator] = None) -> tuple[int, int, int, int]:
        """``(top, left, box_height, box_width)`` in pixels of a ``height x width`` image."""
        sy = height / self.reference_size if self.reference_size else 1.0
        sx = width / self.reference_size if self.reference_size else 1.0
        bh, bw = max(1, round(self.size[0] * sy)), max(1, round(self.size[1] * sx))
        if bh > height or bw > width:
            raise DWGFError(f"BoxInpainting: the {bh}x{bw} box is larger than the {height}x{width} image")
        if self.position is None:
            top = int(torch.randint(0, height - bh + 1, (1,), generator=generator, device=generator.device))
            left = int(torch.randint(0, width - bw + 1, (1,), generator=generator, device=generator.device))
        else:
            top, left = round(self.position[0] * sy), round(self.position[1] * sx)
            top, left = min(top, height - bh), min(left, width - bw)
        return top, left, bh, bw

    def sample_params(self, shape: tuple[int, int, int], generator: torch.Generator) -> Params:
        _, h, w = shape
        top, left, bh, bw = self.box(h, w, generator)
        # on the CPU: per-item parameters are made in the data loader; Lightning moves them with the batch
        mask = torch.ones(1, h, w)
        mask[:, top : top + bh, left : left + bw] = 0
        return {"mask": mask}


class RandomInpainting(_MaskOperator):
    """Each pixel is missing independently with probability ``missing`` (per item, all channels).

    Args:
        missing: fraction of missing pixels, in ``[0, 1)``. Default ``0.7``.
        sigma_y: measurement noise (see :class:`ForwardOperator`).
    """

    def __init__(self, missing: float = 0.7, sigma_y: float = 0.0):
        super().__init__(sigma_y)
        if not (0.0 <= missing < 1.0):
            raise argument_error("RandomInpainting", "missing", f" must be in [0, 1), got {missing}")
        self.missing = float(missing)

    def sample_params(self, shape: tuple[int, int, int], generator: torch.Generator) -> Params:
        _, h, w = shape
        return {"mask": (torch.rand(1, h, w, generator=generator, device=generator.device) >= self.missing).float()}
