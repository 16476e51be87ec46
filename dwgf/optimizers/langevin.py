"""The unadjusted Langevin step: gradient descent plus Gaussian noise, with a step bounded by the data term's curvature."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal, Optional

import torch

from dwgf.errors import argument_error
from dwgf.optimizers.base import DataGradient, FlowOptimizer

if TYPE_CHECKING:
    from dwgf.draws import ItemDraws
    from dwgf.problem import FlowState


def data_curvature(z: torch.Tensor, data_gradient: DataGradient, draw: "ItemDraws", iterations: int = 10,
                   delta: float = 0.1) -> torch.Tensor:
    """The largest curvature of the data term along each particle, by power iteration: ``(B, N)``.

    Power iteration on the Hessian-vector product taken as a finite difference of the data term's
    gradient, ``H v ~ (g(z + h v) - g(z)) / h`` with ``|v| = 1`` per particle and ``h = delta * sqrt(d)``
    (a move of about ``delta`` per latent element: exact for a linear operator, a linear decoder and
    a Gaussian likelihood, and far above float32 rounding of a sharp likelihood's large gradient,
    which a tiny ``h`` would amplify). The start vectors come from each item's generator. Costs
    ``iterations + 1`` decoder forwards and vector-Jacobian products.
    """
    b, n = z.shape[:2]
    delta = delta * z[0, 0].numel() ** 0.5
    base = data_gradient(z)
    v = draw(z.shape[1:])
    curvature = torch.zeros(b, n, device=z.device, dtype=z.dtype)
    for _ in range(max(1, iterations)):
        v = v / v.flatten(2).norm(dim=-1).clamp_min(1e-30).view(b, n, *([1] * (z.dim() - 2)))
        hv = (data_gradient(z + delta * v) - base) / delta
        curvature = hv.flatten(2).norm(dim=-1)
        v = hv
    return curvature


class Langevin(FlowOptimizer):
    """The unadjusted Langevin step: ``z <- z - eta_k grad + sqrt(2 eta_k T) xi``, ``xi ~ N(0, I)``.

    For ``grad = grad U`` this samples ``exp(-U / T)`` as ``eta -> 0``: the Wasserstein gradient
    flow of ``KL(mu || exp(-U / T))`` in its particle form, the noise standing for the entropy's
    gradient. The forces must then be in log-density units: a likelihood
    (:class:`~dwgf.likelihoods.GaussianLikelihood`) and a prior score (``KLPrior(per_element=False,
    weighting=ScoreWeighting)``), not the paper's averages.

    Step size: ``eta_k = lr_k`` from the step-size schedule, but never above ``safety / (L + P_k)``
    (``max_step: curvature``, the default), where ``L`` is the data term's largest curvature at
    each particle, measured by power iteration (:func:`data_curvature`, on the data term at the end
    of the flow) when the flow starts and again every ``refresh_every`` iterations, scaled by the
    data term's :meth:`~dwgf.likelihoods.DataTerm.relative_curvature` at iteration ``k`` (an
    annealed likelihood is softer at high noise), and ``P_k`` the sum of the regularizers' curvature
    bounds at iteration ``k`` (:meth:`~dwgf.regularizers.Regularizer.curvature`; for the smoothed
    prior ``abar / (1 - abar)``, which grows as the noise level falls). A sharp likelihood (small
    ``sigma_y``) then takes small steps instead of diverging; ``safety < 2`` keeps an explicit step
    on a quadratic stable. The bound is per particle, so an item's particles do not depend on the
    rest of its batch.

    How it differs from :class:`~dwgf.optimizers.LangevinNoise`: that noise is added after Adam's or
    gradient descent's step (their ``noise``), sized by the schedule's ``lr_k`` and its own ``scale``,
    a heuristic for Adam, whose steps are not gradient steps; here the noise is the one that makes the
    step a discretised Langevin diffusion, and it follows the bounded step. So this optimiser takes
    no ``noise`` of its own.

    Args:
        temperature: ``T``. ``1`` samples the posterior; ``0`` is :class:`GradientDescent` with the
            bounded step. Default 1.
        max_step: ``"curvature"`` (default) or ``"none"`` (the schedule's ``lr_k`` as it is).
        safety: ``eta_k <= safety / (L + P_k)``. Default 0.5.
        power_iterations: power iterations per curvature estimate. Default 10.
        refresh_every: re-measure the curvature every this many iterations (``0``: only at the
            start, the default). Each measurement costs ``power_iterations + 1`` decoder forwards
            and vector-Jacobian products.
    """

    def __init__(self, temperature: float = 1.0, max_step: Literal["curvature", "none"] = "curvature", safety: float = 0.5,
                 power_iterations: int = 10, refresh_every: int = 0):
        if not temperature >= 0:
            raise argument_error(self, "temperature", f" must be >= 0, got {temperature}")
        if max_step not in ("curvature", "none"):
            raise argument_error(self, "max_step", f" must be 'curvature' or 'none', got {max_step!r}")
        if not safety > 0:
            raise argument_error(self, "safety", f" must be > 0, got {safety}")
        if power_iterations < 1:
            raise argument_error(self, "power_iterations", f" must be >= 1, got {power_iterations}")
        if refresh_every < 0:
            raise argument_error(self, "refresh_every", f" must be >= 0 (0: only at the start), got {refresh_every}")
        self.temperature = float(temperature)
        self.max_step = max_step
        self.safety = float(safety)
        self.power_iterations = int(power_iterations)
        self.refresh_every = int(refresh_every)
        self._curvature: Optional[torch.Tensor] = None
        self._data_gradient: Optional[DataGradient] = None
        self._draw: Optional["ItemDraws"] = None

    needs_curvature = True

    @property
    def curvature(self) -> Optional[torch.Tensor]:
        """The data term's curvature per particle, ``(B, N)``, as last measured (``None`` with ``max_step: none``)."""
        return self._curvature

    def start(self, z: torch.Tensor, lr: float, data_gradient: DataGradient, draw: "ItemDraws") -> None:
        self._data_gradient, self._draw = data_gradient, draw
        self._curvature = None
        if self.max_step == "curvature":
            with torch.no_grad():
                self._curvature = data_curvature(z.detach(), data_gradient, draw, self.power_iterations)

    def step_sizes(self, lr: float, like: torch.Tensor, prior_curvature: Optional[torch.Tensor] = None,
                   data_factor: Optional[torch.Tensor] = None) -> torch.Tensor:
        """``eta`` per particle, ``B x N x 1 ...``: ``min(lr, safety / (L * data_factor + P))``, ``P`` and
        ``data_factor`` per item ``(B,)``."""
        b, n = like.shape[:2]
        eta = torch.full((b, n), float(lr), device=like.device, dtype=like.dtype)
        if self.max_step == "curvature":
            total = torch.zeros_like(eta) if self._curvature is None else self._curvature
            if data_factor is not None:
                total = total * data_factor.to(eta.dtype).view(b, 1)
            if prior_curvature is not None:
                total = total + prior_curvature.to(eta.dtype).view(b, 1)
            eta = torch.minimum(eta, self.safety / total.clamp_min(1e-30))
        return eta.view(b, n, *([1] * (like.dim() - 2)))

    def step(self, z: torch.Tensor, grad: torch.Tensor, lr: float, state: "FlowState") -> None:
        k = state.iteration
        if self._curvature is not None and self.refresh_every and k > 0 and k % self.refresh_every == 0:
            self._curvature = data_curvature(z.detach(), self._data_gradient, self._draw, self.power_iterations)
        eta = self.step_sizes(lr, z, state.prior_curvature, state.data_curvature_factor)
        z.sub_(eta * grad)
        if self.temperature > 0:
            z.add_((2 * eta * self.temperature).sqrt() * self._draw(z.shape[1:]))
