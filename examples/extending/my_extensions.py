"""A user's own regularizer, forward operator, step-size schedule, optimiser, method and prior family for dwgf.

Nothing here is part of dwgf: the classes and functions live in this module and ``dwgf predict``
finds them by ``class_path`` and by name (see ``scanlines.yaml`` and ``latent_map.yaml`` next to this file). From the repository root::

    PYTHONPATH=examples/extending dwgf predict --config examples/extending/scanlines.yaml
    PYTHONPATH=examples/extending dwgf predict --config configs/mnist/box_inpaint.yaml \
        --config examples/extending/latent_map.yaml --data.images examples/mnist --output out/map

The documentation's "Extending dwgf" page walks through each class; ``tests/test_extending.py`` runs
this example and checks that the page shows this code.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from dwgf.errors import DWGFError
from dwgf.operators import ForwardOperator
from dwgf.optimizers import FlowOptimizer
from dwgf.priors import Denoiser, DenoiserAdapter, DiffusersLatentPrior, Folder, ddpm_shapes, unet_call
from dwgf.problem import SamplerState, first_failures
from dwgf.regularizers import Regularizer
from dwgf.schedules import StepSizeSchedule


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
@dataclass(frozen=True)
class LatentMAPSettings:
    """``latent_map``'s settings: Adam's iterations and step, and the weight of the Gaussian latent prior."""

    num_steps: int = 200
    lr: float = 0.1
    weight: float = 0.01

    def __post_init__(self):
        if self.num_steps < 1 or not self.lr > 0 or not self.weight >= 0:
            raise DWGFError(f"latent_map: need num_steps >= 1, lr > 0, weight >= 0, got {self.num_steps}, {self.lr}, {self.weight}")


def latent_map(prior, problem, draw, *, callback=None, **settings):
    """A method of one's own: the latent that best explains the measurement under the autoencoder's
    own Gaussian latent prior, ``min_z data term(D(z)) + weight/2 mean z^2``, by Adam from ``N``
    random starts per item. No diffusion network: a baseline for what the diffusion prior adds.
    Returns the particles ``B x N x C x H x W`` and the first iteration at which an item failed (``-1``: never).
    """
    s = LatentMAPSettings(**settings)
    b, n = problem.batch, problem.num_particles
    z = draw((n, *prior.latent_shape_at(problem.size))).flatten(0, 1)  # B*N starts, each item's from its own seed
    failed_at = torch.full((b,), -1, dtype=torch.long, device=z.device)
    with torch.enable_grad():  # dwgf predict runs methods without inference mode, but under no_grad
        z.requires_grad_(True)
        adam = torch.optim.Adam([z], lr=s.lr)
        for k in range(s.num_steps):
            x = prior.decode(z)
            data = problem.likelihood.loss(problem.operator, x, problem.y_n, problem.params_n)  # --model.likelihood
            loss = data + 0.5 * s.weight * z.square().flatten(1).mean(1)
            adam.zero_grad()
            loss.sum().backward()  # the prior is frozen: only z gets a gradient
            adam.step()
            failed_at = first_failures(failed_at, z.detach().view(b, n, -1), k)
            if callback is not None:  # progress, logging, and a clean stop on SIGTERM / Ctrl-C
                callback(SamplerState(z.detach().view(b, n, *z.shape[1:]), torch.zeros(b, dtype=torch.long), k, s.num_steps))
    with torch.no_grad():
        x = prior.decode(z)
    return x.view(b, n, *x.shape[1:]), failed_at
# --8<-- [end:method]


# --8<-- [start:prior]
class SampleAdapter(DenoiserAdapter):
    """A network that predicts the clean latent ``z0`` (diffusers' ``prediction_type: sample``), in the flow's
    terms: ``eps_hat = (z_t - sqrt(abar) z0_hat) / sqrt(1 - abar)``."""

    prediction_type = "sample"

    def eps(self, prior, z_t, t, latent, out):
        abar = prior.abar(t, z_t).view(-1, *([1] * (z_t.dim() - 1)))
        return (z_t - abar.sqrt() * out) / (1 - abar).sqrt()

    def predict(self, prior, z_t, t, latent, out):
        return self.eps(prior, z_t, t, latent, out), out


class SamplePredictionPrior(DiffusersLatentPrior):
    """A prior family of one's own: an unconditional UNet2DModel trained to predict ``z0``, read from a diffusers
    folder whose ``model_index.json`` names the pipeline ``SamplePredictionPipeline`` (``load_prior`` then picks
    this class). The recipe reads the parts; the rest (the flow's time and coordinates, precision, the
    flow decoder, shapes) is the composed prior's."""

    pipelines = ("SamplePredictionPipeline",)

    def __init__(self, pretrained: str, channels_last: bool = True):
        from diffusers import UNet2DModel

        folder = Folder(pretrained, type(self).__name__)
        autoencoder = folder.autoencoder()
        schedule, _ = folder.ddpm_schedule(predictions=("sample",))
        unet = folder.load(UNet2DModel, "unet")
        super().__init__(autoencoder, Denoiser(unet, unet_call), schedule, SampleAdapter(), **ddpm_shapes(unet, autoencoder),
                         channels_last=channels_last, pretrained=pretrained)
# --8<-- [end:prior]


# --8<-- [start:optimizer]
class HeavyBall(FlowOptimizer):
    """Polyak's heavy ball on the particles: ``m <- beta m + grad``, ``z <- z - lr_k m``. ``beta = 0`` is gradient
    descent; the momentum is each particle's own, so items stay independent of their batch.

    Args:
        beta: the momentum, in ``[0, 1)``. Default 0.9.
    """

    def __init__(self, beta: float = 0.9):
        if not 0 <= beta < 1:
            raise DWGFError(f"HeavyBall: beta must be in [0, 1), got {beta}")
        self.beta = float(beta)

    def start(self, z, lr, data_gradient, draw):
        self._momentum = torch.zeros_like(z)  # a new batch: no momentum yet

    def step(self, z, grad, lr, state):
        self._momentum.mul_(self.beta).add_(grad)
        z.sub_(lr * self._momentum)
# --8<-- [end:optimizer]
