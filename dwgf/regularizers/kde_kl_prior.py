"""DWGF's diffusion regularizer with the particles' entropy estimated by an adaptive-bandwidth kernel density."""

from __future__ import annotations

from typing import TYPE_CHECKING, Optional, Union

import torch

from dwgf.errors import argument_error
from dwgf.regularizers.kernels import kernel_pull, median_bandwidth, pairwise_sq
from dwgf.regularizers.kl_prior import KLPrior
from dwgf.regularizers.weighting import TimeWeighting

if TYPE_CHECKING:
    from dwgf.problem import FlowState


class KDEKLPrior(KLPrior):
    """:class:`KLPrior` whose particle term sees the other particles in any dimension.

    The paper's particle term ``f^i`` is the score of the diffused particles
    ``q_t = (1/N) sum_j N(m^j, (1 - abar_t) I)``, ``m^j = sqrt(abar_t) z^j``, at ``z_t^i``. It splits
    into score distillation and an interaction:

        ``f^i = -eps^i / sqrt(1 - abar_t) + sum_j w_ij (m^j - m^i) / h``,
        ``w_ij = softmax_j(-||z_t^i - m^j||^2 / (2 h))``, with ``h = 1 - abar_t``.

    In a latent of ``d`` elements ``||z_t^i - m^j||^2 - ||z_t^i - m^i||^2 ~ abar_t ||z^i - z^j||^2``
    is of order ``d`` times larger than ``2 h``, so ``w_ij`` is ``1`` for ``j = i`` and the interaction
    vanishes (``benchmarks/results/posterior_reach.md``). This class keeps the same functional,
    ``KL(q_t || p_t)``, and estimates the entropy of ``q_t`` with a kernel density of adaptive
    bandwidth:

        ``h_t = max(1 - abar_t, scale * median_{i<j} ||m^i - m^j||^2 / (2 log(N + 1)))``

    (SVGD's median heuristic; ``bandwidth`` a number fixes the median term to it instead), and
    multiplies the interaction by ``entropy_weight``. The force on ``z^i`` is

        ``weight * lambda(abar_t) * (f^i - s^i) / d``

    as in :class:`KLPrior`. With ``h_t = 1 - abar_t`` and ``entropy_weight = 1`` it is exactly the
    paper's term; with one particle it is score distillation whatever the bandwidth. Cost: one
    ``N x N`` distance matrix per item per iteration (no network call beyond the shared one).

    Args:
        weight: as :class:`KLPrior`.
        weighting: as :class:`KLPrior`.
        bandwidth: ``"median"`` (default) or a fixed variance for the median term.
        scale: multiplies the median heuristic. Default 1.
        entropy_weight: ``a``, the interaction's factor. Default 1 (the KL functional itself).
    """

    # fixed here, as class attributes (the methods it inherits read them; its repr lists only its own arguments)
    particle_term = True
    per_element = True

    def __init__(self, weight: float = 0.15, weighting: Optional[TimeWeighting] = None,
                 bandwidth: Union[str, float] = "median", scale: float = 1.0, entropy_weight: float = 1.0):
        super().__init__(weight, weighting, particle_term=True)
        del self.particle_term, self.per_element  # the class attributes above stand for them
        if not (bandwidth == "median" or (isinstance(bandwidth, (int, float)) and bandwidth > 0)):
            raise argument_error(self, "bandwidth", f" must be 'median' or a positive number, got {bandwidth!r}")
        if scale <= 0:
            raise argument_error(self, "scale", f" must be > 0, got {scale}")
        self.bandwidth = bandwidth if bandwidth == "median" else float(bandwidth)
        self.scale = float(scale)
        self.entropy_weight = float(entropy_weight)

    def variance(self, means: torch.Tensor, abar: torch.Tensor) -> torch.Tensor:
        """``h_t`` per item, ``(B,)``, for diffused means ``m`` (``B x N x ...``)."""
        if self.bandwidth == "median":
            spread = self.scale * median_bandwidth(pairwise_sq(means))
        else:
            spread = torch.full_like(abar, self.scale * self.bandwidth)
        return torch.maximum(1 - abar, spread)

    def force(self, state: "FlowState") -> torch.Tensor:
        abar = state.abar_view(state.z)
        var = 1 - abar
        means = abar.sqrt() * state.z
        h = self.variance(means, state.abar.to(means.dtype))
        f = -state.eps / var.sqrt() + self.entropy_weight * kernel_pull(means, h, at=state.z_t)
        s = -state.eps_hat / var.sqrt()
        lam = self.weight * self.weighting(abar)
        return lam * (f - s) / state.z[0, 0].numel()
