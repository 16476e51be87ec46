"""The DWGF iteration: closed forms against autograd, the N=1 reduction, invariances, costs."""

import math

import pytest
import torch

from dwgf import DWGF, ItemDraws, flow_gradient, item_generators
from dwgf.flow import FlowConfig, FlowState, Problem
from dwgf.likelihoods import MeanSquaredError
from dwgf.operators import BoxInpainting, SuperResolution, repeat_params
from dwgf.regularizers import (
    ConstantWeighting,
    DWGFWeighting,
    EncoderConsistency,
    KLPrior,
    Regularizer,
    SqrtInverseSNRWeighting,
    particle_score,
)
from dwgf.schedules import ConstantStepSize, DescendingTimesteps

MSE = MeanSquaredError()  # the paper's data term: the data fit lives in the data terms


def test_particle_score_matches_autograd_of_log_mixture():
    torch.manual_seed(0)
    b, n, d = 3, 5, 7
    z_t = torch.randn(b, n, d, dtype=torch.float64)
    means = torch.randn(b, n, d, dtype=torch.float64)
    var = torch.tensor([0.3, 0.9, 0.05], dtype=torch.float64)
    leaf = z_t.clone().requires_grad_(True)
    sq = (leaf.unsqueeze(2) - means.unsqueeze(1)).square().sum(-1)  # (B, N_points, N_components)
    log_p = torch.logsumexp(-sq / (2 * var.view(b, 1, 1)), dim=-1) - math.log(n) - d / 2 * torch.log(2 * math.pi * var).view(b, 1)
    (expected,) = torch.autograd.grad(log_p.sum(), leaf)
    assert torch.allclose(particle_score(z_t, means, var), expected, atol=1e-10)


def test_particles_interact_only_within_their_item():
    torch.manual_seed(0)
    z_t, means = torch.randn(2, 3, 4), torch.randn(2, 3, 4)
    var = torch.tensor([0.5, 0.5])
    both = particle_score(z_t, means, var)
    changed = means.clone()
    changed[1] += 10
    assert torch.equal(particle_score(z_t, changed, var)[0], both[0])
    assert torch.allclose(particle_score(z_t[:1], means[:1], var[:1]), both[:1])


def test_weightings():
    abar = torch.tensor([0.25, 0.81])
    assert torch.allclose(DWGFWeighting()(abar), (1 - abar) / abar.sqrt())
    assert torch.allclose(ConstantWeighting()(abar), torch.ones(2))
    assert torch.allclose(SqrtInverseSNRWeighting()(abar), ((1 - abar) / abar).sqrt())


def _state(z, eps, eps_hat, abar):
    a = abar.view(-1, 1, 1, 1, 1)
    return FlowState(
        z=z, x=torch.zeros(1), x_noise=torch.zeros(1), t=torch.zeros(len(abar), dtype=torch.long), abar=abar,
        eps=eps, z_t=a.sqrt() * z + (1 - a).sqrt() * eps, eps_hat=eps_hat, iteration=0, num_iterations=1,
    )


def test_single_particle_reduces_to_score_distillation():
    """N = 1: lambda_t (f - s) = w sqrt((1 - abar) / abar) (eps_hat - eps), per latent element."""
    torch.manual_seed(0)
    z, eps, eps_hat = (torch.randn(2, 1, 4, 3, 3, dtype=torch.float64) for _ in range(3))
    abar = torch.tensor([0.3, 0.7], dtype=torch.float64)
    force = KLPrior(weight=0.15).force(_state(z, eps, eps_hat, abar))
    sds = 0.15 * ((1 - abar) / abar).sqrt().view(-1, 1, 1, 1, 1) * (eps_hat - eps) / 36
    assert torch.allclose(force, sds, atol=1e-12)
    # and ``particle_term=False`` is that same gradient for every N
    z4, eps4, hat4 = (torch.randn(2, 4, 4, 3, 3, dtype=torch.float64) for _ in range(3))
    independent = KLPrior(weight=0.15, particle_term=False).force(_state(z4, eps4, hat4, abar))
    assert torch.allclose(independent, 0.15 * ((1 - abar) / abar).sqrt().view(-1, 1, 1, 1, 1) * (hat4 - eps4) / 36)


