"""The encoder-consistency (data-prior) term: decoded images should survive a round trip."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from dwgf.regularizers.base import Regularizer

if TYPE_CHECKING:
    from dwgf.draws import ItemDraws
    from dwgf.priors.base import LatentPrior
    from dwgf.problem import FlowState, Problem


class EncoderConsistency(Regularizer):
    """Pulls each decoded particle towards its autoencoder reconstruction (the paper's data-prior term through the autoencoder, arXiv 2509.19276).

    With ``x^i = D(z^i)`` and the iteration's decoder noise ``n^i``, and no gradient through the
    autoencoder, ``c^i = x^i - D(E(x^i + n^i))``; the force on ``x^i`` is ``weight * c^i / P`` with
    ``P`` the number of elements of one image. ``E`` samples the encoder's posterior with noise
    from the item's generator. Costs one encoder and one decoder forward per iteration. ``D`` is
    the decoder the flow differentiates (the prior's ``flow_decoder`` when it has one), so that
    ``x`` and its reconstruction come from the same decoder.

    Args:
        weight: ``beta``. Default 0.1 (the reference).
    """

    space = "image"

    def __init__(self, weight: float = 0.1):
        self.weight = float(weight)

    def start(self, prior: "LatentPrior", problem: "Problem", draw: "ItemDraws") -> None:
        self._prior, self._draw = prior, draw

    def force(self, state: "FlowState") -> torch.Tensor:
        b, n = state.x.shape[:2]
        noise = self._draw((n, *state.z.shape[2:])).flatten(0, 1)
        with torch.no_grad():
            rec = self._prior.flow_decode(self._prior.encode((state.x + state.x_noise).flatten(0, 1), noise))
        c = state.x - rec.view_as(state.x)
        return self.weight * c / state.x[0, 0].numel()
