"""The SMC posterior sampler (dwgf.methods.smc) against closed-form posteriors, and its parts."""

import math

import pytest
import torch

from dwgf.flow import ItemDraws, Problem, item_generators
from dwgf.likelihoods import GaussianLikelihood
from dwgf.methods import smc
from dwgf.methods.smc import _ess, _systematic
from dwgf.operators import MatrixOperator
from dwgf.priors import GaussianMixture, GaussianMixturePrior, grid_mixture

N = 4096


def _run(prior, a, y, sigma, seed=0, **settings):
    op = MatrixOperator(a.float(), image_shape=[a.shape[1], 1, 1], sigma_y=sigma)
    problem = Problem(op, y.float().view(1, -1, 1, 1), {}, GaussianLikelihood(), num_particles=N)
    x, failed = smc(prior, problem, ItemDraws(item_generators([seed], "cpu"), "cpu"), **settings)
    assert torch.equal(failed, torch.tensor([-1]))
    return x.reshape(N, -1).double()


def test_one_dimensional_two_mode_posterior_within_monte_carlo_error():
    """p(x) = 0.3 N(-2, 0.25) + 0.7 N(2, 0.25), y = x + N(0, 1) at y = 0.5: mean, variance and the mode weight of
    4096 particles within Monte Carlo error of the closed form; the guided chain alone (no weights) misses the variance."""
    mix = GaussianMixture(torch.tensor([0.3, 0.7], dtype=torch.float64), torch.tensor([[-2.0], [2.0]], dtype=torch.float64),
                          torch.tensor([[0.25], [0.25]], dtype=torch.float64))
    prior = GaussianMixturePrior(mix, latent_shape=(1, 1, 1), schedule="linear")
    a, y = torch.tensor([[1.0]], dtype=torch.float64), torch.tensor([0.5], dtype=torch.float64)
    post = prior.posterior(a, y, 1.0)
    s = _run(prior, a, y, 1.0, num_steps=100)[:, 0]
    var = float(post.covariance()[0, 0])
    err = 4 * math.sqrt(var / (N / 4))  # four standard errors with an effective sample size of N / 4
    assert abs(float(s.mean()) - float(post.mean()[0])) < err
    assert abs(float(s.var()) / var - 1) < 0.1
    assert abs(float((s > 0).double().mean()) - float(post.weights[1])) < 4 * math.sqrt(0.1 / (N / 4))
    plain = _run(prior, a, y, 1.0, num_steps=100, weights=False)[:, 0]
    assert abs(float(plain.var()) / var - 1) > 0.2  # what the weights buy here


def test_langevin_moves_after_resampling_keep_the_two_mode_posterior():
    """Resample-move on the one-dimensional two-mode problem: two unadjusted Langevin moves (``move_size`` 0.05) on the
    step's target after every resampling. Over 6 runs of 4096 particles, the average mean, variance and mode weight lie
    within 4 of the runs' standard errors (plus 0.02) of the closed form, and the moves do change the particles."""
    mix = GaussianMixture(torch.tensor([0.3, 0.7], dtype=torch.float64), torch.tensor([[-2.0], [2.0]], dtype=torch.float64),
                          torch.tensor([[0.25], [0.25]], dtype=torch.float64))
    prior = GaussianMixturePrior(mix, latent_shape=(1, 1, 1), schedule="linear")
    a, y = torch.tensor([[1.0]], dtype=torch.float64), torch.tensor([0.5], dtype=torch.float64)
    post = prior.posterior(a, y, 1.0)
    runs = [_run(prior, a, y, 1.0, seed=seed, num_steps=100, moves=2, move_size=0.05)[:, 0] for seed in range(6)]
    est = torch.stack([torch.stack([s.mean(), s.var(), (s > 0).double().mean()]) for s in runs])
    exact = torch.stack([post.mean()[0], post.covariance()[0, 0], post.weights[1]])
    assert ((est.mean(0) - exact).abs() <= 4 * est.std(0) / math.sqrt(len(est)) + 0.02).all(), (est.mean(0), exact, est.std(0))
    assert not torch.equal(runs[0], _run(prior, a, y, 1.0, num_steps=100)[:, 0])


