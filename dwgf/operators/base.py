"""The forward-operator interface: ``y ~ noise(A(x, params))``, by default ``A(x, params) + e``, ``e ~ N(0, sigma_y^2 I)``.

An operator is the physics only: the forward model, its adjoint where linear, the measured entries,
``align``, per-item parameters, and a noise model (:class:`NoiseModel`). The data fit lives in the data
terms (:mod:`dwgf.likelihoods`), which read the noise model.
"""

from __future__ import annotations

import copy
from typing import Optional, Sequence

import torch

from dwgf.errors import DWGFError, argument_error
from dwgf.reprs import ArgumentsRepr

Params = dict[str, torch.Tensor]


class NoiseModel(ArgumentsRepr):
    """How a measurement is drawn around ``A(x)``: :meth:`simulate` draws it, and the data terms read
    the model's parameters (``sigma``: the standard deviation, at mid-gray for a signal-dependent noise;
    ``rate``: the Poisson rate, ``None`` for other models)."""

    rate: Optional[float] = None

    @property
    def sigma(self) -> float:
        raise NotImplementedError

    def simulate(self, clean: torch.Tensor, mask: Optional[torch.Tensor], generator: torch.Generator) -> torch.Tensor:
        """A noisy measurement of ``clean = A(x)`` (one item) with noise on the entries where ``mask`` (``None``: all) is 1."""
        raise NotImplementedError


class GaussianNoise(NoiseModel):
    """Additive Gaussian noise ``y = A(x) + sigma e``, ``e ~ N(0, I)`` on the measured entries: every
    operator's, with its ``sigma_y``, unless it is given another model."""

    def __init__(self, sigma: float = 0.0):
        if not (sigma >= 0.0):  # also rejects NaN
            raise argument_error(self, "sigma", f" must be >= 0, got {sigma}")
        self._sigma = float(sigma)

    @property
    def sigma(self) -> float:
        return self._sigma

    def __repr__(self) -> str:
        return f"GaussianNoise(sigma={self._sigma!r})"

    def simulate(self, clean: torch.Tensor, mask: Optional[torch.Tensor], generator: torch.Generator) -> torch.Tensor:
        y = clean
        if self._sigma > 0:
            noise = torch.randn(y.shape, generator=generator, device=y.device, dtype=y.dtype)
            y = y + self._sigma * (noise if mask is None else noise * mask)
        return y


