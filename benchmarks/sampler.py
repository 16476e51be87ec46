"""Does DWGF sample the posterior once it has a likelihood and a sampling step? Each ingredient alone, then together.

    python benchmarks/sampler.py bed   [--dims 80 800] [--dys 1 2 4]   # the ingredients on the exact-posterior bed
    python benchmarks/sampler.py rows  [--dims 8 80 800]                # the "DWGF sampler" rows (sampler_rows.json, into posterior.md)
    python benchmarks/sampler.py mnist [--tasks box_inpaint sr4]        # the sampler configs on the 100 report digits
    python benchmarks/sampler.py picture                                # particles: the sampler beside plain DWGF

``bed`` uses ``benchmarks/posterior.py``'s bed (same problems, seeds, 1000 samples, 200 iterations,
yardsticks) and adds one ingredient at a time to plain DWGF (Adam, the paper's averaged squared
error, ``KLPrior`` at the setting ``posterior.py`` tuned per ``(d, d_y)``):

- *likelihood*: the data term becomes :class:`~dwgf.likelihoods.GaussianLikelihood` (summed, over
  ``sigma_y^2``) and the prior term a log density (``KLPrior(per_element=False)``), still with Adam;
- *gradient steps*: :class:`~dwgf.optimizers.Langevin` at temperature 0 (explicit steps bounded by
  the curvature) on the likelihood and the smoothed prior's score (``ScoreWeighting``, ``query_noise 0``);
- *Langevin*: the same at temperature 1 (the noise);
- *Langevin + particle term*: with ``KLPrior``'s particle term instead of the own-noise term;
- *DWGF sampler*: Langevin with the annealed likelihood (``anneal``), the MNIST configs' recipe.

Each variant's small grid is tuned by SW on ``--tune-problems`` problems of other seeds, as
``posterior.py`` tunes. Writes ``benchmarks/results/sampler_posterior.md``. ``rows`` runs the *DWGF
sampler* alone at every ``(d, d_y)`` of ``posterior.py`` and puts its rows into
``benchmarks/results/posterior.md`` (through ``sampler_rows.json``: the table is written again from
``posterior.json`` and it, its other rows kept; no script reads another's Markdown).

``mnist`` runs ``configs/mnist/<task>_posterior.yaml`` on the 100 report digits (the harness of
``quality.py``; cached in ``benchmarks/results/sampler_runs.json``) and writes
``benchmarks/results/sampler_mnist.md`` beside plain DWGF's N = 8 report runs (``diverse.py``'s run cache).

``picture`` runs plain DWGF (the task config at N = 8) and the sampler config on the same six report
digits (``diverse.py``'s: plain DWGF's worst in each of the classes 4, 9, 3, 8, 1, 7), copied into one
folder so both see the same seeds, and draws their particles and std maps side by side
(``benchmarks/results/sampler_digits.png``).
"""

from __future__ import annotations

import argparse
import datetime
import shlex
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as ``python benchmarks/sampler.py``: the repository becomes importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from benchmarks.harness import RESULTS, ROOT, UNCERTAINTY, RunCache, RunKey, load_json, prior_id, run, save_json

CACHE = RunCache(RESULTS / "sampler_runs.json")
MNIST_TASKS = ["box_inpaint", "sr4"]


# -- the bed -------------------------------------------------------------------------------------
def bed_solver(prior, spec: dict):
    """A DWGF solver on the bed from a variant's ``spec`` (see :data:`VARIANTS`)."""
    from dwgf.likelihoods import GaussianLikelihood, MeanSquaredError
    from dwgf.optimizers import Adam, Langevin
    from dwgf.regularizers import DWGFWeighting, KLPrior, ScoreWeighting
    from dwgf.schedules import ConstantStepSize, DescendingTimesteps
    from dwgf.solver import DWGF
    from benchmarks.posterior import STEPS

    sampler = spec["optimizer"] == "langevin"
    kl = KLPrior(spec.get("w", 1.0), weighting=ScoreWeighting() if sampler else DWGFWeighting(),
                 particle_term=spec.get("particle_term", not sampler), per_element=spec["data"] == "mse")
    likelihood = MeanSquaredError() if spec["data"] == "mse" else GaussianLikelihood(anneal=spec.get("anneal", 0.0))
    optimizer = Langevin(temperature=spec.get("T", 1.0), safety=spec.get("safety", 1.0)) if sampler else Adam()
    return DWGF(prior, num_steps=STEPS, num_particles=4, regularizers=[kl], step_size=ConstantStepSize(spec["lr"]),
                timesteps=DescendingTimesteps(t_min=2), decoder_noise=0.0, optimizer=optimizer, likelihood=likelihood,
                query_noise=0.0 if sampler else 1.0)


