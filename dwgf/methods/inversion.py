"""Decoder inversion: Adam on the latents against the data term alone, no prior (the floor every prior is measured against)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import torch

from dwgf.flow import FlowConfig, FlowSteps, dwgf_flow
from dwgf.draws import ItemDraws
from dwgf.priors.base import LatentPrior
from dwgf.problem import FlowState, Problem


@dataclass(frozen=True, kw_only=True)
class InversionConfig(FlowSteps):
    """Decoder inversion's settings: :class:`~dwgf.flow.FlowSteps`' with no regularizer (the same initial particles,
    decoder noise and Adam as DWGF; the network is never called).

    Attributes:
        num_steps: Adam iterations (>= 1). Default 200.
        step_size: see :class:`~dwgf.flow.FlowSteps` (likewise the other settings).
    """

    num_steps: int = 200

    def flow_config(self) -> FlowConfig:
        return FlowConfig(regularizers=(), **self.steps())


def decoder_inversion(prior: LatentPrior, problem: Problem, draw: Optional[ItemDraws] = None, *,
                      callback: Optional[Callable[[FlowState], None]] = None, **settings) -> tuple[torch.Tensor, torch.Tensor]:
    """The inverted latents' images ``B x N x C x H x W`` and ``failed_at`` ``(B,)``. ``settings``: :class:`InversionConfig`'s."""
    particles, _, failed_at = dwgf_flow(prior, problem, InversionConfig(**settings).flow_config(), draw, callback)
    return particles, failed_at


decoder_inversion.settings_class = InversionConfig  # type: ignore[attr-defined] - the solver checks --model.settings before a run