class ForwardOperator(ArgumentsRepr):
    """A degradation ``A`` with optional per-item parameters and additive Gaussian noise.

    Images ``x`` are ``B x C x H x W`` in ``[-1, 1]``. Per-item parameters (a mask, a blur kernel)
    are a dict of tensors with a leading batch dimension; they are drawn once per item from that
    item's own generator (:meth:`sample_params`) so that a measurement never depends on which
    other items share its batch. Operators are plain objects, not modules: tensors they need are
    built on the device of their input, so the same instance serves the data loader (CPU) and the
    solver (any device).

    Subclasses implement :meth:`forward`; linear ones set ``linear = True`` and may override
    :meth:`adjoint` (the default is the exact vector-Jacobian product of :meth:`forward`).
    Operators observing only part of their output override :meth:`measured`.

    The measurement noise is the operator's :attr:`noise` model: :class:`GaussianNoise` of ``sigma_y``
    unless :meth:`with_noise` gave it another (:class:`~dwgf.operators.PoissonCounts`).

    Args:
        sigma_y: standard deviation of the additive Gaussian measurement noise, in units of the
            ``[-1, 1]`` image range (so ``0.01`` is half a percent of the full range). Default ``0``.
    """

    linear: bool = False

    def __init__(self, sigma_y: float = 0.0):
        if not (sigma_y >= 0.0):  # also rejects NaN
            raise argument_error(self, "sigma_y", f" must be >= 0, got {sigma_y}")
        self.sigma_y = float(sigma_y)

    @property
    def noise(self) -> NoiseModel:
        """The measurement's noise model: the one given by :meth:`with_noise`, else :class:`GaussianNoise` ``(sigma_y)``."""
        model = self.__dict__.get("_noise")
        return model if model is not None else GaussianNoise(self.sigma_y)

    def with_noise(self, noise: NoiseModel) -> "ForwardOperator":
        """A copy of this operator whose measurements have the noise model ``noise`` (its ``sigma_y`` becomes ``noise.sigma``)."""
        out = copy.copy(self)
        out._noise = noise
        out.sigma_y = float(noise.sigma)
        return out

    def __repr__(self) -> str:
        base = super().__repr__()
        model = self.__dict__.get("_noise")
        return base if model is None else f"{base[:-1]}, noise={model!r})"

    # -- parameters ------------------------------------------------------------------------------
    def sample_params(self, shape: tuple[int, int, int], generator: torch.Generator) -> Params:
        """Parameters of one item whose image has ``shape = (C, H, W)`` (no batch dimension)."""
        return {}

    def params_from_mask(self, mask: torch.Tensor) -> Params:
        """Parameters from a user-supplied mask (``1 x H x W``, 1 = observed); inpainting only."""
        raise DWGFError(f"{type(self).__name__} takes no mask; give no masks or use an inpainting operator")

    def measurement_shape(self, shape: tuple[int, int, int]) -> tuple[int, int, int]:
        """Shape of ``A(x)`` for one image of ``shape = (C, H, W)``."""
        return tuple(shape)

    # -- the operator ----------------------------------------------------------------------------
    def forward(self, x: torch.Tensor, params: Params) -> torch.Tensor:
        """``A(x)`` for a batch ``x`` with matching per-item ``params``."""
        raise NotImplementedError

    def __call__(self, x: torch.Tensor, params: Params) -> torch.Tensor:
        return self.forward(x, params)

    def adjoint(self, y: torch.Tensor, params: Params) -> torch.Tensor:
        """``A^T y`` for a linear operator; by default the exact VJP of :meth:`forward`."""
        if not self.linear:
            raise NotImplementedError(f"{type(self).__name__} is not linear and has no adjoint")
        shape = self.input_shape(y.shape[1:])
        with torch.enable_grad():
            x = torch.zeros(y.shape[0], *shape, device=y.device, dtype=y.dtype, requires_grad=True)
            (out,) = torch.autograd.grad(self.forward(x, params), x, grad_outputs=y)
        return out

    def input_shape(self, measurement_shape: tuple[int, ...]) -> tuple[int, ...]:
        """Shape of ``x`` for a measurement of ``measurement_shape``; inverse of :meth:`measurement_shape`."""
        return tuple(measurement_shape)

    def measured(self, params: Params) -> Optional[torch.Tensor]:
        """0/1 weights of the observed entries of ``A(x)``, broadcastable to it; ``None``: all."""
        return None

    def unobserved(self, params: Params) -> Optional[torch.Tensor]:
        """Where the measurement is silent: 0/1 weights (``B x 1 x H x W``, 1 where no entry of the measurement
        observes the image's pixel on its own), for the coverage of the pixels a user is unsure of and
        ``dwgf calibrate --region unobserved``. ``None`` (the default): every pixel, as for an operator that mixes
        pixels (blur, downsampling) or measures them through a nonlinearity. Inpainting: its missing pixels."""
        return None

    # -- measurements ------------------------------------------------------------------------------
    def simulate(self, x: torch.Tensor, params: Params, generator: torch.Generator) -> torch.Tensor:
        """A noisy measurement of one item (``x`` is ``1 x C x H x W``): its noise model around ``A(x)``
        on the measured entries (``A(x) + sigma_y e`` by default)."""
        return self.noise.simulate(self.forward(x, params), self.measured(params), generator)

    def measure(self, x: torch.Tensor, seeds: Optional[Sequence[int]] = None) -> tuple[torch.Tensor, Params]:
        """Simulated measurements of a batch of images: ``(y, params)``.

        Item ``b`` draws its parameters (a box position, a motion kernel, ...) and its noise from a
        generator seeded with ``seeds[b]`` (default ``b``), as ``dwgf predict`` does with each item's
        data seed, so a measurement does not depend on the other items of the batch.

        Args:
            x: images ``B x C x H x W`` in ``[-1, 1]``.
            seeds: one integer per item. Default ``0 .. B-1``.

        Example:
            >>> from dwgf.operators import BoxInpainting
            >>> op = BoxInpainting(size=[12, 12], sigma_y=0.01)
            >>> y, params = op.measure(torch.zeros(2, 1, 32, 32), seeds=[0, 1])
            >>> y.shape, params["mask"].shape
            (torch.Size([2, 1, 32, 32]), torch.Size([2, 1, 32, 32]))
        """
        seeds = list(range(x.shape[0])) if seeds is None else [int(s) for s in seeds]
        if len(seeds) != x.shape[0]:
            raise DWGFError(f"{type(self).__name__}.measure: {len(seeds)} seeds for {x.shape[0]} images")
        ys, items = [], []
        for b, seed in enumerate(seeds):
            # on the CPU, as the data module simulates: the same measurement on every machine; moved to x's device below
            gen = torch.Generator().manual_seed(seed)
            params = self.sample_params(tuple(x.shape[1:]), gen)
            xb = x[b : b + 1].detach().to("cpu", torch.float32)
            ys.append(self.simulate(xb, {k: v[None] for k, v in params.items()}, gen)[0])
            items.append(params)
        params = {k: torch.stack([p[k] for p in items]).to(x.device) for k in items[0]} if items and items[0] else {}
        return torch.stack(ys).to(x.device), params

    def to_image(self, y: torch.Tensor, params: Params) -> torch.Tensor:
        """The measurement shown as an image (what ``measurement.png`` holds)."""
        return y

    def from_image(self, image: torch.Tensor, params: Params) -> torch.Tensor:
        """A measurement from its image form (measurement-only mode); inverse of :meth:`to_image`."""
        return image

    def align(self, estimate: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
        """``estimate`` (``N x C x H x W``, ``[-1, 1]``) moved, each image alone, as close to ``truth``
        (``C x H x W``) as the measurement's symmetries allow: transformations of an image that leave its
        measurement unchanged, so no method can tell them apart. Metrics compare the aligned images
        with the truth; the saved images are the estimates as found. The default has no symmetry and
        returns ``estimate``; :class:`~dwgf.operators.PhaseRetrieval` aligns shifts and the 180-degree twin."""
        return estimate

    # -- consistency -----------------------------------------------------------------------------
    def project(self, x: torch.Tensor, y: torch.Tensor, params: Params) -> torch.Tensor:
        """``x + A^T (y - A x) = A^T y + (I - A^T A) x``: ``x`` made consistent with ``y``.

        PSLD's "gluing" target. It is the exact projection onto ``{x : A x = y}`` when ``A A^T =
        I`` (inpainting, denoising); operators whose pseudo-inverse is cheap override it (box
        super-resolution); otherwise it is PSLD's formula with ``A^T``. Linear operators only.
        """
        if not self.linear:
            raise DWGFError(f"{type(self).__name__} is not linear: it has no adjoint for the projection")
        return x + self.adjoint(y - self.forward(x, params), params)


def repeat_params(params: Params, n: int) -> Params:
    """Each item's parameters repeated ``n`` times (item-major), to match ``B*N`` particles."""
    return {k: v.repeat_interleave(n, dim=0) for k, v in params.items()}
