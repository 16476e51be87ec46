"""The regularizer interface: a force (a gradient) on the particles, in latent or image space."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal, Optional

import torch
from dwgf.reprs import ArgumentsRepr

if TYPE_CHECKING:
    from dwgf.draws import ItemDraws
    from dwgf.priors.base import LatentPrior
    from dwgf.problem import FlowState, Problem


class Regularizer(ArgumentsRepr):
    """A term of the flow's objective, given by its gradient ("force") on the particles.

    The flow calls :meth:`start` once per batch with the prior, the :class:`~dwgf.problem.Problem`
    and the items' noise (:class:`~dwgf.draws.ItemDraws`), then :meth:`force` once per iteration with
    the current :class:`~dwgf.problem.FlowState` (tensors and the iteration only). A regularizer that
    needs the prior (to encode), the operator or random draws keeps them from :meth:`start`.
    A ``"latent"`` regularizer returns a tensor shaped like ``state.z`` (``B x N x c x h x w``); an
    ``"image"`` regularizer one shaped like ``state.x`` (``B x N x C x H x W``). The flow sums the
    image-space forces with the data term's gradient and pulls them back through the decoder in one
    vector-Jacobian product, so adding regularizers adds no decoder backward pass.

    Forces are gradients of *per-particle normalised* terms: a mean over one particle's elements,
    summed over particles, so results do not depend on how many items share a batch.

    Set ``needs_eps = True`` to read ``state.eps_hat`` (the network's noise prediction at
    ``state.z_t``); the flow then evaluates the network once per iteration, shared by all.

    Moves that are not gradients (injected noise) are the optimiser's, not a regularizer's:
    :class:`~dwgf.optimizers.LangevinNoise`.

    To add one, subclass this in any module and list it by ``class_path`` under
    ``model.regularizers``.
    """

    space: Literal["latent", "image"] = "latent"
    needs_eps: bool = False

    def start(self, prior: "LatentPrior", problem: "Problem", draw: "ItemDraws") -> None:
        """Called once per batch, before the first :meth:`force`; the default keeps nothing."""

    def force(self, state: "FlowState") -> torch.Tensor:
        raise NotImplementedError

    def curvature(self, state: "FlowState") -> Optional[torch.Tensor]:
        """An upper bound on the largest curvature of this term at the iteration, per item ``(B,)``, or
        ``None`` (the default: unknown). :class:`~dwgf.optimizers.Langevin` keeps its step below
        ``safety`` over the sum of the known bounds and the data term's curvature."""
        return None
