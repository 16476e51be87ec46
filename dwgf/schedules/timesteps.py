"""Timestep schedules: the diffusion time ``t`` used at each flow iteration."""

from __future__ import annotations

from typing import Optional, Sequence

import torch

from dwgf.errors import DWGFError, argument_error
from dwgf.reprs import ArgumentsRepr


class TimestepSchedule(ArgumentsRepr):
    """Integer diffusion timesteps for ``K`` iterations, one row per item: a ``(B, K)`` tensor.

    Random schedules draw from each item's own generator, so an item's timesteps do not depend on
    the other items of its batch.

    Args:
        t_max: the largest timestep; ``None`` (default): ``T - 1`` (999 for a 1000-step model).
        t_min: the smallest timestep. Default 2 (the reference walks 999 -> 2).
    """

    def __init__(self, t_max: Optional[int] = None, t_min: int = 2):
        if t_min < 0 or (t_max is not None and t_max < t_min):
            raise DWGFError(f"{type(self).__name__}: need 0 <= t_min <= t_max, got t_min={t_min}, t_max={t_max}")
        self.t_max = t_max
        self.t_min = int(t_min)

    def bounds(self, num_train_timesteps: int) -> tuple[int, int]:
        t_max = num_train_timesteps - 1 if self.t_max is None else int(self.t_max)
        if t_max >= num_train_timesteps:
            raise argument_error(self, "t_max", f" {t_max} is beyond the prior's {num_train_timesteps} timesteps")
        if self.t_min > t_max:
            raise argument_error(self, "t_min", f" {self.t_min} is above t_max {t_max}")
        return t_max, self.t_min

    def __call__(
        self, num_iterations: int, num_train_timesteps: int, generators: Sequence[torch.Generator], device: torch.device | str = "cpu"
    ) -> torch.Tensor:
        raise NotImplementedError



class DescendingTimesteps(TimestepSchedule):
    """Evenly spaced from ``t_max`` down to ``t_min`` over ``K`` iterations, rounded.

    With ``K = 998`` on a 1000-step model this is the reference walk 999, 998, ..., 2.
    """

    def __call__(self, num_iterations, num_train_timesteps, generators, device="cpu"):
        t_max, t_min = self.bounds(num_train_timesteps)
        # on the CPU: the same rounded integer times on every device
        ts = torch.linspace(t_max, t_min, num_iterations, dtype=torch.float64).round().long()
        return ts.to(device).expand(len(generators), -1)


class RandomTimesteps(TimestepSchedule):
    """Uniform random integers in ``[t_min, t_max]`` at each iteration, per item (as in SDS)."""

    def __call__(self, num_iterations, num_train_timesteps, generators, device="cpu"):
        t_max, t_min = self.bounds(num_train_timesteps)
        rows = [torch.randint(t_min, t_max + 1, (num_iterations,), generator=g, device=g.device) for g in generators]
        return torch.stack(rows).to(device)
