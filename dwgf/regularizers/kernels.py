"""Kernels between the particles of one item: squared distances, adaptive bandwidths, feature maps.

Everything here works item by item (``B x N x ...`` in, ``B x N x N`` or ``B`` out): particles of
different items never interact, so an item's result does not depend on its batch.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch

from dwgf.errors import DWGFError
from dwgf.reprs import ArgumentsRepr

if TYPE_CHECKING:
    from dwgf.draws import ItemDraws
    from dwgf.priors.base import LatentPrior
    from dwgf.problem import FlowState, Problem


def pairwise_sq(points: torch.Tensor) -> torch.Tensor:
    """``B x N x N`` squared Euclidean distances between the ``N`` points (flattened) of each item."""
    flat = points.flatten(2)
    return (flat.unsqueeze(2) - flat.unsqueeze(1)).square().sum(-1)


def median_bandwidth(sq: torch.Tensor) -> torch.Tensor:
    """SVGD's median heuristic as a Gaussian variance, per item: ``median_{i<j} ||x_i - x_j||^2 / (2 log(N + 1))``.

    With this variance ``exp(-||x_i - x_j||^2 / (2 h))`` is ``1 / (N + 1)`` at the median distance,
    so every particle keeps a few neighbours (Liu & Wang 2016 use ``log N``; ``N + 1`` keeps
    ``N = 2`` finite). Returns ``(B,)``; ``1`` for items with one particle (no pair, no force).
    """
    b, n = sq.shape[:2]
    if n < 2:
        return torch.ones(b, dtype=sq.dtype, device=sq.device)
    i, j = torch.triu_indices(n, n, offset=1, device=sq.device)
    med = sq[:, i, j].median(dim=1).values
    return (med / (2 * math.log(n + 1))).clamp_min(torch.finfo(sq.dtype).tiny)


def kernel_pull(points: torch.Tensor, var: torch.Tensor, at: torch.Tensor | None = None) -> torch.Tensor:
    """``sum_j w_ij (x_j - x_i) / h`` with ``w_ij = softmax_j(-||a_i - x_j||^2 / (2 h))``, per item.

    The score of the Gaussian kernel density estimate ``(1/N) sum_j N(x_j, h I)`` at ``a_i``, less
    the pull of ``a_i`` towards its own centre: ``score(a_i) - (x_i - a_i) / h``. ``at`` defaults to
    the points themselves (then it is the whole score at ``x_i``). ``var``: ``(B,)`` variances ``h``.
    """
    at = points if at is None else at
    b, n = points.shape[:2]
    flat, flat_at = points.reshape(b, n, -1), at.reshape(b, n, -1)
    sq = (flat_at.unsqueeze(2) - flat.unsqueeze(1)).square().sum(-1)
    h = var.reshape(b, 1, 1)
    w = torch.softmax(-sq / (2 * h), dim=-1)
    return ((torch.bmm(w, flat) - flat) / h).view_as(points)


class FeatureMap(ArgumentsRepr):
    """What an image-space kernel compares: ``features(images, state)`` maps ``M x C x H x W`` images
    to ``M x F`` features, differentiably (the repulsion takes its gradient with respect to the images).

    Subclass it to compare particles through a network of your own (e.g. DINO features, as RLSD does).
    The regularizer that holds it calls :meth:`start` once per batch with the prior, the problem and
    the items' noise, as the flow does for regularizers.
    """

    def start(self, prior: "LatentPrior", problem: "Problem", draw: "ItemDraws") -> None:
        """Called once per batch, before the first call; the default keeps nothing."""

    def __call__(self, images: torch.Tensor, state: "FlowState") -> torch.Tensor:
        raise NotImplementedError


class Pixels(FeatureMap):
    """The pixels themselves (free)."""

    def __call__(self, images: torch.Tensor, state: "FlowState") -> torch.Tensor:
        return images.flatten(1)


class EncoderFeatures(FeatureMap):
    """The autoencoder's posterior mean ``E(x)`` (one encoder forward and backward per iteration;
    never the decoder)."""

    def start(self, prior: "LatentPrior", problem: "Problem", draw: "ItemDraws") -> None:
        self._prior = prior

    def __call__(self, images: torch.Tensor, state: "FlowState") -> torch.Tensor:
        return self._prior.encode(images, None).flatten(1)


class NullSpace(FeatureMap):
    """What the measurement leaves free: ``(I - A^+ A) x``, the image less its part that the forward
    operator sees (``operator.project(x, 0)``). Inpainting: the unmeasured pixels; box
    super-resolution: each block less its mean. Particles compared this way are pushed apart only
    where the data cannot tell them apart, so the repulsion does not fight the data term. Linear
    operators only (free: one forward and one adjoint of the operator)."""

    def start(self, prior: "LatentPrior", problem: "Problem", draw: "ItemDraws") -> None:
        if not problem.operator.linear:
            raise DWGFError(f"NullSpace features need a linear forward operator, got {type(problem.operator).__name__}")
        self._operator, self._params = problem.operator, problem.params_n

    def __call__(self, images: torch.Tensor, state: "FlowState") -> torch.Tensor:
        zero = torch.zeros_like(self._operator.forward(images.detach(), self._params))
        return self._operator.project(images, zero, self._params).flatten(1)
