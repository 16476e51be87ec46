"""Calibrated intervals on MNIST: each method calibrated on the tune digits, measured on the report digits.

    python benchmarks/calibrated.py run [--tasks box_inpaint sr4 gaussian_deblur] [--methods DWGF SMC] [--level 0.9]
    python benchmarks/calibrated.py tune [--tasks box_inpaint sr4] [--settings LABEL ...]
    python benchmarks/calibrated.py picture [--tasks box_inpaint sr4]

For each task and method (``DWGF``: the task config at N = 8; ``SMC``: ``configs/mnist/<task>_smc.yaml``, N = 8),
``dwgf calibrate`` runs on the 50 ``tune50`` digits (5 per class) and writes ``calibration.json``; then
``dwgf predict --model.calibration ...`` runs on the 100 ``report100`` digits (10 per class). Reported: the
particle-mean PSNR, CRPS, the particles' own coverage90, and the calibrated interval's coverage and width (mean
over digits), with seconds per image. Runs are cached in ``benchmarks/results/calibrated_runs.json``; the table is
``benchmarks/results/calibrated_mnist.md``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import shlex
import sys

if __package__ in (None, ""):  # run as ``python benchmarks/calibrated.py``: the repository becomes importable
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import csv
from pathlib import Path

import numpy as np
import torch

from benchmarks.harness import OUTPUTS, RESULTS, ROOT, RunCache, RunKey, digits_folder, prior_id, run

CACHE = RunCache(RESULTS / "calibrated_runs.json")
METHODS = {"DWGF": lambda task: ([ROOT / "configs/mnist" / f"{task}.yaml"], ["--model.num_particles", "8"]),
           "DWGF sampler": lambda task: ([ROOT / "configs/mnist" / f"{task}_posterior.yaml"], []),
           "PSLD": lambda task: ([ROOT / "configs/mnist" / f"{task}.yaml", ROOT / "configs/methods" / task / "psld.yaml"],
                                 ["--model.num_particles", "8"]),
           "SMC": lambda task: ([ROOT / "configs/mnist" / f"{task}_smc.yaml"], []),
           # resample-move: the task's SMC config with two Langevin moves (move_size 0.05) after each resampling
           "SMC + moves": lambda task: ([ROOT / "configs/mnist" / f"{task}_smc.yaml"],
                                        ["--model.settings", json.dumps({"num_steps": 200, "guidance": 1.0, "ess_threshold": 0.5,
                                                                         "moves": 2, "move_size": 0.05})])}


def smc_setting(sigma: float, guidance: float, ess: float = 0.5, anneal: float = 1.0, weights: bool = True, moves: int = 0,
                move_size: float = 0.1) -> list[str]:
    """``dwgf predict`` overrides for one SMC setting (200 steps), over ``configs/mnist/<task>_smc.yaml``."""
    settings = {"num_steps": 200, "guidance": guidance, "ess_threshold": ess, "weights": weights}
    if moves:  # only then: the settings of the rows measured before moves existed stay as they were
        settings.update(moves=moves, move_size=move_size)
    return ["--model.settings", json.dumps(settings), "--model.likelihood.init_args.sigma", str(sigma),
            "--model.likelihood.init_args.anneal", str(anneal)]


# SMC's tuning grid (``tune`` on the ``tune10`` digits): the likelihood's sigma (the measurement model's noise, a
# tempering of the weights: larger is flatter), the drift's scale, the resampling threshold, the twist's annealing
# and, for reference, the same proposal without weights.
SMC_GRID = {
    "sigma=0.1,g=1": smc_setting(0.1, 1.0),
    "sigma=0.05,g=1": smc_setting(0.05, 1.0),
    "sigma=0.2,g=1": smc_setting(0.2, 1.0),
    "sigma=0.4,g=1": smc_setting(0.4, 1.0),
    "sigma=0.1,g=3": smc_setting(0.1, 3.0),
    "sigma=0.2,g=3": smc_setting(0.2, 3.0),
    "sigma=0.1,g=1,ess=0.2": smc_setting(0.1, 1.0, ess=0.2),
    "sigma=0.1,g=1,anneal=10": smc_setting(0.1, 1.0, anneal=10.0),
    "sigma=0.1,g=1,no weights": smc_setting(0.1, 1.0, weights=False),
    "sigma=0.1,g=10": smc_setting(0.1, 10.0),
    "sigma=0.1,g=1,anneal=0.1": smc_setting(0.1, 1.0, anneal=0.1),
    "sigma=0.2,g=1,anneal=0.1": smc_setting(0.2, 1.0, anneal=0.1),
    "sigma=0.1,g=1,anneal=0.01": smc_setting(0.1, 1.0, anneal=0.01),
    "sigma=0.1,g=3,anneal=0.1": smc_setting(0.1, 3.0, anneal=0.1),
    "sigma=0.05,g=1,anneal=0.1": smc_setting(0.05, 1.0, anneal=0.1),
    "sigma=0.2,g=1,anneal=0.01": smc_setting(0.2, 1.0, anneal=0.01),
    "sigma=0.4,g=1,anneal=0.1": smc_setting(0.4, 1.0, anneal=0.1),
    # resample-move: Langevin moves after each resampling, on each task's best setting above
    **{f"sigma={sigma:g},g=1,anneal={anneal:g},moves={moves},size={size:g}": smc_setting(sigma, 1.0, anneal=anneal, moves=moves, move_size=size)
       for sigma, anneal in ((0.2, 0.1), (0.1, 0.01), (0.1, 1.0)) for moves, size in ((1, 0.05), (2, 0.05), (1, 0.2))},
}


def tune(task: str, label: str) -> dict:
    """One SMC setting of :data:`SMC_GRID` on the ``tune10`` digits (cached)."""
    key = RunKey("tune", "tune10", "SMC", task, label)
    cached = CACHE.get(key)
    if cached is not None and cached.get("prior") == prior_id():
        return cached
    configs, overrides = METHODS["SMC"](task)
    out = OUTPUTS / "calibrated" / f"tune-{task}-SMC-{label.replace(',', '_').replace(' ', '_')}"
    result = run(configs, "tune10", out, [*overrides, *SMC_GRID[label], "--trainer.logger", "false"])
    result.update(date=str(datetime.date.today()), prior=prior_id(), threads=torch.get_num_threads())
    CACHE.put(key, result)
    print(f"TUNE {key}: PSNR {result['psnr_mean']:.2f} CRPS {result['crps']:.4f} cov90 {result['coverage90']:.3f} "
          f"spread {result['spread']:.4f}", flush=True)
    return result


def arguments(task: str, method: str) -> list[str]:
    """The method's configs (``--config`` each) and overrides, as ``dwgf`` takes them."""
    configs, overrides = METHODS[method](task)
    return [*(a for c in configs for a in ("--config", str(c))), *overrides]


