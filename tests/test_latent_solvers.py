"""ReSample, Latent DAPS and FlowDPS (dwgf.methods.resample, .latent_daps, .flow_dps): each run equals the same steps
written here directly from the paper's equations (and the authors' code where it fixes a detail), on a tiny prior;
their building blocks against torch and closed forms; their configs through dwgf predict (resume, batch)."""

import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from dwgf.cli import main
from dwgf.draws import ItemDraws, item_generators
from dwgf.errors import DWGFError
from dwgf.methods.flow_dps import flow_dps, flow_times
from dwgf.methods.latent_daps import latent_daps, poly_sigmas
from dwgf.methods.resample import adamw_per_row, consistency_steps, resample, resample_mix
from dwgf.operators import BoxInpainting
from dwgf.problem import Problem

ROOT = Path(__file__).resolve().parents[1]
N = 2


def _problem(prior, seed=0):
    op = BoxInpainting(size=[10, 10], sigma_y=0.01)
    x = torch.rand(1, prior.image_channels, prior.image_size, prior.image_size, generator=torch.Generator().manual_seed(seed)) * 2 - 1
    y, params = op.measure(x, seeds=[seed])
    return op, y, params


def _run(method, prior, op, y, params, seed, **settings):
    particles, failed_at = method(prior, Problem(op, y, params, num_particles=N), ItemDraws(item_generators([seed], "cpu"), "cpu"),
                                  **settings)
    assert torch.equal(failed_at, torch.tensor([-1]))
    return particles[0]


def _residual(op, x, y, params):
    """``||y - A x||`` over the measured entries, per row: the DPS paper's norm."""
    r = (op.forward(x, params) - y) * op.measured(params)
    return r.flatten(1).norm(dim=1)


def _abar(prior, t):
    return prior.alphas_cumprod[t].float()


# -- ReSample ----------------------------------------------------------------------------------------
def test_the_consistency_steps_are_the_authors_index_rule():
    """K = 500 (their --ddim_steps): every 10th step of the last two thirds, pixels in the middle third."""
    steps = consistency_steps(500, 10)
    indices = {500 - 1 - i: stage for i, stage in steps.items()}
    assert sorted(indices) == list(range(10, 335, 10))  # 0 < index <= 500 - 166, index % 10 == 0
    assert all(stage == ("pixel" if index >= 166 else "latent") for index, stage in indices.items())


def test_stochastic_resampling_is_the_product_of_the_two_gaussians():
    """Eq. 10 / Prop. 2: the prior N(sqrt(abar') z0_y, 1 - abar') of z_t' given the consistent estimate times the
    likelihood N(z', sigma^2) of the unconditional sample, as precisions; and sampled, the mean and variance of many draws."""
    abar, abar_prev = torch.tensor(0.3), torch.tensor(0.5)
    z0_y, z_prime = torch.tensor([0.7]), torch.tensor([-0.4])
    var = 40 * (1 - abar_prev) / (1 - abar) * (1 - abar / abar_prev)
    precision = 1 / (1 - abar_prev) + 1 / var
    mean = (abar_prev.sqrt() * z0_y / (1 - abar_prev) + z_prime / var) / precision
    torch.testing.assert_close(resample_mix(z0_y, z_prime, abar, abar_prev, 40.0, torch.zeros(1)), mean)
    noise = torch.randn(200_000, generator=torch.Generator().manual_seed(0))
    draws = resample_mix(z0_y.expand(200_000), z_prime.expand(200_000), abar, abar_prev, 40.0, noise)
    assert abs(draws.mean() - mean) < 4 * math.sqrt(1 / precision / 200_000)
    assert abs(draws.var() / (1 / precision) - 1) < 0.02


