"""The flow optimisers (dwgf.optimizers) and their injected noise; every exported optimiser is checked as it comes."""

import math

import pytest
import torch

from dwgf import DWGF
from dwgf.errors import DWGFError
from dwgf.flow import ItemDraws, Problem, data_gradient_of, item_generators
from dwgf.likelihoods import GaussianLikelihood, MeanSquaredError
from dwgf.operators import BoxInpainting, MatrixOperator
from dwgf.optimizers import Adam, GradientDescent, Langevin, data_curvature
from dwgf.priors import GaussianMixture, GaussianMixturePrior, grid_mixture
from dwgf.regularizers import KLPrior, ScoreWeighting
from dwgf.schedules import ConstantStepSize, DescendingTimesteps
from tests.test_regularizers import _state
from dwgf.flow import FlowConfig
from dwgf.optimizers import LangevinNoise
from tests.test_flow import _setup


def _gaussian_prior(d: int) -> GaussianMixturePrior:
    one = GaussianMixture(torch.ones(1, dtype=torch.float64), torch.zeros(1, d, dtype=torch.float64), torch.ones(1, d, dtype=torch.float64))
    return GaussianMixturePrior(one, schedule="linear")


def _matrix_problem(d=6, m=3, sigma=0.3, seed=0):
    gen = torch.Generator().manual_seed(seed)
    a = torch.randn(m, d, generator=gen, dtype=torch.float64) / math.sqrt(d)
    op = MatrixOperator(a.float(), image_shape=[d, 1, 1], sigma_y=sigma)
    y = torch.randn(m, generator=gen, dtype=torch.float64)
    return a, op, y


# -- optimisers ----------------------------------------------------------------------------------
def test_default_optimizer_and_data_term_are_adam_and_the_papers_bit_for_bit():
    prior = GaussianMixturePrior(grid_mixture(6), schedule="linear")
    _, op, y = _matrix_problem()
    yb = y.float().view(1, -1, 1, 1).expand(3, -1, -1, -1).contiguous()
    kw = dict(num_steps=15, num_particles=2, regularizers=[KLPrior(0.1)], step_size=ConstantStepSize(0.3), decoder_noise=0.0)
    plain = DWGF(prior, betas=(0.8, 0.99), **kw).set_operator(op).solve(yb, {}, [1, 2, 3])
    explicit = DWGF(prior, optimizer=Adam((0.8, 0.99)), likelihood=MeanSquaredError(), **kw).set_operator(op).solve(yb, {}, [1, 2, 3])
    assert torch.equal(plain, explicit)
    assert not torch.equal(plain, DWGF(prior, optimizer=GradientDescent(), **kw).set_operator(op).solve(yb, {}, [1, 2, 3]))


def test_betas_with_another_optimizer_is_an_error():
    prior = _gaussian_prior(4)
    with pytest.raises(DWGFError, match="betas apply to the default optimizer only"):
        DWGF(prior, betas=(0.5, 0.9), optimizer=Langevin())
    with pytest.raises(DWGFError, match="query_noise must be in"):
        DWGF(prior, query_noise=2.0)
    for kwargs, match in (({"temperature": -1}, "temperature"), ({"max_step": "x"}, "max_step"), ({"safety": 0}, "safety"),
                          ({"power_iterations": 0}, "power_iterations"), ({"refresh_every": -1}, "refresh_every")):
        with pytest.raises(DWGFError, match=match):
            Langevin(**kwargs)
    with pytest.raises(DWGFError, match="betas must be two numbers"):
        Adam((0.9, 1.5))


def test_data_curvature_is_the_largest_eigenvalue_of_the_likelihoods_hessian():
    a, op, _ = _matrix_problem(d=8, m=3, sigma=0.2)
    prior = _gaussian_prior(8)
    problem = Problem(op, torch.randn(2, 3, 1, 1), {}, GaussianLikelihood(), num_particles=2)  # the Hessian does not depend on y
    fn = data_gradient_of(prior, problem)
    draw = ItemDraws(item_generators([0, 1], "cpu"), "cpu")
    z = torch.randn(2, 2, 8, 1, 1)
    curvature = data_curvature(z, fn, draw, iterations=50)
    exact = float(torch.linalg.eigvalsh(a.T @ a).max()) / 0.2**2
    assert torch.allclose(curvature, torch.full((2, 2), exact, dtype=torch.float32), rtol=1e-3)


