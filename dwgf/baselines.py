"""Baseline solvers on the same prior, data, writer and seeds as DWGF.

- :class:`LatentDPS`: diffusion posterior sampling (Chung et al. 2023) in latent space: DDIM
  sampling of the prior, each step pushed down the gradient of ``||y - A(D(z0_hat(z_t)))||``
  (the data term's distance, :meth:`~dwgf.likelihoods.DataTerm.distance`).
- :class:`PSLD`: Latent DPS plus PSLD's "gluing" term (Rout et al. 2023).
- :class:`DecoderInversion`: Adam on the latents against the data term alone (no prior): the floor.
- RED-diff in latent space (Mardani et al. 2023) has no class: it is :class:`~dwgf.solver.DWGF`
  with one particle and the score-distillation regularizer only (``configs/methods/reddiff.yaml``;
  :func:`dwgf.methods.red_diff` in Python).

Each is the options of a method function of :mod:`dwgf.methods` (``latent_dps``, ``psld``,
``decoder_inversion``) over :class:`~dwgf.solver.InverseSolver`, selected by ``model.class_path``
in ``dwgf predict``; every one honours ``--model.likelihood``.

Each is selected by ``model.class_path`` in ``dwgf predict``. Every norm and every random draw is
per item, so that an item's result does not depend on the batch it is in.
"""

from __future__ import annotations

from typing import Literal, Optional

from dwgf.likelihoods.base import DataTerm
from dwgf.methods.dps import DPSConfig, PSLDConfig, latent_dps, psld
from dwgf.methods.inversion import InversionConfig, decoder_inversion
from dwgf.optimizers.base import Adam
from dwgf.priors.base import LatentPrior
from dwgf.schedules.step_size import StepSizeSchedule
from dwgf.solver import DWGF, NUM_PARTICLES, InverseSolver


class LatentDPS(InverseSolver):
    """Latent diffusion posterior sampling: guided DDIM/DDPM in the prior's latent space.

    From ``z_T ~ N(0, I)``, for each of ``num_steps`` DDIM timesteps ``t -> t'``:
    ``eps_hat = eps_theta(z_t, t)``, ``z0_hat = (z_t - sqrt(1 - abar) eps_hat) / sqrt(abar)``,
    ``z_t' = sqrt(abar') z0_hat + sqrt(1 - abar' - s^2) eps_hat + s e - guidance * grad_{z_t} L``
    where ``s = eta sqrt((1 - abar') / (1 - abar) (1 - abar / abar'))`` (``eta = 1`` is DDPM-like
    ancestral sampling, ``eta = 0`` deterministic DDIM) and, per item,
    ``L = ||y - A(D(z0_hat))||`` over the measured entries (the default data term's distance,
    :meth:`~dwgf.likelihoods.DataTerm.distance`; ``--model.likelihood GaussianLikelihood`` whitens it
    by ``sigma``, ``PoissonLikelihood`` takes the Poisson deviance).
    The gradient runs through the network and the decoder (one forward and one backward of each
    per step). With ``guidance = 0`` it is exactly :func:`dwgf.sampling.ddim_sample`.

    Args:
        prior: the frozen latent prior.
        num_steps: DDIM steps (network evaluations per particle). Default 200.
        num_particles: independent samples per measurement. Default 4.
        guidance: ``zeta``, the step on the measurement norm. Default 1.0.
        eta: DDIM stochasticity, in ``[0, 1]``. Default 1.0.
        likelihood: see :class:`~dwgf.solver.InverseSolver`.
        generator: see :class:`~dwgf.solver.InverseSolver`.
        tf32: see :class:`~dwgf.solver.InverseSolver`.
        calibration: see :class:`~dwgf.solver.InverseSolver`.
    """

    def __init__(self, prior: LatentPrior, num_steps: int = DPSConfig.num_steps, num_particles: int = NUM_PARTICLES,
                 guidance: float = DPSConfig.guidance, eta: float = DPSConfig.eta, generator: Literal["cpu", "device"] = "cpu",
                 tf32: bool = True, likelihood: Optional[DataTerm] = None, calibration: Optional[str] = None):
        super().__init__(prior, latent_dps, num_particles=num_particles, likelihood=likelihood, generator=generator, tf32=tf32,
                         calibration=calibration)
        self.config = DPSConfig.of(self, dict(num_steps=num_steps, guidance=guidance, eta=eta), prior=prior)


