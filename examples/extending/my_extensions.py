"""A user's own regularizer, forward operator, step-size schedule and method (solver) for dwgf.

Nothing here is part of dwgf: the classes live in this module and ``dwgf predict`` finds them by
``class_path`` (see ``scanlines.yaml`` and ``latent_map.yaml`` next to this file). From the repository root::

    PYTHONPATH=examples/extending dwgf predict --config examples/extending/scanlines.yaml
    PYTHONPATH=examples/extending dwgf predict --config configs/mnist/box_inpaint.yaml \
        --config examples/extending/latent_map.yaml --data.images examples/mnist --output out/map

The documentation's "Extending dwgf" page walks through each class; ``tests/test_extending.py`` runs
this example and checks that the page shows this code.
"""

from __future__ import annotations

from typing import Optional

import torch

from dwgf.errors import DWGFError
from dwgf.operators import ForwardOperator, repeat_params
from dwgf.priors import LatentPrior
from dwgf.regularizers import Regularizer
from dwgf.schedules import StepSizeSchedule
from dwgf.solver import InverseSolver


# --8<-- [start:function]
def square_law(x, params, scale=1.0):
    """A square-law detector, ``scale * x^2``: a nonlinear operator as a plain function (``FunctionOperator``)."""
    return scale * x.square()  # x: B x C x H x W in [-1, 1]; one output row per image
# --8<-- [end:function]


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


# --8<-- [start:method]
class LatentMAP(InverseSolver):
    """A method of one's own: the latent that best explains the measurement under the autoencoder's
    own Gaussian latent prior, ``min_z 1/2 mean (y - A(D(z)))^2 + weight/2 mean z^2``, by Adam from
    ``N`` random starts per item. No diffusion network: a baseline for what the diffusion prior adds.
    """

    def __init__(self, prior: LatentPrior, num_particles: int = 4, num_steps: int = 200, lr: float = 0.1, weight: float = 0.01):
        super().__init__(prior, num_particles)
        if num_steps < 1 or not lr > 0 or not weight >= 0:
            raise DWGFError(f"LatentMAP: need num_steps >= 1, lr > 0, weight >= 0, got {num_steps}, {lr}, {weight}")
        self.num_steps, self.lr, self.weight = int(num_steps), float(lr), float(weight)

    def solve(self, y, params, seeds, size=None, prompts=None):
        b, n = y.shape[0], self.num_particles
        draw = self.item_noise(seeds, y.device)  # each item's numbers from its own seed (CPU generators by default)
        z = draw((n, *self.prior.latent_shape_at(size))).flatten(0, 1)  # B*N starting latents
        y_n, params_n = y.repeat_interleave(n, 0), repeat_params(params, n)
        with torch.enable_grad():  # dwgf predict runs solvers without inference mode, but under no_grad
            z.requires_grad_(True)
            adam = torch.optim.Adam([z], lr=self.lr)
            for k in range(self.num_steps):
                loss = self.operator.data_loss(self.prior.decode(z), y_n, params_n) + 0.5 * self.weight * z.square().flatten(1).mean(1)
                adam.zero_grad()
                loss.sum().backward()  # the prior is frozen: only z gets a gradient
                adam.step()
                self.report_iteration(k, self.num_steps)  # progress, and a clean stop on SIGTERM / Ctrl-C
        with torch.no_grad():
            x = self.prior.decode(z)
        return x.view(b, n, *x.shape[1:])
# --8<-- [end:method]