def test_adamw_per_row_is_torchs_adamw_and_each_row_stops_on_its_own():
    target = torch.tensor([[1.0, -2.0], [0.5, 3.0], [0.0, 0.0]])
    start = torch.zeros(3, 2)

    def loss(x, rows):
        return (x - target[rows]).square().mean(1)

    ours = adamw_per_row(start, loss, 7, 0.1, tolerance=0.0)
    leaf = start.clone().requires_grad_(True)
    opt = torch.optim.AdamW([leaf], lr=0.1)
    for _ in range(7):
        opt.zero_grad()
        loss(leaf, torch.arange(3)).sum().backward()
        opt.step()
    torch.testing.assert_close(ours, leaf.detach(), rtol=0, atol=1e-6)
    # row 2 starts at its target (loss 0 < tolerance^2): it stops after one step (weight decay of 0 is 0); the others go on
    stopped = adamw_per_row(start, loss, 7, 0.1, tolerance=1e-3)
    torch.testing.assert_close(stopped, ours)
    # patience: a row stops after the first step whose loss is above the loss `patience` iterations before
    seen = []

    def overshoot(x, rows):
        value = (x - 5).square().mean(1)
        seen.append(float(value[0].detach()))
        return value

    free = adamw_per_row(torch.zeros(1, 2), overshoot, 50, 1.0, tolerance=0.0)
    first = next(k for k in range(3, 50) if seen[k - 3] < seen[k])  # Adam at rate 1 overshoots 5 and the loss rises
    patient = adamw_per_row(torch.zeros(1, 2), overshoot, 50, 1.0, tolerance=0.0, patience=3)
    torch.testing.assert_close(patient, adamw_per_row(torch.zeros(1, 2), overshoot, first + 1, 1.0, tolerance=0.0))
    assert not torch.allclose(patient, free)