def _setup(prior, batch=2, op=None, seed=0):
    op = op or BoxInpainting(size=[12, 12], sigma_y=0.01)
    shape = (prior.image_channels, prior.image_size, prior.image_size)
    gens = [torch.Generator().manual_seed(seed + i) for i in range(batch)]
    items = [op.sample_params(shape, g) for g in gens]
    params = {k: torch.stack([p[k] for p in items]) for k in items[0]}
    x = torch.rand(batch, *shape, generator=torch.Generator().manual_seed(seed)) * 2 - 1
    return op, op(x, params), params


def test_data_term_gradient_matches_finite_differences(ldm_prior):
    """With no regularizer, the pulled-back gradient is d/dz of sum_i data_loss(D(z^i) + n^i)."""
    prior = ldm_prior.double()
    try:
        op, y, params = _setup(prior)
        y, params = y.double(), {k: v.double() for k, v in params.items()}
        n = 2
        z = torch.randn(2, n, *prior.latent_shape, dtype=torch.float64)
        t = torch.tensor([500, 500])
        y_n, params_n = y.repeat_interleave(n, 0), repeat_params(params, n)

        class Noise(ItemDraws):  # float64 draws
            def __call__(self, shape):
                return super().__call__(shape).double()

        problem = Problem(op, y, params, num_particles=n)
        grad, state = flow_gradient(prior, problem, FlowConfig(regularizers=()), z, t, Noise(item_generators([1, 2], "cpu"), "cpu"))

        def loss(zz):
            x = prior.decode(zz.flatten(0, 1)) + state.x_noise.flatten(0, 1)
            return MSE.loss(op, x, y_n, params_n).sum()

        d = torch.randn_like(z)
        h = 1e-5
        fd = (loss(z + h * d) - loss(z - h * d)) / (2 * h)
        assert torch.allclose((grad * d).sum(), fd, rtol=1e-5)
    finally:
        prior.float()


class _Counter(Regularizer):
    space = "latent"

    def __init__(self):
        self.calls = 0

    def force(self, state):
        self.calls += 1
        return torch.zeros_like(state.z)


def test_one_network_call_one_decode_one_vjp_per_iteration(sd_prior, monkeypatch):
    calls = {"eps": 0, "decode": 0, "encode": 0, "grad": 0}
    for name in ("eps", "decode", "encode"):
        original = getattr(sd_prior, f"_{name}")

        def counted(*args, _o=original, _n=name):
            calls[_n] += 1
            return _o(*args)

        monkeypatch.setattr(sd_prior, f"_{name}", counted)
    original_grad = torch.autograd.grad

    def counted_grad(*args, **kwargs):
        calls["grad"] += 1
        return original_grad(*args, **kwargs)

    op, y, params = _setup(sd_prior)
    extra = [KLPrior(weight=0.5, weighting=ConstantWeighting()), _Counter(), _Counter()]
    solver = DWGF(sd_prior, num_steps=3, num_particles=2, regularizers=[KLPrior()] + extra).set_operator(op)
    monkeypatch.setattr(torch.autograd, "grad", counted_grad)
    solver.solve(y, params, [0, 1])
    # data gradient (operator only) + the decoder VJP: 2 autograd calls per iteration
    assert calls == {"eps": 3, "decode": 3 + 1, "encode": 0, "grad": 2 * 3}
    assert extra[1].calls == 3

    calls.update(eps=0, decode=0, encode=0, grad=0)
    DWGF(sd_prior, num_steps=3, num_particles=2).set_operator(op).solve(y, params, [0, 1])
    # the encoder term adds one encode and one decode (both without graph), no backward pass
    assert calls == {"eps": 3, "decode": 3 + 3 + 1, "encode": 3, "grad": 2 * 3}


def test_frozen_weights_never_get_grad(sd_prior):
    op, y, params = _setup(sd_prior)
    solver = DWGF(sd_prior, num_steps=3, num_particles=2).set_operator(op)
    solver.solve(y, params, [0, 1])
    assert all(p.grad is None for p in solver.parameters())
    assert not any(p.requires_grad for p in solver.parameters())


