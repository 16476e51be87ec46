"""Why one method's particle mean beats another's: error of the mean against spread of the particles.

    python benchmarks/particle_spread.py            # after `python benchmarks/quality.py run`

For each run of the method comparison (``benchmarks/quality.py run``, 100 report digits) it reads the
written particles and ground truths and splits the particles' mean squared error exactly:

    mean_i ||x_i - x*||^2  =  ||m - x*||^2  +  mean_i ||x_i - m||^2       (m: the particle mean)
    particle MSE              mean MSE          spread

``gain`` = 10 log10(particle MSE / mean MSE) is how many dB averaging the particles buys. A method
whose particles are individually accurate (low particle MSE) but close together (low spread) gains
little; one whose particles are individually worse but spread around the truth gains more. Images
are the written 8-bit PNGs in [0, 1] (the quantisation moves PSNR by < 0.01 dB). Writes
``benchmarks/results/particle_spread.md``.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as ``python benchmarks/particle_spread.py``: the repository becomes importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
from PIL import Image

from benchmarks.harness import RESULTS, TASKS
from benchmarks.quality import CACHE, METHODS


def read(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("L"), dtype=np.float64) / 255.0


def decompose(folder: Path) -> dict[str, float]:
    """Averages over the items in ``folder`` of the particle MSE, the mean's MSE and the spread."""
    parts = {"particle": [], "mean": [], "spread": []}
    for item in sorted(p for p in folder.iterdir() if p.is_dir() and (p / "ground_truth.png").is_file()):
        truth = read(item / "ground_truth.png")
        x = np.stack([read(p) for p in sorted(item.glob("particle_*.png"))])
        m = x.mean(0)
        parts["particle"].append(((x - truth) ** 2).mean())
        parts["mean"].append(((m - truth) ** 2).mean())
        parts["spread"].append(((x - m) ** 2).mean())
    if not parts["particle"]:
        raise SystemExit(f"particle_spread.py: no items with particles in {folder}")
    out = {k: float(np.mean(v)) for k, v in parts.items()}
    out["items"] = len(parts["particle"])
    out["mean_psnr"] = float(np.mean([10 * math.log10(1 / max(v, 1e-12)) for v in parts["mean"]]))
    return out


def main() -> None:
    runs = [k for k, _ in CACHE.items() if k.kind == "run"]
    if not runs:
        raise SystemExit("particle_spread.py: no comparison runs cached: run `python benchmarks/quality.py run` first")
    lines = [
        "# Particle mean against particle spread (method comparison runs)",
        "",
        "`python benchmarks/particle_spread.py`: particle MSE = mean MSE + spread, averaged over the 100 report",
        "digits (see the script's docstring); gain = 10 log10(particle MSE / mean MSE), the dB that averaging buys.",
        "",
        "| task | method | setting | mean PSNR | particle MSE | mean MSE | spread | gain dB |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for key in sorted(runs, key=lambda k: (TASKS.index(k.task), list(METHODS).index(k.method))):
        d = decompose(key.folder())
        gain = 10 * math.log10(d["particle"] / d["mean"])
        line = (f"| {key.task} | {key.method} | {key.label} | {d['mean_psnr']:.2f} | {d['particle'] * 1e3:.2f}e-3 | {d['mean'] * 1e3:.2f}e-3 | "
                f"{d['spread'] * 1e3:.2f}e-3 | {gain:.2f} |")
        print(line, flush=True)
        lines.append(line)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "particle_spread.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
