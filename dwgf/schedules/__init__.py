"""Step-size schedules (per iteration) and timestep schedules (which ``t`` at which iteration)."""

from dwgf.schedules.step_size import (
    ConstantStepSize,
    CosineStepSize,
    ExponentialStepSize,
    LinearDecayStepSize,
    StepSizeSchedule,
)
from dwgf.schedules.timesteps import DescendingTimesteps, RandomTimesteps, TimestepSchedule

__all__ = [
    "StepSizeSchedule",
    "ConstantStepSize",
    "CosineStepSize",
    "LinearDecayStepSize",
    "ExponentialStepSize",
    "TimestepSchedule",
    "DescendingTimesteps",
    "RandomTimesteps",
]
