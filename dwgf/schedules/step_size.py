"""Step-size schedules: the optimizer's learning rate at each flow iteration."""

from __future__ import annotations

import math

from dwgf.errors import argument_error
from dwgf.reprs import ArgumentsRepr


class StepSizeSchedule(ArgumentsRepr):
    """The step size (Adam's learning rate) at iteration ``k`` of ``K`` (``k = 0 .. K-1``).

    Subclass and implement :meth:`__call__` to add one; name it by ``class_path`` under
    ``model.step_size``.

    Args:
        lr: the initial (or constant) step size, in latent units. Must be > 0.
    """

    def __init__(self, lr: float = 1.0):
        if not lr > 0:
            raise argument_error(self, "lr", f" must be > 0, got {lr}")
        self.lr = float(lr)

    def __call__(self, k: int, num_iterations: int) -> float:
        raise NotImplementedError

    @staticmethod
    def _progress(k: int, num_iterations: int) -> float:
        return k / (num_iterations - 1) if num_iterations > 1 else 0.0



class _Decaying(StepSizeSchedule):
    def __init__(self, lr: float = 1.0, final_lr: float = 0.0):
        super().__init__(lr)
        if not final_lr >= 0:
            raise argument_error(self, "final_lr", f" must be >= 0, got {final_lr}")
        self.final_lr = float(final_lr)


class ConstantStepSize(StepSizeSchedule):
    """``lr`` at every iteration (the reference: Adam with lr 1.0)."""

    def __call__(self, k: int, num_iterations: int) -> float:
        return self.lr


class CosineStepSize(_Decaying):
    """Cosine decay from ``lr`` at the first iteration to ``final_lr`` at the last.

    ``lr_k = final_lr + (lr - final_lr) (1 + cos(pi k / (K-1))) / 2``.
    """

    def __call__(self, k: int, num_iterations: int) -> float:
        p = self._progress(k, num_iterations)
        return self.final_lr + (self.lr - self.final_lr) * 0.5 * (1 + math.cos(math.pi * p))


class LinearDecayStepSize(_Decaying):
    """Linear decay from ``lr`` at the first iteration to ``final_lr`` at the last."""

    def __call__(self, k: int, num_iterations: int) -> float:
        p = self._progress(k, num_iterations)
        return self.lr + (self.final_lr - self.lr) * p


class ExponentialStepSize(StepSizeSchedule):
    """Geometric decay from ``lr`` to ``final_lr``: ``lr_k = lr (final_lr / lr)^(k / (K-1))``.

    Args:
        lr: initial step size (> 0).
        final_lr: step size at the last iteration (> 0). Default ``lr / 100``.
    """

    def __init__(self, lr: float = 1.0, final_lr: float | None = None):
        super().__init__(lr)
        final_lr = self.lr / 100 if final_lr is None else final_lr
        if not final_lr > 0:
            raise argument_error("ExponentialStepSize", "final_lr", f" must be > 0, got {final_lr}")
        self.final_lr = float(final_lr)

    def __call__(self, k: int, num_iterations: int) -> float:
        return self.lr * (self.final_lr / self.lr) ** self._progress(k, num_iterations)
