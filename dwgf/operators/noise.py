"""Noise models other than the operators' own additive Gaussian noise: Poisson (photon-counting) noise."""

from __future__ import annotations

import math
from typing import Optional

import torch

from dwgf.errors import argument_error
from dwgf.operators.base import ForwardOperator, Params


def poisson_counts(clean: torch.Tensor, rate: float, generator: torch.Generator) -> torch.Tensor:
    """A Poisson measurement of ``clean`` (``A x`` in ``[-1, 1]``) at ``rate``: counts
    ``k ~ Poisson(rate * (clean + 1) / 2)``, returned in the image range as ``2 k / rate - 1``."""
    counts = torch.poisson(rate * (clean.clamp(-1, 1) + 1) / 2, generator=generator)
    return 2 * counts / rate - 1


class PoissonNoise(ForwardOperator):
    """Any operator with Poisson (photon-counting) noise instead of additive Gaussian noise.

    The measurement of an image ``x`` is ``y = 2 k / rate - 1`` with counts
    ``k ~ Poisson(rate * (A x + 1) / 2)`` per measured entry: ``rate`` is the expected count of a
    white pixel, so the noise grows as the light falls (``rate`` 10 is very noisy, 1000 mild). ``A``
    is the wrapped ``operator``; everything but the noise is its own (parameters, shapes, the mask,
    the measurement image, the adjoint of a linear one)::

        data:
          init_args:
            operator:
              class_path: dwgf.operators.PoissonNoise
              init_args:
                operator: {class_path: dwgf.operators.GaussianBlur, init_args: {sigma: 1.5}}
                rate: 50

    Pair it with the Poisson data term, ``--model.likelihood PoissonLikelihood``, which reads the
    rate from this operator. The Gaussian data terms read ``sigma_y``, which here is the noise's
    standard deviation at mid-gray, ``sqrt(2 / rate)`` (the variance of ``y`` is
    ``2 (A x + 1) / rate``).

    Args:
        operator: the forward operator ``A``; its own ``sigma_y`` must be 0 (the Poisson noise replaces it).
        rate: the expected count of a white pixel (> 0).
    """

    def __init__(self, operator: ForwardOperator, rate: float):
        if not isinstance(operator, ForwardOperator):
            raise argument_error(self, "operator", f" must be a forward operator (a dwgf.operators class), got {operator!r}")
        if isinstance(operator, PoissonNoise):
            raise argument_error(self, "operator", " is already a PoissonNoise: wrap the operator once")
        if operator.sigma_y != 0:
            raise argument_error(self, "operator", f" has sigma_y {operator.sigma_y}: give it sigma_y: 0, the Poisson noise replaces "
                                 "its Gaussian noise")
        if not (rate > 0 and math.isfinite(rate)):
            raise argument_error(self, "rate", f" must be a finite number > 0, got {rate}")
        self.operator = operator
        self.rate = float(rate)
        super().__init__(sigma_y=math.sqrt(2 / self.rate))

    @property
    def linear(self) -> bool:  # type: ignore[override]
        return self.operator.linear

    def simulate(self, x: torch.Tensor, params: Params, generator: torch.Generator) -> torch.Tensor:
        """Poisson counts of ``A(x)`` on the measured entries (the others stay ``A(x)``)."""
        clean = self.forward(x, params)
        noisy = poisson_counts(clean, self.rate, generator)
        mask = self.measured(params)
        return noisy if mask is None else torch.where(mask.expand_as(clean) > 0, noisy, clean)

    # everything else is the wrapped operator's
    def sample_params(self, shape: tuple[int, int, int], generator: torch.Generator) -> Params:
        return self.operator.sample_params(shape, generator)

    def params_from_mask(self, mask: torch.Tensor) -> Params:
        return self.operator.params_from_mask(mask)

    def measurement_shape(self, shape: tuple[int, int, int]) -> tuple[int, int, int]:
        return self.operator.measurement_shape(shape)

    def input_shape(self, measurement_shape: tuple[int, ...]) -> tuple[int, ...]:
        return self.operator.input_shape(measurement_shape)

    def forward(self, x: torch.Tensor, params: Params) -> torch.Tensor:
        return self.operator.forward(x, params)

    def adjoint(self, y: torch.Tensor, params: Params) -> torch.Tensor:
        return self.operator.adjoint(y, params)

    def project(self, x: torch.Tensor, y: torch.Tensor, params: Params) -> torch.Tensor:
        return self.operator.project(x, y, params)

    def measured(self, params: Params) -> Optional[torch.Tensor]:
        return self.operator.measured(params)

    def to_image(self, y: torch.Tensor, params: Params) -> torch.Tensor:
        return self.operator.to_image(y, params)

    def from_image(self, image: torch.Tensor, params: Params) -> torch.Tensor:
        return self.operator.from_image(image, params)

    def align(self, estimate: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
        return self.operator.align(estimate, truth)