def test_langevin_bounds_its_step_by_the_data_and_prior_curvatures():
    opt = Langevin(safety=0.5)
    opt._curvature = torch.tensor([[100.0, 10.0]])
    eta = opt.step_sizes(1.0, torch.zeros(1, 2, 3), prior_curvature=torch.tensor([10.0]), data_factor=torch.tensor([0.5]))
    assert torch.allclose(eta.flatten(), torch.tensor([0.5 / 60, 0.5 / 15]))
    assert torch.allclose(Langevin(max_step="none").step_sizes(0.7, torch.zeros(1, 2, 3)).flatten(), torch.tensor([0.7, 0.7]))


def _exact_gaussian_flow(optimizer, t=300, steps=400, items=150, lr=0.05):
    """The flow on a Gaussian prior at a fixed noise level t: its target is the posterior of the smoothed prior."""
    d = 4
    prior = _gaussian_prior(d)
    a, op, y = _matrix_problem(d=d, m=2, sigma=0.5)
    abar = float(prior.abar(torch.tensor([t]))[0])
    solver = DWGF(prior, num_steps=steps, num_particles=4, decoder_noise=0.0, query_noise=0.0, optimizer=optimizer,
                  regularizers=[KLPrior(1.0, weighting=ScoreWeighting(), particle_term=False, per_element=False)],
                  likelihood=GaussianLikelihood(), step_size=ConstantStepSize(lr), timesteps=DescendingTimesteps(t_max=t, t_min=t))
    yb = y.float().view(1, -1, 1, 1).expand(items, -1, -1, -1).contiguous()
    samples = solver.set_operator(op).solve(yb, {}, list(range(items))).reshape(-1, d).double()
    smoothed = GaussianMixture(torch.ones(1, dtype=torch.float64), torch.zeros(1, d, dtype=torch.float64),
                               torch.full((1, d), 1 / abar, dtype=torch.float64))
    exact = smoothed.condition(a, y, 0.5)
    return samples, exact.means[0], exact.covariances[0]


def test_langevin_samples_an_exact_gaussian_posterior():
    samples, mean, cov = _exact_gaussian_flow(Langevin(temperature=1.0, safety=0.2))
    assert (samples.mean(0) - mean).norm() / mean.norm().clamp_min(1) < 0.1
    ratio = torch.diagonal(torch.cov(samples.T)) / torch.diagonal(cov)
    assert ((ratio > 0.8) & (ratio < 1.25)).all(), ratio


def test_langevin_at_temperature_zero_and_gradient_descent_find_the_mode():
    samples, mean, _ = _exact_gaussian_flow(Langevin(temperature=0.0, safety=0.5), items=4)
    assert torch.allclose(samples, mean.expand_as(samples), atol=1e-3)
    samples, mean, _ = _exact_gaussian_flow(GradientDescent(), items=4, lr=0.1)
    assert torch.allclose(samples, mean.expand_as(samples), atol=1e-3)


def test_frozen_weights_get_no_grad_with_the_sampler(ldm_prior):
    op = BoxInpainting(size=[12, 12], sigma_y=0.01)
    shape = (ldm_prior.image_channels, ldm_prior.image_size, ldm_prior.image_size)
    y, params = op.measure(torch.zeros(1, *shape), seeds=[0])
    solver = DWGF(ldm_prior, num_steps=3, num_particles=2, query_noise=0.0, optimizer=Langevin(refresh_every=2, power_iterations=2),
                  regularizers=[KLPrior(1.0, weighting=ScoreWeighting(), particle_term=False, per_element=False)],
                  likelihood=GaussianLikelihood(anneal=10.0)).set_operator(op)
    out = solver.solve(y, params, [0])
    assert torch.isfinite(out).all()
    assert all(p.grad is None for p in ldm_prior.parameters())


# -- LangevinNoise --------------------------------------------------------------------------------
def test_langevin_noise_has_the_scheduled_size():
    z = torch.zeros(2, 3, 4, 8, 8)
    abar = torch.tensor([0.36, 0.91])
    gens = [torch.Generator().manual_seed(s) for s in (0, 1)]
    state = _state(z, abar, step_size=0.5, iteration=3, num_iterations=4)
    for anneal, g in (("noise_level", (1 - abar).sqrt()), ("constant", torch.ones(2)), ("linear", torch.full((2,), 0.25))):
        move = LangevinNoise(scale=0.2, anneal=anneal).sample(state, 0.5, ItemDraws(gens, "cpu"))
        expected = 0.2 * math.sqrt(2 * 0.5) * g
        assert torch.allclose(move.flatten(1).std(1), expected, rtol=0.1)
    assert torch.allclose(LangevinNoise(scale=0.2, anneal="linear", final=0.5).schedule(state), torch.full((2,), 0.5))
    assert LangevinNoise(scale=0.0).sample(state, 0.5, ItemDraws(gens, "cpu")) is None  # no move, no draw


