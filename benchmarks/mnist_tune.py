"""Tunes the MNIST task configs on the tune split, then reports on the report split.

    python benchmarks/mnist_tune.py tune   [--tasks box_inpaint sr4 ...] [--split tune50]
    python benchmarks/mnist_tune.py report [--tasks ...]

``tune`` runs a grid (prior weight x encoder-term weight x step size) of each task's config on
held-out *tune* digits (``tune50``: 5 per class, or ``tune``: all 250) and appends a table to
``benchmarks/results/mnist_tuning.md``. ``report`` runs each task config as committed on the 250
*report* digits, plus decoder inversion (the same flow with every regularizer removed) for the
tasks given with ``--inversion``, and writes ``benchmarks/results/mnist_tasks.md``. Every run goes
through ``dwgf predict`` (see benchmarks/mnist_tasks.py).
"""

from __future__ import annotations

import argparse
import datetime
import itertools
from pathlib import Path

from mnist_tasks import run

TASKS = ["box_inpaint", "random_inpaint", "sr4", "gaussian_deblur", "motion_deblur", "denoise"]
RESULTS = Path("benchmarks/results")


def overrides(weight: float, enc: float, lr: float) -> list[str]:
    regs = [f"{{class_path: KLPrior, init_args: {{weight: {weight}}}}}"]
    if enc > 0:
        regs.append(f"{{class_path: EncoderConsistency, init_args: {{weight: {enc}}}}}")
    return ["--model.regularizers", "[" + ", ".join(regs) + "]", "--model.step_size.lr", str(lr)]


def tune(tasks, split, weights, encs, lrs) -> None:
    lines = [f"\n## Tuning grid on `{split}` ({datetime.date.today()}): `python benchmarks/mnist_tune.py tune --split {split} --tasks "
        f"{' '.join(tasks)}`\n",
             "| task | prior weight | encoder weight | step size | mean PSNR | mean SSIM | particle PSNR | wall s "
                 "|", "|---|---|---|---|---|---|---|---|"]
    for task in tasks:
        best = None
        for w, e, lr in itertools.product(weights, encs, lrs):
            r = run(f"configs/mnist/{task}.yaml", split, f"outputs/mnist_tune/{task}_{split}_w{w}_e{e}_lr{lr}", overrides(w, e, lr))
            row = f"| {task} | {w} | {e} | {lr} | {r['psnr_mean']:.2f} | {r['ssim_mean']:.3f} | {r['psnr']:.2f} | {r['wall']:.0f} |"
            print("TUNE", row, flush=True)
            lines.append(row)
            if best is None or r["psnr_mean"] > best[0]:
                best = (r["psnr_mean"], w, e, lr)
        lines.append(f"| **{task} best** | **{best[1]}** | **{best[2]}** | **{best[3]}** | **{best[0]:.2f}** | | | |")
    RESULTS.mkdir(parents=True, exist_ok=True)
    with open(RESULTS / "mnist_tuning.md", "a") as f:
        f.write("\n".join(lines) + "\n")


def report(tasks, inversion) -> None:
    """Runs the given tasks on the report split; rows of other tasks already in the table are kept."""
    path = RESULTS / "mnist_tasks.md"
    rows = {}
    if path.is_file():  # earlier rows: "| task | ... | date |"
        for line in path.read_text().splitlines():
            cells = [c.strip() for c in line.strip("|").split("|")]
            if line.startswith("| ") and cells[0] in TASKS:
                rows[cells[0]] = line
    header = ["# DWGF on the shipped MNIST prior: the 250 report digits\n",
              "Produced by `python benchmarks/mnist_tune.py report --tasks TASK... --inversion TASK...` (each row: its date).",
              "PSNR/SSIM on [0, 1] images; *mean*: the particle mean; *particle*: averaged over particles; *naive*: the measurement "
                  "shown as an image",
              "(masked image with gray holes, nearest-neighbour upsampling, blurred or noisy image); *inversion*: the same flow with "
                  "every regularizer removed.\n",
              "| task | DWGF mean PSNR | DWGF mean SSIM | particle PSNR | particle SSIM | naive PSNR | inversion mean PSNR | wall s "
                  "(250 digits) | date |",
              "|---|---|---|---|---|---|---|---|---|"]
    for task in tasks:
        config = f"configs/mnist/{task}.yaml"
        r = run(config, "report", f"outputs/mnist_report/{task}", [])
        inv = ""  # without --inversion TASK, the inversion figure of an earlier row is kept
        if task in rows:
            inv = [c.strip() for c in rows[task].strip("|").split("|")][6]
        if task in inversion:
            ri = run(config, "report", f"outputs/mnist_report/{task}_inversion", ["--model.regularizers", "[]"])
            inv = f"{ri['psnr_mean']:.2f}"
        rows[task] = (f"| {task} | {r['psnr_mean']:.2f} | {r['ssim_mean']:.3f} | {r['psnr']:.2f} | {r['ssim']:.3f} | {r['naive']:.2f} | "
                      f"{inv} | {r['wall']:.0f} | {datetime.date.today()} |")
        print("REPORT", rows[task], flush=True)
        RESULTS.mkdir(parents=True, exist_ok=True)
        ordered = [rows[t] for t in TASKS if t in rows]
        path.write_text("\n".join(header + ordered) + "\n")  # after every task: nothing lost


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=["tune", "report"])
    parser.add_argument("--tasks", nargs="+", default=TASKS, choices=TASKS)
    parser.add_argument("--split", default="tune50", choices=["tune10", "tune50", "tune100", "tune"])
    parser.add_argument("--weights", nargs="+", type=float, default=[0.5, 1.0, 2.0])
    parser.add_argument("--encs", nargs="+", type=float, default=[0.0, 0.1])
    parser.add_argument("--lrs", nargs="+", type=float, default=[0.3])
    parser.add_argument("--inversion", nargs="*", default=["box_inpaint", "sr4"])
    args = parser.parse_args()
    if args.mode == "tune":
        tune(args.tasks, args.split, args.weights, args.encs, args.lrs)
    else:
        report(args.tasks, args.inversion)


if __name__ == "__main__":
    main()
