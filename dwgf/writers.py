"""Writes predictions: per-item images and metrics, and ``metrics.csv`` for the run."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import sys
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import torch
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import BasePredictionWriter
from PIL import Image
from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure

from dwgf.errors import DWGFError
from dwgf.outputs import OutputFolder

METRICS_HEADER = ("name", "psnr", "ssim", "psnr_mean", "ssim_mean", "seconds")
FAILURES_HEADER = ("name", "file", "reason")
FAILURE = "failure.json"  # per-item failure record (no images are written for a failed item)
STD_GAIN = 4.0  # std.png shows min(1, 4 * std) of [0, 1] images: white is a std of 0.25 or more


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


def _discard_new_log(logger: Any) -> None:
    """Removes the version folder a TensorBoard logger has just created for this run, while it holds
    nothing but its own new event files (Lightning creates it before the run knows it has nothing to do)."""
    log_dir = getattr(logger, "log_dir", None)
    experiment = getattr(logger, "_experiment", None)
    if log_dir is None or experiment is None:
        return
    experiment.close()
    folder = Path(log_dir)
    if folder.is_dir() and not folder.is_symlink() and all(p.is_file() and p.name.startswith(("events.out.tfevents.", "hparams.yaml"))
                                                          for p in folder.iterdir()):
        for p in folder.iterdir():
            p.unlink()
        folder.rmdir()


def wrap_name(name: str, width: int) -> list[str]:
    """``name`` in lines of at most ``width`` characters, broken after ``_``, ``-``, ``.`` or a space
    (``digit0_mnist_0475`` -> ``digit0_mnist_``, ``0475``); only a part longer than a line is cut."""
    parts = re.findall(r"[^_\-. ]*[_\-. ]|[^_\-. ]+$", name) or [name]
    lines: list[str] = []
    for part in parts:
        if lines and len(lines[-1]) + len(part) <= width:
            lines[-1] += part
            continue
        while len(part) > width:
            lines.append(part[:width])
            part = part[width:]
        if part:
            lines.append(part)
    return [line.strip() for line in lines] or [name]


class PredictionWriter(BasePredictionWriter):
    """Writes every predicted item to ``<output>/<name>/`` and collects ``<output>/metrics.csv``.

    Per item: ``particle_<k>.png``, ``mean.png`` (particle mean), ``std.png`` (per-pixel standard
    deviation across particles of the ``[0, 1]`` images, shown as ``min(1, 4 std)``, averaged over
    channels), ``measurement.png``, ``ground_truth.png`` (when known), ``summary.png`` (all of them
    side by side, labelled) and ``metrics.json``; ``<output>/summary.png`` stacks the summaries of the
    first 8 items. ``metrics.csv`` (``name,psnr,ssim,psnr_mean,ssim_mean,seconds``) is assembled from
    the items' ``metrics.json`` at the end of every run (a resumed one too), on the first process;
    metrics are empty in measurement-only mode.

    The output folder is handled by :class:`dwgf.outputs.OutputFolder`: it is locked for the run,
    each item's manifest lists the files dwgf wrote (only those are ever replaced or removed), and
    every file is written under a temporary name and renamed.

    Resume: an item whose manifest says complete, for this configuration (``fingerprint``) and for
    the same input (file name and content), is skipped (the data module leaves its batch out),
    unless ``overwrite``; complete items of a different configuration stop the run before anything
    is computed. ``overwrite`` removes the previous run's files first.

    Failures: an item that could not be read or whose particles became non-finite gets
    ``<name>/failure.json`` (and no images); ``<output>/failures.csv`` (``name,file,reason``) lists
    them at the end of the run and :attr:`num_failures` counts them.

    Args:
        output: the output folder (``--output``).
        config_text: the resolved config, written to ``<output>/config.yaml`` by rank 0.
        fingerprint: what must match for a complete item to be reused (the CLI hashes the model,
            data and seed settings).
        overwrite: remove the previous run's files and recompute every item (``--overwrite``).
    """

    def __init__(self, output: str | os.PathLike, config_text: Optional[str] = None, fingerprint: Optional[str] = None, overwrite: bool = False):
        super().__init__(write_interval="batch")
        self.output = Path(output)
        self.config_text = config_text
        self.fingerprint = fingerprint or ""
        self.overwrite = bool(overwrite)
        self.folder = OutputFolder(self.output, self.fingerprint)
        self.complete: frozenset[int] = frozenset()
        self.num_failures = 0
        self.num_items = 0
        self._identities: list[str] = []
        self._names: list[str] = []

    @staticmethod
    def _dataset(trainer: Trainer) -> Any:
        datamodule = trainer.datamodule
        dataset = getattr(datamodule, "dataset", None)
        if dataset is None or not hasattr(dataset, "identities"):
            raise DWGFError("PredictionWriter needs a MeasurementDataModule (items with names and identities)")
        return dataset

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if stage != "predict":
            return
        datamodule, dataset = trainer.datamodule, self._dataset(trainer)
        outcome: tuple[Any, ...]
        if trainer.is_global_zero:  # the first process checks, locks and prepares the folder; the others take its word
            try:
                self.output.mkdir(parents=True, exist_ok=True)
                inputs = [Path(p).expanduser() for p in (getattr(datamodule, k, None) for k in ("images", "measurements", "masks")) if p]
                identities = dataset.identities()
                complete = self.folder.prepare(dataset.names, identities, self.overwrite, inputs)
                outcome = (None, identities, complete)
            except DWGFError as err:
                outcome = (str(err), None, None)
        else:
            outcome = (None, None, None)
        error, identities, complete = trainer.strategy.broadcast(outcome, src=0)
        if error is not None:
            raise DWGFError(error)
        dataset.set_identities(identities)
        self._identities, self._names = list(identities), list(dataset.names)
        self.num_items = len(self._names)
        self.complete = frozenset(complete)
        datamodule.skip_items = self.complete
        if self.complete:
            if trainer.is_global_zero:
                print(f"predict: {len(self.complete)} of {self.num_items} items already complete, skipped", file=sys.stderr, flush=True)
            if len(self.complete) == self.num_items:  # nothing to compute: no empty TensorBoard version
                for logger in trainer.loggers:
                    _discard_new_log(logger)
                trainer.loggers = []

    def teardown(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        self.folder.lock.release()

    def on_exception(self, trainer: Trainer, pl_module: LightningModule, exception: BaseException) -> None:
        self.folder.lock.release()

    def on_predict_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self.config_text is not None and trainer.is_global_zero:
            self.folder.write_run_file("config.yaml", self.config_text.encode())

    def _identity(self, index: int) -> str:
        return self._identities[index] if index < len(self._identities) else ""

    def write_item(self, name: str, particles: torch.Tensor, measurement: torch.Tensor, image: Optional[torch.Tensor], seconds: float,
                   index: int = -1, file: str = "") -> dict[str, Any]:
        """Writes one item's files; ``particles`` is ``N x C x H x W`` in ``[-1, 1]``."""
        files: dict[str, bytes] = {}
        p01 = to_unit(particles)
        for k, p in enumerate(p01):
            files[f"particle_{k}.png"] = png_bytes(p)
        mean = p01.mean(0)
        files["mean.png"] = png_bytes(mean)
        std = p01.std(0, unbiased=False).mean(0, keepdim=True) if p01.shape[0] > 1 else torch.zeros_like(mean[:1])
        files["std.png"] = png_bytes((STD_GAIN * std).clamp(0, 1))
        files["measurement.png"] = png_bytes(to_unit(measurement))
        record: dict[str, Any] = {"name": name, "file": Path(file).name, "psnr": None, "ssim": None, "psnr_mean": None, "ssim_mean": None}
        if image is not None:
            truth = to_unit(image)
            files["ground_truth.png"] = png_bytes(truth)
            record.update(image_metrics(p01, truth[None]))
        record["seconds"] = float(seconds)
        tiles = [to_unit(measurement), *p01, mean, (STD_GAIN * std).clamp(0, 1)]
        labels = ["measurement", *(f"particle {k}" for k in range(len(p01))), "mean", "std x4"]
        if image is not None:
            tiles.append(truth)
            labels.append("truth")
        files["summary.png"] = image_bytes(summary_picture(tiles, labels))
        files["metrics.json"] = json.dumps(record, ensure_ascii=False).encode()
        self.folder.write_item(name, self._identity(index), files)
        return record

    def write_failure(self, failure: dict[str, Any]) -> None:
        """Records a failed item in ``<output>/<name>/failure.json``; dwgf's earlier files of the item are removed."""
        record = {"name": failure["name"], "file": failure.get("file", ""), "reason": failure["error"]}
        self.folder.write_item(failure["name"], self._identity(int(failure.get("index", -1))),
                               {FAILURE: json.dumps(record, ensure_ascii=False).encode()}, state="failed")

    def write_on_batch_end(self, trainer, pl_module, prediction, batch_indices, batch, batch_idx, dataloader_idx=0) -> None:
        images = prediction.get("image")
        files = prediction.get("files") or [""] * len(prediction["names"])
        for i, name in enumerate(prediction["names"]):
            index = int(prediction["indices"][i])
            if index in self.complete:
                continue  # recomputed only because its batch was incomplete: already written
            self.write_item(name, prediction["particles"][i], prediction["measurement"][i],
                            None if images is None else images[i], prediction["seconds"], index=index, file=files[i])
        for failure in prediction.get("failed", []):
            if int(failure.get("index", -1)) not in self.complete:
                self.write_failure(failure)

    def _current(self, state: str) -> list[str]:
        """Names of this run's items whose manifest has ``state`` for this configuration and input."""
        found = []
        for name, identity in zip(self._names, self._identities):
            rec = self.folder.item_record(name)
            if rec is not None and rec.state == state and rec.config == self.fingerprint and rec.input == identity:
                found.append(name)
        return found

    def on_predict_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        trainer.strategy.barrier()
        if trainer.is_global_zero:
            complete = self._current("complete")
            self.write_metrics_csv(complete)
            self.write_failures_csv(self._current("failed"))
            self.write_contact_sheet(complete)
        trainer.strategy.barrier()
        self.num_failures = len(self._current("failed"))

    def write_failures_csv(self, names: Sequence[str]) -> None:
        """``failures.csv`` from the items' ``failure.json`` (removed when no item failed)."""
        rows = []
        for name in names:
            path = self.output / name / FAILURE
            if path.is_file():
                rec = json.loads(path.read_text())
                rows.append([rec["name"], rec["file"], rec["reason"]])
        if not rows:
            self.folder.remove_run_file("failures.csv")
            return
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(FAILURES_HEADER)
        writer.writerows(rows)
        self.folder.write_run_file("failures.csv", buf.getvalue().encode())

    def write_contact_sheet(self, names: Sequence[str]) -> None:
        """``<output>/summary.png``: the summaries of the first items, one per row, names on the left."""
        from PIL import ImageDraw

        rows = [(n, self.output / n / "summary.png") for n in names]
        rows = [(n, p) for n, p in rows if p.is_file()][:SHEET_ITEMS]
        if not rows:
            self.folder.remove_run_file("summary.png")
            return
        pictures = [Image.open(p).convert("RGB") for _, p in rows]
        margin = 90
        width = margin + max(p.width for p in pictures)
        sheet = Image.new("RGB", (width, sum(p.height + 4 for p in pictures)), "white")
        draw = ImageDraw.Draw(sheet)
        y = 0
        for (name, path), pic in zip(rows, pictures):
            sheet.paste(pic, (margin, y))
            lines = wrap_name(name, 14)[:3]
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
        self.folder.write_run_file("summary.png", image_bytes(sheet))

    def write_metrics_csv(self, names: Sequence[str]) -> None:
        """``metrics.csv`` from the ``metrics.json`` of ``names`` (complete items, in input order)."""
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(METRICS_HEADER)
        for name in names:
            path = self.output / name / "metrics.json"
            if not path.is_file():
                continue
            rec = json.loads(path.read_text())
            writer.writerow([name] + ["" if rec.get(k) is None else f"{rec[k]:.6g}" for k in METRICS_HEADER[1:]])
        self.folder.write_run_file("metrics.csv", buf.getvalue().encode())
