"""Runs task configs on held-out MNIST digits through ``dwgf predict`` and summarises PSNR/SSIM.

    python benchmarks/mnist_tasks.py configs/mnist/box_inpaint.yaml --split report [-- OVERRIDES...]

The digits of the split are written once as PNGs under ``outputs/mnist_digits/<split>`` (lossless;
``--split examples``: the 8 digits of examples/mnist), ``dwgf predict`` runs on them with the config
and any overrides, and the script prints the mean PSNR/SSIM of the particle mean and per particle, and the PSNR of the naive estimate (the
measurement shown as an image, upsampled by nearest neighbour where smaller) on the same digits.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as ``python benchmarks/mnist_tasks.py``: the repository becomes importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.harness import OUTPUTS, SPLITS, run


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else list(argv)
    overrides = argv[argv.index("--") + 1 :] if "--" in argv else []
    argv = argv[: argv.index("--")] if "--" in argv else argv
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config")
    parser.add_argument("--split", default="report", choices=sorted([*SPLITS, "examples"]))
    parser.add_argument("--output", default=None)
    args = parser.parse_args(argv)
    output = args.output or OUTPUTS / "mnist_tasks" / f"{Path(args.config).stem}_{args.split}"
    r = run(args.config, args.split, output, overrides)
    print(
        f"RESULT {Path(args.config).stem} split={args.split} n={r['items']} overrides={' '.join(overrides) or '-'} | "
        f"mean PSNR {r['psnr_mean']:.2f} SSIM {r['ssim_mean']:.3f} | particle PSNR {r['psnr']:.2f} SSIM {r['ssim']:.3f} | "
        f"naive PSNR {r['naive']:.2f} | wall {r['wall']:.0f} s"
    )


if __name__ == "__main__":
    main()
