"""Every method x every MNIST task on the shipped prior, at an equal network budget.

    python benchmarks/quality.py tune  [--methods ...] [--tasks ...]   # grids on held-out *tune* digits
    python benchmarks/quality.py run   [--methods ...] [--tasks ...]   # winners on 100 *report* digits
    python benchmarks/quality.py sweep [--tasks ...] [--series K N]    # DWGF: iterations and particles
    python benchmarks/quality.py budget [--methods ...] [--tasks ...] [--budgets 50 200 1000] [--budget-split report100]
                                                                        # every method at three budgets: the charts
    python benchmarks/quality.py table                                  # rewrite the Markdown and charts from the cache
    python benchmarks/quality.py overlays                               # configs/methods/<task>/<method>.yaml
    python benchmarks/quality.py check [--methods ...] [--tasks ...]    # the winners on examples/mnist (8 digits)
    python benchmarks/quality.py tune-configs [--tasks ...] [--tune-split tune50] [--weights ..] [--encs ..] [--lrs ..]
                                                                        # the task configs' own grid (KL weight x encoder weight x step)
    python benchmarks/quality.py configs [--tasks ...] [--inversion ...] # the task configs as committed on the 250 report digits

Budget: 200 network (UNet) evaluations per particle for every method that uses the prior (DWGF and
RED-diff: 200 flow iterations; Latent DPS and PSLD: 200 DDIM steps; decoder inversion: 200 Adam
iterations and no network call) and 4 particles per digit (RED-diff: 1, by definition). Latent DPS
and PSLD also back-propagate through the network at every step; the seconds column shows that cost.

ReSample, Latent DAPS and FlowDPS (``dwgf.methods.resample``, ``.latent_daps``, ``.flow_dps``, run by the generic
solver) get the same 200 network calls per particle: ReSample 150 DDIM steps (one call each, and five more at each of
its hard-data-consistency steps; it also back-propagates through the network at every step), Latent DAPS 100
annealing levels of two ODE steps, FlowDPS 200 flow steps. Their inner loops, which call the decoder and not the
network, are capped so that a run fits the CPU: ReSample's AdamW at 50 latent and 200 pixel iterations (the authors:
500 and 2000), Latent DAPS at 5 Hamiltonian Monte Carlo steps per level (the authors: 15 to 35); FlowDPS runs the
authors' 3 gradient steps. The seconds column shows what the decoder work costs. ``budget`` runs every method's tuned
setting at about 50, 200 and 1000 network calls per particle (:func:`budget_args`) and draws one chart per task,
``docs/results/budget_<task>.png``: particle-mean PSNR against seconds per image and against network calls.

``tune`` runs each method's grid (below) on ``--tune-split`` (default ``tune20``: 2 digits per class
of the held-out tune digits), records the winner by particle-mean PSNR per (method, task) in
``benchmarks/results/quality_tuned.json``; ``run`` runs the winners on ``report100`` (the first 10
report digits of each class, fixed seeds from the configs), and ``sweep`` runs DWGF with its tuned
weight at 1000, 500, 250 and 100 iterations (N = 4; ``--series K``) and with 1, 2 and 8 particles
(K = 200; ``--series N``) there; its K = 200, N = 4 point is ``run``'s. ``--threads 1`` lets two
benchmark processes share a 2-core CPU (a file lock keeps the shared cache consistent); on the
2-core CPU this did not get more done than one process with two threads (Latent DPS, box
inpainting: 6.3 s/image per process side by side against 3.0 s alone with two threads). Every run goes through
``dwgf predict`` (:func:`benchmarks.harness.run`) and is cached in ``benchmarks/results/quality_runs.json``
under a structured key (:class:`benchmarks.harness.RunKey`) so that an interrupted benchmark resumes;
the tables are rewritten to ``benchmarks/results/quality.md`` after every run.

The task configs (``configs/mnist/<task>.yaml``) are tuned with the same machinery: ``tune-configs``
runs their grid on the tune digits (cached as method ``DWGF config``) and appends a table, headed
by its command, to ``benchmarks/results/mnist_tuning.md``; ``configs`` runs each config as
committed (and, for the tasks given with ``--inversion``, with every regularizer removed) on the
250 report digits and rewrites ``benchmarks/results/mnist_tasks.md`` (rows of tasks not run are kept).
"""

from __future__ import annotations

import argparse
import csv
import datetime
import itertools
import shlex
import statistics
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as ``python benchmarks/quality.py``: the repository becomes importable, from any folder
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from benchmarks.harness import NONLINEAR_TASKS, RESULTS, ROOT, TASKS, UNCERTAINTY, RunCache, RunKey, load_json, run, save_json, task_config
from benchmarks.harness import cached_run as harness_cached_run