def test_same_seed_same_result(ldm_prior):
    op, y, params = _setup(ldm_prior)
    solver = DWGF(ldm_prior, num_steps=3, num_particles=2).set_operator(op)
    assert torch.equal(solver.solve(y, params, [5, 6]), solver.solve(y, params, [5, 6]))


def test_reference_timesteps_and_iteration_count():
    ts = DescendingTimesteps()(998, 1000, [None, None])
    assert ts.shape == (2, 998) and ts[0, 0] == 999 and ts[0, -1] == 2
    assert torch.equal(ts[0], torch.arange(999, 1, -1))


def test_flow_without_prior_fits_the_measurement(ldm_prior):
    """Decoder inversion (no regularizer) drives the data term down: the loop really optimises."""
    op, y, params = _setup(ldm_prior, op=SuperResolution(factor=2))
    losses = []
    solver = DWGF(ldm_prior, num_steps=40, num_particles=2, regularizers=[], step_size=ConstantStepSize(0.1))
    solver.set_operator(op)
    solver.on_iteration = lambda state: losses.append(float(state.data_loss.mean()))
    solver.solve(y, params, [0, 1])
    assert losses[-1] < 0.5 * losses[0]


def test_encoder_consistency_force_formula(ldm_prior):
    torch.manual_seed(0)
    x = torch.rand(1, 2, 1, 32, 32) * 2 - 1
    draw = ItemDraws(item_generators([3], "cpu"), "cpu")
    state = FlowState(
        z=torch.zeros(1, 2, 4, 16, 16), x=x, x_noise=torch.zeros_like(x), t=torch.tensor([10]), abar=torch.tensor([0.9]),
        eps=None, z_t=None, eps_hat=None, iteration=0, num_iterations=1,
    )
    reg = EncoderConsistency(weight=0.1)
    reg.start(ldm_prior, None, draw)
    force = reg.force(state)
    noise = ItemDraws(item_generators([3], "cpu"), "cpu")((2, 4, 16, 16)).flatten(0, 1)
    rec = ldm_prior.decode(ldm_prior.encode(x.flatten(0, 1), noise)).view_as(x)
    assert torch.allclose(force, 0.1 * (x - rec) / (32 * 32), atol=1e-7)


def test_under_autocast_the_network_runs_in_low_precision_and_the_particle_score_does_not(ldm_prior, monkeypatch):
    seen = {}
    original_eps, original_score = ldm_prior._eps, __import__("dwgf.regularizers.kl_prior", fromlist=["x"]).particle_score

    def eps(z_t, t):
        seen["unet_autocast"] = torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16
        return original_eps(z_t, t)

    def score(*args):
        seen["score_autocast"] = torch.is_autocast_enabled("cpu")
        return original_score(*args)

    monkeypatch.setattr(ldm_prior, "_eps", eps)
    monkeypatch.setattr("dwgf.regularizers.kl_prior.particle_score", score)
    op, y, params = _setup(ldm_prior)
    solver = DWGF(ldm_prior, num_steps=2, num_particles=2, regularizers=[KLPrior()]).set_operator(op)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = solver.solve(y, params, [0, 1])
    assert seen == {"unet_autocast": True, "score_autocast": False}
    assert out.dtype == torch.float32


@pytest.mark.slow
def test_compiled_networks_give_the_same_particles(ldm_path):
    """--model.compile: torch.compile of UNet and decoder changes nothing but float rounding."""
    from dwgf.priors import UnconditionalLatentPrior

    results = []
    for compile_ in (False, True):
        prior = UnconditionalLatentPrior(str(ldm_path))
        op, y, params = _setup(prior)
        solver = DWGF(prior, num_steps=3, num_particles=2, compile=compile_).set_operator(op)
        results.append(solver.solve(y, params, [1, 2]))
        assert all(p.grad is None for p in prior.parameters())
    assert torch.allclose(results[0], results[1], atol=1e-4), (results[0] - results[1]).abs().max()