class PSLD(LatentDPS):
    """Posterior sampling with latent diffusion (Rout et al. 2023): Latent DPS plus "gluing".

    The guidance loss of :class:`LatentDPS` gains PSLD's term that keeps ``z0_hat`` a fixed point
    of the autoencoder once the decoded image is made consistent with the measurement:

        ``L = guidance * ||y - A(D(z0_hat))|| + gluing * ||z0_hat - E(A^T y + (I - A^T A) D(z0_hat))||``

    per item, with ``E`` the encoder's mean and the bracket :meth:`ForwardOperator.project`. The
    gradient runs through the encoder as well. Needs a linear operator (an adjoint).

    Args:
        prior: as :class:`LatentDPS`.
        num_steps: as :class:`LatentDPS`.
        num_particles: as :class:`LatentDPS`.
        guidance: as :class:`LatentDPS`.
        eta: as :class:`LatentDPS`.
        gluing: ``gamma``, the weight of the gluing term. Default 0.1.
        likelihood: see :class:`~dwgf.solver.InverseSolver`.
        generator: see :class:`~dwgf.solver.InverseSolver`.
        tf32: see :class:`~dwgf.solver.InverseSolver`.
        calibration: see :class:`~dwgf.solver.InverseSolver`.
    """

    def __init__(
        self, prior: LatentPrior, num_steps: int = PSLDConfig.num_steps, num_particles: int = NUM_PARTICLES,
        guidance: float = PSLDConfig.guidance, eta: float = PSLDConfig.eta, gluing: float = PSLDConfig.gluing,
        generator: Literal["cpu", "device"] = "cpu", tf32: bool = True, likelihood: Optional[DataTerm] = None, calibration: Optional[str] = None,
    ):
        InverseSolver.__init__(self, prior, psld, num_particles=num_particles, likelihood=likelihood, generator=generator, tf32=tf32,
                               calibration=calibration)
        self.config = PSLDConfig.of(self, dict(num_steps=num_steps, guidance=guidance, eta=eta, gluing=gluing), prior=prior)


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
        float32_autoencoder: see :class:`~dwgf.solver.DWGF`.
        decoder_chunk: see :class:`~dwgf.solver.DWGF`.
        generator: see :class:`~dwgf.solver.DWGF`.
        tf32: see :class:`~dwgf.solver.DWGF`.
        likelihood: see :class:`~dwgf.solver.DWGF`.
        calibration: see :class:`~dwgf.solver.DWGF`.
    """

    def __init__(
        self,
        prior: LatentPrior,
        num_steps: int = InversionConfig.num_steps,
        num_particles: int = NUM_PARTICLES,
        step_size: Optional[StepSizeSchedule] = None,
        betas: tuple[float, float] = Adam.DEFAULT_BETAS,
        decoder_noise: float = InversionConfig.decoder_noise,
        float32_autoencoder: bool = InversionConfig.float32_autoencoder,
        decoder_chunk: Optional[int] = InversionConfig.decoder_chunk,
        generator: Literal["cpu", "device"] = "cpu",
        tf32: bool = True,
        likelihood: Optional[DataTerm] = None,
        calibration: Optional[str] = None,
    ):
        InverseSolver.__init__(self, prior, decoder_inversion, num_particles=num_particles, likelihood=likelihood, generator=generator,
                               tf32=tf32, calibration=calibration)
        options = dict(num_steps=num_steps, step_size=step_size, optimizer=self._optimizer(None, betas), decoder_noise=decoder_noise,
                       float32_autoencoder=float32_autoencoder, decoder_chunk=decoder_chunk)
        self.config = self.flow_options(options, prior, InversionConfig)
        self.log_images_every, self.compile_networks = None, False
