"""The Poisson negative log-likelihood of photon-counting measurements."""

from __future__ import annotations

from typing import Optional

import torch

from dwgf.errors import argument_error
from dwgf.likelihoods.base import DataTerm
from dwgf.operators.base import ForwardOperator, Params


class PoissonLikelihood(DataTerm):
    """Counts ``k ~ Poisson(rate * (A x + 1) / 2)`` per measured entry, measured as ``y = 2 k / rate - 1``.

    That is, ``y`` is in the image range ``[-1, 1]`` and ``rate`` is the expected photon count of a
    white pixel; low rates are noisy. With ``lambda = rate * (A x + 1) / 2`` the negative
    log-likelihood, summed over measured entries, is

        ``sum (lambda - k log lambda) / temperature`` (up to a constant in ``x``),

    with ``lambda`` floored at ``rate * 1e-4`` so that a predicted black pixel keeps a finite
    gradient. The operators simulate Gaussian noise only: give Poisson measurements with
    ``--data.measurements``, or simulate them with :func:`poisson_measurement`.

    Args:
        rate: expected count of a white pixel (> 0).
        temperature: divides the log-likelihood. Default 1.
    """

    def __init__(self, rate: float, temperature: float = 1.0):
        if not rate > 0:
            raise argument_error(self, "rate", f" must be > 0, got {rate}")
        if not temperature > 0:
            raise argument_error(self, "temperature", f" must be > 0, got {temperature}")
        self.rate = float(rate)
        self.temperature = float(temperature)

    def loss(self, operator: ForwardOperator, x: torch.Tensor, y: torch.Tensor, params: Params,
             abar: Optional[torch.Tensor] = None) -> torch.Tensor:
        lam = (self.rate * (operator.forward(x, params) + 1) / 2).clamp_min(self.rate * 1e-4)
        counts = (self.rate * (y + 1) / 2).clamp_min(0)
        nll = lam - counts * lam.log()
        mask = operator.measured(params)
        if mask is not None:
            nll = nll * mask
        return nll.flatten(1).sum(1) / self.temperature


def poisson_measurement(clean: torch.Tensor, rate: float, generator: torch.Generator) -> torch.Tensor:
    """A Poisson measurement of ``clean = A x`` (in ``[-1, 1]``) at ``rate``, as :class:`PoissonLikelihood` reads it."""
    counts = torch.poisson(rate * (clean.clamp(-1, 1) + 1) / 2, generator=generator)
    return 2 * counts / rate - 1
