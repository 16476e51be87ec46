"""Every method x every MNIST task on the shipped prior, at an equal network budget.

    python benchmarks/quality.py tune  [--methods ...] [--tasks ...]   # grids on held-out *tune* digits
    python benchmarks/quality.py run   [--methods ...] [--tasks ...]   # winners on 100 *report* digits
    python benchmarks/quality.py sweep [--tasks ...] [--series K N]    # DWGF: iterations and particles
    python benchmarks/quality.py table                                  # rewrite the Markdown from the cache
    python benchmarks/quality.py overlays                               # configs/methods/<task>/<method>.yaml
    python benchmarks/quality.py check [--methods ...] [--tasks ...]    # the winners on examples/mnist (8 digits)

Budget: 200 network (UNet) evaluations per particle for every method that uses the prior (DWGF and
RED-diff: 200 flow iterations; Latent DPS and PSLD: 200 DDIM steps; decoder inversion: 200 Adam
iterations and no network call) and 4 particles per digit (RED-diff: 1, by definition). Latent DPS
and PSLD also back-propagate through the network at every step; the seconds column shows that cost.

``tune`` runs each method's grid (below) on ``--tune-split`` (default ``tune20``: 2 digits per class
of the held-out tune digits), records the winner by particle-mean PSNR per (method, task) in
``benchmarks/results/quality_tuned.json``; ``run`` runs the winners on ``report100`` (the first 10
report digits of each class, fixed seeds from the configs), and ``sweep`` runs DWGF with its tuned
weight at 1000, 500, 250 and 100 iterations (N = 4; ``--series K``) and with 1, 2 and 8 particles
(K = 200; ``--series N``) there; its K = 200, N = 4 point is ``run``'s. ``--threads 1`` lets two
benchmark processes share a 2-core CPU (a file lock keeps the shared cache consistent); on the
2-core CPU this did not get more done than one process with two threads (Latent DPS, box
inpainting: 6.3 s/image per process side by side against 3.0 s alone with two threads). Every run goes through
``dwgf predict`` (benchmarks/mnist_tasks.py) and is cached in ``benchmarks/results/quality_runs.json``
so that an interrupted benchmark resumes; the tables are rewritten to
``benchmarks/results/quality.md`` after every run.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import datetime
import fcntl
import functools
import json
import os
import statistics
from pathlib import Path

import torch
from mnist_tasks import run

RESULTS = Path("benchmarks/results")
CACHE = RESULTS / "quality_runs.json"
TUNED = RESULTS / "quality_tuned.json"
TASKS = ["box_inpaint", "random_inpaint", "sr4", "gaussian_deblur", "motion_deblur", "denoise"]
DEFAULT_TASKS = ["box_inpaint", "random_inpaint", "sr4", "gaussian_deblur"]
STEPS = 200
PARTICLES = 4


def kl(weight: float) -> list[str]:
    return ["--model.regularizers", f"[{{class_path: KLPrior, init_args: {{weight: {weight}, weighting: DWGFWeighting}}}}]"]


# Deblurring wants a much smaller prior weight than inpainting (benchmarks/results/mnist_tuning.md),
# so the KL-weight grids of DWGF and RED-diff move down for the blur tasks.
SMALL_WEIGHT_TASKS = ("gaussian_deblur", "motion_deblur")


def kl_grid(task: str | None, weights: tuple[float, ...], small: tuple[float, ...]) -> dict[str, list[str]]:
    return {f"w={w}": kl(w) for w in (small if task in SMALL_WEIGHT_TASKS else weights)}


# method -> (overlay config or None, fixed overrides, {grid label: overrides} or a function of the task giving it)
METHODS: dict[str, tuple] = {
    "DWGF": (None, ["--model.num_particles", str(PARTICLES)], lambda task: kl_grid(task, (0.03, 0.1, 0.25, 0.5, 1.0), (0.003, 0.01, 0.03, 0.1))),
    "RED-diff-latent": (
        "configs/methods/reddiff.yaml", [], lambda task: kl_grid(task, (0.03, 0.1, 0.25, 0.5, 1.0), (0.001, 0.003, 0.01, 0.03, 0.1)),
    ),
    "Latent DPS": ("configs/methods/dps.yaml", [], {f"zeta={g}": ["--model.guidance", str(g)] for g in (0.01, 0.03, 0.1, 0.3, 1.0, 3.0)}),
    "PSLD": (
        "configs/methods/psld.yaml", [],
        {f"zeta={g},gamma={c}": ["--model.guidance", str(g), "--model.gluing", str(c)] for g in (0.03, 0.1, 0.3, 1.0) for c in (0.1, 1.0)},
    ),
    "decoder inversion": ("configs/methods/inversion.yaml", [], {f"lr={lr}": ["--model.step_size.lr", str(lr)] for lr in (0.1, 0.3, 1.0)}),
}


def grid(method: str, task: str) -> dict[str, list[str]]:
    """The tuning grid of ``method`` on ``task``: ``{label: overrides}``."""
    g = METHODS[method][2]
    return g(task) if callable(g) else g


@functools.cache
def prior_id() -> str:
    """A short hash of the shipped prior's weights: cached runs of another prior are not reused."""
    import hashlib

    from dwgf.priors.diffusers_priors import resolve_pretrained

    digest = hashlib.sha256()
    for f in sorted(resolve_pretrained("dwgf:mnist-ldm").glob("*/*.safetensors")):
        digest.update(f.read_bytes())
    return digest.hexdigest()[:12]




