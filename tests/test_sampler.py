"""Data terms, flow optimisers and the sampler: closed forms, finite differences, exact Gaussian posteriors, invariances."""

import math
from pathlib import Path

import pytest
import torch

from dwgf import DWGF
from dwgf.errors import DWGFError
from dwgf.flow import ItemNoise, Problem, data_gradient_of, item_generators
from dwgf.likelihoods import QUANTISATION_SIGMA, GaussianLikelihood, MeanSquaredError, PoissonLikelihood, poisson_measurement
from dwgf.operators import BoxInpainting, MatrixOperator, RandomInpainting
from dwgf.optimizers import Adam, GradientDescent, Langevin, data_curvature
from dwgf.priors import GaussianMixture, GaussianMixturePrior, grid_mixture
from dwgf.regularizers import KLPrior, ScoreWeighting
from dwgf.schedules import ConstantStepSize, DescendingTimesteps
from tests.test_diverse import _state

MSE = MeanSquaredError()  # the paper's data term: the data fit lives in the data terms

ROOT = Path(__file__).resolve().parents[1]


def _gaussian_prior(d: int) -> GaussianMixturePrior:
    one = GaussianMixture(torch.ones(1, dtype=torch.float64), torch.zeros(1, d, dtype=torch.float64), torch.ones(1, d, dtype=torch.float64))
    return GaussianMixturePrior(one, schedule="linear")


def _matrix_problem(d=6, m=3, sigma=0.3, seed=0):
    gen = torch.Generator().manual_seed(seed)
    a = torch.randn(m, d, generator=gen, dtype=torch.float64) / math.sqrt(d)
    op = MatrixOperator(a.float(), image_shape=[d, 1, 1], sigma_y=sigma)
    y = torch.randn(m, generator=gen, dtype=torch.float64)
    return a, op, y


# -- data terms ----------------------------------------------------------------------------------
def test_mean_squared_error_is_the_operators_data_term_bit_for_bit():
    op = RandomInpainting(missing=0.5, sigma_y=0.05)
    x, y = torch.randn(3, 1, 8, 8), torch.randn(3, 1, 8, 8)
    params = {"mask": (torch.rand(3, 1, 8, 8, generator=torch.Generator().manual_seed(0)) > 0.5).float()}
    g, loss = MeanSquaredError().grad(op, x, y, params)
    g0, loss0 = MSE.grad(op, x, y, params)
    assert torch.equal(g, g0) and torch.equal(loss, loss0)
    g2, loss2 = MeanSquaredError(weight=3.0).grad(op, x, y, params)
    assert torch.allclose(g2, 3 * g0) and torch.allclose(loss2, 3 * loss0)


def test_gaussian_likelihood_is_the_summed_log_density_over_measured_entries():
    op = BoxInpainting(size=[3, 3], position=[2, 2], sigma_y=0.1)
    params = {k: v[None] for k, v in op.sample_params((1, 8, 8), torch.Generator()).items()}
    x, y = torch.randn(1, 1, 8, 8, dtype=torch.float64), torch.randn(1, 1, 8, 8, dtype=torch.float64)
    mask = params["mask"].double()
    expected = ((y - x) ** 2 * mask).sum() / (2 * 0.1**2)
    lik = GaussianLikelihood()
    assert torch.allclose(lik.loss(op, x, y, params), expected.view(1))
    # the gradient against central finite differences
    g, _ = lik.grad(op, x, y, params)
    v = torch.randn_like(x)
    h = 1e-6
    fd = (lik.loss(op, x + h * v, y, params) - lik.loss(op, x - h * v, y, params)) / (2 * h)
    assert torch.allclose((g * v).sum(), fd.sum(), rtol=1e-6)
    # an explicit sigma wins over the operator's
    assert torch.allclose(GaussianLikelihood(sigma=0.2).loss(op, x, y, params), expected.view(1) / 4)


def test_gaussian_likelihood_floors_sigma_for_noiseless_measurements():
    op = BoxInpainting(size=[3, 3], position=[2, 2], sigma_y=0.0)
    assert GaussianLikelihood().noise_sigma(op) == pytest.approx(QUANTISATION_SIGMA) == pytest.approx(2 / 255 / math.sqrt(12))
    assert GaussianLikelihood(sigma_min=0.05).noise_sigma(op) == 0.05
    assert GaussianLikelihood(sigma_min=0.05).noise_sigma(BoxInpainting(size=[3, 3], sigma_y=0.2)) == 0.2
    params = {k: v[None] for k, v in op.sample_params((1, 8, 8), torch.Generator()).items()}
    g, loss = GaussianLikelihood().grad(op, torch.zeros(1, 1, 8, 8), torch.ones(1, 1, 8, 8), params)
    assert torch.isfinite(g).all() and torch.isfinite(loss).all()
    with pytest.raises(DWGFError, match="sigma_min must be > 0"):
        GaussianLikelihood(sigma_min=0)
    with pytest.raises(DWGFError, match="anneal must be >= 0"):
        GaussianLikelihood(anneal=-1)


