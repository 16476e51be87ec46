"""The Poisson negative log-likelihood of photon-counting measurements."""

from __future__ import annotations

from typing import Optional

import torch

from dwgf.errors import argument_error
from dwgf.likelihoods.base import DataTerm
from dwgf.operators.base import ForwardOperator, Params
from dwgf.operators.noise import PoissonNoise, poisson_counts


class PoissonLikelihood(DataTerm):
    """Counts ``k ~ Poisson(rate * (A x + 1) / 2)`` per measured entry, measured as ``y = 2 k / rate - 1``.

    That is, ``y`` is in the image range ``[-1, 1]`` and ``rate`` is the expected photon count of a
    white pixel; low rates are noisy. With ``lambda = rate * (A x + 1) / 2`` the negative
    log-likelihood, summed over measured entries, is

        ``sum (lambda - k log lambda) / temperature`` (up to a constant in ``x``),

    with ``lambda`` floored at ``rate * 1e-4`` so that a predicted black pixel keeps a finite
    gradient. Simulate such measurements with the operator
    :class:`~dwgf.operators.PoissonNoise` (``data.operator``), whose ``rate`` this term reads when
    it has none of its own, or give Poisson measurements with ``--data.measurements`` and a ``rate``.

    Args:
        rate: expected count of a white pixel (> 0). Default ``None``: the operator's (a
            :class:`~dwgf.operators.PoissonNoise`).
        temperature: divides the log-likelihood. Default 1.
    """

    def __init__(self, rate: Optional[float] = None, temperature: float = 1.0):
        if rate is not None and not rate > 0:
            raise argument_error(self, "rate", f" must be > 0, got {rate}")
        if not temperature > 0:
            raise argument_error(self, "temperature", f" must be > 0, got {temperature}")
        self.rate = None if rate is None else float(rate)
        self.temperature = float(temperature)

    def rate_for(self, operator: ForwardOperator) -> float:
        """The rate in use for ``operator``: this term's, else the operator's (a :class:`~dwgf.operators.PoissonNoise`)."""
        if self.rate is not None:
            return self.rate
        if not isinstance(operator, PoissonNoise):
            raise argument_error(self, "rate", f" is needed: {type(operator).__name__} simulates no Poisson noise (give the rate of "
                                 "your measurements, or use data.operator PoissonNoise)")
        return operator.rate

    def check_operator(self, operator: ForwardOperator) -> None:
        rate = self.rate_for(operator)
        if isinstance(operator, PoissonNoise) and rate != operator.rate:
            raise argument_error(self, "rate", f" {rate} differs from the operator's (--data.operator.init_args.rate {operator.rate}): "
                                 "leave it unset to use the operator's")

    def loss(self, operator: ForwardOperator, x: torch.Tensor, y: torch.Tensor, params: Params,
             abar: Optional[torch.Tensor] = None) -> torch.Tensor:
        rate = self.rate_for(operator)
        lam = (rate * (operator.forward(x, params) + 1) / 2).clamp_min(rate * 1e-4)
        counts = (rate * (y + 1) / 2).clamp_min(0)
        nll = lam - counts * lam.log()
        mask = operator.measured(params)
        if mask is not None:
            nll = nll * mask
        return nll.flatten(1).sum(1) / self.temperature


def poisson_measurement(clean: torch.Tensor, rate: float, generator: torch.Generator) -> torch.Tensor:
    """A Poisson measurement of ``clean = A x`` (in ``[-1, 1]``) at ``rate``, as :class:`PoissonLikelihood` reads it
    (:func:`dwgf.operators.poisson_counts`)."""
    return poisson_counts(clean, rate, generator)