def load(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {}


def save(path: Path, data: dict) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
    tmp.replace(path)


@contextlib.contextmanager
def locked():
    """Serialise read-modify-write of the cache between benchmark processes run side by side."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    with open(RESULTS / ".quality.lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


# no TensorBoard in benchmark runs: the seconds column times the solver, not the logging
NO_LOGS = ["--trainer.logger", "false"]


def method_args(method: str, task: str, extra: list[str]) -> list[str]:
    overlay, fixed, _ = METHODS[method]
    args = ["--config", overlay] if overlay else []
    return [*args, "--model.num_steps", str(STEPS), *fixed, *extra, *NO_LOGS]


def output_dir(key: str) -> Path:
    """Where the run cached under ``key`` wrote its images."""
    return Path("outputs/quality/" + key.replace(" ", "_").replace("/", "_").replace("|", "__"))


def cached_run(key: str, task: str, split: str, args: list[str]) -> dict:
    cache = load(CACHE)
    if key not in cache or cache[key].get("prior", prior_id()) != prior_id():
        result = run(f"configs/mnist/{task}.yaml", split, str(output_dir(key)), args)
        result["args"] = args
        result["date"] = str(datetime.date.today())
        result["prior"] = prior_id()
        result["threads"] = torch.get_num_threads()
        with locked():
            cache = load(CACHE)
            cache[key] = result
            save(CACHE, cache)
        print(f"RUN {key}: mean PSNR {result['psnr_mean']:.2f} particle PSNR {result['psnr']:.2f} "
              f"naive {result['naive']:.2f} {result['seconds']:.2f} s/image", flush=True)
    return load(CACHE)[key]


def tune(methods: list[str], tasks: list[str], split: str) -> None:
    for task in tasks:
        for method in methods:
            for label, extra in grid(method, task).items():
                cached_run(f"tune|{split}|{method}|{task}|{label}", task, split, method_args(method, task, extra))
            cache = load(CACHE)
            scores = {label: cache[f"tune|{split}|{method}|{task}|{label}"]["psnr_mean"] for label in grid(method, task)}
            tuned = load(TUNED)
            tuned.setdefault(method, {})[task] = {"winner": max(scores, key=scores.get), "split": split}
            save(TUNED, tuned)
            write_tables()


def winner(method: str, task: str) -> str:
    entry = load(TUNED).get(method, {}).get(task)
    if entry is None:
        raise SystemExit(f"quality.py: no tuned setting for {method} on {task}: run `python benchmarks/quality.py tune --methods "
            f"'{method}' --tasks {task}` first")
    return entry["winner"]


def check(methods: list[str], tasks: list[str]) -> None:
    """The tuned winners on the 8 digits of examples/mnist: what README's commands give there (not in the tables)."""
    for task in tasks:
        for method in methods:
            label = winner(method, task)
            result = cached_run(f"check|examples|{method}|{task}|{label}", task, "examples", method_args(method, task, grid(method, task)[label]))
            print(f"CHECK {method} on {task} ({label}), examples/mnist: particle-mean PSNR {result['psnr_mean']:.2f} dB "
                  f"over {result['items']} digits")


def evaluate(methods: list[str], tasks: list[str]) -> None:
    for task in tasks:
        for method in methods:
            label = winner(method, task)
            cached_run(f"run|report100|{method}|{task}|{label}", task, "report100", method_args(method, task, grid(method, task)[label]))
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
                cached_run(f"sweep|report100|DWGF|{task}|{label}|{name}={value}", task, "report100", args)
                write_tables()


def sweep_rows(cache: dict) -> list[tuple[tuple[str, str, int, int], dict]]:
    """The sweep's runs, with the comparison's DWGF run as its K = STEPS, N = PARTICLES point, ordered
    by task, then the iteration series (K descending), then the particle series (N ascending)."""
    rows = {}
    for k, v in cache.items():
        kind, _, method, task, label, *knob = k.split("|")
        if kind == "sweep":
            steps, n = (int(knob[0][2:]), PARTICLES) if knob[0].startswith("K=") else (STEPS, int(knob[0][2:]))
            rows[(task, label, steps, n)] = v
    for task in {key[0] for key in rows}:
        label = winner("DWGF", task)
        run = cache.get(f"run|report100|DWGF|{task}|{label}")
        if run is not None:
            rows[(task, label, STEPS, PARTICLES)] = run
    k_series = {key[0] for key in rows if key[3] == PARTICLES and key[2] != STEPS}
    order = lambda kv: (TASKS.index(kv[0][0]), not (kv[0][3] == PARTICLES and kv[0][0] in k_series), -kv[0][2], kv[0][3])  # noqa: E731
    return sorted(rows.items(), key=order)


def per_item(key: str) -> dict[str, float]:
    """Particle-mean PSNR per item of the cached run ``key`` (from its metrics.csv)."""
    path = output_dir(key) / "metrics.csv"
    if not path.is_file():
        return {}
    with open(path) as f:
        return {r["name"]: float(r["psnr_mean"]) for r in csv.DictReader(f)}


def paired(key_a: str, key_b: str) -> tuple[float, float] | None:
    """Mean and standard error of the per-item PSNR difference a - b (None without both runs' files)."""
    a, b = per_item(key_a), per_item(key_b)
    names = sorted(set(a) & set(b))
    if len(names) < 2 or len(names) != len(a):
        return None
    d = [a[n] - b[n] for n in names]
    return statistics.mean(d), statistics.stdev(d) / len(d) ** 0.5


def write_tables() -> None:
    cache, tuned = load(CACHE), load(TUNED)
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
    runs = {k: v for k, v in cache.items() if k.startswith("run|")}
    threads = sorted({v.get("threads") for k, v in cache.items() if k.startswith(("run|", "sweep|"))} - {None})
    if threads == [1]:
        lines.append("The comparison and the sweep ran with one torch thread per process (`--threads 1`).")
    elif threads:
        run_threads = sorted({v.get("threads") for v in runs.values()} - {None})
        lines.append(f"The comparison ran with {', '.join(map(str, run_threads))} torch thread(s) per process; the sweep's "
                     "threads are given per row.")
    lines.append("")
    tasks = [t for t in TASKS if any(k.split("|")[3] == t for k in runs)]
    if tasks:
        lines += ["*DWGF - it*: the particle-mean PSNR of DWGF minus this method's, paired per digit, with its standard error.", "",
                  "| task | method | setting | mean PSNR | mean SSIM | particle PSNR | particle SSIM | DWGF - it (dB) | s/image | "
                      "naive PSNR | date |",
                  "|---|---|---|---|---|---|---|---|---|---|---|"]
        for task in tasks:
            rows = [(k.split("|")[2], k.split("|")[4], v) for k, v in runs.items() if k.split("|")[3] == task]
            best = max(v["psnr_mean"] for _, _, v in rows)
            dwgf = [k for k in runs if k.split("|")[2:4] == ["DWGF", task]]
            for method, label, v in sorted(rows, key=lambda r: list(METHODS).index(r[0])):
                psnr = f"**{v['psnr_mean']:.2f}**" if v["psnr_mean"] == best else f"{v['psnr_mean']:.2f}"
                diff = paired(dwgf[0], f"run|report100|{method}|{task}|{label}") if dwgf and method != "DWGF" else None
                vs = f"{diff[0]:+.2f} ± {diff[1]:.2f}" if diff else "-"
                lines.append(f"| {task} | {method} | {label} | {psnr} | {v['ssim_mean']:.3f} | {v['psnr']:.2f} | {v['ssim']:.3f} | "
                             f"{vs} | {v['seconds']:.2f} | {v['naive']:.2f} | {v['date']} |")
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
    tunes = {k: v for k, v in cache.items() if k.startswith("tune|")}
    if tunes:
        lines += ["", "## Tuning grids (particle-mean PSNR on the tune digits; winner in bold)", "",
                  "| task | method | split | setting | mean PSNR | particle PSNR | s/image |", "|---|---|---|---|---|---|---|"]
        for k, v in sorted(tunes.items(), key=lambda kv: (kv[0].split("|")[3], list(METHODS).index(kv[0].split("|")[2]))):
            _, split, method, task, label = k.split("|")
            won = tuned.get(method, {}).get(task, {}).get("winner") == label
            setting = f"**{label}**" if won else label
            lines.append(f"| {task} | {method} | {split} | {setting} | {v['psnr_mean']:.2f} | {v['psnr']:.2f} | {v['seconds']:.2f} |")
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "quality.md").write_text("\n".join(lines) + "\n")


