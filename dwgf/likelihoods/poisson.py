"""The Poisson negative log-likelihood of photon-counting measurements."""

from __future__ import annotations

from typing import Optional

import torch

from dwgf.errors import argument_error
from dwgf.likelihoods.base import DataTerm
from dwgf.operators.base import ForwardOperator, Params
from dwgf.operators.noise import poisson_counts


class PoissonLikelihood(DataTerm):
    """Counts ``k ~ Poisson(rate * (A x + 1) / 2)`` per measured entry, measured as ``y = 2 k / rate - 1``.

    That is, ``y`` is in the image range ``[-1, 1]`` and ``rate`` is the expected photon count of a
    white pixel; low rates are noisy. With ``lambda = rate * (A x + 1) / 2`` the negative
    log-likelihood, summed over measured entries, is

        ``sum (lambda - k log lambda) / temperature`` (up to a constant in ``x``),

    with ``lambda`` floored at ``rate * 1e-4`` so that a predicted black pixel keeps a finite
    gradient. Simulate such measurements with the operator :class:`~dwgf.operators.PoissonNoise`
    (``data.operator``), whose noise model's ``rate`` (:class:`~dwgf.operators.PoissonCounts`) this
    term reads when it has none of its own, or give Poisson measurements with ``--data.measurements``
    and a ``rate``.

    Args:
        rate: expected count of a white pixel (> 0). Default ``None``: the operator's noise model's.
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
        """The rate in use for ``operator``: this term's, else its noise model's (:class:`~dwgf.operators.PoissonCounts`)."""
        if self.rate is not None:
            return self.rate
        if operator.noise.rate is None:
            raise argument_error(self, "rate", f" is needed: {type(operator).__name__} simulates no Poisson noise (give the rate of "
                                 "your measurements, or use data.operator PoissonNoise)")
        return operator.noise.rate

    def check_operator(self, operator: ForwardOperator) -> None:
        rate, own = self.rate_for(operator), operator.noise.rate
        if own is not None and rate != own:
            raise argument_error(self, "rate", f" {rate} differs from the operator's (--data.operator.init_args.rate {own}): "
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


    def distance(self, operator: ForwardOperator, x: torch.Tensor, y: torch.Tensor, params: Params) -> torch.Tensor:
        """``sqrt(deviance)``: the square root of twice the negative log-likelihood above its minimum (``lambda = k``), per item."""
        rate = self.rate_for(operator)
        lam = (rate * (operator.forward(x, params) + 1) / 2).clamp_min(rate * 1e-4)
        counts = (rate * (y + 1) / 2).clamp_min(0)
        dev = lam - counts - counts * (lam.log() - counts.clamp_min(1e-12).log())
        mask = operator.measured(params)
        if mask is not None:
            dev = dev * mask
        return (2 * dev.flatten(1).sum(1) / self.temperature).clamp_min(1e-24).sqrt()


def poisson_measurement(clean: torch.Tensor, rate: float, generator: torch.Generator) -> torch.Tensor:
    """A Poisson measurement of ``clean = A x`` (in ``[-1, 1]``) at ``rate``, as :class:`PoissonLikelihood` reads it
    (:func:`dwgf.operators.poisson_counts`)."""
    return poisson_counts(clean, rate, generator)
