"""Runs task configs on held-out MNIST digits through ``dwgf predict`` and summarises PSNR/SSIM.

    python benchmarks/mnist_tasks.py configs/mnist/box_inpaint.yaml --split report [-- OVERRIDES...]

The digits of the split are written once as PNGs under ``outputs/mnist_digits/<split>`` (lossless),
``dwgf predict`` runs on them with the config and any overrides, and the script prints the mean
PSNR/SSIM of the particle mean and per particle, and the PSNR of the naive estimate (the
measurement shown as an image, upsampled by nearest neighbour where smaller) on the same digits.
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

from dwgf.cli import main as dwgf_main
from dwgf.training.mnist import write_pngs

SPLITS = {
    "tune": ("tune", 25), "report": ("report", 25), "tune10": ("tune", 1), "tune20": ("tune", 2), "tune50": ("tune", 5),
    "tune100": ("tune", 10), "report100": ("report", 10),
}


def digits_folder(split: str) -> Path:
    if split == "examples":  # the 8 held-out digits that ship in the repository (the quickstart's)
        return Path(__file__).resolve().parents[1] / "examples/mnist"
    base, per_class = SPLITS[split]
    folder = Path("outputs/mnist_digits") / split
    if not folder.is_dir() or len(list(folder.glob("*.png"))) != 10 * per_class:
        write_pngs(folder, base, per_class=per_class)
    return folder


def naive_psnr(out: Path, names: list[str]) -> float:
    vals = []
    for name in names:
        truth = np.asarray(Image.open(out / name / "ground_truth.png"), dtype=np.float64) / 255
        meas = Image.open(out / name / "measurement.png")
        if meas.size != (truth.shape[1], truth.shape[0]):
            meas = meas.resize((truth.shape[1], truth.shape[0]), Image.NEAREST)
        m = np.asarray(meas, dtype=np.float64) / 255
        vals.append(10 * np.log10(1 / np.mean((m - truth) ** 2)))
    return float(np.mean(vals))


def run(config: str, split: str, output: str, overrides: list[str]) -> dict[str, float]:
    folder = digits_folder(split)
    start = time.perf_counter()
    # --overwrite: a benchmark always computes (and times) every item, even into a used folder
    dwgf_main(["predict", "--config", config, "--data.images", str(folder), "--output", output, "--overwrite", "true", *overrides])
    wall = time.perf_counter() - start
    with open(Path(output) / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    names = [r["name"] for r in rows]
    result = {k: float(np.mean([float(r[k]) for r in rows])) for k in ("psnr_mean", "ssim_mean", "psnr", "ssim", "seconds")}
    result.update(naive=naive_psnr(Path(output), names), items=len(rows), wall=wall)
    return result


def main() -> None:
    argv = sys.argv[1:]
    overrides = argv[argv.index("--") + 1 :] if "--" in argv else []
    argv = argv[: argv.index("--")] if "--" in argv else argv
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config")
    parser.add_argument("--split", default="report", choices=sorted(SPLITS))
    parser.add_argument("--output", default=None)
    args = parser.parse_args(argv)
    output = args.output or f"outputs/mnist_tasks/{Path(args.config).stem}_{args.split}"
    r = run(args.config, args.split, output, overrides)
    print(
        f"RESULT {Path(args.config).stem} split={args.split} n={r['items']} overrides={' '.join(overrides) or '-'} | "
        f"mean PSNR {r['psnr_mean']:.2f} SSIM {r['ssim_mean']:.3f} | particle PSNR {r['psnr']:.2f} SSIM {r['ssim']:.3f} | "
        f"naive PSNR {r['naive']:.2f} | wall {r['wall']:.0f} s"
    )


if __name__ == "__main__":
    main()
