"""Flow optimisers: how the particles move, given the iteration's gradient and step size.

:class:`Adam` is the paper's (the default); :class:`GradientDescent` is the explicit Euler step of the
Wasserstein gradient flow; :class:`Langevin` adds the noise that makes the particles samples of
``exp(-U)`` instead of minimisers of ``U``. :class:`LangevinNoise` is injected noise after Adam's or
gradient descent's step (their ``noise``).

Add your own by subclassing :class:`FlowOptimizer` in any module and naming it by ``class_path``
under ``model.optimizer``.
"""

from dwgf.optimizers.base import Adam, FlowOptimizer, GradientDescent
from dwgf.optimizers.langevin import Langevin, data_curvature
from dwgf.optimizers.noise import LangevinNoise

__all__ = ["FlowOptimizer", "Adam", "GradientDescent", "Langevin", "LangevinNoise", "data_curvature"]