def test_annealed_gaussian_likelihood_is_softer_at_high_noise_and_exact_at_the_end():
    op = MatrixOperator(torch.eye(4), image_shape=[4, 1, 1], sigma_y=0.1)
    lik = GaussianLikelihood(anneal=2.0)
    abar = torch.tensor([1.0, 0.5, 0.01])
    assert torch.allclose(lik.variance(op, abar), 0.01 + 2.0 * (1 - abar))
    assert torch.allclose(lik.relative_curvature(op, abar), 0.01 / (0.01 + 2.0 * (1 - abar)))
    x, y = torch.zeros(3, 4, 1, 1), torch.ones(3, 4, 1, 1)
    assert torch.allclose(lik.loss(op, x, y, {}, abar), 4 / (2 * (0.01 + 2.0 * (1 - abar))))
    assert GaussianLikelihood().relative_curvature(op, abar) is None


def test_poisson_likelihood_gradient_and_minimum():
    op = MatrixOperator(torch.eye(5), image_shape=[5, 1, 1])
    lik = PoissonLikelihood(rate=50.0)
    clean = torch.tensor([-0.8, -0.2, 0.0, 0.4, 0.9]).view(1, 5, 1, 1)
    y = poisson_measurement(clean, 50.0, torch.Generator().manual_seed(0))
    x = torch.zeros(1, 5, 1, 1, dtype=torch.float64)
    g, _ = lik.grad(op, x, y.double(), {})
    v, h = torch.randn_like(x), 1e-6
    fd = (lik.loss(op, x + h * v, y.double(), {}) - lik.loss(op, x - h * v, y.double(), {})) / (2 * h)
    assert torch.allclose((g * v).sum(), fd.sum(), rtol=1e-5)
    # the negative log-likelihood is smallest where A x reproduces the counts (lambda = k)
    best = y.double().clamp(-1 + 1e-3, 1)
    assert lik.loss(op, best, y.double(), {}) < lik.loss(op, best + 0.05, y.double(), {})
    assert lik.loss(op, best, y.double(), {}) < lik.loss(op, best - 0.05, y.double(), {})
    with pytest.raises(DWGFError, match="rate must be > 0"):
        PoissonLikelihood(rate=0)


# -- the prior term in log-density units ----------------------------------------------------------
def test_kl_prior_per_element_false_is_d_times_the_papers_force():
    z = torch.randn(2, 3, 4, 2, 2)
    state = _state(z, torch.tensor([0.3, 0.7]))
    paper = KLPrior(0.2).force(state)
    summed = KLPrior(0.2, per_element=False).force(state)
    assert torch.allclose(summed, paper * 16)


def test_score_weighting_with_query_noise_zero_is_the_smoothed_priors_score():
    """-force = sqrt(abar) * score_{p_t}(sqrt(abar) z): the score of the prior smoothed to variance (1 - abar) / abar."""
    prior = GaussianMixturePrior(grid_mixture(4), schedule="linear")
    z = torch.randn(2, 3, 4, 1, 1, dtype=torch.float64)
    t = torch.tensor([400, 100])
    abar = prior.abar(t).double()
    a = abar.view(2, 1, 1, 1, 1)
    eps_hat = prior.eps((a.sqrt() * z).flatten(0, 1), t.repeat_interleave(3)).view_as(z)
    state = _state(z, abar, eps=torch.zeros_like(z), eps_hat=eps_hat)
    force = KLPrior(1.0, weighting=ScoreWeighting(), particle_term=False, per_element=False).force(state)
    for b in range(2):
        smoothed = GaussianMixture(prior.mixture.weights, prior.mixture.means, prior.mixture.covariances + (1 - abar[b]) / abar[b])
        assert torch.allclose(-force[b].reshape(3, 4), smoothed.score(z[b].reshape(3, 4)), atol=1e-8)