def test_a_small_mixture_posterior_gets_its_mode_weights_mean_and_variance():
    """Four well separated components in 2-D, one combination measured. The Monte Carlo error of SMC's estimates is
    measured from 6 independent runs of 4096 particles; the closed-form mode weights, mean and variances lie within 4 of
    its standard errors of the runs' average, and each run's own error is small (the weights do not collapse)."""
    mix = grid_mixture(2, spacing=4.0, grid=(-1, 1), generator=torch.Generator().manual_seed(3))
    prior = GaussianMixturePrior(mix, latent_shape=(2, 1, 1), schedule="linear")
    a, y, sigma = torch.tensor([[1.0, 0.3]], dtype=torch.float64), torch.tensor([1.5], dtype=torch.float64), 1.5
    post = prior.posterior(a, y, sigma)
    estimates = []
    for seed in range(6):
        s = _run(prior, a, y, sigma, seed=seed, num_steps=100)
        share = torch.bincount(post.responsibilities(s).argmax(1), minlength=len(post.weights)).double() / N
        estimates.append(torch.cat([share, s.mean(0), s.var(0)]))
    est = torch.stack(estimates)
    exact = torch.cat([post.weights, post.mean(), torch.diagonal(post.covariance())])
    spread = est.std(0)
    assert ((est.mean(0) - exact).abs() <= 4 * spread / math.sqrt(len(est)) + 0.01).all(), (est.mean(0), exact, spread)
    assert (spread[:4] < 0.05).all() and (spread[4:6] < 0.4).all(), spread


def test_equal_weights_reduce_it_to_the_proposal():
    """A measurement that says nothing (A = 0): every weight is equal, nothing is resampled, and the particles are the
    proposal's (the prior's ancestral chain) bit for bit."""
    prior = GaussianMixturePrior(grid_mixture(2), latent_shape=(2, 1, 1), schedule="linear")
    a, y = torch.zeros(1, 2, dtype=torch.float64), torch.tensor([0.7], dtype=torch.float64)
    weighted = _run(prior, a, y, 0.5, num_steps=20)
    plain = _run(prior, a, y, 0.5, num_steps=20, weights=False)
    assert torch.equal(weighted, plain)


def test_systematic_resampling_keeps_each_particle_about_n_w_times():
    w = torch.tensor([[0.5, 0.25, 0.125, 0.125], [0.25, 0.25, 0.25, 0.25]], dtype=torch.float64)
    index = _systematic(w.log(), torch.tensor([0.3, 0.9], dtype=torch.float64), torch.tensor([True, False]))
    assert torch.equal(index[0].bincount(minlength=4), torch.tensor([2, 1, 0, 1])) or torch.equal(index[0].bincount(minlength=4),
                                                                                                   torch.tensor([2, 1, 1, 0]))
    assert torch.equal(index[1], torch.arange(4))  # not chosen for resampling: kept
    assert torch.allclose(_ess(w.log()), torch.tensor([1 / (0.25 + 0.0625 + 2 * 0.015625), 4.0], dtype=torch.float64))
    for u in (0.0, 0.5, 0.999):  # equal weights: each particle once, in order
        assert torch.equal(_systematic(torch.zeros(1, 8, dtype=torch.float64), torch.tensor([u], dtype=torch.float64),
                                       torch.tensor([True]))[0], torch.arange(8))


def test_bad_settings_are_one_line():
    from dwgf.errors import DWGFError
    from dwgf.methods import SMCConfig

    with pytest.raises(DWGFError, match="ess_threshold"):
        SMCConfig(ess_threshold=2.0)
    with pytest.raises(DWGFError, match="guidance"):
        SMCConfig(guidance=-1.0)
    with pytest.raises(DWGFError, match="moves must be >= 0"):
        SMCConfig(moves=-1)
    with pytest.raises(DWGFError, match="move_size"):
        SMCConfig(move_size=0.0)
    with pytest.raises(DWGFError, match="weights=False never resamples"):
        SMCConfig(moves=1, weights=False)


@pytest.mark.parametrize("config", ["configs/mnist/box_inpaint_smc.yaml", "configs/mnist/sr4_smc.yaml", "configs/mnist/gaussian_deblur_smc.yaml",
                                    "configs/mnist/box_inpaint.yaml+configs/methods/smc.yaml"])
