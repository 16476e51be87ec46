"""Is it a posterior? Every method against exact posterior samples, on Gaussian-mixture priors.

    python benchmarks/posterior.py [--dims 8 80 800] [--dys 1 2 4] [--problems 3] [--samples 1000]

The setting of Cardoso et al. (ICLR 2024, "Monte Carlo guided diffusion for Bayesian linear inverse
problems"), which later posterior-sampling papers reuse. The prior on ``R^d`` is a mixture of 25 unit-
covariance Gaussians with means on a 5 x 5 grid, ``(4i, 4j, 4i, 4j, ...)`` for ``i, j`` in
``{-2, ..., 2}`` (:func:`dwgf.priors.grid_mixture`; the authors' code spaces the grid 8 apart) and
weights ``g_k^2 / sum g^2`` with ``g`` standard normal, as in their code. It is a
:class:`dwgf.priors.GaussianMixturePrior` (exact noise prediction, identity decoder), so every
solver runs on it unchanged, on DDPM's linear schedule (betas ``1e-4 .. 0.02``, ``abar_999 = 4e-5``)
rather than the shipped prior's (``abar_999 = 0.0047``): every method starts from ``N(0, I)``, and
with the shipped prior's schedule the diffused mixture at ``t = 999`` is still far from it once
``d >= 80`` (``abar_999 |mu|^2`` of tens), so that even plain DDIM sampling of the prior misses most
components; the first table measures this for both schedules. A problem draws ``A`` (``d_y x d``):
a standard normal matrix whose singular values are replaced by sorted uniform ``[0, 1]`` draws;
``sigma_y = u * max singular value`` with ``u`` uniform ``[0, 1]``; ``x*`` from the prior and
``y = A x* + sigma_y n``. Its posterior is again a Gaussian mixture, sampled exactly
(:meth:`GaussianMixturePrior.posterior`).

For each ``d`` in ``--dims``, ``d_y`` in ``--dys`` and each of ``--problems`` problems, every
method gives ``--samples`` samples of the same measurement (``B`` copies of ``y`` with their own
seeds, ``N`` particles each, pooled), and the table reports, as mean and standard deviation over
the problems:

- SW: the sliced Wasserstein-1 distance to as many exact posterior samples (1000 random directions,
  the same for every method); *exact* is the distance between two independent exact sample sets,
  the floor at this sample size;
- coverage: the posterior mass of the components the method reaches (a component is reached when
  at least 1% of the samples are closest to it, by posterior responsibility);
- mean error: the distance between the samples' mean and the exact posterior mean, over ``sqrt(d)``;
- seconds for the ``--samples`` samples.

Hyperparameters: each method's grid (below) is run on ``--tune-problems`` problems of other seeds
at every ``(d, d_y)``, and the setting with the lowest mean SW is used. *DWGF N=1* is DWGF's tuned
setting with one particle per measurement: the difference to *DWGF* is what the particle term does.

Before the methods, a check of the bed itself: DDIM (200 steps, eta 1) sampling the *prior* on each
schedule, against exact prior samples (SW and coverage as above).

Writes ``benchmarks/results/posterior.md`` and one scatter plot per ``d`` (the first two coordinates;
exact posterior against each method, at ``d_y = 1``, first problem) as
``benchmarks/results/posterior_d<d>.png``.
"""

from __future__ import annotations

import argparse
import datetime
import math
import shlex
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

if __package__ in (None, ""):  # run as ``python benchmarks/posterior.py``: the repository becomes importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from benchmarks.harness import RESULTS, load_json, save_json

STEPS = 200  # iterations / DDIM steps of every method
SCHEDULE = "linear"  # the bed's DDPM schedule (see the docstring and the prior check)
REACHED = 0.01  # a component is reached by 1% of a method's samples


# -- the bed -------------------------------------------------------------------------------------
@dataclass
class Problem:
    prior: object  # GaussianMixturePrior
    matrix: torch.Tensor  # A, d_y x d (float64)
    sigma_y: float
    y: torch.Tensor  # (d_y,)
    posterior: object  # GaussianMixture