def variants(plain: tuple[float, float]) -> dict[str, dict[str, dict]]:
    """variant -> {grid label: spec}; ``plain`` is DWGF's tuned ``(weight, lr)`` at this ``(d, d_y)``."""
    w, lr = plain
    lang = {"optimizer": "langevin", "data": "gaussian"}
    return {
        "DWGF": {f"w={w},lr={lr}": {"optimizer": "adam", "data": "mse", "w": w, "lr": lr}},
        "likelihood (Adam)": {f"w={w_},lr={lr}": {"optimizer": "adam", "data": "gaussian", "w": w_, "lr": lr} for w_ in (0.1, 1.0, 10.0)},
        "gradient steps (T=0)": {f"lr={lr_}": {**lang, "T": 0.0, "lr": lr_} for lr_ in (0.3, 1.0)},
        "Langevin (T=1)": {f"lr={lr_}": {**lang, "T": 1.0, "lr": lr_} for lr_ in (0.3, 1.0)},
        "Langevin + particle term": {f"lr={lr_}": {**lang, "T": 1.0, "lr": lr_, "particle_term": True} for lr_ in (0.3, 1.0)},
        "DWGF sampler": SAMPLER_GRID,
    }


# the sampler's grid (the annealing of the likelihood; Langevin, lr 1, safety 1 as in the MNIST configs)
SAMPLER_GRID = {f"anneal={a}": {"optimizer": "langevin", "data": "gaussian", "T": 1.0, "lr": 1.0, "anneal": a} for a in (1.0, 10.0, 100.0)}


def tune_and_run(d: int, dy: int, grid_of: dict[str, dict[str, dict]], tune_problems: int, count: int, problems: int,
                 tune_count: int) -> dict[str, tuple[str, list[dict]]]:
    """Each variant's best grid label (by mean SW on tuning problems) and its evaluations on the report problems."""
    from benchmarks import posterior as bed

    dirs = bed.directions(d)
    tunes = [bed.problem(d, dy, 1000 + i) for i in range(tune_problems)]
    tune_exact = [bed.exact_samples(p, tune_count, 7) for p in tunes]
    out = {}
    for name, grid in grid_of.items():
        scores = {label: sum(bed.evaluate(bed.samples_of(bed_solver(p.prior, spec), p, tune_count, 1)[0], p, e, dirs)["sw"]
                             for p, e in zip(tunes, tune_exact)) / len(tunes) for label, spec in grid.items()}
        label = min(scores, key=scores.get)
        rows = []
        for i in range(problems):
            prob = bed.problem(d, dy, i)
            exact = bed.exact_samples(prob, count, 7)
            samples, seconds = bed.samples_of(bed_solver(prob.prior, grid[label]), prob, count, 2 + i)
            rows.append({**bed.evaluate(samples, prob, exact, dirs), "seconds": seconds})
        out[name] = (label, rows)
        print(f"BED d={d} dy={dy} {name} ({label}): SW " + ", ".join(f"{r['sw']:.3f}" for r in rows)
              + " coverage " + ", ".join(f"{r['coverage']:.3f}" for r in rows), flush=True)
    return out


def exact_floor(d: int, dy: int, problems: int, count: int) -> list[dict]:
    from benchmarks import posterior as bed

    dirs = bed.directions(d)
    rows = []
    for i in range(problems):
        prob = bed.problem(d, dy, i)
        rows.append(bed.evaluate(bed.exact_samples(prob, count, 8), prob, bed.exact_samples(prob, count, 7), dirs))
    return rows


