"""RED-diff in latent space (Mardani et al. 2023): DWGF's flow with the score-distillation regularizer alone.

With one particle (``Problem(num_particles=1)``) and the weighting ``(1 - abar) / sqrt(abar)``, the
``KLPrior`` force is ``sqrt((1 - abar) / abar) (eps_hat - eps)``: RED-diff's ``sigma_t / alpha_t``
weighting. With ``N > 1`` the particles are ``N`` independent RED-diff runs plus the paper's particle
term. ``configs/methods/reddiff.yaml`` is the same method in ``dwgf predict`` (``DWGF`` with these settings).
"""

from __future__ import annotations

from typing import Callable, Optional

import torch

from dwgf.flow import FlowConfig, dwgf_flow
from dwgf.noise import ItemNoise
from dwgf.priors.base import LatentPrior
from dwgf.problem import FlowState, Problem
from dwgf.regularizers.kl_prior import KLPrior
from dwgf.regularizers.weighting import DWGFWeighting


def red_diff_config(weight: float = 0.25, **settings) -> FlowConfig:
    """RED-diff's settings: a :class:`~dwgf.flow.FlowConfig` whose only regularizer is ``KLPrior(weight, DWGFWeighting)``
    (the untuned starting point of ``configs/methods/reddiff.yaml``); other ``settings`` as :class:`~dwgf.flow.FlowConfig`'s."""
    if "regularizers" in settings:
        raise TypeError("red_diff: the regularizer is RED-diff's own; give its weight, or use dwgf() for other regularizers")
    return FlowConfig(regularizers=(KLPrior(weight, weighting=DWGFWeighting()),), **settings)


def red_diff(prior: LatentPrior, problem: Problem, draw: Optional[ItemNoise] = None, *,
             callback: Optional[Callable[[FlowState], None]] = None, **settings) -> tuple[torch.Tensor, torch.Tensor]:
    """RED-diff's estimates ``B x N x C x H x W`` and ``failed_at`` ``(B,)``. ``settings``: :func:`red_diff_config`'s."""
    particles, _, failed_at = dwgf_flow(prior, problem, red_diff_config(**settings), draw, callback)
    return particles, failed_at
