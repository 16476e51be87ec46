"""Step-size and timestep schedules."""

import math

import pytest
import torch

from dwgf.errors import DWGFError
from dwgf.schedules import (
    ConstantStepSize,
    CosineStepSize,
    DescendingTimesteps,
    ExponentialStepSize,
    LinearDecayStepSize,
    RandomTimesteps,
)


@pytest.mark.parametrize(
    "schedule, first, middle, last",
    [
        (ConstantStepSize(0.5), 0.5, 0.5, 0.5),
        (CosineStepSize(1.0, 0.1), 1.0, 0.55, 0.1),
        (LinearDecayStepSize(1.0, 0.0), 1.0, 0.5, 0.0),
        (ExponentialStepSize(1.0, 0.01), 1.0, 0.1, 0.01),
    ],
)
def test_step_sizes(schedule, first, middle, last):
    assert math.isclose(schedule(0, 11), first, abs_tol=1e-12)
    assert math.isclose(schedule(5, 11), middle, abs_tol=1e-12)
    assert math.isclose(schedule(10, 11), last, abs_tol=1e-12)
    assert schedule(0, 1) == first  # a single iteration uses the initial step


def test_bad_step_sizes():
    with pytest.raises(DWGFError, match="lr must be > 0"):
        ConstantStepSize(0.0)
    with pytest.raises(DWGFError, match="final_lr must be > 0"):
        ExponentialStepSize(1.0, 0.0)


def test_descending_timesteps():
    ts = DescendingTimesteps(t_max=900, t_min=100)(5, 1000, [None] * 3)
    assert ts.shape == (3, 5) and ts[0].tolist() == [900, 700, 500, 300, 100]
    with pytest.raises(DWGFError, match="beyond"):
        DescendingTimesteps(t_max=1000)(5, 1000, [None])


def test_random_timesteps_are_per_item():
    sched = RandomTimesteps(t_min=10, t_max=20)
    gens = lambda *seeds: [torch.Generator().manual_seed(s) for s in seeds]  # noqa: E731
    both = sched(50, 1000, gens(1, 2))
    assert both.shape == (2, 50) and both.min() >= 10 and both.max() <= 20
    assert torch.equal(sched(50, 1000, gens(2))[0], both[1])
    assert not torch.equal(both[0], both[1])