def test_the_smc_configs_run_through_dwgf_predict(config, ldm_path, tmp_path):
    import json
    import shutil
    from pathlib import Path

    from dwgf.cli import main

    root = Path(__file__).resolve().parents[1]
    images = tmp_path / "digits"
    images.mkdir()
    for name in ("digit0_mnist_0475.png", "digit1_mnist_0975.png"):
        shutil.copy(root / "examples/mnist" / name, images / name)
    configs = sum((["--config", str(root / c)] for c in config.split("+")), [])
    out = tmp_path / "o"
    main(["predict", *configs, "--model.prior.pretrained", str(ldm_path), "--model.settings", '{"num_steps": 2, "guidance": 1.0}',
          "--model.num_particles", "2", "--data.images", str(images), "--output", str(out), "--trainer.logger", "false"])
    assert "dwgf.methods.smc.smc" in (out / "config.yaml").read_text()
    for name in ("digit0_mnist_0475", "digit1_mnist_0975"):
        assert json.loads((out / name / ".dwgf-item.json").read_text())["state"] == "complete"


def test_the_solver_checks_smc_settings_when_it_is_built():
    """``--model.settings`` of the SMC method is checked when the solver is built, before any run: a bad value or an
    unknown setting is one error that names the setting."""
    from dwgf.errors import DWGFError
    from dwgf.solver import InverseSolver

    prior = GaussianMixturePrior(grid_mixture(2), latent_shape=(2, 1, 1), schedule="linear")
    with pytest.raises(DWGFError, match=r"settings\.moves must be >= 0, got -1"):
        InverseSolver(prior, method=smc, settings={"moves": -1})
    with pytest.raises(DWGFError, match="unknown setting 'movess' of smc .its settings: num_steps, guidance"):
        InverseSolver(prior, method=smc, settings={"movess": 2})
    InverseSolver(prior, method=smc, settings={"moves": 2, "move_size": 0.05})  # good settings build


def _two_modes():
    mix = GaussianMixture(torch.tensor([0.3, 0.7], dtype=torch.float64), torch.tensor([[-2.0], [2.0]], dtype=torch.float64),
                          torch.tensor([[0.25], [0.25]], dtype=torch.float64))
    prior = GaussianMixturePrior(mix, latent_shape=(1, 1, 1), schedule="linear")
    return prior, torch.tensor([[1.0]], dtype=torch.float64), torch.tensor([0.5], dtype=torch.float64)


def _states(prior, a, y, sigma, n, batch=1, **settings):
    op = MatrixOperator(a.float(), image_shape=[a.shape[1], 1, 1], sigma_y=sigma)
    problem = Problem(op, y.float().view(1, -1, 1, 1).repeat(batch, 1, 1, 1), {}, GaussianLikelihood(), num_particles=n)
    states = []
    x, _ = smc(prior, problem, ItemDraws(item_generators(list(range(batch)), "cpu"), "cpu"), callback=states.append, **settings)
    return x, states


def test_the_report_counts_distinct_ancestors_and_the_smallest_ess():
    """The last state's report: the number of distinct first particles the final ones descend from (the ancestors
    tracked through every resampling, the final one too) and the smallest ESS of the run; one state per step."""
    prior, a, y = _two_modes()
    x, states = _states(prior, a, y, 0.05, 8, batch=3, num_steps=20)
    assert [s.iteration for s in states] == list(range(20))
    last = states[-1]
    ancestors = last.ancestors
    assert ancestors.shape == (3, 8) and int(ancestors.min()) >= 0 and int(ancestors.max()) < 8
    assert last.report["ancestors"].tolist() == [len(set(row)) for row in ancestors.tolist()]
    assert torch.all(last.report["min_ess"] <= torch.stack([s.ess.double() for s in states]).min(0).values + 1e-6)
    assert torch.all(last.report["min_ess"] >= 1 - 1e-9)
    assert int(last.report["ancestors"].max()) < 8  # a sharp measurement (sigma 0.05) with 8 particles collapses them
    # no weights: no resampling and nothing to report
    _, plain = _states(prior, a, y, 0.05, 8, num_steps=5, weights=False)
    assert plain[-1].report is None


def test_the_collapse_warning_names_how_many_items_in_one_line(capsys, tmp_path):
    from dwgf.writers import PredictionWriter

    writer = PredictionWriter(tmp_path, data=None)
    records = [{"ancestors": 1.0}, {"ancestors": 2.0}, {"ancestors": 5.0}, {"ancestors": None}]
    writer.warn_collapsed(records, 8)
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("dwgf: warning: the particles of 2 of 3 items descend from at most 2 of their 8 first")
    writer.warn_collapsed([{"ancestors": 6.0}], 8)
    writer.warn_collapsed([{"ancestors": 1.0}], 3)  # with 3 particles, two ancestors are no collapse
    writer.warn_collapsed([{"psnr": 1.0}], 8)  # a method that does not resample
    assert capsys.readouterr().err == ""


