"""The forward-operator interface: ``y = A(x, params) + e``, ``e ~ N(0, sigma_y^2 I)``."""

from __future__ import annotations

from typing import Optional, Sequence

import torch

from dwgf.errors import DWGFError, argument_error
from dwgf.reprs import ArgumentsRepr

Params = dict[str, torch.Tensor]


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

    Args:
        sigma_y: standard deviation of the additive Gaussian measurement noise, in units of the
            ``[-1, 1]`` image range (so ``0.01`` is half a percent of the full range). Default ``0``.
    """

    linear: bool = False

    def __init__(self, sigma_y: float = 0.0):
        if not (sigma_y >= 0.0):  # also rejects NaN
            raise argument_error(self, "sigma_y", f" must be >= 0, got {sigma_y}")
        self.sigma_y = float(sigma_y)

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

    # -- measurements ------------------------------------------------------------------------------
    def simulate(self, x: torch.Tensor, params: Params, generator: torch.Generator) -> torch.Tensor:
        """A noisy measurement ``A(x) + sigma_y e`` of one item (``x`` is ``1 x C x H x W``)."""
        y = self.forward(x, params)
        if self.sigma_y > 0:
            noise = torch.randn(y.shape, generator=generator, device=y.device, dtype=y.dtype)
            mask = self.measured(params)
            y = y + self.sigma_y * (noise if mask is None else noise * mask)
        return y

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

    # -- data fidelity ---------------------------------------------------------------------------
    def data_loss(self, x: torch.Tensor, y: torch.Tensor, params: Params) -> torch.Tensor:
        """Per-item ``1/2 * mean over measured entries of (y - A(x))^2``, shape ``(B,)``."""
        r = (self.forward(x, params) - y).square()
        mask = self.measured(params)
        if mask is None:
            return 0.5 * r.flatten(1).mean(1)
        mask = mask.expand_as(r)
        return 0.5 * (r * mask).flatten(1).sum(1) / mask.flatten(1).sum(1).clamp_min(1)

    def residual_norm(self, x: torch.Tensor, y: torch.Tensor, params: Params) -> torch.Tensor:
        """Per-item Euclidean norm of ``y - A(x)`` over the measured entries, shape ``(B,)``.

        Guidance of DPS-type solvers uses this norm item by item, never over the whole batch.
        """
        r = self.forward(x, params) - y
        mask = self.measured(params)
        if mask is not None:
            r = r * mask
        return r.flatten(1).square().sum(1).clamp_min(1e-24).sqrt()

    def project(self, x: torch.Tensor, y: torch.Tensor, params: Params) -> torch.Tensor:
        """``x + A^T (y - A x) = A^T y + (I - A^T A) x``: ``x`` made consistent with ``y``.

        PSLD's "gluing" target. It is the exact projection onto ``{x : A x = y}`` when ``A A^T =
        I`` (inpainting, denoising); operators whose pseudo-inverse is cheap override it (box
        super-resolution); otherwise it is PSLD's formula with ``A^T``. Linear operators only.
        """
        if not self.linear:
            raise DWGFError(f"{type(self).__name__} is not linear: it has no adjoint for the projection")
        return x + self.adjoint(y - self.forward(x, params), params)

    def data_grad(self, x: torch.Tensor, y: torch.Tensor, params: Params) -> tuple[torch.Tensor, torch.Tensor]:
        """Gradient of ``sum_b data_loss_b`` with respect to ``x``, and the per-item losses."""
        with torch.enable_grad():
            leaf = x.detach().requires_grad_(True)
            loss = self.data_loss(leaf, y, params)
            (grad,) = torch.autograd.grad(loss.sum(), leaf)
        return grad, loss.detach()



def repeat_params(params: Params, n: int) -> Params:
    """Each item's parameters repeated ``n`` times (item-major), to match ``B*N`` particles."""
    return {k: v.repeat_interleave(n, dim=0) for k, v in params.items()}
