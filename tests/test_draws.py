"""Per-item noise: CPU generators for any device, drawn ahead on a side thread without changing a number."""

from types import SimpleNamespace

import pytest
import torch

from dwgf import DWGF, ItemDraws, item_generators
from dwgf.flow import FlowConfig, Problem, dwgf_flow
from dwgf.draws import generator_device
from dwgf.operators import BoxInpainting
from dwgf.optimizers import Adam, Langevin, LangevinNoise
from dwgf.regularizers import EncoderConsistency, KLPrior
from dwgf.schedules import ConstantStepSize, DescendingTimesteps


def plain(seeds, shapes):
    """The draws one at a time from fresh CPU generators: what every way of drawing must reproduce."""
    gens = item_generators(seeds, "cpu")
    return [torch.stack([torch.randn(s, generator=g) for g in gens]) for s in shapes]


# the shapes an "iteration" asks for, iteration by iteration, with marks between them
PLANS = {
    "same every iteration": [[(2, 3), (4,)]] * 4,
    "a different shape": [[(2, 3), (4,)], [(2, 3), (5,)], [(2, 3), (4,)], [(2, 3), (4,)]],
    "fewer draws": [[(2, 3), (4,), (1,)], [(2, 3)], [(2, 3), (4,)], [(2, 3), (4,)]],
    "more draws": [[(2, 3)], [(2, 3), (4,), (4,)], [(2, 3)], [(7,)]],
    "an empty iteration": [[(2, 3)], [], [(2, 3)], [(2, 3)]],
}


@pytest.mark.parametrize("plan", list(PLANS.values()), ids=list(PLANS))
def test_drawing_ahead_changes_no_number(plan):
    shapes = [s for it in plan for s in it]
    expected = plain([3, 11], shapes)
    draw = ItemDraws(item_generators([3, 11], "cpu"), "cpu", ahead=True)
    got = []
    for k, it in enumerate(plan):
        got += [draw(s) for s in it]
        draw.next_iteration(more=k + 1 < len(plan))
    draw.close()
    assert len(got) == len(expected)
    for a, b in zip(got, expected):
        assert torch.equal(a, b)
    # nothing drawn ahead is lost or skipped: the generators stand where plain drawing leaves them
    after = draw((6,))
    assert torch.equal(after, plain([3, 11], [*shapes, (6,)])[-1])


def test_generators_read_mid_run_are_rewound_past_the_draws_made_ahead():
    draw = ItemDraws(item_generators([5], "cpu"), "cpu", ahead=True)
    draw((3,))
    draw.next_iteration()  # (3,) is now being drawn ahead
    state = draw.generators[0].get_state()
    reference = item_generators([5], "cpu")[0]
    torch.randn(3, generator=reference)
    assert torch.equal(state, reference.get_state())
    assert torch.equal(draw((3,))[0], torch.randn(3, generator=reference))
    draw.close()


def test_draws_follow_the_target_device_not_the_generators():
    """CPU generators for another device (the meta device stands in for a GPU here): the numbers are
    made on the CPU and moved, and drawing ahead is on by default for that case only."""
    draw = ItemDraws(item_generators([0, 1], "cpu"), "meta")
    assert draw.ahead and draw.source == torch.device("cpu")
    out = draw((2, 4))
    assert out.device.type == "meta" and out.shape == (2, 2, 4)
    draw.next_iteration()
    assert draw((2, 4)).device.type == "meta"
    draw.close()
    assert not ItemDraws(item_generators([0], "cpu"), "cpu").ahead


def test_generator_place():
    assert generator_device("cpu", "cuda:1") == torch.device("cpu")
    assert generator_device("device", "cuda:1") == torch.device("cuda:1")
    assert generator_device("device", "cpu") == torch.device("cpu")
    with pytest.raises(ValueError, match="generator must be one of cpu, device"):
        generator_device("gpu", "cpu")
    with pytest.raises(ValueError, match="several devices"):
        ItemDraws([torch.Generator("cpu"), SimpleNamespace(device=torch.device("cuda"))], "cpu")


def _flow(prior, draw, regularizers, optimizer=None):
    op = BoxInpainting(size=[12, 12])
    x = torch.linspace(-1, 1, 2 * 32 * 32).view(2, 1, 32, 32)
    y, params = op.measure(x, seeds=[0, 1])
    config = FlowConfig(num_steps=4, regularizers=regularizers, step_size=ConstantStepSize(0.1), timesteps=DescendingTimesteps(),
                        **({"optimizer": optimizer} if optimizer is not None else {}))
    return dwgf_flow(prior, Problem(op, y, params, num_particles=2), config, draw)[1]


@pytest.mark.parametrize("setup", ["paper", "langevin", "injected"])
def test_the_flow_gives_the_same_particles_with_noise_drawn_ahead(ldm_prior, setup):
    """The flow marks its iterations for the side thread; with draws that vary in number
    (the encoder term's, Langevin's, the optimiser's injected noise) every particle is still the one plain drawing gives."""
    if setup == "paper":
        regs, opt = [KLPrior(), EncoderConsistency()], None
    elif setup == "langevin":
        regs, opt = [KLPrior()], Langevin(temperature=0.5)
    else:
        regs, opt = [KLPrior(), EncoderConsistency()], Adam(noise=LangevinNoise(scale=0.5))
    plain_z = _flow(ldm_prior, ItemDraws(item_generators([4, 9], "cpu"), "cpu"), regs, opt)
    ahead = ItemDraws(item_generators([4, 9], "cpu"), "cpu", ahead=True)
    ahead_z = _flow(ldm_prior, ahead, regs, opt)
    assert torch.equal(plain_z, ahead_z)
    assert ahead.served_ahead >= 3 * 3  # iterations 1-3 were drawn ahead (eps, decoder noise, and more)
    assert not ahead._queue  # the flow gave back what it did not use


def test_solver_generator_option(ldm_prior):
    op = BoxInpainting(size=[12, 12])
    y, params = op.measure(torch.zeros(1, 1, 32, 32), seeds=[0])
    # on the CPU the device's generators are the CPU's: the two settings agree
    a = DWGF(ldm_prior, num_steps=2, num_particles=2, generator="cpu").set_operator(op).solve(y, params, [7])
    b = DWGF(ldm_prior, num_steps=2, num_particles=2, generator="device").set_operator(op).solve(y, params, [7])
    assert torch.equal(a, b)
    with pytest.raises(Exception, match="generator.*'cpu' or 'device'"):
        DWGF(ldm_prior, generator="gpu")
