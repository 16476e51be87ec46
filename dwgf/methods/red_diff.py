"""RED-diff in latent space (Mardani et al. 2023): DWGF's flow with the score-distillation regularizer alone.

With one particle (``Problem(num_particles=1)``) and the weighting ``(1 - abar) / sqrt(abar)``, the
``KLPrior`` force is ``sqrt((1 - abar) / abar) (eps_hat - eps)``: RED-diff's ``sigma_t / alpha_t``
weighting. With ``N > 1`` the particles are ``N`` independent RED-diff runs plus the paper's particle
term. ``configs/methods/reddiff.yaml`` is the same method in ``dwgf predict`` (``DWGF`` with these settings).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import torch

from dwgf.flow import FlowConfig, FlowSteps, dwgf_flow
from dwgf.draws import ItemDraws
from dwgf.priors.base import LatentPrior
from dwgf.problem import FlowState, Problem
from dwgf.regularizers.kl_prior import KLPrior
from dwgf.regularizers.weighting import DWGFWeighting
from dwgf.settings import at_least_zero


@dataclass(frozen=True, kw_only=True)
class RedDiffConfig(FlowSteps):
    """RED-diff's settings: :class:`~dwgf.flow.FlowSteps`' (the iterations, step size, optimiser, ...) and the weight
    of its one regularizer, ``KLPrior(weight, weighting=DWGFWeighting())``.

    Attributes:
        weight: the score-distillation term's weight ``w`` (>= 0). Default 0.25 (the untuned starting point of
            ``configs/methods/reddiff.yaml``).
        num_steps: see :class:`~dwgf.flow.FlowSteps` (likewise the other settings).
    """

    weight: float = 0.25

    def check(self) -> None:
        super().check()
        at_least_zero(self, "weight")

    def flow_config(self) -> FlowConfig:
        return FlowConfig(regularizers=(KLPrior(self.weight, weighting=DWGFWeighting()),), **self.steps())


def red_diff(prior: LatentPrior, problem: Problem, draw: Optional[ItemDraws] = None, *,
             callback: Optional[Callable[[FlowState], None]] = None, **settings) -> tuple[torch.Tensor, torch.Tensor]:
    """RED-diff's estimates ``B x N x C x H x W`` and ``failed_at`` ``(B,)``. ``settings``: :class:`RedDiffConfig`'s."""
    particles, _, failed_at = dwgf_flow(prior, problem, RedDiffConfig(**settings).flow_config(), draw, callback)
    return particles, failed_at


red_diff.settings_class = RedDiffConfig  # type: ignore[attr-defined] - the solver checks --model.settings before a run
