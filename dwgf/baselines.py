"""Baseline solvers on the same prior, data, writer and seeds as DWGF.

- :class:`LatentDPS`: diffusion posterior sampling (Chung et al. 2023) in latent space: DDIM
  sampling of the prior, each step pushed down the gradient of ``||y - A(D(z0_hat(z_t)))||``.
- :class:`PSLD`: Latent DPS plus PSLD's "gluing" term (Rout et al. 2023).
- :class:`DecoderInversion`: Adam on the latents against the data term alone (no prior): the floor.
- RED-diff in latent space (Mardani et al. 2023) is not a class: it is :class:`~dwgf.solver.DWGF`
  with one particle and the score-distillation regularizer only (``configs/methods/reddiff.yaml``).

Each is selected by ``model.class_path`` in ``dwgf predict``. Every norm and every random draw is
per item, so that an item's result does not depend on the batch it is in.
"""

from __future__ import annotations

import contextlib
from typing import Optional

import torch

from dwgf.errors import DWGFError
from dwgf.flow import ItemNoise, item_generators, unet_precision
from dwgf.operators.base import ForwardOperator, Params, repeat_params
from dwgf.priors.base import LatentPrior
from dwgf.sampling import ddim_step, ddim_timesteps
from dwgf.schedules.step_size import StepSizeSchedule
from dwgf.solver import DWGF, InverseSolver


class LatentDPS(InverseSolver):
    """Latent diffusion posterior sampling: guided DDIM/DDPM in the prior's latent space.

    From ``z_T ~ N(0, I)``, for each of ``num_steps`` DDIM timesteps ``t -> t'``:
    ``eps_hat = eps_theta(z_t, t)``, ``z0_hat = (z_t - sqrt(1 - abar) eps_hat) / sqrt(abar)``,
    ``z_t' = sqrt(abar') z0_hat + sqrt(1 - abar' - s^2) eps_hat + s e - guidance * grad_{z_t} L``
    where ``s = eta sqrt((1 - abar') / (1 - abar) (1 - abar / abar'))`` (``eta = 1`` is DDPM-like
    ancestral sampling, ``eta = 0`` deterministic DDIM) and, per item,
    ``L = ||y - A(D(z0_hat))||`` over the measured entries (:meth:`ForwardOperator.residual_norm`).
    The gradient runs through the network and the decoder (one forward and one backward of each
    per step). With ``guidance = 0`` it is exactly :func:`dwgf.sampling.ddim_sample`.

    Args:
        prior: the frozen latent prior.
        num_steps: DDIM steps (network evaluations per particle). Default 200.
        num_particles: independent samples per measurement. Default 4.
        guidance: ``zeta``, the step on the measurement norm. Default 1.0.
        eta: DDIM stochasticity, in ``[0, 1]``. Default 1.0.
    """

    def __init__(self, prior: LatentPrior, num_steps: int = 200, num_particles: int = 4, guidance: float = 1.0, eta: float = 1.0):
        super().__init__(prior, num_particles)
        if num_steps < 1:
            raise DWGFError(f"--model.num_steps must be >= 1, got {num_steps}")
        if num_steps > prior.num_train_timesteps:
            raise DWGFError(f"--model.num_steps must be <= the prior's {prior.num_train_timesteps} timesteps, got {num_steps}")
        if not guidance >= 0:
            raise DWGFError(f"--model.guidance must be >= 0, got {guidance}")
        if not 0 <= eta <= 1:
            raise DWGFError(f"--model.eta must be in [0, 1], got {eta}")
        self.num_steps = int(num_steps)
        self.guidance = float(guidance)
        self.eta = float(eta)

    def guidance_loss(self, z0: torch.Tensor, x0: torch.Tensor, y: torch.Tensor, params: Params) -> torch.Tensor:
        """Per-sample loss whose gradient with respect to ``z_t`` guides the step, shape ``(B*N,)``."""
        return self.guidance * self.operator.residual_norm(x0, y, params)

    @property
    def guided(self) -> bool:
        return self.guidance > 0

    def solve(self, y: torch.Tensor, params: Params, seeds: torch.Tensor | list[int]) -> torch.Tensor:
        device = y.device
        unet_dtype = torch.get_autocast_dtype(device.type) if torch.is_autocast_enabled(device.type) else None
        with torch.enable_grad(), torch.autocast(device.type, enabled=False):
            return self._sample(y, params, ItemNoise(item_generators(seeds, device), device), unet_dtype)

    def _sample(self, y, params, draw: ItemNoise, unet_dtype) -> torch.Tensor:
        prior, b, n = self.prior, y.shape[0], self.num_particles
        z = draw((n, *prior.latent_shape)).flatten(0, 1)
        y_n, params_n = y.repeat_interleave(n, dim=0), repeat_params(params, n)
        ts = ddim_timesteps(self.num_steps, prior.num_train_timesteps).to(y.device)
        for i, t in enumerate(ts):
            tt = t.repeat(b * n)
            abar = prior.abar(tt).view(-1, 1, 1, 1)
            abar_prev = prior.abar(ts[i + 1].repeat(b * n)).view(-1, 1, 1, 1) if i + 1 < len(ts) else torch.ones_like(abar)
            z_in = z.detach().requires_grad_(self.guided)
            with contextlib.ExitStack() as stack:
                if not self.guided:
                    stack.enter_context(torch.no_grad())
                with unet_precision(y.device.type, unet_dtype):
                    eps = prior.eps(z_in, tt)
                z0 = (z_in - (1 - abar).sqrt() * eps) / abar.sqrt()
                noise = lambda: draw((n, *prior.latent_shape)).flatten(0, 1)  # noqa: E731
                z_next = ddim_step(z0.detach(), eps.detach(), abar, abar_prev, self.eta, noise)
                if self.guided:
                    loss = self.guidance_loss(z0, prior.decode(z0), y_n, params_n)
                    (grad,) = torch.autograd.grad(loss.sum(), z_in)
                    z_next = z_next - grad
            z = z_next.detach()
            self.report_iteration(i, len(ts))
        with torch.no_grad():
            x = prior.decode(z)
        return x.view(b, n, *x.shape[1:])