def bed_study(args, command: str) -> None:
    from benchmarks.diverse import plain_settings
    from benchmarks.posterior import STEPS, stats

    plain = plain_settings()
    start = time.perf_counter()
    table = []
    for d in args.dims:
        for dy in args.dys:
            floor = exact_floor(d, dy, args.problems, args.samples)
            table.append(f"| {d} | {dy} | exact | - | {stats([r['sw'] for r in floor])} | {stats([r['coverage'] for r in floor])} | - |")
            for name, (label, rows) in tune_and_run(d, dy, variants(plain[(d, dy)]), args.tune_problems, args.samples, args.problems,
                                                    args.tune_samples).items():
                table.append(f"| {d} | {dy} | {name} | {label} | {stats([r['sw'] for r in rows])} | "
                             f"{stats([r['coverage'] for r in rows])} | {stats([r['seconds'] for r in rows])} |")
    path = RESULTS / "sampler_posterior.md"
    path.write_text("\n".join([
        "# The sampler's ingredients on the exact-posterior bed",
        "",
        f"Produced by `{command}` on {datetime.date.today()} ({time.perf_counter() - start:.0f} s, {torch.get_num_threads()} CPU "
        f"threads). `benchmarks/posterior.py`'s bed: {args.problems} problems per cell (mean ± sd), {args.samples} samples, "
        f"{STEPS} iterations, N = 4; each variant's grid tuned on {args.tune_problems} problem(s) of other seeds by SW; the "
        "variants are in the script's docstring. *exact*: a second set of exact samples (the floor).",
        "",
        "| d | d_y | variant | setting | sliced W1 to exact | mode coverage | seconds |",
        "|---|---|---|---|---|---|---|",
        *table,
        "",
    ]))
    print(f"wrote {path}")


def posterior_rows(args, command: str) -> None:
    """The DWGF sampler's row of each cell and its settings, into ``sampler_rows.json``; ``posterior.md`` is then
    written again from ``posterior.json`` and it (:func:`benchmarks.posterior.write_markdown`), every other row kept."""
    from benchmarks.posterior import stats, write_markdown

    if not (RESULTS / "posterior.json").is_file():
        raise SystemExit("sampler.py: no benchmarks/results/posterior.json: run `python benchmarks/posterior.py` first")
    cells = {(r["d"], r["dy"]) for r in load_json(RESULTS / "posterior.json")["rows"]}
    saved = {(r["d"], r["dy"]): r for r in load_json(RESULTS / "sampler_rows.json").get("rows", [])}
    for d in args.dims:
        for dy in args.dys:
            if (d, dy) not in cells:
                raise SystemExit(f"sampler.py: posterior.json has no rows for d = {d}, d_y = {dy}: run `python benchmarks/posterior.py` first")
            label, rows = tune_and_run(d, dy, {"DWGF sampler": SAMPLER_GRID}, args.tune_problems, args.samples, args.problems,
                                       args.tune_samples)["DWGF sampler"]
            saved[(d, dy)] = {"d": d, "dy": dy, "method": "DWGF sampler", "sw": stats([r["sw"] for r in rows]),
                              "coverage": stats([r["coverage"] for r in rows]), "mean_error": stats([r["mean_error"] for r in rows]),
                              "seconds": stats([r["seconds"] for r in rows]), "setting": label}
    save_json(RESULTS / "sampler_rows.json", {"command": command, "date": str(datetime.date.today()),
                                                "rows": [saved[k] for k in sorted(saved)]})
    write_markdown(RESULTS / "posterior.md")