def test_kl_prior_curvature_bounds_the_smoothed_priors_hessian():
    prior = GaussianMixturePrior(grid_mixture(2, spacing=1.0), schedule="linear")
    reg = KLPrior(1.0, weighting=ScoreWeighting(), particle_term=False, per_element=False)
    for t in (50, 300, 700):
        abar = float(prior.abar(torch.tensor([t]))[0])
        smoothed = GaussianMixture(prior.mixture.weights, prior.mixture.means, prior.mixture.covariances + (1 - abar) / abar)
        pts = torch.randn(200, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(t)) * 3
        h = 1e-5
        worst = 0.0
        for i in range(2):  # the Hessian of -log p~ by central differences of the score
            e = torch.zeros(2, dtype=torch.float64)
            e[i] = h
            col = -(smoothed.score(pts + e) - smoothed.score(pts - e)) / (2 * h)
            worst = max(worst, float(col.norm(dim=1).max()))
        bound = float(reg.curvature(_state(torch.zeros(1, 1, 2, 1, 1), torch.tensor([abar]))))
        assert bound == pytest.approx(abar / (1 - abar))
        assert worst <= bound * (1 + 1e-6)


def test_kde_kl_prior_has_the_papers_per_element_curvature_bound():
    from dwgf.regularizers import KDEKLPrior

    state = _state(torch.zeros(2, 3, 4, 2, 2), torch.tensor([0.3, 0.9]))
    assert torch.allclose(KDEKLPrior(0.2).curvature(state), KLPrior(0.2).curvature(state))
    assert "per_element" not in repr(KDEKLPrior(0.2)) and "particle_term" not in repr(KDEKLPrior(0.2))


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
    draw = ItemNoise(item_generators([0, 1], "cpu"), "cpu")
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


def test_sampler_item_alone_equals_the_item_in_a_batch():
    prior = GaussianMixturePrior(grid_mixture(6), schedule="linear")
    _, op, y = _matrix_problem()
    ys = torch.stack([y, 2 * y, -y]).float().view(3, -1, 1, 1)
    solver = DWGF(prior, num_steps=20, num_particles=3, decoder_noise=0.0, query_noise=0.0, optimizer=Langevin(),
                  regularizers=[KLPrior(1.0, weighting=ScoreWeighting(), particle_term=False, per_element=False)],
                  likelihood=GaussianLikelihood(anneal=1.0), step_size=ConstantStepSize(1.0)).set_operator(op)
    batch = solver.solve(ys, {}, [5, 6, 7])
    alone = solver.solve(ys[1:2], {}, [6])
    assert torch.allclose(batch[1:2], alone, atol=1e-6)


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


# -- configs and the command line ----------------------------------------------------------------
def _digits(tmp_path, count):
    import shutil

    folder = tmp_path / "digits"
    folder.mkdir()
    for png in sorted((ROOT / "examples" / "mnist").glob("*.png"))[:count]:
        shutil.copy(png, folder / png.name)
    return str(folder)


@pytest.mark.parametrize("task", ["box_inpaint", "sr4"])
def test_sampler_configs_run_end_to_end(task, tmp_path):
    from dwgf.cli import main

    out = tmp_path / "out"
    main(["predict", "--config", str(ROOT / "configs" / "mnist" / f"{task}_posterior.yaml"), "--data.images", _digits(tmp_path, 2),
          "--model.num_steps", "2", "--output", str(out), "--trainer.logger", "false"])
    rows = (out / "metrics.csv").read_text().splitlines()
    assert len(rows) == 3
    assert all((out / name / "mean.png").is_file() for name in [r.split(",")[0] for r in rows[1:]])


def test_optimizer_and_likelihood_by_short_name_on_the_command_line(tmp_path):
    from dwgf.cli import main

    out = tmp_path / "out"
    main(["predict", "--config", str(ROOT / "configs" / "quickstart.yaml"), "--data.images", _digits(tmp_path, 1),
          "--model.num_steps", "2", "--output", str(out), "--trainer.logger", "false",
          "--model.optimizer", "Langevin", "--model.optimizer.temperature", "0.5", "--model.likelihood", "GaussianLikelihood"])
    assert (out / "metrics.csv").is_file()


def test_betas_with_an_optimizer_on_the_command_line_is_one_line(tmp_path, capsys):
    from dwgf.cli import main

    with pytest.raises(SystemExit):
        main(["predict", "--config", str(ROOT / "configs" / "quickstart.yaml"), "--data.images", str(ROOT / "examples" / "mnist"),
              "--output", str(tmp_path / "o"), "--model.optimizer", "GradientDescent", "--model.betas", "[0.5, 0.9]"])
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("dwgf: error: --model.betas apply to the default optimizer only"), err
    assert "--model.optimizer" in err[-1]
