"""Noise models: how a measurement is drawn around ``A(x)``, read by both the simulation and the data terms.

An operator holds one (``operator.noise``): :class:`GaussianNoise` of its ``sigma_y`` by default, or
:class:`PoissonCounts` for photon-counting sensors. The data terms read their parameters from it
(:class:`~dwgf.likelihoods.GaussianLikelihood` the ``sigma``, :class:`~dwgf.likelihoods.PoissonLikelihood`
the ``rate``), so the noise is described in one place.
"""

from __future__ import annotations

import math
from typing import Optional

import torch

from dwgf.errors import argument_error
from dwgf.operators.base import ForwardOperator, NoiseModel


def poisson_counts(clean: torch.Tensor, rate: float, generator: torch.Generator) -> torch.Tensor:
    """A Poisson measurement of ``clean`` (``A x`` in ``[-1, 1]``) at ``rate``: counts
    ``k ~ Poisson(rate * (clean + 1) / 2)``, returned in the image range as ``2 k / rate - 1``."""
    counts = torch.poisson(rate * (clean.clamp(-1, 1) + 1) / 2, generator=generator)
    return 2 * counts / rate - 1


class PoissonCounts(NoiseModel):
    """Photon counts: ``y = 2 k / rate - 1`` with ``k ~ Poisson(rate * (A x + 1) / 2)`` per measured entry.

    ``rate`` is the expected count of a white pixel, so the noise grows as the light falls (``rate``
    10 is very noisy, 1000 mild). ``sigma`` is the noise's standard deviation at mid-gray,
    ``sqrt(2 / rate)`` (the variance of ``y`` is ``2 (A x + 1) / rate``), what a Gaussian data term reads.

    Args:
        rate: the expected count of a white pixel (> 0, finite).
    """

    def __init__(self, rate: float):
        if not (rate > 0 and math.isfinite(rate)):
            raise argument_error(self, "rate", f" must be a finite number > 0, got {rate}")
        self.rate = float(rate)

    @property
    def sigma(self) -> float:
        return math.sqrt(2 / self.rate)

    def simulate(self, clean: torch.Tensor, mask: Optional[torch.Tensor], generator: torch.Generator) -> torch.Tensor:
        """Poisson counts of ``clean`` on the measured entries (the others stay ``clean``)."""
        noisy = poisson_counts(clean, self.rate, generator)
        return noisy if mask is None else torch.where(mask.expand_as(clean) > 0, noisy, clean)


class PoissonNoise(ForwardOperator):
    """Any operator with Poisson (photon-counting) noise instead of additive Gaussian noise: the config spelling.

    ``PoissonNoise(operator, rate)`` is ``operator`` itself (a copy) whose noise model is
    :class:`PoissonCounts` ``(rate)``; everything but the noise is the operator's own (parameters,
    shapes, the mask, the measurement image, the adjoint of a linear one)::

        data:
          init_args:
            operator:
              class_path: dwgf.operators.PoissonNoise
              init_args:
                operator: {class_path: dwgf.operators.GaussianBlur, init_args: {sigma: 1.5}}
                rate: 50

    Pair it with the Poisson data term, ``--model.likelihood PoissonLikelihood``, which reads the
    rate from the operator's noise model. The Gaussian data terms read ``sigma_y``, which here is the
    noise's standard deviation at mid-gray, ``sqrt(2 / rate)``.

    Args:
        operator: the forward operator ``A``; its own ``sigma_y`` must be 0 (the Poisson noise replaces it).
        rate: the expected count of a white pixel (> 0).
    """

    def __new__(cls, operator: ForwardOperator, rate: float) -> ForwardOperator:  # type: ignore[misc]
        if not isinstance(operator, ForwardOperator):
            raise argument_error(cls.__name__, "operator", f" must be a forward operator (a dwgf.operators class), got {operator!r}")
        if operator.noise.rate is not None:
            raise argument_error(cls.__name__, "operator", " is already a PoissonNoise: wrap the operator once")
        if operator.sigma_y != 0:
            raise argument_error(cls.__name__, "operator", f" has sigma_y {operator.sigma_y}: give it sigma_y: 0, the Poisson noise "
                                 "replaces its Gaussian noise")
        return operator.with_noise(PoissonCounts(rate))

    def __init__(self, operator: ForwardOperator, rate: float):  # the signature configs read; __new__ returns the operator
        raise AssertionError("unreachable: PoissonNoise(...) returns the operator with Poisson noise")

