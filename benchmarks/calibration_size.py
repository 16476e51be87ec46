"""How many calibration images ``dwgf calibrate`` needs: the calibrated intervals' width against the number of images.

    python benchmarks/calibration_size.py [--task box_inpaint] [--level 0.9] [--draws 400]

Runs the task's config (``configs/mnist/<task>.yaml``, as shipped) on the 100 digits that ship as
``dwgf:mnist-calibration`` (``dwgf predict``, resumed if already run, under ``outputs/calibration_size/<task>``),
reads each digit's scores as ``dwgf calibrate`` does (:func:`dwgf.calibration.read_scores`), then for each number of
images ``n`` draws ``--draws`` random subsets of ``n`` digits, takes the conformal scale of each
(:func:`dwgf.calibration.conformal_scale`, as ``dwgf calibrate`` would on those ``n``) and measures the mean width of
the resulting intervals on all 100 digits. The reference, "many images", is the scale of the pooled quantile at miss
rate ``1 - level`` on all 100. Printed and written to ``benchmarks/results/calibration_size_<task>.md``: per ``n``, the
median scale, the mean width, the width over the reference width, the share of draws within 10% of it, and what
``dwgf calibrate``'s warning predicts from the images' own scores (:func:`dwgf.calibration.width_for_images`).
"""

from __future__ import annotations

import argparse
import datetime
import sys

if __package__ in (None, ""):  # run as ``python benchmarks/calibration_size.py``: the repository becomes importable
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pathlib import Path

import torch

from benchmarks.harness import OUTPUTS, RESULTS, ROOT

SIZES = (4, 9, 10, 12, 15, 20, 30, 40, 50, 75, 100)


def widths(per_image_particles: list[torch.Tensor], scale: float) -> float:
    """The calibrated intervals' mean width at ``scale`` over the digits (in ``[0, 1]`` units)."""
    from dwgf.calibration import interval

    return float(sum(float((hi - lo).mean()) for lo, hi in (interval(p, scale) for p in per_image_particles)) / len(per_image_particles))


def main() -> None:
    from dwgf.calibration import _Pooled, _read_unit, conformal_scale, images_needed, read_scores, width_for_images
    from dwgf.cli import main as dwgf_main

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="box_inpaint")
    parser.add_argument("--level", type=float, default=0.9)
    parser.add_argument("--draws", type=int, default=400)
    args = parser.parse_args()

    output = OUTPUTS / "calibration_size" / args.task
    config = ROOT / "configs" / "mnist" / f"{args.task}.yaml"
    try:
        dwgf_main(["predict", "--config", str(config), "--data.images", "dwgf:mnist-calibration", "--output", str(output),
                   "--trainer.enable_progress_bar", "false"])
    except SystemExit as stop:
        if stop.code:
            raise
    per_image, samples = read_scores(output)
    names = [row.split(",", 1)[0] for row in (output / "metrics.csv").read_text().splitlines()[1:] if row]
    particles = [torch.stack([_read_unit(p) for p in sorted((output / n).glob("particle_*.png"))]) for n in names]
    total = len(per_image)
    reference_scale = _Pooled(per_image).scale(1 - args.level)
    reference = widths(particles, reference_scale)
    gen = torch.Generator().manual_seed(0)
    rows = []
    for n in (n for n in SIZES if images_needed(args.level) <= n <= total):
        draws = 1 if n == total else args.draws
        scales = []
        for _ in range(draws):
            pick = torch.randperm(total, generator=gen)[:n].tolist()
            scales.append(conformal_scale([per_image[i] for i in pick], args.level))
        w = [widths(particles, s) for s in scales]
        mean_w = sum(w) / len(w)
        within = sum(x <= 1.1 * reference for x in w) / len(w)
        rows.append((n, float(torch.tensor(scales).median()), mean_w, mean_w / reference, within))
        print(f"n {n:>3}: scale {rows[-1][1]:.3f}, width {mean_w:.4f} = {mean_w / reference:.2f}x the reference; "
              f"{within:.0%} of {draws} draws within 10%", flush=True)
    ratio, needed = width_for_images(per_image, args.level, samples=samples)
    command = f"python benchmarks/calibration_size.py --task {args.task} --level {args.level:g} --draws {args.draws}"
    lines = [f"# Calibrated width against the number of calibration images: {args.task}, level {args.level:g}", "",
             f"`{command}` ({datetime.date.today()}; {config.relative_to(ROOT)} as shipped, on the {total} digits of "
             "`dwgf:mnist-calibration`). Each row: random subsets of n digits, the conformal scale `dwgf calibrate` would "
             f"choose on them, and the mean width of the intervals it gives on all {total} digits. The reference is the "
             f"scale many such digits would give (the pooled quantile at miss rate {1 - args.level:g}): {reference_scale:.3f}, "
             f"mean width {reference:.4f}.", "",
             "<!-- --8<-- [start:table] -->",
             "| images n | median scale | mean width | width / reference | draws within 10% |", "|---|---|---|---|---|"]
    lines += [f"| {n} | {s:.3f} | {w:.4f} | {r:.2f} | {p:.0%} |" for n, s, w, r, p in rows]
    lines += ["", f"Reference (many images): scale {reference_scale:.3f}, mean width {reference:.4f}. On all {total} digits' scores "
              f"`dwgf calibrate`'s warning (widths on a sample of each digit's pixels) would say that about {needed} images give a "
              "width within 10% of it.",
              "<!-- --8<-- [end:table] -->"]
    lines += ["", f"`dwgf.calibration.width_for_images` on all {total} digits: these {total} give {ratio:.2f}x the reference "
              f"width; about {needed} images give a width within 10% of it.", ""]
    path = RESULTS / f"calibration_size_{args.task}.md"
    path.write_text("\n".join(lines))
    print(f"written {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
