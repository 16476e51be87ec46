"""The Gaussian negative log-likelihood of additive measurement noise."""

from __future__ import annotations

import math
from typing import Optional

import torch

from dwgf.errors import argument_error
from dwgf.likelihoods.base import DataTerm
from dwgf.operators.base import ForwardOperator, Params

# the standard deviation of rounding to 8 bits, in units of the [-1, 1] image range: (2 / 255) / sqrt(12)
QUANTISATION_SIGMA = 2 / 255 / math.sqrt(12)


class GaussianLikelihood(DataTerm):
    """``-log p(y | x) = sum over measured entries of (y - A x)^2 / (2 sigma^2)`` (up to a constant).

    Summed, not averaged: a log density, so that its balance with a prior in log-density units is
    the posterior's for any operator, noise level and image size. ``sigma`` is the operator's noise
    model's (``operator.noise.sigma``: its ``sigma_y``, ``--data.operator.init_args.sigma_y``), or
    ``sigma`` when given, and never below ``sigma_min``.

    Noiseless or nearly noiseless measurements: with ``sigma_y = 0`` the likelihood is a hard
    constraint and its gradient is infinite, so ``sigma`` is floored at ``sigma_min``, by default the
    standard deviation of 8-bit quantisation, ``(2/255)/sqrt(12) = 0.0023`` in ``[-1, 1]`` units: the
    noise every stored image has. A sharp likelihood needs small steps;
    :class:`~dwgf.optimizers.Langevin` bounds its step by the data term's curvature.

    Annealing: with ``anneal = a > 0`` the variance at flow noise level ``abar_t`` is
    ``sigma^2 + a (1 - abar_t)``: the likelihood is soft while the diffusion time is high, so that
    the prior can move the particles with large steps first, and it is the measurement's own at the
    end (``abar -> 1``). This is a tempering of the path, not of the target.

    Args:
        sigma: the noise standard deviation, in ``[-1, 1]`` units; ``None`` (default): the operator's ``sigma_y``.
        sigma_min: the floor on ``sigma``. Default ``0.0023`` (8-bit quantisation); must be > 0.
        temperature: divides the log-likelihood (``1``: the posterior; ``> 1`` tempers the data). Default 1.
        anneal: ``a``, the variance added at high noise (see above). Default 0 (none).
    """

    def __init__(self, sigma: Optional[float] = None, sigma_min: float = QUANTISATION_SIGMA, temperature: float = 1.0,
                 anneal: float = 0.0):
        if sigma is not None and not sigma >= 0:
            raise argument_error(self, "sigma", f" must be >= 0, got {sigma}")
        if not sigma_min > 0:
            raise argument_error(self, "sigma_min", f" must be > 0 (the likelihood of noiseless data is a hard constraint), got {sigma_min}")
        if not temperature > 0:
            raise argument_error(self, "temperature", f" must be > 0, got {temperature}")
        self.sigma = None if sigma is None else float(sigma)
        self.sigma_min = float(sigma_min)
        if not anneal >= 0:
            raise argument_error(self, "anneal", f" must be >= 0, got {anneal}")
        self.temperature = float(temperature)
        self.anneal = float(anneal)

    def noise_sigma(self, operator: ForwardOperator) -> float:
        """The ``sigma`` in use for ``operator``: ``max(sigma or the noise model's sigma, sigma_min)``."""
        return max(self.sigma if self.sigma is not None else operator.noise.sigma, self.sigma_min)

    def variance(self, operator: ForwardOperator, abar: Optional[torch.Tensor] = None) -> torch.Tensor | float:
        """``sigma^2 + anneal (1 - abar)`` per row (a float without ``abar`` or annealing)."""
        var = self.noise_sigma(operator) ** 2
        if abar is None or self.anneal == 0:
            return var
        return var + self.anneal * (1 - abar.to(torch.float32))

    def relative_curvature(self, operator: ForwardOperator, abar: torch.Tensor) -> Optional[torch.Tensor]:
        """``sigma^2 / (sigma^2 + anneal (1 - abar))``: the annealed term is that much softer."""
        if self.anneal == 0:
            return None
        return self.noise_sigma(operator) ** 2 / self.variance(operator, abar)

    def loss(self, operator: ForwardOperator, x: torch.Tensor, y: torch.Tensor, params: Params,
             abar: Optional[torch.Tensor] = None) -> torch.Tensor:
        r = (operator.forward(x, params) - y).square()
        mask = operator.measured(params)
        if mask is not None:
            r = r * mask
        return r.flatten(1).sum(1) / (2 * self.variance(operator, abar) * self.temperature)
