"""Writes predictions: per-item images and metrics, and ``metrics.csv`` for the run."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import textwrap
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import torch
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import BasePredictionWriter
from PIL import Image
from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure

from dwgf.errors import DWGFError

METRICS_HEADER = ("name", "psnr", "ssim", "psnr_mean", "ssim_mean", "seconds")
FAILURES_HEADER = ("name", "file", "reason")
COMPLETE = ".complete"  # per-item marker, written after every other file of the item
FAILURE = "failure.json"  # per-item failure record (no images are written for a failed item)
STD_GAIN = 4.0  # std.png shows min(1, 4 * std) of [0, 1] images: white is a std of 0.25 or more


def safe_name(name: str) -> str:
    """A file-system-safe item name that cannot leave the output folder."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]", "_", name).lstrip(".")
    return cleaned or "item"


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Writes ``data`` to a temporary name beside ``path`` and renames it: never half a file."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def to_unit(x: torch.Tensor) -> torch.Tensor:
    """``[-1, 1]`` images to ``[0, 1]``."""
    return ((x.float() + 1) / 2).clamp(0, 1)


def png_bytes(image01: torch.Tensor) -> bytes:
    """A ``C x H x W`` image in ``[0, 1]`` as PNG bytes (8-bit, gray for ``C = 1``)."""
    arr = (image01.detach().cpu().clamp(0, 1) * 255).round().to(torch.uint8).numpy()
    arr = arr[0] if arr.shape[0] == 1 else np.ascontiguousarray(arr.transpose(1, 2, 0))
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def image_metrics(particles01: torch.Tensor, truth01: torch.Tensor) -> dict[str, float]:
    """PSNR/SSIM of each particle (averaged) and of the particle mean, on ``[0, 1]`` images."""
    n = particles01.shape[0]
    target = truth01.expand(n, -1, -1, -1)
    psnr = peak_signal_noise_ratio(particles01, target, data_range=1.0, reduction="none", dim=(1, 2, 3))
    ssim = structural_similarity_index_measure(particles01, target, data_range=1.0, reduction="none")
    mean = particles01.mean(0, keepdim=True)
    psnr_mean = peak_signal_noise_ratio(mean, truth01, data_range=1.0, reduction="none", dim=(1, 2, 3))
    ssim_mean = structural_similarity_index_measure(mean, truth01, data_range=1.0, reduction="none")
    return {
        "psnr": float(psnr.mean()), "ssim": float(ssim.mean()),
        "psnr_mean": float(psnr_mean.mean()), "ssim_mean": float(ssim_mean.mean()),
    }


SUMMARY_TILE = 96  # minimum tile side in summary pictures, in pixels (small images are enlarged)
SHEET_ITEMS = 8  # items on the contact sheet <output>/summary.png


def _tile(image01: torch.Tensor, side: int) -> Image.Image:
    """A ``C x h x w`` image in ``[0, 1]`` as an RGB tile of ``side x side`` (nearest neighbour)."""
    img = Image.open(io.BytesIO(png_bytes(image01))).convert("RGB")
    return img.resize((side, side), Image.NEAREST)