def test_adaptive_tempering_keeps_the_two_mode_posterior_and_ends_at_exponent_one():
    """Tempering (threshold 0.5): the posterior's mean, variance and mode weight within Monte Carlo error over 4 runs;
    the exponent rises to 1 by the last step, never falls, and stays at the floor (k + 1) / K or above."""
    prior, a, y = _two_modes()
    post = prior.posterior(a, y, 1.0)
    runs, lams = [], None
    for seed in range(4):
        op = MatrixOperator(a.float(), image_shape=[1, 1, 1], sigma_y=1.0)
        problem = Problem(op, y.float().view(1, -1, 1, 1), {}, GaussianLikelihood(), num_particles=N)
        states = []
        x, _ = smc(prior, problem, ItemDraws(item_generators([seed], "cpu"), "cpu"), callback=states.append, num_steps=100, tempering=0.5)
        runs.append(x.reshape(N).double())
        lams = torch.stack([s.tempering for s in states])[:, 0]
    est = torch.stack([torch.stack([s.mean(), s.var(), (s > 0).double().mean()]) for s in runs])
    exact = torch.stack([post.mean()[0], post.covariance()[0, 0], post.weights[1]])
    assert ((est.mean(0) - exact).abs() <= 4 * est.std(0) / math.sqrt(len(est)) + 0.03).all(), (est.mean(0), exact)
    assert float(lams[-1]) == 1.0 and bool((lams[1:] >= lams[:-1] - 1e-12).all())
    assert bool((lams >= torch.arange(1, 101) / 100 - 1e-6).all())


def test_tempering_raises_the_exponent_as_far_as_the_conditional_ess_allows():
    """The exponent is where the conditional ESS meets the target (brute-force formula), within the allowed range."""
    from dwgf.methods.smc import _tempering

    g = torch.Generator().manual_seed(0)
    log_w = torch.randn(2, 16, generator=g, dtype=torch.float64)
    twist = -50 * torch.rand(2, 16, generator=g, dtype=torch.float64)
    prev, ratio = -10 * torch.rand(2, 16, generator=g, dtype=torch.float64), 0.1 * torch.randn(2, 16, generator=g, dtype=torch.float64)
    start = torch.tensor([0.02, 0.05], dtype=torch.float64)

    def cess(i, value):
        w = torch.softmax(log_w[i], 0)
        log_v = ratio[i] - start[i] * prev[i] + value * twist[i]
        v = torch.exp(log_v - log_v.max())
        return float(16 * (w * v).sum() ** 2 / (w * v * v).sum())

    target = 0.5 * min(cess(0, 0.02), cess(1, 0.05))
    lam = _tempering(log_w, twist, prev, ratio, start, 0.0, target)
    for i in range(2):
        value = float(lam[i])
        assert float(start[i]) < value < 1 and cess(i, value) == pytest.approx(target, rel=1e-4)
        assert cess(i, min(1.0, value * 1.01)) < target
    # a floor above what the ESS allows wins; an ESS that allows everything gives 1; too little at the start keeps it
    assert torch.equal(_tempering(log_w, twist, prev, ratio, start, 0.9, target), torch.tensor([0.9, 0.9], dtype=torch.float64))
    assert torch.equal(_tempering(log_w, 0 * twist, 0 * prev, 0 * ratio, start, 0.0, 1.0), torch.ones(2, dtype=torch.float64))
    assert torch.equal(_tempering(log_w, twist, prev, ratio, start, 0.0, 16.0), start)


def test_the_tweedie_drift_keeps_the_two_mode_posterior_with_no_network_backward():
    """drift="tweedie" (DWGF's data force at the Tweedie estimate, no backward through the network): the weights are
    exact for any drift, so the posterior's mean, variance and mode weight stay within Monte Carlo error (4 runs)."""
    prior, a, y = _two_modes()
    post = prior.posterior(a, y, 1.0)
    runs = [_run(prior, a, y, 1.0, seed=seed, num_steps=100, drift="tweedie")[:, 0] for seed in range(4)]
    est = torch.stack([torch.stack([s.mean(), s.var(), (s > 0).double().mean()]) for s in runs])
    exact = torch.stack([post.mean()[0], post.covariance()[0, 0], post.weights[1]])
    assert ((est.mean(0) - exact).abs() <= 4 * est.std(0) / math.sqrt(len(est)) + 0.03).all(), (est.mean(0), exact)
    assert not torch.equal(runs[0], _run(prior, a, y, 1.0, seed=0, num_steps=100)[:, 0])