# -- MNIST ---------------------------------------------------------------------------------------
def mnist(args, command: str) -> None:
    rows = []
    plain = {(m["task"], m["method"]): m for m in plain_rows()}
    for task in args.tasks:
        if (task, "DWGF") not in plain:
            raise SystemExit(f"sampler.py: no plain DWGF report run for {task}: run `python benchmarks/diverse.py run --tasks {task}` first")
        config = ROOT / "configs" / "mnist" / f"{task}_posterior.yaml"
        key = RunKey("run", "report100", "DWGF sampler", task, "config")
        result = CACHE.get(key)
        if result is None or result.get("prior") != prior_id() or any(k not in result for k in UNCERTAINTY):
            # the sampler config is the whole config (not an overlay on the task's): its own data section
            result = run(config, "report100", key.folder(), ["--trainer.logger", "false"])
            result.update(date=str(datetime.date.today()), prior=prior_id(), threads=torch.get_num_threads())
            CACHE.put(key, result)
            print(f"RUN {key}: mean PSNR {result['psnr_mean']:.2f} CRPS {result['crps']:.4f} cov90 {result['coverage90']:.4f}", flush=True)
        base = plain.get((task, "DWGF"))
        rows.append((task, result, base))
    lines = [
        "# The DWGF sampler on MNIST (100 report digits, N = 8)",
        "",
        f"Produced by `{command}`; plain DWGF's rows are `diverse_mnist.md`'s (the task configs at N = 8, same digits and seeds).",
        "Targets (issue): coverage90 in [0.70, 0.95]; CRPS at least 10% below plain DWGF's; particle mean within 0.2 dB of plain DWGF's.",
        "",
        "| task | method | mean PSNR | particle PSNR | spread | CRPS | CRPS vs DWGF | cov90 | s/image | date |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for task, result, base in rows:
        if base:
            lines.append(f"| {task} | DWGF (config, N = 8) | {base['mean']} | {base['particle']} | {base['spread']} | {base['crps']} | - | "
                         f"{base['cov90']} | {base['s']} | {base['date']} |")
        change = f"{100 * (result['crps'] / float(base['crps']) - 1):+.0f}%" if base else "-"
        lines.append(f"| {task} | DWGF sampler | {result['psnr_mean']:.2f} | {result['psnr']:.2f} | {result['spread']:.4f} | "
                     f"{result['crps']:.4f} | {change} | {result['coverage90']:.4f} | {result['seconds']:.2f} | {result['date']} |")
    tuning = load_json(RESULTS / "sampler_tuning.json").get("rows", [])
    if tuning:
        lines += ["", "## Tuning (box inpainting, 10 tune digits `tune10`; the chosen setting in bold)", "",
                  "| likelihood anneal | lr | safety | T | t_max | t_min | mean PSNR | particle PSNR | spread | CRPS | cov90 |",
                  "|---|---|---|---|---|---|---|---|---|---|---|", *tuning]
    path = RESULTS / "sampler_mnist.md"
    path.write_text("\n".join(lines) + "\n")
    print(f"wrote {path}")


def plain_rows() -> list[dict]:
    """Plain DWGF's N = 8 report runs (``diverse.py run``), from its run cache (``diverse_runs.json``), as the table shows them."""
    from benchmarks.diverse import CACHE as DIVERSE, MNIST_TASKS as DIVERSE_TASKS

    out = []
    for task in DIVERSE_TASKS:
        r = DIVERSE.get(RunKey("diverse-run", "report100", "DWGF", task, "config"))
        if r is None or any(k not in r for k in UNCERTAINTY):
            continue
        out.append({"task": task, "method": "DWGF", "setting": "config", "mean": f"{r['psnr_mean']:.2f}", "particle": f"{r['psnr']:.2f}",
                    "spread": f"{r['spread']:.4f}", "crps": f"{r['crps']:.4f}", "cov90": f"{r['coverage90']:.4f}",
                    "s": f"{r['seconds']:.2f}", "date": r["date"]})
    return out


def picture(task: str = "box_inpaint") -> Path:
    from benchmarks.diverse import same_digits_picture
    from benchmarks.harness import task_config

    runs = {"DWGF": ["--config", str(task_config(task)), "--model.num_particles", "8"],
            "sampler": ["--config", str(ROOT / "configs" / "mnist" / f"{task}_posterior.yaml")]}
    return same_digits_picture(task, runs, f"{task}: plain DWGF (N = 8) and the DWGF sampler ({task}_posterior.yaml), same digits and seeds",
                               RESULTS / "sampler_digits.png", "sampler_picture")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=["bed", "rows", "mnist", "picture"])
    parser.add_argument("--dims", nargs="+", type=int, default=None)
    parser.add_argument("--dys", nargs="+", type=int, default=[1, 2, 4])
    parser.add_argument("--problems", type=int, default=3)
    parser.add_argument("--tune-problems", type=int, default=1)
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument("--tune-samples", type=int, default=400)
    parser.add_argument("--tasks", nargs="+", default=MNIST_TASKS, choices=MNIST_TASKS)
    args = parser.parse_args(argv)
    command = ("python benchmarks/sampler.py " + shlex.join(sys.argv[1:] if argv is None else argv)).rstrip()
    if args.what == "bed":
        args.dims = args.dims or [80, 800]
        bed_study(args, command)
    elif args.what == "rows":
        args.dims = args.dims or [8, 80, 800]
        posterior_rows(args, command)
    elif args.what == "picture":
        picture()
    else:
        mnist(args, command)


if __name__ == "__main__":
    main()
