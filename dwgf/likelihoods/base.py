"""The data-term interface, and the paper's averaged squared error."""

from __future__ import annotations

from typing import Optional

import torch

from dwgf.errors import argument_error
from dwgf.operators.base import ForwardOperator, Params
from dwgf.reprs import ArgumentsRepr


class DataTerm(ArgumentsRepr):
    """A per-item data term ``l(x; y)`` between decoded images ``x`` and measurements ``y``.

    The flow calls :meth:`grad` once per iteration on the decoded particles (``B*N`` rows, each with
    its item's ``y`` and parameters) and pulls the gradient back through the decoder together with the
    image-space regularizers, in one vector-Jacobian product.

    Subclasses implement :meth:`loss`; :meth:`grad` differentiates it with autograd (through
    ``operator.forward``), so a data term works with any differentiable operator. ``abar`` (``(B,)``,
    the flow's noise level ``abar_t`` per row; ``None``: the end of the flow, ``abar = 1``) lets a data
    term anneal with the diffusion time.
    """

    def loss(self, operator: ForwardOperator, x: torch.Tensor, y: torch.Tensor, params: Params,
             abar: Optional[torch.Tensor] = None) -> torch.Tensor:
        """The per-item data term, shape ``(B,)``, for images ``x`` (``B x C x H x W``)."""
        raise NotImplementedError

    def grad(self, operator: ForwardOperator, x: torch.Tensor, y: torch.Tensor, params: Params,
             abar: Optional[torch.Tensor] = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The gradient of ``sum_b loss_b`` with respect to ``x``, and the per-item losses (detached)."""
        with torch.enable_grad():
            leaf = x.detach().requires_grad_(True)
            loss = self.loss(operator, leaf, y, params, abar)
            (grad,) = torch.autograd.grad(loss.sum(), leaf)
        return grad, loss.detach()

    def distance(self, operator: ForwardOperator, x: torch.Tensor, y: torch.Tensor, params: Params) -> torch.Tensor:
        """A per-item distance between ``A x`` and ``y`` that is zero when they agree, ``(B,)``: what
        DPS-type methods step down (the DPS paper's ``||y - A x||`` for the default term). The default is
        ``sqrt(2 loss)``, the whitened residual norm of a Gaussian term."""
        return (2 * self.loss(operator, x, y, params)).clamp_min(1e-24).sqrt()

    def relative_curvature(self, operator: ForwardOperator, abar: torch.Tensor) -> Optional[torch.Tensor]:
        """The term's curvature at noise level ``abar`` (``(B,)``) over its curvature at the end of the flow
        (``abar = 1``), or ``None`` when it does not change with ``abar`` (the default)."""
        return None

    def check_operator(self, operator: ForwardOperator) -> None:
        """Raises :class:`~dwgf.errors.DWGFError` if this data term cannot serve ``operator`` (checked at start-up)."""


class MeanSquaredError(DataTerm):
    """The paper's data term: ``weight * 1/2 * mean over measured entries of (y - A x)^2`` (arXiv 2509.19276).

    It ignores the measurement noise ``sigma_y``: its weight relative to the prior is a tuning knob,
    not a likelihood, so its balance with the prior changes with the operator, the noise and the
    number of measured entries. This is what DWGF has always used, and the default.

    Args:
        weight: a factor on the term. Default 1.
    """

    def __init__(self, weight: float = 1.0):
        if not weight > 0:
            raise argument_error(self, "weight", f" must be > 0, got {weight}")
        self.weight = float(weight)

    def loss(self, operator: ForwardOperator, x: torch.Tensor, y: torch.Tensor, params: Params,
             abar: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Per-item ``weight * 1/2 * mean over measured entries of (y - A(x))^2``, shape ``(B,)``."""
        r = (operator.forward(x, params) - y).square()
        mask = operator.measured(params)
        if mask is None:
            loss = 0.5 * r.flatten(1).mean(1)
        else:
            mask = mask.expand_as(r)
            loss = 0.5 * (r * mask).flatten(1).sum(1) / mask.flatten(1).sum(1).clamp_min(1)
        return loss if self.weight == 1.0 else self.weight * loss

    def distance(self, operator: ForwardOperator, x: torch.Tensor, y: torch.Tensor, params: Params) -> torch.Tensor:
        """``sqrt(weight) ||y - A x||`` over the measured entries: the DPS paper's residual norm."""
        r = operator.forward(x, params) - y
        mask = operator.measured(params)
        if mask is not None:
            r = r * mask
        norm = r.flatten(1).square().sum(1).clamp_min(1e-24).sqrt()
        return norm if self.weight == 1.0 else self.weight**0.5 * norm

    def grad(self, operator: ForwardOperator, x: torch.Tensor, y: torch.Tensor, params: Params,
             abar: Optional[torch.Tensor] = None) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.enable_grad():  # the weight applied after the gradient: bit for bit what the flow always computed
            leaf = x.detach().requires_grad_(True)
            loss = MeanSquaredError.loss(UNWEIGHTED, operator, leaf, y, params)
            (grad,) = torch.autograd.grad(loss.sum(), leaf)
        loss = loss.detach()
        return (grad, loss) if self.weight == 1.0 else (self.weight * grad, self.weight * loss)


UNWEIGHTED = MeanSquaredError()