def summary_picture(tiles: Sequence[torch.Tensor], labels: Sequence[str], label_row: bool = True) -> Image.Image:
    """Tiles side by side, 2 px apart, with their labels on a strip above (if ``label_row``)."""
    from PIL import ImageDraw

    h = max(t.shape[-1] for t in tiles)
    side = max(SUMMARY_TILE, h * max(1, SUMMARY_TILE // h))
    top = 14 if label_row else 0
    sheet = Image.new("RGB", (len(tiles) * (side + 2) - 2, side + top), "white")
    draw = ImageDraw.Draw(sheet)
    for i, (tile, label) in enumerate(zip(tiles, labels)):
        x = i * (side + 2)
        sheet.paste(_tile(tile, side), (x, top))
        if label_row:
            draw.text((x + 2, 1), label, fill="black")
    return sheet


def image_bytes(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


class PredictionWriter(BasePredictionWriter):
    """Writes every predicted item to ``<output>/<name>/`` and collects ``<output>/metrics.csv``.

    Per item: ``particle_<k>.png``, ``mean.png`` (particle mean), ``std.png`` (per-pixel standard
    deviation across particles of the ``[0, 1]`` images, shown as ``min(1, 4 std)``, averaged over
    channels), ``measurement.png``, ``ground_truth.png`` (when known), ``summary.png`` (all of them
    side by side, labelled) and ``metrics.json``; ``<output>/summary.png`` stacks the summaries of the
    first 8 items. Every file
    is written under a temporary name and renamed. ``metrics.csv`` (``name,psnr,ssim,psnr_mean,
    ssim_mean,seconds``) is assembled from the items' ``metrics.json`` at the end of the run, on
    rank 0; metrics are empty in measurement-only mode.

    Resume: after an item's files, a marker ``<name>/.complete`` holding the run's
    ``fingerprint`` is written last. A later run into the same folder skips the items whose marker
    is there (the data module leaves their batches out), unless ``overwrite``; a marker from a
    different configuration stops the run before anything is computed.

    Failures: an item that could not be read or whose particles became non-finite gets
    ``<name>/failure.json`` (and no images); ``<output>/failures.csv`` (``name,file,reason``) lists
    them at the end of the run and :attr:`num_failures` counts them.

    Args:
        output: the output folder (``--output``).
        config_text: the resolved config, written to ``<output>/config.yaml`` by rank 0.
        fingerprint: what must match for a complete item to be reused (the CLI hashes the model,
            data and seed settings). ``None``: items are never reused.
        overwrite: recompute and rewrite every item, complete or not (``--overwrite``).
    """

    def __init__(self, output: str | os.PathLike, config_text: Optional[str] = None, fingerprint: Optional[str] = None, overwrite: bool = False):
        super().__init__(write_interval="batch")
        self.output = Path(output)
        self.config_text = config_text
        self.fingerprint = fingerprint
        self.overwrite = bool(overwrite)
        self.complete: frozenset[int] = frozenset()
        self.num_failures = 0

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if stage != "predict" or self.fingerprint is None or self.overwrite:
            return
        datamodule = trainer.datamodule
        if datamodule is None or getattr(datamodule, "dataset", None) is None:
            return
        done = set()
        for index, name in enumerate(datamodule.dataset.names):
            marker = self.output / safe_name(name) / COMPLETE
            if marker.is_file():
                if marker.read_text().strip() != self.fingerprint:
                    raise DWGFError(
                        f"--output {str(self.output)!r} holds results of a different configuration ({safe_name(name)}/{COMPLETE}); "
                        "use --overwrite to replace them or choose another --output"
                    )
                done.add(index)
        self.complete = frozenset(done)
        datamodule.skip_items = self.complete

    def on_predict_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.output.mkdir(parents=True, exist_ok=True)
        if self.config_text is not None and trainer.is_global_zero:
            atomic_write_bytes(self.output / "config.yaml", self.config_text.encode())

    def write_item(self, name: str, particles: torch.Tensor, measurement: torch.Tensor, image: Optional[torch.Tensor], seconds: float) -> dict[str, Any]:
        """Writes one item's files; ``particles`` is ``N x C x H x W`` in ``[-1, 1]``."""
        folder = self.output / safe_name(name)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / COMPLETE).unlink(missing_ok=True)  # an interrupted rewrite must not look complete
        (folder / FAILURE).unlink(missing_ok=True)
        p01 = to_unit(particles)
        for k, p in enumerate(p01):
            atomic_write_bytes(folder / f"particle_{k}.png", png_bytes(p))
        mean = p01.mean(0)
        atomic_write_bytes(folder / "mean.png", png_bytes(mean))
        std = p01.std(0, unbiased=False).mean(0, keepdim=True) if p01.shape[0] > 1 else torch.zeros_like(mean[:1])
        atomic_write_bytes(folder / "std.png", png_bytes((STD_GAIN * std).clamp(0, 1)))
        atomic_write_bytes(folder / "measurement.png", png_bytes(to_unit(measurement)))
        record: dict[str, Any] = {"name": name, "psnr": None, "ssim": None, "psnr_mean": None, "ssim_mean": None}
        if image is not None:
            truth = to_unit(image)
            atomic_write_bytes(folder / "ground_truth.png", png_bytes(truth))
            record.update(image_metrics(p01, truth[None]))
        record["seconds"] = float(seconds)
        tiles = [to_unit(measurement), *p01, mean, (STD_GAIN * std).clamp(0, 1)]
        labels = ["measurement", *(f"particle {k}" for k in range(len(p01))), "mean", "std x4"]
        if image is not None:
            tiles.append(truth)
            labels.append("truth")
        atomic_write_bytes(folder / "summary.png", image_bytes(summary_picture(tiles, labels)))
        atomic_write_bytes(folder / "metrics.json", json.dumps(record).encode())
        atomic_write_bytes(folder / COMPLETE, (self.fingerprint or "").encode())
        return record

    def write_failure(self, failure: dict[str, Any]) -> None:
        """Records a failed item in ``<output>/<name>/failure.json``; its images, if any, are removed."""
        folder = self.output / safe_name(failure["name"])
        folder.mkdir(parents=True, exist_ok=True)
        for old in folder.iterdir():
            if old.is_file() and (old.suffix in (".png", ".json") or old.name == COMPLETE):
                old.unlink()
        record = {"name": failure["name"], "file": failure.get("file", ""), "reason": failure["error"]}
        atomic_write_bytes(folder / FAILURE, json.dumps(record).encode())

    def write_on_batch_end(self, trainer, pl_module, prediction, batch_indices, batch, batch_idx, dataloader_idx=0) -> None:
        images = prediction.get("image")
        for i, name in enumerate(prediction["names"]):
            if prediction["indices"][i] in self.complete:
                continue  # recomputed only because its batch was incomplete: already written
            self.write_item(
                name, prediction["particles"][i], prediction["measurement"][i],
                None if images is None else images[i], prediction["seconds"],
            )
        for failure in prediction.get("failed", []):
            self.write_failure(failure)

    def on_predict_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        trainer.strategy.barrier()
        if trainer.is_global_zero:
            dataset = getattr(trainer.datamodule, "dataset", None)
            names = list(getattr(dataset, "names", []))
            self.write_metrics_csv(names)
            self.write_failures_csv(names)
            self.write_contact_sheet(names)
        trainer.strategy.barrier()
        dataset = getattr(trainer.datamodule, "dataset", None)
        self.num_failures = sum((self.output / safe_name(n) / FAILURE).is_file() for n in getattr(dataset, "names", []))

    def write_failures_csv(self, names: Sequence[str]) -> None:
        """``failures.csv`` from the items' ``failure.json`` (removed when no item failed)."""
        rows = []
        for name in names:
            path = self.output / safe_name(name) / FAILURE
            if path.is_file():
                rec = json.loads(path.read_text())
                rows.append([rec["name"], rec["file"], rec["reason"]])
        target = self.output / "failures.csv"
        if not rows:
            target.unlink(missing_ok=True)
            return
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(FAILURES_HEADER)
        writer.writerows(rows)
        atomic_write_bytes(target, buf.getvalue().encode())

    def write_contact_sheet(self, names: Sequence[str]) -> None:
        """``<output>/summary.png``: the summaries of the first items, one per row, names on the left."""
        from PIL import ImageDraw

        rows = [(n, self.output / safe_name(n) / "summary.png") for n in names]
        rows = [(n, p) for n, p in rows if p.is_file()][:SHEET_ITEMS]
        if not rows:
            return
        pictures = [Image.open(p).convert("RGB") for _, p in rows]
        margin = 90
        width = margin + max(p.width for p in pictures)
        sheet = Image.new("RGB", (width, sum(p.height + 4 for p in pictures)), "white")
        draw = ImageDraw.Draw(sheet)
        y = 0
        for (name, path), pic in zip(rows, pictures):
            sheet.paste(pic, (margin, y))
            lines = textwrap.wrap(name, 14, break_long_words=True)[:3]
            try:  # the item's PSNR of the particle mean, when the truth is known
                psnr = json.loads((path.parent / "metrics.json").read_text()).get("psnr_mean")
                if psnr is not None and psnr == psnr:
                    lines.append(f"mean {float(psnr):.1f} dB")
            except (OSError, ValueError):
                pass
            top = y + pic.height // 2 - 6 * len(lines)
            for i, line in enumerate(lines):
                draw.text((2, top + 12 * i), line, fill="black")
            y += pic.height + 4
        atomic_write_bytes(self.output / "summary.png", image_bytes(sheet))

    def write_metrics_csv(self, names: Sequence[str]) -> None:
        """``metrics.csv`` from the ``metrics.json`` of ``names`` (in that order) that exist."""
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(METRICS_HEADER)
        for name in names:
            path = self.output / safe_name(name) / "metrics.json"
            if not path.is_file() or not (path.parent / COMPLETE).is_file():
                continue
            rec = json.loads(path.read_text())
            writer.writerow([rec["name"]] + ["" if rec.get(k) is None else f"{rec[k]:.6g}" for k in METRICS_HEADER[1:]])
        atomic_write_bytes(self.output / "metrics.csv", buf.getvalue().encode())
