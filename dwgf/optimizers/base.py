"""The flow-optimiser interface, Adam (the paper's) and plain gradient steps."""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Optional

import torch

from dwgf.errors import argument_error
from dwgf.optimizers.noise import LangevinNoise
from dwgf.reprs import ArgumentsRepr

if TYPE_CHECKING:
    from dwgf.draws import ItemDraws
    from dwgf.problem import FlowState

# the data term's gradient in latent space at given particles (B x N x c x h x w -> the same), for
# optimisers that probe its curvature; every call is one decoder forward and one vector-Jacobian product
DataGradient = Callable[[torch.Tensor], torch.Tensor]


class FlowOptimizer(ArgumentsRepr):
    """Moves the particles ``z`` (``B x N x c x h x w``) by one step, given the iteration's gradient.

    The flow calls :meth:`start` once per batch, before the first iteration, then :meth:`move` once
    per iteration with the summed gradient (data term + regularizers' forces) and the step-size
    schedule's value ``lr``: :meth:`step`, then the optimiser's ``noise`` (a
    :class:`~dwgf.optimizers.LangevinNoise`, if any). ``step`` changes ``z`` in place, under
    ``torch.no_grad``. Random draws come from the ``draw`` given to :meth:`start` (each item's own
    generator), so an item's particles never depend on the other items of its batch.

    An optimiser holds the state of one batch (moments, step bounds); :meth:`start` resets it. One
    that bounds its step by the curvature sets ``needs_curvature = True``: the flow then fills
    ``state.prior_curvature`` and ``state.data_curvature_factor`` before each step.

    To add one, subclass this in any module and name it by ``class_path`` under ``model.optimizer``.
    """

    noise: Optional[LangevinNoise] = None
    needs_curvature: bool = False

    def start(self, z: torch.Tensor, lr: float, data_gradient: DataGradient, draw: "ItemDraws") -> None:
        """Called before the first iteration with the initial particles and the first step size."""

    def step(self, z: torch.Tensor, grad: torch.Tensor, lr: float, state: "FlowState") -> None:
        raise NotImplementedError

    def move(self, z: torch.Tensor, grad: torch.Tensor, lr: float, state: "FlowState", draw: "ItemDraws") -> None:
        """One iteration's move: :meth:`step`, then the ``noise`` (drawn after the step's own draws)."""
        self.step(z, grad, lr, state)
        move = self.noise.sample(state, lr, draw) if self.noise is not None else None
        if move is not None:
            z.add_(move)


class Adam(FlowOptimizer):
    """Adam on the particles, the paper's discretisation (arXiv 2509.19276), and the default.

    ``torch.optim.Adam`` with learning rate ``lr_k`` from the step-size schedule. Its per-coordinate
    normalisation makes the step about ``lr_k`` whatever the gradient's scale: robust, but an
    optimiser, not a discretised gradient flow of KL, and its particles settle on modes.

    Args:
        betas: Adam's ``(beta1, beta2)``. Default ``(0.9, 0.999)``.
        noise: injected noise after every step (:class:`~dwgf.optimizers.LangevinNoise`); default none.
    """

    DEFAULT_BETAS = (0.9, 0.999)

    def __init__(self, betas: tuple[float, float] = DEFAULT_BETAS, noise: Optional[LangevinNoise] = None):
        if len(betas) != 2 or not all(0 <= b < 1 for b in betas):
            raise argument_error(self, "betas", f" must be two numbers in [0, 1), got {list(betas)}")
        self.betas = (float(betas[0]), float(betas[1]))
        self.noise = noise
        self._adam: Optional[torch.optim.Adam] = None

    def start(self, z: torch.Tensor, lr: float, data_gradient: DataGradient, draw: "ItemDraws") -> None:
        self._adam = torch.optim.Adam([z], lr=lr, betas=self.betas)

    def step(self, z: torch.Tensor, grad: torch.Tensor, lr: float, state: "FlowState") -> None:
        for group in self._adam.param_groups:
            group["lr"] = lr
        z.grad = grad
        self._adam.step()


class GradientDescent(FlowOptimizer):
    """``z <- z - lr_k * grad``: the explicit Euler step of the particles' gradient flow.

    With a data term and a prior in log-density units (:class:`~dwgf.likelihoods.GaussianLikelihood`,
    ``KLPrior(per_element=False)``) its fixed points are the posterior's modes; ``lr_k`` must stay
    below ``2 / L`` for the curvature ``L`` of the objective, or the particles diverge.

    Args:
        noise: injected noise after every step (:class:`~dwgf.optimizers.LangevinNoise`); default none.
    """

    def __init__(self, noise: Optional[LangevinNoise] = None):
        self.noise = noise

    def step(self, z: torch.Tensor, grad: torch.Tensor, lr: float, state: "FlowState") -> None:
        z.sub_(lr * grad)
