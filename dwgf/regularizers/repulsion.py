"""Kernel repulsion between the particles of one item (SVGD's repulsive term; RLSD's in image space)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal, Optional, Union

import torch

from dwgf.errors import argument_error
from dwgf.regularizers.base import Regularizer
from dwgf.regularizers.kernels import FeatureMap, Pixels, median_bandwidth, pairwise_sq
from dwgf.regularizers.weighting import ConstantWeighting, TimeWeighting

if TYPE_CHECKING:
    from dwgf.draws import ItemDraws
    from dwgf.priors.base import LatentPrior
    from dwgf.problem import FlowState, Problem


class KernelRepulsion(Regularizer):
    """Pushes each particle away from the others of its item.

    The term of particle ``i`` is ``E^i = weight * lambda(abar_t) * (1/N) sum_j k(u^i, u^j)`` with the
    Gaussian kernel ``k(u, v) = exp(-||u - v||^2 / (2 h))`` between features ``u^i = phi(x^i)`` of the
    decoded particles (``space="image"``) or the latents themselves (``space="latent"``), and ``h``
    SVGD's median heuristic, ``scale * median_{i<j} ||u^i - u^j||^2 / (2 log(N + 1))``, recomputed
    every iteration (``bandwidth`` a number fixes it). Its gradient, the force, is

        ``weight * lambda(abar_t) * (1/N) sum_j k_ij * J_phi(x^i)^T (u^j - u^i) / h``

    (descending it moves ``u^i`` away from every ``u^j``, most from the nearest). A kernel value is
    a number in ``[0, 1]`` per particle, like the data term's mean over elements, so ``weight`` is on
    the data term's scale whatever the dimension. This is the repulsive half of SVGD (Liu & Wang
    2016) and RLSD's repulsion (which compares DINO features; ``features`` takes any
    :class:`~dwgf.regularizers.kernels.FeatureMap`).

    In image space the force joins the data term's gradient before the flow's one vector-Jacobian
    product through the decoder, so it adds no decoder backward pass; :class:`Pixels` costs nothing
    beyond an ``N x N`` distance matrix per item, :class:`NullSpace` (only what the measurement leaves
    free: the unmeasured pixels of an inpainting) one operator forward and adjoint,
    :class:`EncoderFeatures` one encoder forward and backward.

    Args:
        weight: the repulsion's weight. Default 0.01.
        space: ``"image"`` (default) or ``"latent"``.
        features: the feature map of an image-space kernel: :class:`Pixels` (default),
            :class:`NullSpace`, :class:`EncoderFeatures` or your own.
        bandwidth: ``"median"`` (default) or a fixed variance ``h``.
        scale: multiplies the median heuristic. Default 1.
        weighting: ``lambda(abar_t)``, how the repulsion follows the diffusion time. Default
            :class:`ConstantWeighting`: it holds the particles apart to the last iteration.
    """

    def __init__(self, weight: float = 0.01, space: Literal["image", "latent"] = "image", features: Optional[FeatureMap] = None,
                 bandwidth: Union[str, float] = "median", scale: float = 1.0, weighting: Optional[TimeWeighting] = None):
        if space not in ("image", "latent"):
            raise argument_error(self, "space", f" must be 'image' or 'latent', got {space!r}")
        if not (bandwidth == "median" or (isinstance(bandwidth, (int, float)) and bandwidth > 0)):
            raise argument_error(self, "bandwidth", f" must be 'median' or a positive number, got {bandwidth!r}")
        if scale <= 0:
            raise argument_error(self, "scale", f" must be > 0, got {scale}")
        if features is not None and space == "latent":
            raise argument_error(self, "features", " applies to space='image' only; a latent kernel compares the latents")
        self.weight = float(weight)
        self.space = space
        self.features = features if features is not None else (Pixels() if space == "image" else None)
        self.bandwidth = bandwidth if bandwidth == "median" else float(bandwidth)
        self.scale = float(scale)
        self.weighting = weighting if weighting is not None else ConstantWeighting()

    def start(self, prior: "LatentPrior", problem: "Problem", draw: "ItemDraws") -> None:
        if self.features is not None:
            self.features.start(prior, problem, draw)

    def force(self, state: "FlowState") -> torch.Tensor:
        points = state.x if self.space == "image" else state.z
        b, n = points.shape[:2]
        if n < 2:
            return torch.zeros_like(points)
        if self.features is None:
            return self._feature_force(points.detach().reshape(b, n, -1), state).view_as(points)
        with torch.enable_grad():
            leaf = points.detach().flatten(0, 1).requires_grad_(True)
            u = self.features(leaf, state).reshape(b, n, -1)
            g_u = self._feature_force(u.detach(), state)
            (grad,) = torch.autograd.grad(u, leaf, grad_outputs=g_u)  # J_phi^T g_u, through the feature map only
        return grad.view_as(points)

    def _feature_force(self, u: torch.Tensor, state: "FlowState") -> torch.Tensor:
        """``dE^i / du^i`` for features ``u`` (``B x N x F``)."""
        b = u.shape[0]
        sq = pairwise_sq(u)
        if self.bandwidth == "median":
            h = self.scale * median_bandwidth(sq)
        else:
            h = torch.full((b,), self.scale * self.bandwidth, device=u.device, dtype=u.dtype)
        h = h.view(b, 1, 1)
        k = torch.exp(-sq / (2 * h))  # (B, N, N)
        pull = (torch.bmm(k, u) - k.sum(-1, keepdim=True) * u) / (h * u.shape[1])  # (1/N) sum_j k_ij (u^j - u^i) / h
        lam = self.weight * self.weighting(state.abar.to(u.dtype))
        return lam.view(b, 1, 1) * pull
