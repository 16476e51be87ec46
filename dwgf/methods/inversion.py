"""Decoder inversion: Adam on the latents against the data term alone, no prior (the floor every prior is measured against)."""

from __future__ import annotations

from typing import Callable, Optional

import torch

from dwgf.flow import FlowConfig, dwgf_flow
from dwgf.noise import ItemNoise
from dwgf.priors.base import LatentPrior
from dwgf.problem import FlowState, Problem


def inversion_config(num_steps: int = 200, **settings) -> FlowConfig:
    """Decoder inversion's settings: a :class:`~dwgf.flow.FlowConfig` with no regularizer and 200 iterations by
    default (the same initial particles, decoder noise and Adam as DWGF; the network is never called)."""
    if "regularizers" in settings:
        raise TypeError("decoder_inversion: has no regularizer; use dwgf() for a flow with regularizers")
    return FlowConfig(num_steps=num_steps, regularizers=(), **settings)


def decoder_inversion(prior: LatentPrior, problem: Problem, draw: Optional[ItemNoise] = None, *,
                      callback: Optional[Callable[[FlowState], None]] = None, **settings) -> tuple[torch.Tensor, torch.Tensor]:
    """The inverted latents' images ``B x N x C x H x W`` and ``failed_at`` ``(B,)``. ``settings``: :func:`inversion_config`'s."""
    particles, _, failed_at = dwgf_flow(prior, problem, inversion_config(**settings), draw, callback)
    return particles, failed_at
