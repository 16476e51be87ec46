"""Calibrated intervals on MNIST: each method calibrated on the tune digits, measured on the report digits.

    python benchmarks/calibrated.py run [--tasks box_inpaint sr4 gaussian_deblur] [--methods DWGF SMC] [--level 0.9]

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
           "SMC": lambda task: ([ROOT / "configs/mnist" / f"{task}_smc.yaml"], [])}


def calibrate(task: str, method: str, level: float) -> Path:
    from dwgf.cli import main as dwgf_main

    configs, overrides = METHODS[method](task)
    out = OUTPUTS / "calibrated" / f"{task}-{method}-tune50"
    dwgf_main(["calibrate", *(a for c in configs for a in ("--config", str(c))), "--data.images", str(digits_folder("tune50")),
               "--output", str(out), "--overwrite", "true", "--level", str(level), "--trainer.logger", "false", *overrides])
    return out / "calibration.json"


def measure(task: str, method: str, level: float) -> dict:
    key = RunKey("calibrated", "report100", method, task, f"level={level}")
    cached = CACHE.get(key)
    if cached is not None and cached.get("prior") == prior_id():
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
    result.update(date=str(datetime.date.today()), prior=prior_id(), threads=torch.get_num_threads())
    CACHE.put(key, result)
    print(f"RUN {key}: PSNR {result['psnr_mean']:.2f} CRPS {result['crps']:.4f} cov90 {result['coverage90']:.3f} "
          f"calibrated {result['calibrated_coverage']:.3f} width {result['calibrated_width']:.3f}", flush=True)
    return result


def write_table(command: str) -> None:
    rows = sorted(CACHE.items(), key=lambda kv: (kv[0].task, kv[0].method))
    lines = [
        "# Calibrated intervals on MNIST (split conformal: calibrated on 50 tune digits, measured on 100 report digits)",
        "",
        f"Produced by `python benchmarks/calibrated.py run` (the last run: `{command}`); each row gives its date. N = 8 particles;",
        "*cov90*: the share of pixels inside the particles'",
        "own 5-95% interval; *calibrated*: inside the calibrated interval (mean +- q (std + 1/255), `dwgf.calibration`),",
        "whose target is the level; *width*: its mean width in [0, 1] units; CRPS per pixel of [0, 1] images; s/image:",
        "solver time per digit, 2-core CPU.",
        "",
        "| task | method | level | mean PSNR | CRPS | cov90 (particles) | calibrated coverage | width | q | s/image | date |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
        *(f"| {k.task} | {k.method} | {r['level']:g} | {r['psnr_mean']:.2f} | {r['crps']:.4f} | {r['coverage90']:.3f} | "
          f"{r['calibrated_coverage']:.3f} | {r['calibrated_width']:.3f} | {r['scale']:.3g} | {r['seconds']:.2f} | {r['date']} |"
          for k, r in rows),
        "",
    ]
    path = RESULTS / "calibrated_mnist.md"
    path.write_text("\n".join(lines))
    print(f"wrote {path}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=["run"])
    parser.add_argument("--tasks", nargs="+", default=["box_inpaint", "sr4", "gaussian_deblur"])
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--level", type=float, default=0.9)
    args = parser.parse_args(argv)
    command = ("python benchmarks/calibrated.py " + shlex.join(sys.argv[1:] if argv is None else argv)).rstrip()
    for task in args.tasks:
        for method in args.methods:
            measure(task, method, args.level)
            write_table(command)


if __name__ == "__main__":
    main()