def test_langevin_noise_bad_arguments():
    with pytest.raises(DWGFError, match="anneal"):
        LangevinNoise(anneal="cosine")
    with pytest.raises(DWGFError, match="final"):
        LangevinNoise(final=2)


def test_langevin_noise_at_scale_zero_changes_nothing_and_otherwise_moves_the_particles(ldm_prior):
    op, y, params = _setup(ldm_prior)
    plain = DWGF(ldm_prior, num_steps=3, num_particles=2, regularizers=[KLPrior()]).set_operator(op).solve(y, params, [0, 1])
    zero = DWGF(ldm_prior, num_steps=3, num_particles=2, regularizers=[KLPrior(), LangevinNoise(scale=0.0)]).set_operator(op)
    noisy = DWGF(ldm_prior, num_steps=3, num_particles=2, regularizers=[KLPrior(), LangevinNoise(scale=0.5)]).set_operator(op)
    assert torch.equal(zero.solve(y, params, [0, 1]), plain)
    noisy_particles = noisy.solve(y, params, [0, 1])
    assert not torch.allclose(noisy_particles, plain, atol=1e-3)
    # listed under the regularizers or given to the optimiser: the same particles
    assert len(noisy.config.regularizers) == 1 and isinstance(noisy.config.optimizer.noise, LangevinNoise)
    direct = DWGF(ldm_prior, num_steps=3, num_particles=2, regularizers=[KLPrior()], optimizer=Adam(noise=LangevinNoise(scale=0.5)))
    assert torch.equal(direct.set_operator(op).solve(y, params, [0, 1]), noisy_particles)


def test_langevin_noise_goes_to_the_optimiser_once(ldm_prior):
    with pytest.raises(DWGFError, match="Langevin has its own noise"):
        DWGF(ldm_prior, regularizers=[LangevinNoise()], optimizer=Langevin())
    with pytest.raises(DWGFError, match="given twice"):
        DWGF(ldm_prior, regularizers=[LangevinNoise()], optimizer=Adam(noise=LangevinNoise()))
    with pytest.raises(DWGFError, match="optimiser's noise"):
        FlowConfig(regularizers=(LangevinNoise(),))


# -- every exported optimiser, with its default arguments ---------------------------------------
def _exported_optimizers() -> dict[str, type]:
    import inspect

    from dwgf import optimizers
    from dwgf.optimizers import FlowOptimizer

    return {name: obj for name in optimizers.__all__ if inspect.isclass(obj := getattr(optimizers, name))
            and issubclass(obj, FlowOptimizer) and obj is not FlowOptimizer}


def test_the_exported_optimizers_are_found():
    assert {"Adam", "GradientDescent", "Langevin"} <= set(_exported_optimizers())


@pytest.mark.parametrize("name", sorted(_exported_optimizers()))
def test_each_exported_optimizer_is_per_item_deterministic_and_approaches_the_posterior_mode(name):
    """A new optimiser is covered once exported: on the exact Gaussian bed at a fixed noise level its particles
    stay finite and their mean ends nearer the posterior's (its mode) than it starts (at a small step), an item
    alone gets what it gets in a batch, and the same seeds give the same particles."""
    make = _exported_optimizers()[name]
    many, mean, _ = _exact_gaussian_flow(make(), steps=100, items=50, lr=0.05)
    start, _, _ = _exact_gaussian_flow(make(), steps=1, items=50, lr=0.05)
    assert torch.isfinite(many).all()
    assert (many.mean(0) - mean).norm() < 0.5 * (start.mean(0) - mean).norm()
    samples, _, _ = _exact_gaussian_flow(make(), steps=60, items=3, lr=0.05)
    again, _, _ = _exact_gaussian_flow(make(), steps=60, items=3, lr=0.05)
    assert torch.equal(samples, again)
    alone, _, _ = _exact_gaussian_flow(make(), steps=60, items=1, lr=0.05)
    torch.testing.assert_close(alone, samples[:4], rtol=0, atol=1e-5)  # item 0's four particles