def calibrate(task: str, method: str, level: float) -> Path:
    from dwgf.cli import main as dwgf_main

    out = OUTPUTS / "calibrated" / f"{task}-{method}-tune50"
    dwgf_main(["calibrate", *arguments(task, method), "--data.images", str(digits_folder("tune50")),
               "--output", str(out), "--overwrite", "true", "--level", str(level), "--trainer.logger", "false"])
    return out / "calibration.json"


def fingerprint(task: str, method: str) -> str:
    """What the method's run reads, hashed: its configs' text and overrides (a changed config is measured again)."""
    import hashlib

    configs, overrides = METHODS[method](task)
    return hashlib.sha256("\n".join([*(Path(c).read_text() for c in configs), *overrides]).encode()).hexdigest()[:16]


def measure(task: str, method: str, level: float) -> dict:
    key = RunKey("calibrated", "report100", method, task, f"level={level}")
    cached = CACHE.get(key)
    if cached is not None and cached.get("prior") == prior_id() and cached.get("inputs") == fingerprint(task, method):
        return cached
    calibration = calibrate(task, method, level)
    configs, overrides = METHODS[method](task)
    out = OUTPUTS / "calibrated" / f"{task}-{method}-report100"
    result = run(configs, "report100", out, [*overrides, "--model.calibration", str(calibration), "--trainer.logger", "false"])
    with open(out / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    for k in ("calibrated_width", "calibrated_coverage"):
        result[k] = float(np.mean([float(r[k]) for r in rows]))
    result.update(json.loads(calibration.read_text()))
    result.update(date=str(datetime.date.today()), prior=prior_id(), threads=torch.get_num_threads(), inputs=fingerprint(task, method))
    CACHE.put(key, result)
    print(f"RUN {key}: PSNR {result['psnr_mean']:.2f} CRPS {result['crps']:.4f} cov90 {result['coverage90']:.3f} "
          f"calibrated {result['calibrated_coverage']:.3f} width {result['calibrated_width']:.3f}", flush=True)
    return result


def write_table(command: str) -> None:
    order = list(METHODS)
    # rows of earlier configs stay, after the current ones (their method names a config the table describes)
    rows = sorted(((k, r) for k, r in CACHE.items() if k.kind == "calibrated"),
                  key=lambda kv: (kv[0].task, order.index(kv[0].method) if kv[0].method in order else len(order), kv[0].method))
    tuned = sorted(((k, r) for k, r in CACHE.items() if k.kind == "tune"), key=lambda kv: (kv[0].task, list(SMC_GRID).index(kv[0].label)))
    lines = [
        "# Calibrated intervals on MNIST (split conformal: calibrated on 50 tune digits, measured on 100 report digits)",
        "",
        f"Produced by `python benchmarks/calibrated.py run` (the last run: `{command}`); each row gives its date. N = 8 particles;",
        "*cov90*: the share of pixels inside the particles'",
        "own 5-95% interval; *calibrated*: inside the calibrated interval (mean +- q (std + 1/255), `dwgf.calibration`),",
        "whose target is the level; *width*: its mean width in [0, 1] units; CRPS per pixel of [0, 1] images; s/image:",
        "solver time per digit, 2-core CPU. *SMC (first config)*: SMC before its tuning (sigma 0.1, anneal 1 on every task).",
        "PSLD: its tuned setting (`configs/methods/<task>/psld.yaml`) at N = 8. *SMC + moves*: the task's SMC config with",
        "two Langevin moves (`move_size` 0.05) after each resampling (`SMCConfig.moves`; chosen on `tune10`, below).",
        "",
        "| task | method | level | mean PSNR | CRPS | cov90 (particles) | calibrated coverage | width | q | s/image | date |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
        *(f"| {k.task} | {k.method} | {r['level']:g} | {r['psnr_mean']:.2f} | {r['crps']:.4f} | {r['coverage90']:.3f} | "
          f"{r['calibrated_coverage']:.3f} | {r['calibrated_width']:.3f} | {r['scale']:.3g} | {r['seconds']:.2f} | {r['date']} |"
          for k, r in rows),
        "",
    ]
    if tuned:
        lines += [
            "## SMC's tuning (10 tune digits `tune10`, N = 8, 200 steps; the weighted setting of lowest CRPS in bold)",
            "",
            "*sigma*: the likelihood's noise in the weights and the twist (the measurement's own is 0.01: a larger sigma",
            "tempers the weights); *g*: the drift's scale; *ess*: the resampling threshold (default 0.5); *anneal*: the",
            "twist's variance inflation (default 1); *no weights*: the same proposal, no weights, no resampling;",
            "*moves*: Langevin moves after each resampling, *size*: their `move_size` (`SMCConfig`; default none).",
            "The seconds of this section are a rough guide only: some rows (on 2026-12-05, SR x4's `sigma=0.4,g=1` and",
            "`sigma=0.2,g=3`) ran beside a short diagnostic job.",
            "",
            "| task | setting | mean PSNR | particle PSNR | spread | CRPS | cov90 | s/image | date |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for task in dict.fromkeys(k.task for k, _ in tuned):
            best = min((r["crps"] for k, r in tuned if k.task == task and "no weights" not in k.label))  # a setting of SMC itself
            for k, r in tuned:
                if k.task == task:
                    label = f"**{k.label}**" if r["crps"] == best else k.label
                    lines.append(f"| {k.task} | {label} | {r['psnr_mean']:.2f} | {r['psnr']:.2f} | {r['spread']:.4f} | {r['crps']:.4f} | "
                                 f"{r['coverage90']:.3f} | {r['seconds']:.2f} | {r['date']} |")
        lines.append("")
    path = RESULTS / "calibrated_mnist.md"
    path.write_text("\n".join(lines))
    print(f"wrote {path}")


def picture(tasks: list[str]) -> None:
    """SMC's particles beside plain DWGF's on the same six report digits per task (``diverse.py``'s: plain DWGF's worst
    in each of the classes 4, 9, 3, 8, 1, 7), same seeds: ``benchmarks/results/smc_digits_<task>.png``."""
    from benchmarks.diverse import same_digits_picture

    for task in tasks:
        runs = {method: arguments(task, method) for method in ("DWGF", "SMC")}
        same_digits_picture(task, runs, f"{task}: plain DWGF (N = 8) and SMC ({task}_smc.yaml, N = 8), same digits and seeds",
                            RESULTS / f"smc_digits_{task}.png", f"smc_picture_{task}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=["run", "tune", "picture"])
    parser.add_argument("--tasks", nargs="+", default=["box_inpaint", "sr4", "gaussian_deblur"])
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--level", type=float, default=0.9)
    parser.add_argument("--settings", nargs="+", default=list(SMC_GRID), choices=list(SMC_GRID), help="tune: only these SMC settings")
    args = parser.parse_args(argv)
    command = ("python benchmarks/calibrated.py " + shlex.join(sys.argv[1:] if argv is None else argv)).rstrip()
    if args.mode == "picture":
        return picture(args.tasks)
    for task in args.tasks:
        if args.mode == "tune":
            for label in args.settings:
                tune(task, label)
                write_table(command)
            continue
        for method in args.methods:
            measure(task, method, args.level)
            write_table(command)


if __name__ == "__main__":
    main()
