"""A user's own regularizer, forward operator and step-size schedule for dwgf.

Nothing here is part of dwgf: the classes live in this module and ``dwgf predict`` finds them by
``class_path`` (see ``scanlines.yaml`` next to this file). From the repository root::

    PYTHONPATH=examples/extending dwgf predict --config examples/extending/scanlines.yaml

CONTRIBUTING.md walks through each class; ``tests/test_extending.py`` runs this example.
"""

from __future__ import annotations

from typing import Optional

import torch

from dwgf.errors import DWGFError
from dwgf.operators import ForwardOperator
from dwgf.regularizers import Regularizer
from dwgf.schedules import StepSizeSchedule


# --8<-- [start:operator]
class ScanlineDropout(ForwardOperator):
    """Every ``period``-th image row is lost (a scanner that drops lines), from a per-item offset.

    ``A(x) = m * x`` with ``m`` zero on rows ``offset, offset + period, ...``; linear, so PSLD-type
    solvers can use it too (the adjoint is derived automatically from ``forward``).
    """

    linear = True

    def __init__(self, period: int = 3, sigma_y: float = 0.0):
        super().__init__(sigma_y)
        if period < 2:
            raise DWGFError(f"ScanlineDropout: period must be >= 2, got {period}")
        self.period = int(period)

    def sample_params(self, shape, generator):
        _, h, w = shape
        offset = int(torch.randint(self.period, (1,), generator=generator))  # from the item's generator
        keep = (torch.arange(h) % self.period != offset).float()
        return {"mask": keep.view(1, h, 1).expand(1, h, w).clone()}

    def forward(self, x, params):
        return x * params["mask"]

    def measured(self, params):
        return params["mask"]  # only the kept rows count in the data term
# --8<-- [end:operator]


# --8<-- [start:regularizer]
class TotalVariation(Regularizer):
    """Smoothed total variation of each decoded particle, ``sum sqrt(dx^2 + dy^2 + eps^2)``.

    An image-space force: the flow adds it to the data term's gradient and pulls both back through
    the decoder in its one vector-Jacobian product. Normalised per pixel, like the data term.
    """

    space = "image"

    def __init__(self, weight: float = 0.01, eps: float = 0.01):
        self.weight = float(weight)
        self.eps = float(eps)

    def force(self, state):
        with torch.enable_grad():
            x = state.x.detach().requires_grad_(True)  # B x N x C x H x W
            dx = x[..., :, 1:] - x[..., :, :-1]
            dy = x[..., 1:, :] - x[..., :-1, :]
            tv = (dx[..., :-1, :].square() + dy[..., :, :-1].square() + self.eps**2).sqrt().sum()
            (grad,) = torch.autograd.grad(tv, x)
        return self.weight * grad / x[0, 0].numel()
# --8<-- [end:regularizer]


# --8<-- [start:schedule]
class StepDecay(StepSizeSchedule):
    """``lr`` times ``factor`` after every ``every`` iterations (a staircase)."""

    def __init__(self, lr: float = 0.3, factor: float = 0.5, every: int = 50, final_lr: Optional[float] = None):
        super().__init__(lr)
        if not 0 < factor <= 1 or every < 1:
            raise DWGFError(f"StepDecay: need 0 < factor <= 1 and every >= 1, got factor={factor}, every={every}")
        self.factor, self.every = float(factor), int(every)
        self.final_lr = final_lr

    def __call__(self, k, num_iterations):
        lr = self.lr * self.factor ** (k // self.every)
        return max(lr, self.final_lr) if self.final_lr is not None else lr
# --8<-- [end:schedule]