class PSLD(LatentDPS):
    """Posterior sampling with latent diffusion (Rout et al. 2023): Latent DPS plus "gluing".

    The guidance loss of :class:`LatentDPS` gains PSLD's term that keeps ``z0_hat`` a fixed point
    of the autoencoder once the decoded image is made consistent with the measurement:

        ``L = guidance * ||y - A(D(z0_hat))|| + gluing * ||z0_hat - E(A^T y + (I - A^T A) D(z0_hat))||``

    per item, with ``E`` the encoder's mean and the bracket :meth:`ForwardOperator.project`. The
    gradient runs through the encoder as well. Needs a linear operator (an adjoint).

    Args:
        prior, num_steps, num_particles, guidance, eta: as :class:`LatentDPS`.
        gluing: ``gamma``, the weight of the gluing term. Default 0.1.
    """

    def __init__(
        self, prior: LatentPrior, num_steps: int = 200, num_particles: int = 4, guidance: float = 1.0, eta: float = 1.0,
        gluing: float = 0.1,
    ):
        super().__init__(prior, num_steps, num_particles, guidance, eta)
        if not gluing >= 0:
            raise DWGFError(f"--model.gluing must be >= 0, got {gluing}")
        self.gluing = float(gluing)

    @property
    def guided(self) -> bool:
        return self.guidance > 0 or self.gluing > 0

    def check_operator(self, operator: ForwardOperator) -> None:
        if not operator.linear:
            raise DWGFError(f"PSLD needs a linear operator with an adjoint (A^T); {type(operator).__name__} is not linear: use LatentDPS or DWGF")

    def guidance_loss(self, z0: torch.Tensor, x0: torch.Tensor, y: torch.Tensor, params: Params) -> torch.Tensor:
        loss = super().guidance_loss(z0, x0, y, params)
        if self.gluing > 0:
            glued = self.prior.encode(self.operator.project(x0, y, params))
            loss = loss + self.gluing * (z0 - glued).flatten(1).norm(dim=1)
        return loss


class DecoderInversion(DWGF):
    """Adam on the latents against the data term alone, no prior: what the prior adds is measured against it.

    The same flow as :class:`~dwgf.solver.DWGF` (same initial particles, decoder noise and Adam)
    with no regularizer; the network is never called.

    Args:
        prior: the frozen latent prior.
        num_steps: Adam iterations. Default 200.
        num_particles: independent starts per measurement. Default 4.
        step_size: Adam's learning rate per iteration. Default ``ConstantStepSize(lr=1.0)``.
        betas: Adam's betas. Default ``(0.9, 0.999)``.
        decoder_noise: ``sigma_dec`` (see :class:`~dwgf.solver.DWGF`). Default 0.01.
    """

    def __init__(
        self,
        prior: LatentPrior,
        num_steps: int = 200,
        num_particles: int = 4,
        step_size: Optional[StepSizeSchedule] = None,
        betas: tuple[float, float] = (0.9, 0.999),
        decoder_noise: float = 0.01,
    ):
        super().__init__(prior, num_steps, num_particles, regularizers=[], step_size=step_size, betas=betas, decoder_noise=decoder_noise)