CACHE = RunCache(RESULTS / "quality_runs.json")
TUNED = RESULTS / "quality_tuned.json"
CHARTS = ROOT / "docs" / "results"  # budget_<task>.png, beside the other result figures of the site
DEFAULT_TASKS = ["box_inpaint", "random_inpaint", "sr4", "gaussian_deblur"]
STEPS = 200
PARTICLES = 4
CONFIG_METHOD = "DWGF config"  # the task configs themselves, as tune-configs tunes them


def kl(weight: float) -> list[str]:
    return ["--model.regularizers", f"[{{class_path: KLPrior, init_args: {{weight: {weight}, weighting: DWGFWeighting}}}}]"]


# Deblurring wants a much smaller prior weight than inpainting (benchmarks/results/mnist_tuning.md),
# so the KL-weight grids of DWGF and RED-diff move down for the blur tasks.
SMALL_WEIGHT_TASKS = ("gaussian_deblur", "motion_deblur")


# On the nonlinear tasks the grid goes one step further up (RED-diff's best on saturation was its largest weight,
# 1.0) and on phase retrieval two steps further down as well (DWGF's best there was its smallest, 0.03).
LARGE_WEIGHT_TASKS = NONLINEAR_TASKS
WIDE_WEIGHT_TASKS = ("phase_retrieval",)


def kl_grid(task: str | None, weights: tuple[float, ...], small: tuple[float, ...]) -> dict[str, list[str]]:
    chosen = small if task in SMALL_WEIGHT_TASKS else weights + ((2.0,) if task in LARGE_WEIGHT_TASKS else ())
    if task in WIDE_WEIGHT_TASKS:
        chosen = (0.003, 0.01) + chosen
    return {f"w={w}": kl(w) for w in chosen}


# where a latent solver's tuning winner sat on an edge of its grid: the points added there, {(method, task): points}
WIDER: dict[tuple[str, str], tuple[float, ...]] = {
    ("Latent DAPS", "sr4"): (1e-3,), ("FlowDPS", "sr4"): (30.0,), ("ReSample", "random_inpaint"): (0.02,), ("ReSample", "gaussian_deblur"): (0.02,),
    ("FlowDPS", "gaussian_deblur"): (30.0,), ("FlowDPS", "jpeg"): (30.0,),
    ("FlowDPS", "phase_retrieval"): (30.0,),
}


def wider(method: str, task: str | None, points: tuple[float, ...]) -> tuple[float, ...]:
    """``points``, and the ones :data:`WIDER` adds for ``method`` on ``task``, in increasing order."""
    return tuple(sorted(points + WIDER.get((method, task), ())))


# method -> (overlay config or None, fixed overrides, {grid label: overrides} or a function of the task giving it)
METHODS: dict[str, tuple] = {
    "DWGF": (None, ["--model.num_particles", str(PARTICLES)], lambda task: kl_grid(task, (0.03, 0.1, 0.25, 0.5, 1.0), (0.003, 0.01, 0.03, 0.1))),
    "RED-diff-latent": (
        ROOT / "configs/methods/reddiff.yaml", [], lambda task: kl_grid(task, (0.03, 0.1, 0.25, 0.5, 1.0), (0.001, 0.003, 0.01, 0.03, 0.1)),
    ),
    "Latent DPS": (ROOT / "configs/methods/dps.yaml", [], {f"zeta={g}": ["--model.guidance", str(g)] for g in (0.01, 0.03, 0.1, 0.3, 1.0, 3.0)}),
    "PSLD": (
        ROOT / "configs/methods/psld.yaml", [],
        {f"zeta={g},gamma={c}": ["--model.guidance", str(g), "--model.gluing", str(c)] for g in (0.03, 0.1, 0.3, 1.0) for c in (0.1, 1.0)},
    ),
    "decoder inversion": (ROOT / "configs/methods/inversion.yaml", [], {f"lr={lr}": ["--model.step_size.lr", str(lr)] for lr in (0.1, 0.3, 1.0)}),
    # the latent solvers run by the generic solver (their steps through --model.settings, see budget_args); their optimisation and
    # MCMC inner loops are capped for the comparison: ReSample's AdamW at 50 (latent) and 200 (pixel) iterations, not 500 and 2000,
    # Latent DAPS at 5 Hamiltonian Monte Carlo steps per level, not 15
    "ReSample": (ROOT / "configs/methods/resample.yaml", ["--model.settings.latent_iters", "50", "--model.settings.pixel_iters", "200"],
                 lambda task: {f"guidance={g}": ["--model.settings.guidance", str(g)] for g in wider("ReSample", task, (0.1, 0.5, 2.0))}),
    "Latent DAPS": (ROOT / "configs/methods/latent_daps.yaml", ["--model.settings.mc_steps", "5"],
                    lambda task: {f"lr={lr}": ["--model.settings.lr", str(lr)]
                                  for lr in wider("Latent DAPS", task, (3e-6, 9.02e-6, 3e-5, 1e-4, 3e-4))}),
    "FlowDPS": (ROOT / "configs/methods/flow_dps.yaml", [],
                lambda task: {f"step={c}": ["--model.settings.step_size", str(c)] for c in wider("FlowDPS", task, (0.3, 1.0, 3.0, 10.0))}),
}
# the methods run by dwgf.solver.InverseSolver: their steps are settings (--model.settings.num_steps), not --model.num_steps
GENERIC = ("ReSample", "Latent DAPS", "FlowDPS")
# network (UNet) calls per particle of the budget chart's three points; 200 is the comparison's budget (STEPS)
BUDGETS = (50, 200, 1000)


