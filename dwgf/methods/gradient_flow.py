"""DWGF as a method: the flow of :mod:`dwgf.flow` with its settings (:class:`~dwgf.flow.FlowConfig`) as keywords."""

from __future__ import annotations

from typing import Callable, Optional

import torch

from dwgf.flow import FlowConfig, dwgf_flow
from dwgf.draws import ItemDraws
from dwgf.priors.base import LatentPrior
from dwgf.problem import FlowState, Problem


def dwgf(prior: LatentPrior, problem: Problem, draw: Optional[ItemDraws] = None, *,
         callback: Optional[Callable[[FlowState], None]] = None, **settings) -> tuple[torch.Tensor, torch.Tensor]:
    """DWGF's particles ``B x N x C x H x W`` (decoded, unclamped) and ``failed_at`` ``(B,)``.

    ``settings``: :class:`~dwgf.flow.FlowConfig`'s fields (``num_steps``, ``regularizers``, ``optimizer``,
    ...); the ones not given are the paper's. :func:`~dwgf.flow.dwgf_flow` also returns the latents.
    """
    particles, _, failed_at = dwgf_flow(prior, problem, FlowConfig(**settings), draw, callback)
    return particles, failed_at


dwgf.settings_class = FlowConfig  # type: ignore[attr-defined] - the solver checks --model.settings before a run
