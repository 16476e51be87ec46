"""Latent DPS and PSLD: guided DDIM sampling of the prior.

Latent DPS (Chung et al. 2023, in latent space): DDIM sampling of the prior where each step also goes
down the gradient, with respect to ``z_t``, of ``guidance * d(D(z0_hat(z_t)); y)``, ``d`` the data
term's distance (:meth:`~dwgf.likelihoods.DataTerm.distance`; for the default
:class:`~dwgf.likelihoods.MeanSquaredError` the residual norm ``||y - A x||`` over the measured entries,
the DPS paper's). PSLD (Rout et al. 2023) adds ``gluing * ||z0_hat - E(P(D(z0_hat)))||``, with ``P``
the projection onto the measurement's solutions (``x + A^T (y - A x)``). Both back-propagate through
the network and the decoder at every step. :class:`dwgf.baselines.LatentDPS` and
:class:`dwgf.baselines.PSLD` run them in ``dwgf predict``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import torch

from dwgf.errors import DWGFError
from dwgf.draws import ItemDraws, item_generators
from dwgf.precision import float32_but_the_unet
from dwgf.priors.base import LatentPrior
from dwgf.problem import Problem, SamplerState, first_failures
from dwgf.sampling import ddim_loop
from dwgf.settings import Settings, at_least_zero, check_ddim_steps, positive, within


@dataclass(frozen=True, kw_only=True)
class DPSConfig(Settings):
    """Latent DPS's settings.

    Attributes:
        num_steps: DDIM steps (one network call, forward and backward, each; >= 1 and at most the prior's
            training timesteps). Default 200.
        guidance: ``zeta`` (>= 0), the data term's weight; 0 with ``gluing = 0`` is plain DDIM sampling. Default 1.
        eta: DDIM's stochasticity, in ``[0, 1]`` (1: DDPM-like, the DPS default; 0: deterministic). Default 1.
        gluing: PSLD's weight ``gamma`` (>= 0); 0 (the default) is Latent DPS.
    """

    num_steps: int = 200
    guidance: float = 1.0
    eta: float = 1.0
    gluing: float = 0.0

    def check(self) -> None:
        positive(self, "num_steps")
        at_least_zero(self, "guidance", "gluing")
        within(self, "eta", 0, 1)

    def check_prior(self, prior) -> None:
        check_ddim_steps(self, prior)


@dataclass(frozen=True, kw_only=True)
class PSLDConfig(DPSConfig):
    """PSLD's settings: :class:`DPSConfig` with ``gluing`` 0.1 by default, for a linear operator (an adjoint)."""

    gluing: float = 0.1

    def check_operator(self, operator) -> None:
        if not operator.linear:
            raise DWGFError(f"PSLD needs a linear operator with an adjoint (A^T); {type(operator).__name__} is not linear: "
                            "use LatentDPS or DWGF")


def latent_dps(prior: LatentPrior, problem: Problem, draw: Optional[ItemDraws] = None, *,
               callback: Optional[Callable[[SamplerState], None]] = None, **settings) -> tuple[torch.Tensor, torch.Tensor]:
    """Posterior samples ``B x N x C x H x W`` by Latent DPS, and ``failed_at`` ``(B,)`` (the first step at
    which an item's latents were not finite; ``-1``: never). ``settings``: :class:`DPSConfig`'s fields."""
    return _guided_ddim(prior, problem, draw, callback, DPSConfig(**settings))


def psld(prior: LatentPrior, problem: Problem, draw: Optional[ItemDraws] = None, *,
         callback: Optional[Callable[[SamplerState], None]] = None, **settings) -> tuple[torch.Tensor, torch.Tensor]:
    """Posterior samples by PSLD (Latent DPS plus gluing; a linear operator), and ``failed_at``.
    ``settings``: :class:`PSLDConfig`'s fields."""
    return _guided_ddim(prior, problem, draw, callback, PSLDConfig(**settings))


latent_dps.settings_class = DPSConfig  # type: ignore[attr-defined] - the solver checks --model.settings before a run
psld.settings_class = PSLDConfig  # type: ignore[attr-defined]


def _guided_ddim(prior: LatentPrior, problem: Problem, draw: Optional[ItemDraws], callback: Optional[Callable[[SamplerState], None]],
                config: DPSConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """Latent DPS (``config.gluing = 0``) or PSLD: :func:`~dwgf.sampling.ddim_loop` with the guidance loss."""
    config.check_prior(prior)
    config.check_operator(problem.operator)
    b, n = problem.batch, problem.num_particles
    device = problem.y.device
    draw = draw if draw is not None else ItemDraws(item_generators(range(b), "cpu"), device)
    operator, likelihood = problem.operator, problem.likelihood
    guidance, gluing = config.guidance, config.gluing
    failed_at = torch.full((b,), -1, dtype=torch.long, device=device)
    with float32_but_the_unet(device.type) as unet_dtype:
        latent_shape = prior.latent_shape_at(problem.size)
        z = draw((n, *latent_shape)).flatten(0, 1)

        def loss(z0: torch.Tensor) -> torch.Tensor:
            x0 = prior.flow_decode(z0)
            value = guidance * likelihood.distance(operator, x0, problem.y_n, problem.params_n)
            if gluing > 0:
                glued = prior.encode(operator.project(x0, problem.y_n, problem.params_n))
                value = value + gluing * (z0 - glued).flatten(1).norm(dim=1)
            return value

        def report(i: int, num: int, t: torch.Tensor, z_now: torch.Tensor) -> None:
            nonlocal failed_at
            z_items = z_now.view(b, n, *z_now.shape[1:])
            failed_at = first_failures(failed_at, z_items, i)
            if callback is not None:
                callback(SamplerState(z_items, t.view(b, n)[:, 0], i, num))

        guided = guidance > 0 or gluing > 0
        z = ddim_loop(prior, z, config.num_steps, config.eta, lambda: draw((n, *latent_shape)).flatten(0, 1),
                      guidance=loss if guided else None, unet_dtype=unet_dtype, callback=report, prompt=problem.prompt_n)
        with torch.no_grad():
            x = prior.decode(z)
    return x.view(b, n, *x.shape[1:]), failed_at