def mixture(d: int, seed: int):
    from dwgf.priors import GaussianMixture, grid_mixture

    gen = torch.Generator().manual_seed(seed)
    grid = grid_mixture(d)
    weights = torch.randn(25, dtype=torch.float64, generator=gen) ** 2
    return GaussianMixture(weights, grid.means, grid.covariances)


def problem(d: int, dy: int, seed: int) -> Problem:
    """One problem of the bed: its mixture, ``A``, ``sigma_y`` and ``y`` all from ``seed``."""
    from dwgf.priors import GaussianMixturePrior

    mix = mixture(d, seed)
    gen = torch.Generator().manual_seed(10_000 + seed)
    a = torch.randn(dy, d, dtype=torch.float64, generator=gen)
    u, _, vh = torch.linalg.svd(a, full_matrices=False)
    singular = torch.sort(torch.rand(dy, dtype=torch.float64, generator=gen), descending=True).values
    a = u @ torch.diag(singular) @ vh
    sigma_y = float(torch.rand((), dtype=torch.float64, generator=gen)) * float(singular.max())
    x_true = mix.sample(1, gen)[0]
    y = a @ x_true + sigma_y * torch.randn(dy, dtype=torch.float64, generator=gen)
    prior = GaussianMixturePrior(mix, latent_shape=(d, 1, 1), schedule=SCHEDULE)
    return Problem(prior, a, sigma_y, y, prior.posterior(a, y, sigma_y))


# -- the methods ---------------------------------------------------------------------------------
def dwgf_solver(prior, n: int, weight: float, lr: float):
    from dwgf.regularizers import DWGFWeighting, KLPrior
    from dwgf.schedules import ConstantStepSize, DescendingTimesteps
    from dwgf.solver import DWGF

    return DWGF(prior, num_steps=STEPS, num_particles=n, regularizers=[KLPrior(weight, weighting=DWGFWeighting())],
                step_size=ConstantStepSize(lr), timesteps=DescendingTimesteps(t_min=2), decoder_noise=0.0)


def inversion_solver(prior, lr: float):
    from dwgf.baselines import DecoderInversion
    from dwgf.schedules import ConstantStepSize

    return DecoderInversion(prior, num_steps=STEPS, num_particles=4, step_size=ConstantStepSize(lr))


def dps_solver(prior, guidance: float):
    from dwgf.baselines import LatentDPS

    return LatentDPS(prior, num_steps=STEPS, num_particles=4, guidance=guidance, eta=1.0)


def smc_solver(prior, n: int, guidance: float, anneal: float = 0.0, moves: int = 0, move_size: float = 0.1, weights: bool = True,
               tempering: float = 0.0):
    """The SMC sampler on the bed's own Gaussian likelihood, its twist annealed by ``anneal`` (also ``smc.py``'s)."""
    from dwgf.likelihoods import GaussianLikelihood
    from dwgf.methods import smc
    from dwgf.solver import InverseSolver

    settings = {"num_steps": STEPS, "guidance": guidance, "weights": weights}
    if moves:
        settings.update(moves=moves, move_size=move_size)
    if tempering:
        settings.update(tempering=tempering)
    return InverseSolver(prior, method=smc, settings=settings, num_particles=n, likelihood=GaussianLikelihood(anneal=anneal))


def psld_solver(prior, guidance: float, gluing: float):
    from dwgf.baselines import PSLD

    return PSLD(prior, num_steps=STEPS, num_particles=4, guidance=guidance, gluing=gluing, eta=1.0)


def resample_solver(prior, guidance: float, gamma: float):
    """ReSample (dwgf.methods.resample) at the bed's budget: 150 DDIM steps are ~200 network calls with its look-ahead;
    its AdamW capped at 50 (latent) and 200 (pixel) iterations, as in benchmarks/quality.py."""
    from dwgf.methods.resample import resample
    from dwgf.solver import InverseSolver

    settings = {"num_steps": 150, "guidance": guidance, "gamma": gamma, "latent_iters": 50, "pixel_iters": 200}
    return InverseSolver(prior, method=resample, settings=settings, num_particles=4)