OVERLAY_NAMES = {"DWGF": "dwgf", "RED-diff-latent": "reddiff", "Latent DPS": "dps", "PSLD": "psld", "decoder inversion": "inversion"}


def _set(tree: dict, dotted: str, value) -> None:
    """Sets ``--model.a.b`` in a config's ``model`` tree as jsonargparse reads it (through ``init_args``)."""
    node = tree.setdefault("init_args", {})
    *parents, leaf = dotted.split(".")
    for key in parents:
        node = node.setdefault(key, {}).setdefault("init_args", {})
    node[leaf] = value


def tuned_overlay(method: str, task: str) -> dict:
    """The model section that ``run`` gives ``method`` on ``task``: its overlay with the tuned winner applied."""
    import yaml

    overlay, fixed, _ = METHODS[method]
    model = yaml.safe_load(Path(overlay).read_text())["model"] if overlay else {}
    overrides = ["--model.num_steps", str(STEPS), *fixed, *grid(method, task)[winner(method, task)]]
    for key, value in zip(overrides[::2], overrides[1::2]):
        assert key.startswith("--model."), key
        _set(model, key[len("--model."):], yaml.safe_load(value))
    return {"model": model}


def write_overlays(methods: list[str], tasks: list[str]) -> None:
    """``configs/methods/<task>/<method>.yaml``: each method's tuned setting for each task, for README's commands."""
    import yaml

    tuned = load(TUNED)
    for task in tasks:
        folder = Path("configs/methods") / task
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
            print(f"wrote {folder / f'{name}.yaml'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=["tune", "run", "sweep", "table", "overlays", "check"])
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--tasks", nargs="+", default=DEFAULT_TASKS, choices=TASKS)
    parser.add_argument("--tune-split", default="tune20", choices=["tune10", "tune20", "tune50"])
    parser.add_argument("--series", nargs="+", default=["K", "N"], choices=["K", "N"],
                        help="sweep: iterations (K), particles (N) or both, in this order")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (default: torch's choice), e.g. 1 for two benchmark processes side by side")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.mode == "tune":
        tune(args.methods, args.tasks, args.tune_split)
    elif args.mode == "run":
        evaluate(args.methods, args.tasks)
    elif args.mode == "sweep":
        sweep(args.tasks, args.series)
    elif args.mode == "check":
        check(args.methods, args.tasks)
        return
    elif args.mode == "overlays":
        write_overlays(args.methods, args.tasks)
        return
    write_tables()


if __name__ == "__main__":
    main()