def resample_calls(steps: int, every: int = 10, lookahead: int = 5) -> int:
    """ReSample's network calls per particle for ``steps`` DDIM steps: one per step, and ``lookahead`` more (fewer near
    the end) at each hard-data-consistency step (:func:`dwgf.methods.resample.consistency_steps`)."""
    from dwgf.methods.resample import consistency_steps

    return steps + sum(min(lookahead, steps - 1 - i) for i in consistency_steps(steps, every))


def budget_args(method: str, calls: int) -> tuple[list[str], int]:
    """The options that give ``method`` about ``calls`` network calls per particle, and the exact number they give:
    DDIM steps, flow iterations or Adam iterations for the others (decoder inversion calls none: it is given the
    iterations); ReSample the DDIM steps whose calls, look-ahead included, come nearest; Latent DAPS ``calls / 2``
    annealing levels of two ODE steps; FlowDPS ``calls`` steps."""
    if method == "ReSample":
        steps = min(range(1, calls + 1), key=lambda k: abs(resample_calls(k) - calls))
        return ["--model.settings.num_steps", str(steps)], resample_calls(steps)
    if method == "Latent DAPS":
        return ["--model.settings.num_steps", str(calls // 2), "--model.settings.ode_steps", "2"], 2 * (calls // 2)
    if method == "FlowDPS":
        return ["--model.settings.num_steps", str(calls)], calls
    return ["--model.num_steps", str(calls)], 0 if method == "decoder inversion" else calls


def applies(method: str, task: str) -> bool:
    """Whether ``method`` can run ``task``: PSLD needs a linear operator (its gluing term uses ``A^T``)."""
    return not (method == "PSLD" and task in NONLINEAR_TASKS)


def grid(method: str, task: str) -> dict[str, list[str]]:
    """The tuning grid of ``method`` on ``task``: ``{label: overrides}``."""
    g = METHODS[method][2]
    return g(task) if callable(g) else g


# no TensorBoard in benchmark runs: the seconds column times the solver, not the logging
NO_LOGS = ["--trainer.logger", "false"]


def method_args(method: str, task: str, extra: list[str], calls: int = STEPS) -> list[str]:
    overlay, fixed, _ = METHODS[method]
    args = ["--config", str(overlay)] if overlay else []
    return [*args, *budget_args(method, calls)[0], *fixed, *extra, *NO_LOGS]


def cached_run(key: RunKey, args: list[str], need: tuple[str, ...] = ()) -> dict:
    """:func:`benchmarks.harness.cached_run` on this script's cache."""
    return harness_cached_run(CACHE, key, args, need)


def best_of(kind: str, split: str, method: str, task: str, settings: dict[str, list[str]]) -> tuple[str, dict[str, dict]]:
    """The one tuner: runs every setting ``{label: args}`` (cached) and returns the label with the best
    particle-mean PSNR, and every result."""
    results = {label: cached_run(RunKey(kind, split, method, task, label), args) for label, args in settings.items()}
    return max(results, key=lambda label: results[label]["psnr_mean"]), results


def tune(methods: list[str], tasks: list[str], split: str) -> None:
    for task in tasks:
        for method in filter(lambda m: applies(m, task), methods):
            settings = {label: method_args(method, task, extra) for label, extra in grid(method, task).items()}
            won, _ = best_of("tune", split, method, task, settings)
            tuned = load_json(TUNED)
            tuned.setdefault(method, {})[task] = {"winner": won, "split": split}
            save_json(TUNED, tuned)
            write_tables()


def winner(method: str, task: str) -> str:
    entry = load_json(TUNED).get(method, {}).get(task)
    if entry is None:
        raise SystemExit(f"quality.py: no tuned setting for {method} on {task}: run `python benchmarks/quality.py tune --methods "
            f"'{method}' --tasks {task}` first")
    return entry["winner"]


def check(methods: list[str], tasks: list[str]) -> None:
    """The tuned winners on the 8 digits of examples/mnist: what README's commands give there (not in the tables)."""
    for task in tasks:
        for method in filter(lambda m: applies(m, task), methods):
            label = winner(method, task)
            result = cached_run(RunKey("check", "examples", method, task, label), method_args(method, task, grid(method, task)[label]))
            print(f"CHECK {method} on {task} ({label}), examples/mnist: particle-mean PSNR {result['psnr_mean']:.2f} dB "
                  f"over {result['items']} digits")


def evaluate(methods: list[str], tasks: list[str]) -> None:
    for task in tasks:
        for method in filter(lambda m: applies(m, task), methods):
            label = winner(method, task)
            # the comparison reports the uncertainty figures: a run cached before metrics.csv had them is redone
            cached_run(RunKey("run", "report100", method, task, label), method_args(method, task, grid(method, task)[label]), need=UNCERTAINTY)
            write_tables()


def sweep(tasks: list[str], series: list[str]) -> None:
    """DWGF (each task's tuned weight) at K = 1000, 500, 250, 100 iterations with N = 4 (series ``K``)
    and with N = 1, 2, 8 particles at K = 200 (series ``N``); K = 200 with N = 4 is ``run``'s point."""
    for s in series:
        for task in tasks:
            label = winner("DWGF", task)
            base = grid("DWGF", task)[label]
            knobs = [("K", k, k, PARTICLES) for k in (1000, 500, 250, 100)] if s == "K" else [("N", n, STEPS, n) for n in (1, 2, 8)]
            for name, value, steps, n in knobs:
                args = ["--model.num_steps", str(steps), "--model.num_particles", str(n), *base, *NO_LOGS]
                cached_run(RunKey("sweep", "report100", "DWGF", task, label, f"{name}={value}"), args)
                write_tables()


def budget(methods: list[str], tasks: list[str], split: str, budgets: list[int]) -> None:
    """Each method (its tuned setting) at ``budgets`` network calls per particle on ``split``; on ``report100`` the
    200-call point is the comparison's run (``run``). The rows and the charts are rewritten after every run."""
    for task in tasks:
        for method in filter(lambda m: applies(m, task) and m != "decoder inversion", methods):
            label = winner(method, task)
            for calls in budgets:
                if calls == STEPS and split == "report100":
                    continue
                args = method_args(method, task, grid(method, task)[label], calls)
                cached_run(RunKey("budget", split, method, task, label, f"calls={calls}"), args, need=UNCERTAINTY)
                write_tables()
                write_budget_charts()


def budget_rows(cache: dict[RunKey, dict]) -> list[tuple[RunKey, int, dict]]:
    """The budget chart's points: ``(key, exact network calls per particle, result)``, the comparison's runs as the
    200-call points of ``report100``, ordered by task, method and calls."""
    rows = []
    for key, v in cache.items():
        if key.kind == "budget":
            rows.append((key, budget_args(key.method, int(key.knob.split("=")[1]))[1], v))
    tasks = {k.task for k, _, _ in rows}
    for key, v in cache.items():
        if key.kind == "run" and key.task in tasks and key.method != "decoder inversion" and key.label == winner(key.method, key.task):
            rows.append((key, budget_args(key.method, STEPS)[1], v))
    return sorted(rows, key=lambda r: (TASKS.index(r[0].task), list(METHODS).index(r[0].method), r[1]))


def budget_command(key: RunKey) -> str:
    if key.kind == "run":
        return f"quality.py run --methods '{key.method}' --tasks {key.task}"
    return f"quality.py budget --methods '{key.method}' --tasks {key.task} --budgets {key.knob.split('=')[1]}" + (
        f" --budget-split {key.split}" if key.split != "report100" else "")


def write_budget_charts() -> None:
    """``docs/results/budget_<task>.png``: particle-mean PSNR against seconds per image and against network calls per
    particle, one line per method (its points on one split of digits)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    rows = budget_rows(dict(CACHE.items()))
    for task in sorted({k.task for k, _, _ in rows}, key=TASKS.index):
        fig, axes = plt.subplots(1, 2, figsize=(10, 4))
        for method in METHODS:
            for split in sorted({k.split for k, _, _ in rows if (k.task, k.method) == (task, method)}):
                points = sorted((calls, v) for k, calls, v in rows if (k.task, k.method, k.split) == (task, method, split))
                if not points:
                    continue
                name = method if split == "report100" else f"{method} ({split})"
                psnr = [v["psnr_mean"] for _, v in points]
                # one colour per method; the comparison's digits solid, a smaller split dotted with squares
                style = dict(color=f"C{list(METHODS).index(method)}", marker="o" if split == "report100" else "s",
                             linestyle="-" if split == "report100" else ":")
                axes[0].plot([v["seconds"] for _, v in points], psnr, label=name, **style)
                axes[1].plot([c for c, _ in points], psnr, label=name, **style)
        axes[0].set_xlabel("seconds per image (2-core CPU, batches of up to 50 digits)")
        axes[1].set_xlabel("network calls per particle")
        for ax in axes:
            ax.set_xscale("log")
            # plain numbers at 1, 2 and 5 per decade: matplotlib's default labels every minor tick of a short log range
            ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
            ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x:g}"))
            ax.xaxis.set_minor_formatter(NullFormatter())
            ax.set_ylabel("particle-mean PSNR (dB)")
            ax.grid(alpha=0.3)
        axes[1].legend(fontsize=7)
        fig.suptitle(f"MNIST {task}: quality against compute (report digits; tuned settings)")
        fig.tight_layout()
        out = CHARTS / f"budget_{task}.png"
        fig.savefig(out, dpi=90)
        plt.close(fig)


def sweep_rows(cache: dict[RunKey, dict]) -> list[tuple[tuple[str, str, int, int], dict]]:
    """The sweep's runs, with the comparison's DWGF run as its K = STEPS, N = PARTICLES point, ordered
    by task, then the iteration series (K descending), then the particle series (N ascending)."""
    rows = {}
    for key, v in cache.items():
        if key.kind == "sweep":
            value = int(key.knob[2:])
            steps, n = (value, PARTICLES) if key.knob.startswith("K=") else (STEPS, value)
            rows[(key.task, key.label, steps, n)] = v
    for task in {row[0] for row in rows}:
        label = winner("DWGF", task)
        comparison = cache.get(RunKey("run", "report100", "DWGF", task, label))
        if comparison is not None:
            rows[(task, label, STEPS, PARTICLES)] = comparison
    k_series = {row[0] for row in rows if row[3] == PARTICLES and row[2] != STEPS}
    order = lambda kv: (TASKS.index(kv[0][0]), not (kv[0][3] == PARTICLES and kv[0][0] in k_series), -kv[0][2], kv[0][3])  # noqa: E731
    return sorted(rows.items(), key=order)


def per_item(key: RunKey) -> dict[str, float]:
    """Particle-mean PSNR per item of the cached run ``key`` (cached with it; for runs cached before
    that, from the metrics.csv in its output folder, if still there)."""
    cached = (CACHE.get(key) or {}).get("per_item")
    if cached:
        return cached
    path = key.folder() / "metrics.csv"
    if not path.is_file():
        return {}
    with open(path) as f:
        return {r["name"]: float(r["psnr_mean"]) for r in csv.DictReader(f)}


def paired(key_a: RunKey, key_b: RunKey) -> tuple[float, float] | None:
    """Mean and standard error of the per-item PSNR difference a - b (None without both runs' per-item
    figures); runs cached before per-item figures were kept carry the figure their table printed."""
    a, b = per_item(key_a), per_item(key_b)
    if not a and not b:  # both from before: the figure printed then (against that DWGF run)
        kept = (CACHE.get(key_b) or {}).get("paired_vs_dwgf")
        return tuple(kept) if kept and key_a.method == "DWGF" else None
    names = sorted(set(a) & set(b))
    if len(names) < 2 or len(names) != len(a):
        return None
    d = [a[n] - b[n] for n in names]
    return statistics.mean(d), statistics.stdev(d) / len(d) ** 0.5


def write_tables() -> None:
    cache, tuned = dict(CACHE.items()), load_json(TUNED)
    lines = [
        "# Methods compared on the shipped MNIST prior",
        "",
        "Produced by `python benchmarks/quality.py tune`, then `python benchmarks/quality.py run` and",
        "`python benchmarks/quality.py sweep` (see the script's docstring); each row gives the date of its run.",
        f"Budget: {STEPS} network evaluations per particle for every method that uses the prior, {PARTICLES} particles per",
        "digit (RED-diff: 1). PSNR/SSIM on [0, 1] images over the first 10 *report* digits of each class (100",
        "digits); *mean*: the particle mean, *particle*: averaged over particles; s/image: solver time per digit on",
        "the 2-core CPU, batches of 50 digits. Hyperparameters: winners of the grids on the *tune* digits (below).",
    ]
    runs = {k: v for k, v in cache.items() if k.kind == "run"}
    threads = sorted({v.get("threads") for k, v in cache.items() if k.kind in ("run", "sweep")} - {None})
    if threads == [1]:
        lines.append("The comparison and the sweep ran with one torch thread per process (`--threads 1`).")
    elif threads:
        run_threads = sorted({v.get("threads") for v in runs.values()} - {None})
        lines.append(f"The comparison ran with {', '.join(map(str, run_threads))} torch thread(s) per process; the sweep's "
                     "threads are given per row.")
    lines.append("")
    tasks = [t for t in TASKS if any(k.task == t for k in runs)]
    if tasks:
        lines += ["*DWGF - it*: the particle-mean PSNR of DWGF minus this method's, paired per digit, with its standard error.",
                  "*spread*, *CRPS*, *cov90*: the particles around the truth, per pixel of [0, 1] images, averaged over digits (docs/running.md,",
                  "\"Uncertainty\"): mean standard deviation across particles, the ensemble CRPS, and the share of pixels whose truth",
                  "lies between the particles' 5% and 95% quantiles (\"-\": a run from before metrics.csv had them).", "",
                  "| task | method | setting | mean PSNR | mean SSIM | particle PSNR | particle SSIM | DWGF - it (dB) | spread | CRPS | "
                      "cov90 | s/image | naive PSNR | date | command |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for task in tasks:
            rows = [(k, v) for k, v in runs.items() if k.task == task]
            best = max(v["psnr_mean"] for _, v in rows)
            dwgf = [k for k in runs if (k.method, k.task) == ("DWGF", task)]
            for key, v in sorted(rows, key=lambda r: list(METHODS).index(r[0].method)):
                psnr = f"**{v['psnr_mean']:.2f}**" if v["psnr_mean"] == best else f"{v['psnr_mean']:.2f}"
                diff = paired(dwgf[0], key) if dwgf and key.method != "DWGF" else None
                vs = f"{diff[0]:+.2f} ± {diff[1]:.2f}" if diff else "-"
                unc = " | ".join(f"{v[k]:.4f}" if k in v else "-" for k in UNCERTAINTY)
                naive = "-" if v["naive"] != v["naive"] else f"{v['naive']:.2f}"  # NaN: the measurement is not an image
                # `run` runs the tuned winner: a row whose setting has since lost its grid cannot be remade by it
                made = f"`python benchmarks/{budget_command(key)}`" if key.label == tuned.get(key.method, {}).get(task, {}).get(
                    "winner") else "- (no longer the tuned setting)"
                lines.append(f"| {task} | {key.method} | {key.label} | {psnr} | {v['ssim_mean']:.3f} | {v['psnr']:.2f} | {v['ssim']:.3f} | "
                             f"{vs} | {unc} | {v['seconds']:.2f} | {naive} | {v['date']} | {made} |")
            for method in (m for m in METHODS if not applies(m, task)):
                lines.append(f"| {task} | {method} | not applicable: the operator is nonlinear and {method} needs its adjoint A^T | "
                             + " | ".join("-" * 12) + " |")
    sweeps = sweep_rows(cache)
    if sweeps:
        lines += ["", "## DWGF: quality against cost (report digits as above)", "",
                  f"Iterations K at N = {PARTICLES}, then particles N at K = {STEPS}; the K = {STEPS}, N = {PARTICLES} row is the "
                  "method comparison's run.", "",
                  "| task | setting | iterations K | particles N | mean PSNR | mean SSIM | particle PSNR | s/image | torch threads | date |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        for (task, label, steps, n), v in sweeps:
            lines.append(f"| {task} | {label} | {steps} | {n} | {v['psnr_mean']:.2f} | {v['ssim_mean']:.3f} | {v['psnr']:.2f} | "
                         f"{v['seconds']:.2f} | {v.get('threads', '-')} | {v['date']} |")
    budgets = budget_rows(cache)
    if budgets:
        lines += ["", "## Quality against compute: every method at three budgets", "",
                  "Each method's tuned setting at about 50, 200 and 1000 network calls per particle (Latent DPS, PSLD and ReSample",
                  "also back-propagate through the network at every step; decoder inversion calls none and is left out). The charts",
                  "are `docs/results/budget_<task>.png`; each row's command is in its last column (`python benchmarks/...`).", "",
                  "| task | method | setting | digits | network calls | mean PSNR | mean SSIM | particle PSNR | CRPS | cov90 | s/image | date "
                  "| command |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for key, calls, v in budgets:
            unc = " | ".join(f"{v[k]:.4f}" if k in v else "-" for k in ("crps", "coverage90"))
            lines.append(f"| {key.task} | {key.method} | {key.label} | {key.split} | {calls} | {v['psnr_mean']:.2f} | {v['ssim_mean']:.3f} | "
                         f"{v['psnr']:.2f} | {unc} | {v['seconds']:.2f} | {v['date']} | `{budget_command(key)}` |")
    tunes = {k: v for k, v in cache.items() if k.kind == "tune" and k.method in METHODS}
    if tunes:
        lines += ["", "## Tuning grids (particle-mean PSNR on the tune digits; winner in bold)", "",
                  "| task | method | split | setting | mean PSNR | particle PSNR | s/image | command |", "|---|---|---|---|---|---|---|---|"]
        for k, v in sorted(tunes.items(), key=lambda kv: (kv[0].task, list(METHODS).index(kv[0].method))):
            won = tuned.get(k.method, {}).get(k.task, {}).get("winner") == k.label
            setting = f"**{k.label}**" if won else k.label
            made = f"`python benchmarks/quality.py tune --methods '{k.method}' --tasks {k.task} --tune-split {k.split}`"
            lines.append(f"| {k.task} | {k.method} | {k.split} | {setting} | {v['psnr_mean']:.2f} | {v['psnr']:.2f} | {v['seconds']:.2f} | {made} |")
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "quality.md").write_text("\n".join(lines) + "\n")


# -- the task configs ----------------------------------------------------------------------------
def config_overrides(weight: float, enc: float, lr: float) -> list[str]:
    """The task config with KLPrior weight ``weight``, EncoderConsistency weight ``enc`` (none if 0), Adam step ``lr``."""
    regs = [f"{{class_path: KLPrior, init_args: {{weight: {weight}}}}}"]
    if enc > 0:
        regs.append(f"{{class_path: EncoderConsistency, init_args: {{weight: {enc}}}}}")
    return ["--model.regularizers", "[" + ", ".join(regs) + "]", "--model.step_size.lr", str(lr), *NO_LOGS]


def tune_configs(tasks: list[str], split: str, weights: list[float], encs: list[float], lrs: list[float], command: str) -> None:
    """The task configs' grid on ``split``, by :func:`best_of`; appends a table headed by ``command`` to mnist_tuning.md."""
    lines = [f"\n## Tuning grid on `{split}` ({datetime.date.today()}): `{command}`\n",
             "| task | prior weight | encoder weight | step size | mean PSNR | mean SSIM | particle PSNR | wall s |",
             "|---|---|---|---|---|---|---|---|"]
    for task in tasks:
        settings = {f"w={w},enc={e},lr={lr}": config_overrides(w, e, lr) for w, e, lr in itertools.product(weights, encs, lrs)}
        won, results = best_of("tune", split, CONFIG_METHOD, task, settings)
        for (w, e, lr), (label, r) in zip(itertools.product(weights, encs, lrs), results.items()):
            cells = f"{w} | {e} | {lr} | {r['psnr_mean']:.2f} | {r['ssim_mean']:.3f} | {r['psnr']:.2f} | {r['wall']:.0f}"
            lines.append(f"| {task} | " + (" | ".join(f"**{c.strip()}**" for c in cells.split("|")) if label == won else cells) + " |")
    with open(RESULTS / "mnist_tuning.md", "a") as f:
        f.write("\n".join(lines) + "\n")


def report_configs(tasks: list[str], inversion: list[str]) -> None:
    """Each task config as committed on the 250 report digits (and, for ``inversion``, with every
    regularizer removed); rewrites mnist_tasks.md, keeping the rows of tasks not run."""
    path = RESULTS / "mnist_tasks.md"
    rows = {}
    if path.is_file():  # earlier rows: "| task | ... | date |"
        for line in path.read_text().splitlines():
            cells = [c.strip() for c in line.strip("|").split("|")]
            if line.startswith("| ") and cells[0] in TASKS:
                rows[cells[0]] = line
    header = ["# DWGF on the shipped MNIST prior: the 250 report digits\n",
              "Produced by `python benchmarks/quality.py configs --tasks TASK... --inversion TASK...` (each row: its date; rows",
              "dated 2026-11-24 by its predecessor `python benchmarks/mnist_tune.py report`, the same runs).",
              "PSNR/SSIM on [0, 1] images; *mean*: the particle mean; *particle*: averaged over particles; *naive*: the measurement "
                  "shown as an image",
              "(masked image with gray holes, nearest-neighbour upsampling, blurred or noisy image); *inversion*: the same flow with "
                  "every regularizer removed.\n",
              "| task | DWGF mean PSNR | DWGF mean SSIM | particle PSNR | particle SSIM | naive PSNR | inversion mean PSNR | wall s "
                  "(250 digits) | date |",
              "|---|---|---|---|---|---|---|---|---|"]
    for task in tasks:  # always computed: the configs as they are now (a cache would hold an earlier version's figures)
        r = run(task_config(task), "report", RunKey("configs", "report", CONFIG_METHOD, task, "as committed").folder(), [*NO_LOGS])
        inv = [c.strip() for c in rows[task].strip("|").split("|")][6] if task in rows else ""  # kept unless recomputed
        if task in inversion:
            ri = run(task_config(task), "report", RunKey("configs", "report", CONFIG_METHOD, task, "no regularizers").folder(),
                     ["--model.regularizers", "[]", *NO_LOGS])
            inv = f"{ri['psnr_mean']:.2f}"
        rows[task] = (f"| {task} | {r['psnr_mean']:.2f} | {r['ssim_mean']:.3f} | {r['psnr']:.2f} | {r['ssim']:.3f} | {r['naive']:.2f} | "
                      f"{inv} | {r['wall']:.0f} | {datetime.date.today()} |")
        print("REPORT", rows[task], flush=True)
        path.write_text("\n".join(header + [rows[t] for t in TASKS if t in rows]) + "\n")  # after every task: nothing lost


OVERLAY_NAMES = {"DWGF": "dwgf", "RED-diff-latent": "reddiff", "Latent DPS": "dps", "PSLD": "psld", "decoder inversion": "inversion",
                 "ReSample": "resample", "Latent DAPS": "latent_daps", "FlowDPS": "flow_dps"}


def _set(tree: dict, dotted: str, value) -> None:
    """Sets ``--model.a.b`` in a config's ``model`` tree as jsonargparse reads it: through ``init_args`` of a class
    (a node with ``class_path``, or one not yet written), straight into a plain mapping (the generic solver's
    ``settings``)."""
    node = tree.setdefault("init_args", {})
    *parents, leaf = dotted.split(".")
    for key in parents:
        node = node.setdefault(key, {})
        if "class_path" in node or not node:
            node = node.setdefault("init_args", {})
    node[leaf] = value


def tuned_overlay(method: str, task: str) -> dict:
    """The model section that ``run`` gives ``method`` on ``task``: its overlay with the tuned winner applied."""
    import yaml

    overlay, fixed, _ = METHODS[method]
    model = yaml.safe_load(Path(overlay).read_text())["model"] if overlay else {}
    overrides = [*budget_args(method, STEPS)[0], *fixed, *grid(method, task)[winner(method, task)]]
    for key, value in zip(overrides[::2], overrides[1::2]):
        assert key.startswith("--model."), key
        _set(model, key[len("--model."):], _scalar(value))
    return {"model": model}


def _scalar(text: str):
    """A command-line value as the config should hold it: a number where ``text`` is one (YAML 1.1, which PyYAML reads,
    takes ``3e-05`` for a string: it wants a dot), else what YAML makes of it."""
    import yaml

    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return yaml.safe_load(text)


def write_overlays(methods: list[str], tasks: list[str]) -> None:
    """``configs/methods/<task>/<method>.yaml``: each method's tuned setting for each task, for README's commands."""
    import yaml

    tuned = load_json(TUNED)
    for task in tasks:
        folder = ROOT / "configs" / "methods" / task
        folder.mkdir(parents=True, exist_ok=True)
        for method in methods:
            if task not in tuned.get(method, {}):
                continue
            entry = tuned[method][task]
            name = OVERLAY_NAMES[method]
            header = (f"# {method} on {task}, with its tuned setting {entry['winner']} (the best particle-mean PSNR on the\n"
                      f"# {entry['split']} digits; benchmarks/results/quality.md). Layer it over the task config:\n"
                      f"#   dwgf predict --config configs/mnist/{task}.yaml --config configs/methods/{task}/{name}.yaml --data.images DIR\n"
                      f"# Written by `python benchmarks/quality.py overlays` from benchmarks/results/quality_tuned.json; do not edit.\n")
            body = yaml.safe_dump(tuned_overlay(method, task), sort_keys=False, default_flow_style=False)
            (folder / f"{name}.yaml").write_text(header + body)
            print(f"wrote {(folder / f'{name}.yaml').relative_to(ROOT)}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=["tune", "run", "sweep", "budget", "table", "overlays", "check", "tune-configs", "configs"])
    parser.add_argument("--budgets", nargs="+", type=int, default=list(BUDGETS), help="budget: network calls per particle")
    parser.add_argument("--budget-split", default="report100", choices=["report100", "report50", "report20", "report10"],
                        help="budget: the digits (default report100, where the 200-call point is run's)")
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--tasks", nargs="+", default=None, choices=TASKS,
                        help=f"default: {' '.join(DEFAULT_TASKS)} (configs, tune-configs: every task)")
    parser.add_argument("--tune-split", default=None, choices=["tune10", "tune20", "tune50", "tune100", "tune"],
                        help="default: tune20 (tune-configs: tune50)")
    parser.add_argument("--series", nargs="+", default=["K", "N"], choices=["K", "N"],
                        help="sweep: iterations (K), particles (N) or both, in this order")
    parser.add_argument("--weights", nargs="+", type=float, default=[0.5, 1.0, 2.0], help="tune-configs: KLPrior weights")
    parser.add_argument("--encs", nargs="+", type=float, default=[0.0, 0.1], help="tune-configs: EncoderConsistency weights (0: none)")
    parser.add_argument("--lrs", nargs="+", type=float, default=[0.3], help="tune-configs: Adam step sizes")
    parser.add_argument("--inversion", nargs="*", default=["box_inpaint", "sr4"], help="configs: tasks also run without regularizers")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (default: torch's choice), e.g. 1 for two benchmark processes side by side")
    args = parser.parse_args(argv)
    whole = args.mode in ("configs", "tune-configs")
    tasks = args.tasks or (TASKS if whole else DEFAULT_TASKS)
    split = args.tune_split or ("tune50" if args.mode == "tune-configs" else "tune20")
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.mode == "tune":
        tune(args.methods, tasks, split)
    elif args.mode == "run":
        evaluate(args.methods, tasks)
    elif args.mode == "sweep":
        sweep(tasks, args.series)
    elif args.mode == "budget":
        budget(args.methods, tasks, args.budget_split, args.budgets)
    elif args.mode == "check":
        check(args.methods, tasks)
        return
    elif args.mode == "overlays":
        write_overlays(args.methods, tasks)
        return
    elif args.mode == "tune-configs":
        command = "python benchmarks/quality.py " + shlex.join(sys.argv[1:] if argv is None else argv)
        tune_configs(tasks, split, args.weights, args.encs, args.lrs, command)
        return
    elif args.mode == "configs":
        report_configs(tasks, args.inversion)
        return
    write_tables()
    if args.mode == "table":  # the charts too, from the same cache
        write_budget_charts()


if __name__ == "__main__":
    main()
