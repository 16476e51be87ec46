"""The benchmark scripts' own correctness checks, on a tiny prior."""

import importlib.util
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


def load(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # as an import does (dataclasses look their module up there)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def flow_speed():
    return load("flow_speed")


def test_reference_faithful_iteration_gives_dwgf_particles(flow_speed, ldm_prior):
    # the comparator must compute the same flow, only the slow way
    diff = flow_speed.check_reference(ldm_prior, torch.device("cpu"), iters=3)
    assert diff < 1e-10  # float64: the same maths to rounding
    # and it leaves the frozen prior as it found it: no gradients, no grad-requiring weights
    assert all(not p.requires_grad and p.grad is None for p in ldm_prior.parameters())


def test_reference_faithful_iteration_differs_when_the_flow_differs(flow_speed, ldm_prior):
    # the agreement above is not vacuous: another prior weight moves the reference's particles
    op, y, params = flow_speed.problem(ldm_prior, 1, torch.device("cpu"))
    a = flow_speed.reference_flow(ldm_prior, op, y, params, 4, 3, weight=0.25)
    b = flow_speed.reference_flow(ldm_prior, op, y, params, 4, 3, weight=2.5)
    assert (a - b).abs().max() > 1e-3


def test_floor_and_flow_timings_are_positive(flow_speed, ldm_prior):
    rows = []
    flow_speed.measure("tiny", ldm_prior, [4], 1, 1, 1, False, torch.device("cpu"), 200, rows)
    (r,) = rows
    assert r["iteration"] > 0 and r["floor"] > 0 and set(r["parts"]) == {"unet", "decode+vjp"}
    assert r["pairs"] == 1 and r["quartiles"][0] <= r["quartiles"][1]
    assert r["images_per_min"] == pytest.approx(r["b"] * 60 / (200 * r["iteration"]))


def test_changes_are_applied_and_timed(flow_speed):
    # the change under test really reaches the networks (else "with" and "without" time the same thing)
    from dwgf.priors import UnconditionalLatentPrior

    prior = UnconditionalLatentPrior("dwgf:mnist-ldm")
    flow_speed.CHANGES["unet_channels_last"].apply(prior)
    conv = next(m for m in prior.unet.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last) and conv.weight.shape[-1] > 1
    rows = flow_speed.measure_changes(["vae_channels_last"], [1], 1, 0, 1, torch.device("cpu"))
    assert [(r["change"], r["bn"]) for r in rows] == [("vae_channels_last", 1)] and rows[0]["plain"] > 0 < rows[0]["changed"]
    assert rows[0]["rounds"][0] <= rows[0]["rounds"][1]


def test_floor_runs_on_each_iterations_own_tensors(flow_speed, ldm_prior, monkeypatch):
    # the paired floor evaluates the UNet on exactly the diffused particles the iteration used
    seen = []
    eps = type(ldm_prior).eps

    def spy(self, z_t, t):
        seen.append((z_t.clone(), t.clone()))
        return eps(self, z_t, t)

    monkeypatch.setattr(type(ldm_prior), "eps", spy)
    op, y, params = flow_speed.problem(ldm_prior, 2, torch.device("cpu"))
    times, floors, _ = flow_speed.time_flow(ldm_prior, op, y, params, 2, 3, 1, True, floor=True)
    assert len(times) == len(floors) == 3 and all(set(f) == {"unet", "decode+vjp", "encode+decode"} for f in floors)
    assert len(seen) == 7  # 1 warm-up iteration, then 3 iterations each followed by its floor
    for (z_flow, t_flow), (z_floor, t_floor) in zip(seen[1::2], seen[2::2]):
        assert z_flow.shape[0] == 4 and torch.equal(z_flow, z_floor) and torch.equal(t_flow, t_floor)
    assert not torch.equal(seen[1][0], seen[3][0])  # and each iteration's are its own


def test_sd_spec(flow_speed):
    import argparse

    assert flow_speed.sd_spec("512:1,4") == (512, [1, 4])
    for bad in ["512", "512:", "500:1", "256:0", "a:1"]:
        with pytest.raises(argparse.ArgumentTypeError):
            flow_speed.sd_spec(bad)


def test_a_size_that_runs_out_of_memory_gets_a_row_and_the_run_goes_on(flow_speed, ldm_prior, monkeypatch):
    time_flow = flow_speed.time_flow

    def tight(prior, op, y, params, n, *args, **kwargs):
        if y.shape[0] * n > 4:
            raise torch.OutOfMemoryError("simulated")
        return time_flow(prior, op, y, params, n, *args, **kwargs)

    monkeypatch.setattr(flow_speed, "time_flow", tight)
    rows = []
    flow_speed.measure("tiny", ldm_prior, [8, 4], 1, 0, 1, False, torch.device("cpu"), 200, rows)
    assert rows[0]["oom"] and "out of memory" in flow_speed._row(rows[0])
    assert rows[1]["bn"] == 4 and rows[1]["iteration"] > 0


def test_every_change_is_described(flow_speed):
    assert all(change.doc for change in flow_speed.CHANGES.values())