def daps_solver(prior, tau: float, lr: float):
    """Latent DAPS (dwgf.methods.latent_daps) at the bed's budget: 100 annealing levels of two ODE steps, the authors' 15
    Hamiltonian Monte Carlo steps per level; ``tau`` is its data term's scale, ``lr`` its MCMC step. The bed's decoder is
    the identity and its data spread over +-8, so it runs as the authors' pixel-space DAPS does: the annealing starts at
    sigma 100 (their pixel configs; 10 is their latent one, which starts the chain inside the prior's spread here) and
    the data gradient is not clamped (they clamp it for a latent model only)."""
    from dwgf.methods.latent_daps import latent_daps
    from dwgf.solver import InverseSolver

    settings = {"num_steps": STEPS // 2, "ode_steps": 2, "tau": tau, "lr": lr, "clip": None, "sigma_max": 100.0}
    return InverseSolver(prior, method=latent_daps, settings=settings, num_particles=4)


# method -> {label: build(prior) -> solver}
GRIDS: dict[str, dict[str, Callable]] = {
    # DWGF's grid includes the paper's step (Adam lr 1.0, KL weight 0.15 ~ 0.1 here)
    "DWGF": {f"w={w},lr={lr}": (lambda p, w=w, lr=lr: dwgf_solver(p, 4, w, lr)) for w in (0.03, 0.1, 0.3, 1.0) for lr in (0.1, 0.3, 1.0)},
    "RED-diff-latent": {f"w={w},lr={lr}": (lambda p, w=w, lr=lr: dwgf_solver(p, 1, w, lr))
                        for w in (0.03, 0.1, 0.3, 1.0) for lr in (0.1, 0.3, 1.0)},
    "Latent DPS": {f"zeta={g}": (lambda p, g=g: dps_solver(p, g)) for g in (0.1, 0.3, 1.0, 3.0)},
    "PSLD": {f"zeta={g},gamma={c}": (lambda p, g=g, c=c: psld_solver(p, g, c)) for g in (0.1, 0.3, 1.0) for c in (0.1, 1.0)},
    "decoder inversion": {f"lr={lr}": (lambda p, lr=lr: inversion_solver(p, lr)) for lr in (0.1, 0.3)},
    # the SMC sampler (dwgf.methods.smc): N particles per measurement (1000 samples in all, as every method), the
    # twisted proposal's strength and the twist's annealing (variance sigma_y^2 + a (1 - abar_t); a = 0: the exact
    # likelihood at the Tweedie estimate); the data term is the bed's own Gaussian likelihood
    "SMC": {f"N={n},g={g}" + (f",anneal={a}" if a else ""): (lambda p, n=n, g=g, a=a: smc_solver(p, n, g, a))
            for a in (0.0, 1.0, 10.0) for n in (8, 64) for g in (0.3, 1.0)},
    # SMC with resample-move: two Langevin moves of step move_size (1 - abar_t) after each resampling
    "SMC + moves": {f"N={n},g=1,anneal={a},size={size}": (lambda p, n=n, a=a, size=size: smc_solver(p, n, 1.0, a, 2, size))
                    for a in (1.0, 10.0) for n in (8, 64) for size in (0.05, 0.2)},
}
GRIDS["ReSample"] = {f"zeta={g},gamma={c}": (lambda p, g=g, c=c: resample_solver(p, g, c)) for g in (0.1, 0.5) for c in (4.0, 40.0)}
# tau 0.05 was the best setting where it held but diverged at lr 0.03 in most cells and at lr 0.1 in all (a first grid
# of tau {0.05, 0.3} x lr {0.03, 0.1}): it is tried at lr 0.01 and 0.03, tau 0.3 at 0.03 and 0.1
GRIDS["Latent DAPS"] = {f"tau={t},lr={lr}": (lambda p, t=t, lr=lr: daps_solver(p, t, lr))
                        for t, lrs in ((0.05, (0.01, 0.03)), (0.3, (0.03, 0.1))) for lr in lrs}
METHODS = ["DWGF", "DWGF N=1", "RED-diff-latent", "Latent DPS", "PSLD", "decoder inversion", "SMC", "SMC + moves", "ReSample", "Latent DAPS"]


def build(method: str, label: str, prior):
    if method == "DWGF N=1":  # DWGF's tuned setting, one particle per measurement
        w, lr = (float(part.split("=")[1]) for part in label.split(","))
        return dwgf_solver(prior, 1, w, lr)
    return GRIDS[method][label](prior)


def samples_of(solver, prob: Problem, count: int, seed: int) -> tuple[torch.Tensor, float]:
    """``count`` samples (``count x d``) of the problem's posterior from ``solver``, and the seconds taken."""
    from dwgf.operators import MatrixOperator

    op = MatrixOperator(prob.matrix.float(), image_shape=[prob.matrix.shape[1], 1, 1], sigma_y=prob.sigma_y)
    solver.set_operator(op)
    b = math.ceil(count / solver.num_particles)
    y = prob.y.float().reshape(1, -1, 1, 1).expand(b, -1, -1, -1).contiguous()
    start = time.perf_counter()
    out = solver.solve(y, {}, [seed * 100_003 + i for i in range(b)])
    seconds = time.perf_counter() - start
    return out.reshape(-1, prob.matrix.shape[1]).double()[:count], seconds


# -- the yardsticks ------------------------------------------------------------------------------
def sliced_wasserstein(a: torch.Tensor, b: torch.Tensor, directions: torch.Tensor) -> float:
    """The mean over ``directions`` (unit rows) of the 1-D Wasserstein-1 distance between the projections
    of two equally sized sample sets."""
    pa, pb = torch.sort(a @ directions.T, dim=0).values, torch.sort(b @ directions.T, dim=0).values
    return float((pa - pb).abs().mean())


def coverage(samples: torch.Tensor, posterior) -> float:
    """The posterior mass of the components that at least ``REACHED`` of the samples are closest to."""
    closest = posterior.responsibilities(samples).argmax(1)
    share = torch.bincount(closest, minlength=len(posterior.weights)).double() / len(samples)
    return float(posterior.weights[share >= REACHED].sum())


def directions(d: int, seed: int = 0, count: int = 1000) -> torch.Tensor:
    v = torch.randn(count, d, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    return v / v.norm(dim=1, keepdim=True)


def evaluate(samples: torch.Tensor, prob: Problem, exact: torch.Tensor, dirs: torch.Tensor) -> dict[str, float]:
    d = samples.shape[1]
    return {
        "sw": sliced_wasserstein(samples, exact, dirs),
        "coverage": coverage(samples, prob.posterior),
        "mean_error": float((samples.mean(0) - prob.posterior.mean()).norm() / math.sqrt(d)),
    }


def exact_samples(prob: Problem, count: int, seed: int) -> torch.Tensor:
    return prob.posterior.sample(count, torch.Generator().manual_seed(seed))


# -- the benchmark -------------------------------------------------------------------------------
def prior_check(dims: list[int], count: int = 500) -> list[dict]:
    """DDIM sampling of the prior on each schedule against exact prior samples: can the bed be reached from N(0, I)?"""
    from dwgf.priors import GaussianMixturePrior
    from dwgf.sampling import ddim_sample

    rows = []
    for d in dims:
        mix, dirs = mixture(d, 0), directions(d)
        exact = mix.sample(count, torch.Generator().manual_seed(1))
        floor = sliced_wasserstein(mix.sample(count, torch.Generator().manual_seed(2)), exact, dirs)
        for schedule in ("scaled_linear", "linear"):
            prior = GaussianMixturePrior(mix, latent_shape=(d, 1, 1), schedule=schedule)
            x = ddim_sample(prior, count, num_steps=STEPS, eta=1.0, generator=torch.Generator().manual_seed(0)).reshape(count, d).double()
            rows.append({"d": d, "schedule": schedule, "abar_999": f"{float(prior.alphas_cumprod[-1]):.2g}",
                         "sw": f"{sliced_wasserstein(x, exact, dirs):.3f}", "floor": f"{floor:.3f}", "coverage": f"{coverage(x, mix):.3f}"})
            print("PRIOR", rows[-1], flush=True)
    return rows


def best(scores: dict[str, float]) -> str:
    """The label with the lowest score; a setting that diverged (NaN) on a tuning problem never wins over one that held."""
    return min(scores, key=lambda k: (math.isnan(scores[k]), scores[k]))


def tune(d: int, dy: int, problems: int, count: int, methods: list[str] = METHODS) -> dict[str, str]:
    """Each method's setting with the lowest mean SW over ``problems`` tuning problems (seeds 1000+)."""
    dirs = directions(d)
    probs = [problem(d, dy, 1000 + i) for i in range(problems)]
    exact = [exact_samples(p, count, 7) for p in probs]
    chosen = {}
    for method, grid in GRIDS.items():
        if method not in methods:
            continue
        scores = {}
        for label in grid:
            scores[label] = sum(evaluate(samples_of(build(method, label, p.prior), p, count, 1)[0], p, e, dirs)["sw"]
                                for p, e in zip(probs, exact)) / len(probs)
        chosen[method] = best(scores)
        print(f"TUNE d={d} dy={dy} {method}: {chosen[method]} (SW {scores[chosen[method]]:.3f}; "
              + ", ".join(f"{k} {v:.3f}" for k, v in scores.items()) + ")", flush=True)
    if "DWGF" in chosen:
        chosen["DWGF N=1"] = chosen["DWGF"]
    return chosen


def run(d: int, dy: int, problems: int, count: int, chosen: dict[str, str], plot_data: dict,
        methods: list[str] = METHODS) -> dict[str, dict]:
    dirs = directions(d)
    rows: dict[str, list[dict]] = {m: [] for m in ["exact", *methods]}
    for i in range(problems):
        prob = problem(d, dy, i)
        exact = exact_samples(prob, count, 7)
        second = exact_samples(prob, count, 8)
        rows["exact"].append({**evaluate(second, prob, exact, dirs), "seconds": 0.0})
        if dy == 1 and i == 0:
            plot_data[d] = {"exact": exact[:, :2]}
        for method in methods:
            samples, seconds = samples_of(build(method, chosen[method], prob.prior), prob, count, 2 + i)
            rows[method].append({**evaluate(samples, prob, exact, dirs), "seconds": seconds})
            if dy == 1 and i == 0:
                plot_data[d][method] = samples[:, :2]
            print(f"RUN d={d} dy={dy} problem {i} {method} ({chosen.get(method, '-')}): "
                  + ", ".join(f"{k} {v:.3f}" for k, v in rows[method][-1].items()), flush=True)
    return rows


def stats(values: list[float]) -> str:
    t = torch.tensor(values, dtype=torch.float64)
    return f"{t.mean():.3f} ± {t.std(unbiased=True):.3f}" if len(values) > 1 else f"{t.mean():.3f}"


def plot(plot_data: dict, folder: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    for d, sets in plot_data.items():
        methods = [m for m in METHODS if m in sets]
        fig, axes = plt.subplots(1, len(methods), figsize=(3 * len(methods), 3.2), sharex=True, sharey=True)
        exact = sets["exact"].numpy()
        for ax, method in zip(axes, methods):
            ax.scatter(exact[:, 0], exact[:, 1], s=2, c="#999999", alpha=0.5, label="exact posterior")
            pts = sets[method].numpy()
            ax.scatter(pts[:, 0], pts[:, 1], s=2, c="#d62728", alpha=0.5, label=method)
            ax.set_title(method, fontsize=9)
        axes[0].legend(fontsize=7, loc="lower left", markerscale=4)
        fig.suptitle(f"d = {d}, d_y = 1: the first two coordinates (grey: exact posterior; red: the method)", fontsize=9)
        fig.tight_layout()
        path = folder / f"posterior_d{d}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    return written


def particle_reach(d: int, weight: float, lr: float, items: int = 50, n: int = 4) -> dict[str, float]:
    """How much DWGF's particle term differs from each particle's own-noise term, over a run on the bed
    (``d_y = 1``, first problem).

    The particle term of particle ``i`` is the score of the item's diffused particles at ``z_t^i``
    (:func:`dwgf.regularizers.kl_prior.particle_score`); without the other particles it would be
    ``-eps^i / sqrt(1 - abar)``, the score-distillation term of one particle. Returns, over the run's
    iterations, the mean and maximum of ``||f^i - f^i_own|| / ||f^i_own||`` (averaged over particles
    and items), and the share of iterations where it exceeds 1e-3.
    """
    from dwgf.flow import FlowConfig, ItemDraws, Problem, dwgf_flow, item_generators
    from dwgf.operators import MatrixOperator
    from dwgf.regularizers import DWGFWeighting, KLPrior
    from dwgf.regularizers.kl_prior import particle_score
    from dwgf.schedules import ConstantStepSize, DescendingTimesteps

    prob = problem(d, 1, 0)
    op = MatrixOperator(prob.matrix.float(), image_shape=[d, 1, 1], sigma_y=prob.sigma_y)
    y = prob.y.float().reshape(1, -1, 1, 1).expand(items, -1, -1, -1).contiguous()
    deviation: list[float] = []

    def record(state) -> None:
        abar = state.abar_view(state.z)
        f = particle_score(state.z_t, abar.sqrt() * state.z, 1 - state.abar).reshape(items, n, -1)
        own = (-state.eps / (1 - abar).sqrt()).reshape(items, n, -1)
        deviation.append(float(((f - own).norm(dim=-1) / own.norm(dim=-1)).mean()))

    draw = ItemDraws(item_generators(list(range(items)), "cpu"), "cpu")
    config = FlowConfig(num_steps=STEPS, regularizers=[KLPrior(weight, weighting=DWGFWeighting())], step_size=ConstantStepSize(lr),
                        timesteps=DescendingTimesteps(t_min=2), decoder_noise=0.0)
    dwgf_flow(prob.prior, Problem(op, y, {}, num_particles=n), config, draw, record)
    t = torch.tensor(deviation)
    return {"mean": float(t.mean()), "max": float(t.max()), "active": float((t > 1e-3).double().mean())}


def reach_table(dims: list[int], command: str, output: Path, weight: float = 0.1, lr: float = 1.0) -> None:
    rows = []
    for d in dims:
        r = particle_reach(d, weight, lr)
        rows.append(f"| {d} | {r['mean']:.2e} | {r['max']:.2e} | {r['active']:.0%} |")
        print("REACH", rows[-1], flush=True)
    output.write_text("\n".join([
        "# DWGF's particle term on the exact-posterior bed: does it differ from independent score distillation?",
        "",
        f"Produced by `{command}` on {datetime.date.today()}: DWGF (N = 4, {STEPS} iterations, KL weight {weight}, Adam lr {lr}) on",
        "50 copies of the first d_y = 1 problem of each dimension. At every iteration the particle term of particle i, the score",
        "of the item's diffused particles at z_t^i, is compared with what it is for one particle alone, -eps^i / sqrt(1 - abar)",
        "(score distillation): *deviation* is ||f^i - f^i_own|| / ||f^i_own||, averaged over particles and items.",
        "",
        "| d | deviation, mean over iterations | deviation, max | iterations with deviation > 1e-3 |",
        "|---|---|---|---|",
        *rows,
        "",
    ]))
    print(f"wrote {output}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dims", nargs="+", type=int, default=[8, 80, 800])
    parser.add_argument("--dys", nargs="+", type=int, default=[1, 2, 4])
    parser.add_argument("--problems", type=int, default=3, help="problems per (d, d_y) in the table")
    parser.add_argument("--tune-problems", type=int, default=1, help="problems per (d, d_y) for tuning (other seeds)")
    parser.add_argument("--samples", type=int, default=1000, help="samples per method and problem")
    parser.add_argument("--tune-samples", type=int, default=400)
    parser.add_argument("--output", default=str(RESULTS / "posterior.md"))
    parser.add_argument("--methods", nargs="+", choices=list(GRIDS), default=None,
                        help="only tune and run these methods, on the given dims, into posterior.json (its other rows kept)")
    parser.add_argument("--reach", action="store_true",
                        help="only measure how much DWGF's particle term mixes particles (benchmarks/results/posterior_reach.md)")
    args = parser.parse_args(argv)
    command = ("python benchmarks/posterior.py " + shlex.join(sys.argv[1:] if argv is None else argv)).rstrip()
    if args.reach:
        reach_table(args.dims, command, RESULTS / "posterior_reach.md")
        return
    if args.methods:
        add_methods(args, command)
        return
    start = time.perf_counter()
    checks = prior_check(args.dims)
    table, settings, plot_data = [], [], {}
    for d in args.dims:
        for dy in args.dys:
            chosen = tune(d, dy, args.tune_problems, args.tune_samples)
            settings.append({"d": d, "dy": dy, **{m: chosen[m] for m in METHODS if m != "DWGF N=1"}})
            rows = run(d, dy, args.problems, args.samples, chosen, plot_data)
            for method, vals in rows.items():
                table.append({"d": d, "dy": dy, "method": method, "sw": stats([v["sw"] for v in vals]),
                              "coverage": stats([v["coverage"] for v in vals]), "mean_error": stats([v["mean_error"] for v in vals]),
                              "seconds": stats([v["seconds"] for v in vals]) if method != "exact" else "-"})
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    pictures = plot(plot_data, output.parent)
    data = {"command": command, "date": str(datetime.date.today()), "seconds": round(time.perf_counter() - start),
            "threads": torch.get_num_threads(), "problems": args.problems, "samples": args.samples, "steps": STEPS,
            "schedule": SCHEDULE, "checks": checks, "rows": table, "settings": settings, "plots": [p.name for p in pictures]}
    save_json(output.with_suffix(".json"), data)  # what other scripts read (diverse.py, sampler.py), never the Markdown
    write_markdown(output)


def add_methods(args, command: str) -> None:
    """Tunes and runs ``args.methods`` on the bed's cells of ``args.dims`` x ``args.dys`` (the same problems, seeds
    and sample counts) and puts their rows and settings into ``posterior.json`` (replacing earlier ones of the same
    methods, keeping every other row), then writes ``posterior.md`` again."""
    output = Path(args.output)
    data = load_json(output.with_suffix(".json"))
    if not data:
        raise SystemExit("posterior.py: no posterior.json to add to: run `python benchmarks/posterior.py` first")
    for d in args.dims:
        for dy in args.dys:
            chosen = tune(d, dy, args.tune_problems, args.tune_samples, args.methods)
            rows = run(d, dy, args.problems, args.samples, chosen, {}, args.methods)
            new = [{"d": d, "dy": dy, "method": method, "sw": stats([v["sw"] for v in vals]), "coverage": stats([v["coverage"] for v in vals]),
                    "mean_error": stats([v["mean_error"] for v in vals]), "seconds": stats([v["seconds"] for v in vals])}
                   for method, vals in rows.items() if method != "exact"]
            kept = [r for r in data["rows"] if not (r["d"] == d and r["dy"] == dy and r["method"] in args.methods)]
            last = max((i for i, r in enumerate(kept) if (r["d"], r["dy"]) == (d, dy)), default=len(kept) - 1)
            data["rows"] = kept[: last + 1] + new + kept[last + 1 :]
            for cell in data["settings"]:
                if (cell["d"], cell["dy"]) == (d, dy):
                    cell.update({m: chosen[m] for m in args.methods})
    # an earlier addition of the same methods no longer describes any row: it keeps only its other methods
    earlier = [{**a, "methods": [m for m in a["methods"] if m not in args.methods]} for a in data.get("added", [])]
    data["added"] = [a for a in earlier if a["methods"]] + [{"command": command, "date": str(datetime.date.today()), "methods": args.methods}]
    save_json(output.with_suffix(".json"), data)
    write_markdown(output)


def write_markdown(output: Path = RESULTS / "posterior.md") -> None:
    """``posterior.md`` from ``posterior.json`` and, when ``sampler.py rows`` has run, ``sampler_rows.json``
    (the DWGF sampler's row in each cell and its settings)."""
    data = load_json(output.with_suffix(".json"))
    sampler = load_json(output.parent / "sampler_rows.json")
    extra = {(r["d"], r["dy"]): r for r in sampler.get("rows", [])}
    table = []
    for i, row in enumerate(data["rows"]):
        table.append(_row(row))
        last_of_cell = i + 1 == len(data["rows"]) or (data["rows"][i + 1]["d"], data["rows"][i + 1]["dy"]) != (row["d"], row["dy"])
        if last_of_cell and (row["d"], row["dy"]) in extra:
            table.append(_row(extra[(row["d"], row["dy"])]))
    methods = [m for m in METHODS if m != "DWGF N=1" and any(m in c for c in data["settings"])]
    lines = [
        "# Is it a posterior? Methods against exact posterior samples (Gaussian-mixture priors)",
        "",
        f"Produced by `{data['command']}` on {data['date']} ({data['seconds']} s on this machine's "
        f"{data['threads']} CPU threads); the setting and the measures are in the script's docstring.",
        f"Each cell: mean ± standard deviation over {data['problems']} problems; {data['samples']} samples per method and problem; "
        f"{data['steps']} iterations or DDIM steps per method.",
        *(f"Rows of {', '.join(a['methods'])} added by `{a['command']}` on {a['date']} (tuned and run as the others)."
          for a in data.get("added", [])),
        "",
        "## The bed: can DDIM reach the prior from N(0, I)?",
        "",
        f"DDIM ({data['steps']} steps, eta 1) samples of the prior on each schedule against as many exact prior samples (500).",
        "",
        "| d | schedule | abar_999 | sliced W1 | exact floor | mode coverage |",
        "|---|---|---|---|---|---|",
        *(f"| {c['d']} | {c['schedule']} | {c['abar_999']} | {c['sw']} | {c['floor']} | {c['coverage']} |" for c in data["checks"]),
        "",
        f"The methods below run on the `{data['schedule']}` schedule.",
        "",
        "## Methods against the exact posterior",
        "",
        "| d | d_y | method | sliced W1 to exact | mode coverage | mean error / sqrt(d) | seconds |",
        "|---|---|---|---|---|---|---|",
        *table,
        "",
        "Tuned settings (lowest SW on other seeds; DWGF N=1 uses DWGF's):",
        "",
        "| d | d_y | " + " | ".join(methods) + " |",
        "|---|---|" + "---|" * len(methods),
        *(f"| {c['d']} | {c['dy']} | " + " | ".join(c.get(m, "-") for m in methods) + " |" for c in data["settings"]),
        "",
    ]
    if sampler:
        lines += [f"DWGF sampler's settings (rows added by `{sampler['command']}` on {sampler['date']}: "
                  "`configs/mnist/*_posterior.yaml`'s recipe, its annealing tuned as above):", "",
                  "| d | d_y | DWGF sampler |", "|---|---|---|", *(f"| {r['d']} | {r['dy']} | {r['setting']} |" for r in sampler["rows"]), ""]
    lines += ["Plots (d_y = 1, first problem): " + ", ".join(f"[{name}]({name})" for name in data["plots"]), ""]
    if data.get("reading"):  # the written reading of the tables, kept with them (a new run leaves it out until rewritten)
        lines += [data["reading"], ""]
    output.write_text("\n".join(lines))
    print(f"wrote {output}")


def _row(r: dict) -> str:
    return f"| {r['d']} | {r['dy']} | {r['method']} | {r['sw']} | {r['coverage']} | {r['mean_error']} | {r['seconds']} |"


if __name__ == "__main__":
    main()