def _paper_resample(prior, op, y, params, seed, K, every, lookahead, guidance, gamma, iters, lrs, eta=0.0):
    """Algorithm 1 of the paper with the authors' schedule, written out: DDIM, the DPS step, look-ahead, pixel then latent
    optimisation with torch's AdamW, Eq. 10, the final latent optimisation."""
    g = torch.Generator().manual_seed(seed)
    shape = (N, *prior.latent_shape)
    z = torch.randn(shape, generator=g)
    T = prior.num_train_timesteps
    ts = [(K - 1 - i) * (T // K) for i in range(K)]
    yn, pn = y.repeat(N, 1, 1, 1), {k: v.repeat(N, *[1] * (v.dim() - 1)) for k, v in params.items()}
    entries = y[0].numel()

    def tweedie(zt, t):
        a = _abar(prior, t)
        eps = prior.eps(zt, torch.full((N,), t))
        return eps, (zt - (1 - a).sqrt() * eps) / a.sqrt()

    def optimise(start, decode, lr, n_iters):
        leaf = start.detach().clone().requires_grad_(True)
        opt = torch.optim.AdamW([leaf], lr=lr)
        for _ in range(n_iters):
            opt.zero_grad()
            (_residual(op, decode(leaf), yn, pn).square() / entries).sum().backward()
            opt.step()
        return leaf.detach()

    for i, t in enumerate(ts):
        a = _abar(prior, t)
        a_next = _abar(prior, ts[i + 1]) if i + 1 < K else torch.tensor(1.0)
        zt = z.detach().requires_grad_(True)
        eps, z0 = tweedie(zt, t)
        z_prime = a_next.sqrt() * z0.detach() + (1 - a_next).sqrt() * eps.detach()
        (grad,) = torch.autograd.grad(_residual(op, prior.decode(z0), yn, pn).sum(), zt)
        z_prime = (z_prime - guidance * a * grad).detach()
        index = K - 1 - i
        if 0 < index <= K - K // 3 and index % every == 0:
            ahead, estimate = z_prime, z0.detach()
            with torch.no_grad():
                for k in range(i + 1, min(i + 1 + lookahead, K)):
                    a_k1 = _abar(prior, ts[k + 1]) if k + 1 < K else torch.tensor(1.0)
                    eps_k, estimate = tweedie(ahead, ts[k])
                    ahead = a_k1.sqrt() * estimate + (1 - a_k1).sqrt() * eps_k
            if index >= K // 3:
                with torch.no_grad():
                    pixels = prior.decode(estimate)
                z0_y = prior.encode(optimise(pixels, lambda x: x, lrs[0], iters)).detach()
            else:
                z0_y = optimise(estimate, prior.decode, lrs[1], iters)
            var = gamma * (1 - a_next) / (1 - a) * (1 - a / a_next)
            precision = 1 / (1 - a_next) + 1 / var
            mean = (a_next.sqrt() * z0_y / (1 - a_next) + z_prime / var) / precision
            z_prime = mean + (1 / precision).sqrt() * torch.randn(shape, generator=g)
        z = z_prime
    z = optimise(z, prior.decode, lrs[1], iters)
    with torch.no_grad():
        return prior.decode(z)


def test_resample_equals_the_paper_written_out(ldm_prior):
    """Six DDIM steps, consistency at every step of the last two thirds (three pixel steps, one latent step), two
    look-ahead steps, three AdamW iterations per optimisation (no early stop before them): the module's particles."""
    op, y, params = _problem(ldm_prior)
    settings = dict(num_steps=6, every=1, lookahead=2, guidance=0.5, gamma=40.0, pixel_iters=3, latent_iters=3, pixel_lr=0.01,
                    latent_lr=0.005, tolerance=0.0)
    assert sorted(consistency_steps(6, 1).items()) == [(1, "pixel"), (2, "pixel"), (3, "pixel"), (4, "latent")]
    ours = _run(resample, ldm_prior, op, y, params, 5, **settings)
    paper = _paper_resample(ldm_prior, op, y, params, 5, K=6, every=1, lookahead=2, guidance=0.5, gamma=40.0, iters=3, lrs=(0.01, 0.005))
    torch.testing.assert_close(ours, paper, rtol=0, atol=1e-4)
    # a wrong scale anywhere shows: another gamma moves the particles
    other = _run(resample, ldm_prior, op, y, params, 5, **{**settings, "gamma": 4.0})
    assert (other - ours).abs().max() > 1e-3


# -- Latent DAPS -------------------------------------------------------------------------------------
def _paper_daps(prior, op, y, params, seed, K, ode_steps, mc_steps, algorithm, lr, lr_min_ratio, tau, momentum, smax, smin, ode_min):
    """Algorithm 1 (latent), with the authors' EDM poly-7 grids, Euler PF-ODE, Langevin / damped HMC and clamped data
    gradient, at the training times nearest each level."""
    g = torch.Generator().manual_seed(seed)
    shape = (N, *prior.latent_shape)
    yn, pn = y.repeat(N, 1, 1, 1), {k: v.repeat(N, *[1] * (v.dim() - 1)) for k, v in params.items()}
    table = ((1 - prior.alphas_cumprod) / prior.alphas_cumprod).sqrt()  # sigma_t, float64

    def snap(sigma):
        if sigma == 0:
            return None, 0.0
        t = int(np.argmin(np.abs(np.log(table.numpy()) - math.log(sigma))))
        return t, float(table[t])

    def grid(a, b, steps):
        rho = 7.0
        values = [(a ** (1 / rho) + k / steps * (b ** (1 / rho) - a ** (1 / rho))) ** rho for k in range(steps + 1)]
        return [snap(v) for v in values[:-1]] + [(None, 0.0)]

    def denoise(x, t):
        a = _abar(prior, t)
        zt = a.sqrt() * x
        eps = prior.eps(zt, torch.full((N,), t))
        return (zt - (1 - a).sqrt() * eps) / a.sqrt()

    levels = grid(smax, smin, K)
    x = torch.randn(shape, generator=g) * levels[0][1]
    for k in range(K):
        t_k, s_k = levels[k]
        ode = grid(s_k, ode_min, ode_steps)
        z0_hat = x
        with torch.no_grad():
            for (t_j, s_j), (_, s_n) in zip(ode[:-1], ode[1:]):
                d = denoise(z0_hat, t_j)
                z0_hat = d if s_n == 0 else z0_hat + (s_n - s_j) * (z0_hat - d) / s_j
        step = lr * (1 + k / K * (lr_min_ratio - 1))
        z0 = z0_hat.clone()
        v = torch.randn(shape, generator=g) if algorithm == "hmc" else None
        for _ in range(mc_steps):
            leaf = z0.detach().requires_grad_(True)
            (grad,) = torch.autograd.grad(_residual(op, prior.decode(leaf), yn, pn).square().sum(), leaf)
            score = -grad.clamp(-1, 1) / tau**2 + (z0_hat - z0) / s_k**2
            e = torch.randn(shape, generator=g)
            if v is None:
                z0 = z0 + step * score + math.sqrt(2 * step) * e
            else:
                v = momentum * v + math.sqrt(step) * score + math.sqrt(2 * (1 - momentum)) * e
                z0 = z0 + math.sqrt(step) * v
        s_next = levels[k + 1][1]
        x = z0 + s_next * torch.randn(shape, generator=g) if s_next > 0 else z0
    with torch.no_grad():
        return prior.decode(x)


@pytest.mark.parametrize("algorithm", ["hmc", "langevin"])
def test_latent_daps_equals_the_paper_written_out(ldm_prior, algorithm):
    op, y, params = _problem(ldm_prior, seed=1)
    common = dict(ode_steps=2, mc_steps=3, algorithm=algorithm, lr=2e-5, lr_min_ratio=0.13, tau=0.01, momentum=0.74)
    ours = _run(latent_daps, ldm_prior, op, y, params, 7, num_steps=3, sigma_max=10.0, sigma_min=0.1, ode_sigma_min=0.001, **common)
    paper = _paper_daps(ldm_prior, op, y, params, 7, K=3, smax=10.0, smin=0.1, ode_min=0.001, **common)
    torch.testing.assert_close(ours, paper, rtol=0, atol=1e-4)
    other = _run(latent_daps, ldm_prior, op, y, params, 7, num_steps=3, sigma_max=10.0, sigma_min=0.1, ode_sigma_min=0.001,
                 **{**common, "tau": 0.02})
    assert (other - ours).abs().max() > 1e-3


def test_the_annealing_grid_is_edms_poly7():
    grid = poly_sigmas(10.0, 0.1, 50, 7.0)
    assert len(grid) == 51 and grid[0] == pytest.approx(10.0) and grid[-1] == 0.0 and grid[-2] > 0.1
    assert all(a > b for a, b in zip(grid, grid[1:]))


# -- FlowDPS -----------------------------------------------------------------------------------------
def _paper_flow_dps(prior, op, y, params, seed, K, step_size, dc_steps, renoise=True):
    """The authors' sampler on the prior seen as a rectified flow: velocity, z0t = z - s v, z1t = z + (1 - s) v, gradient
    steps on ||y - A(D(z0))||, z0y = (1 - s) z0t + s z0, renoise, z = z0y + (s - delta)(noise - z0y)."""
    g = torch.Generator().manual_seed(seed)
    shape = (N, *prior.latent_shape)
    yn, pn = y.repeat(N, 1, 1, 1), {k: v.repeat(N, *[1] * (v.dim() - 1)) for k, v in params.items()}
    T = prior.num_train_timesteps
    ts = [min(int(round(u * T)), T - 1) for u in np.linspace(1, 1 / T, K)]

    def flow_s(t):
        a = _abar(prior, t)
        return (1 - a).sqrt() / (a.sqrt() + (1 - a).sqrt())

    def velocity(z, t):
        a, s = _abar(prior, t), flow_s(t)
        zt = z * a.sqrt() / (1 - s)  # the variance-preserving latent with the same clean component
        eps = prior.eps(zt, torch.full((N,), t))
        z0 = (zt - (1 - a).sqrt() * eps) / a.sqrt()
        return eps - z0

    z = torch.randn(shape, generator=g)
    for i, t in enumerate(ts):
        s = flow_s(t)
        s_next = flow_s(ts[i + 1]) if i + 1 < K else torch.tensor(0.0)
        with torch.no_grad():
            v = velocity(z, t)
        z0t, z1t = z - s * v, z + (1 - s) * v
        z0 = z0t
        for _ in range(dc_steps):
            leaf = z0.detach().requires_grad_(True)
            (grad,) = torch.autograd.grad(_residual(op, prior.decode(leaf), yn, pn).sum(), leaf)
            z0 = z0.detach() - step_size * grad
        z0y = (1 - s) * z0t + s * z0
        noise = s_next.sqrt() * z1t + (1 - s_next).sqrt() * torch.randn(shape, generator=g) if renoise else z1t
        delta = s - s_next
        z = z0y + (s - delta) * (noise - z0y)
    with torch.no_grad():
        return prior.decode(z)


@pytest.mark.parametrize("renoise", [True, False])
def test_flow_dps_equals_the_paper_written_out(ldm_prior, renoise):
    op, y, params = _problem(ldm_prior, seed=2)
    ours = _run(flow_dps, ldm_prior, op, y, params, 9, num_steps=4, step_size=0.2, dc_steps=2, renoise=renoise)
    paper = _paper_flow_dps(ldm_prior, op, y, params, 9, K=4, step_size=0.2, dc_steps=2, renoise=renoise)
    torch.testing.assert_close(ours, paper, rtol=0, atol=1e-4)
    other = _run(flow_dps, ldm_prior, op, y, params, 9, num_steps=4, step_size=20.0, dc_steps=2, renoise=renoise)
    assert (other - ours).abs().max() > 1e-3


def test_the_flow_time_grid_is_diffusers_and_shifts_compose():
    from diffusers import FlowMatchEulerDiscreteScheduler

    sched = FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=1.0)
    sched.set_timesteps(28)
    assert flow_times(28, 1000).tolist() == [min(int(round(float(t))), 999) for t in sched.timesteps]
    # an SD3-like prior's own shift 3 with time_shift 4/3 steps on the authors' shift-4 grid
    u = np.linspace(1, 1 / 1000, 28)
    four = 4 * u / (1 + 3 * u)
    times = flow_times(28, 1000, 4 / 3).numpy() / 1000
    three_of = 3 * times / (1 + 2 * times)
    assert np.abs(three_of - np.minimum(four, 3 * 0.999 / (1 + 2 * 0.999))).max() < 2e-3


# -- settings and the command line ---------------------------------------------------------------------
@pytest.mark.parametrize("method,settings,message", [
    ("latent_daps", {"momentum": 1.0}, "settings.momentum must be < 1"),
    ("latent_daps", {"sigma_max": 0.05}, r"settings.sigma_max must be > sigma_min \(0.1\), got 0.05"),
    ("latent_daps", {"algorithm": "mala"}, "settings.algorithm must be one of 'hmc', 'langevin', got 'mala'"),
    ("resample", {"gamma": 0.0}, "settings.gamma must be > 0, got 0.0"),
    ("resample", {"num_steps": 5000}, "settings.num_steps must be <= the prior's 1000 timesteps, got 5000"),
    ("flow_dps", {"time_shift": -1.0}, "settings.time_shift must be > 0, got -1.0"),
])
def test_bad_settings_are_one_line_errors_when_the_solver_is_built(ldm_prior, method, settings, message):
    from dwgf import methods  # noqa: F401 - the modules below are found by their path, as a config names them
    from dwgf.solver import InverseSolver

    fn = {"resample": resample, "latent_daps": latent_daps, "flow_dps": flow_dps}[method]
    with pytest.raises(DWGFError, match=f"^InverseSolver: {message}"):
        InverseSolver(ldm_prior, method=fn, settings=settings)


FAST = {  # each method's overlay, made cheap: what the command-line tests run
    "resample": ["--model.settings.num_steps", "6", "--model.settings.every", "2", "--model.settings.pixel_iters", "5",
                 "--model.settings.latent_iters", "5"],
    "latent_daps": ["--model.settings.num_steps", "3", "--model.settings.mc_steps", "2"],
    "flow_dps": ["--model.settings.num_steps", "4", "--model.settings.step_size", "0.5"],
}


def _digits(folder, count):
    folder.mkdir()
    for png in sorted((ROOT / "examples/mnist").glob("*.png"))[:count]:
        shutil.copy(png, folder / png.name)
    return folder


def _predict(method, images, out, *extra):
    main(["predict", "--config", str(ROOT / "configs/mnist/box_inpaint.yaml"), "--config", str(ROOT / f"configs/methods/{method}.yaml"),
          "--data.images", str(images), "--output", str(out), "--trainer.logger", "false", "--model.num_particles", "2",
          *FAST[method], *map(str, extra)])


def _pixels(path):
    return np.asarray(Image.open(path), dtype=np.int16)


@pytest.mark.parametrize("method", sorted(FAST))
def test_each_config_runs_resumes_and_gives_an_item_the_same_particles_alone_and_in_a_batch(method, tmp_path):
    """On the shipped MNIST prior through dwgf predict: a run cut after its first batch and run again writes what one
    uninterrupted run writes; batches of 1 give every item the particles it gets in a batch of 3."""
    images = _digits(tmp_path / "digits", 3)
    full, part, alone = tmp_path / "full", tmp_path / "part", tmp_path / "alone"
    _predict(method, images, full, "--data.batch_size", 2)
    _predict(method, images, part, "--data.batch_size", 2, "--trainer.limit_predict_batches", 1)
    assert len([p for p in part.iterdir() if p.is_dir()]) == 2
    _predict(method, images, part, "--data.batch_size", 2)
    _predict(method, images, alone, "--data.batch_size", 1)
    names = sorted(p.name for p in full.iterdir() if p.is_dir())
    assert len(names) == 3
    for name in names:
        for k in range(2):
            png = f"{name}/particle_{k}.png"
            assert (full / png).read_bytes() == (part / png).read_bytes(), png
            assert np.abs(_pixels(full / png) - _pixels(alone / png)).max() <= 1, png  # float rounding of batched arithmetic
    assert (full / "metrics.csv").read_text().count("\n") == 4
