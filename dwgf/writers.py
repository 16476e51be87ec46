"""The prediction writer: the Lightning callback that puts each item's files in ``--output`` and assembles
``metrics.csv``, ``failures.csv`` and the contact sheet. What the files show is :mod:`dwgf.rendering`; where and how
they are written is :mod:`dwgf.outputs`."""

from __future__ import annotations

import csv
import io
import json
import os
import sys
from pathlib import Path
from typing import Any, Optional, Sequence

import torch
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import BasePredictionWriter
from PIL import Image

from dwgf.errors import DWGFError
from dwgf.data.images import input_folder
from dwgf.outputs import OutputFolder, Resume
from dwgf.rendering import SHEET_ITEMS, contact_sheet, image_bytes, render_item

METRICS_HEADER = ("name", "psnr", "ssim", "psnr_mean", "ssim_mean", "seconds", "spread", "crps", "coverage90", "calibrated_width",
                  "calibrated_coverage", "coverage90_unobserved", "calibrated_width_unobserved", "calibrated_coverage_unobserved",
                  "ancestors", "min_ess")
SUMMARY_HEADER = ("column", "items", "mean", "p10", "min")  # summary.csv: each metrics.csv column over the run's items
COLLAPSED = 2  # an item whose particles descend from at most this many ancestors is named in the run's warning
FAILURES_HEADER = ("name", "file", "reason")
FAILURE = "failure.json"  # per-item failure record (no images are written for a failed item)


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


class PredictionWriter(BasePredictionWriter):
    """Writes every predicted item to ``<output>/<name>/`` and collects ``<output>/metrics.csv``.

    Per item: ``particle_<k>.png``, ``mean.png`` (particle mean), ``std.png`` (per-pixel standard
    deviation across particles of the ``[0, 1]`` images, shown as ``min(1, 4 std)``, averaged over
    channels), ``measurement.png``, ``ground_truth.png`` (when known), ``summary.png`` (all of them
    side by side, labelled) and ``metrics.json``; ``<output>/summary.png`` stacks the summaries of the
    first 8 items. ``metrics.csv`` (``name,psnr,ssim,psnr_mean,ssim_mean,seconds,spread,crps,coverage90,calibrated_width,
    calibrated_coverage,coverage90_unobserved,calibrated_width_unobserved,calibrated_coverage_unobserved,ancestors,min_ess``;
    see :func:`dwgf.rendering.uncertainty_metrics`, :mod:`dwgf.calibration` for the calibrated columns, empty without
    ``--model.calibration``, and :class:`dwgf.methods.SMCState` for the last two, empty for a method that does not
    resample) is assembled from the items' ``metrics.json`` at the end of every run (a resumed one too), on the first
    process; metrics are empty in measurement-only mode. ``summary.csv`` (``column,items,mean,p10,min``) gives each
    numeric column's (but ``seconds``) mean, 10th percentile (linear between order statistics) and minimum over the items. Items whose
    particles descend from at most two ancestors are counted in one warning line at the end of the run.
    The ``*_unobserved`` columns are on the pixels the measurement is silent about
    (:meth:`dwgf.operators.ForwardOperator.unobserved`: inpainting's missing pixels, every pixel for the other
    operators), which the item's ``unobserved.png`` shows (white) when the operator has such a map.

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
        data: the run's data module (:class:`~dwgf.data.MeasurementDataModule`): its items' names
            and identities, and its input folders (never written into).
        resume: filled in at setup with the items already complete; give the data module the same
            object (its ``resume``) so that it leaves them out.
        config_text: the resolved config, written to ``<output>/config.yaml`` by rank 0.
        fingerprint: what must match for a complete item to be reused (the CLI hashes the model,
            data and seed settings).
        overwrite: remove the previous run's files and recompute every item (``--overwrite``).
        calibration: the calibrated intervals (``--model.calibration``'s :class:`~dwgf.calibration.Calibration`, or one
            scale for every pixel): each item also gets ``lower.png`` and ``upper.png``, and ``metrics.csv`` their width
            and coverage. Default none.
    """

    def __init__(self, output: str | os.PathLike, data: Any, resume: Optional[Resume] = None, config_text: Optional[str] = None,
                 fingerprint: Optional[str] = None, overwrite: bool = False, calibration: Any = None):
        super().__init__(write_interval="batch")
        self.output = Path(output)
        self.data = data
        self.resume = resume if resume is not None else Resume()
        self.config_text = config_text
        self.fingerprint = fingerprint or ""
        self.overwrite = bool(overwrite)
        self.calibration = calibration
        self.folder = OutputFolder(self.output, self.fingerprint)
        self.complete: frozenset[int] = frozenset()
        self.num_failures = 0
        self.num_items = 0
        self._identities: list[str] = []
        self._names: list[str] = []

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if stage != "predict":
            return
        dataset = getattr(self.data, "dataset", None)
        if dataset is None or not hasattr(dataset, "identities"):
            raise DWGFError("PredictionWriter needs a MeasurementDataModule that is set up (items with names and identities)")
        outcome: tuple[Any, ...]
        if trainer.is_global_zero:  # the first process checks, locks and prepares the folder; the others take its word
            try:
                self.output.mkdir(parents=True, exist_ok=True)
                inputs = [input_folder(p) for p in (getattr(self.data, k, None) for k in ("images", "measurements", "masks")) if p]
                identities = dataset.identities()
                complete = self.folder.prepare(dataset.names, identities, self.overwrite, inputs)
                outcome = (None, identities, complete)
            except DWGFError as err:  # sent whole: the command words an argument error as its option
                outcome = (err, None, None)
        else:
            outcome = (None, None, None)
        error, identities, complete = trainer.strategy.broadcast(outcome, src=0)
        if error is not None:
            raise error
        dataset.set_identities(identities)
        self._identities, self._names = list(identities), list(dataset.names)
        self.num_items = len(self._names)
        self.complete = frozenset(complete)
        self.resume.complete = self.complete  # the data module leaves these items' batches out
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
                   index: int = -1, file: str = "", align=None, calibration: Any = None, unobserved: Optional[torch.Tensor] = None,
                   report: Optional[dict[str, float]] = None) -> dict[str, Any]:
        """Writes one item's files (:func:`dwgf.rendering.render_item`); ``particles`` is ``N x C x H x W`` in ``[-1, 1]``;
        ``align``: the operator's, for the metrics (:meth:`dwgf.operators.ForwardOperator.align`); ``calibration``: the
        calibrated intervals, if any; ``unobserved``: the pixels the measurement is silent about; ``report``: the
        method's per-item figures."""
        files, record = render_item(name, particles, measurement, image, seconds, file=Path(file).name, align=align,
                                    calibration=calibration, unobserved=unobserved, report=report)
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
        operator = getattr(pl_module, "operator", None)
        unobserved, report = prediction.get("unobserved"), prediction.get("report") or {}
        for i, name in enumerate(prediction["names"]):
            index = int(prediction["indices"][i])
            if index in self.complete:
                continue  # recomputed only because its batch was incomplete: already written
            self.write_item(name, prediction["particles"][i], prediction["measurement"][i],
                            None if images is None else images[i], prediction["seconds"], index=index, file=files[i],
                            align=None if operator is None else operator.align, calibration=self.calibration,
                            unobserved=None if unobserved is None else unobserved[i],
                            report={k: v[i] for k, v in report.items()})
        for failure in prediction.get("failed", []):
            if int(failure.get("index", -1)) not in self.complete:
                self.write_failure(failure)

    def _current(self) -> dict[str, list[str]]:
        """This run's complete and failed items (manifests of this configuration and input), in input order."""
        found: dict[str, list[str]] = {"complete": [], "failed": []}
        for name, identity in zip(self._names, self._identities):
            rec = self.folder.item_record(name)
            if rec is not None and rec.state in found and rec.config == self.fingerprint and rec.input == identity:
                found[rec.state].append(name)
        return found

    def on_predict_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        trainer.strategy.barrier()  # every process has written its items
        current = self._current()  # each manifest read once
        if trainer.is_global_zero:
            records = self.write_metrics_csv(current["complete"])
            self.write_summary_csv(records)
            self.warn_collapsed(records, getattr(pl_module, "num_particles", None))
            self.write_failures_csv(current["failed"])
            self.write_contact_sheet(current["complete"])
        trainer.strategy.barrier()
        self.num_failures = len(current["failed"])

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
        """``<output>/summary.png``: the summaries of the first items (:func:`dwgf.rendering.contact_sheet`)."""
        rows = []
        for name in names:
            path = self.output / name / "summary.png"
            if not path.is_file():
                continue
            try:  # the item's PSNR of the particle mean, when the truth is known
                psnr = json.loads((path.parent / "metrics.json").read_text()).get("psnr_mean")
            except (OSError, ValueError):
                psnr = None
            rows.append((name, Image.open(path).convert("RGB"), psnr))
            if len(rows) == SHEET_ITEMS:
                break
        if not rows:
            self.folder.remove_run_file("summary.png")
            return
        self.folder.write_run_file("summary.png", image_bytes(contact_sheet(rows)))

    def write_metrics_csv(self, names: Sequence[str]) -> list[dict[str, Any]]:
        """``metrics.csv`` from the ``metrics.json`` of ``names`` (complete items, in input order); returns the records."""
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(METRICS_HEADER)
        records = []
        for name in names:
            path = self.output / name / "metrics.json"
            if not path.is_file():
                continue
            rec = json.loads(path.read_text())
            records.append(rec)
            writer.writerow([name] + ["" if rec.get(k) is None else f"{rec[k]:.6g}" for k in METRICS_HEADER[1:]])
        self.folder.write_run_file("metrics.csv", buf.getvalue().encode())
        return records

    def write_summary_csv(self, records: Sequence[dict[str, Any]]) -> None:
        """``summary.csv``: each numeric column of ``metrics.csv`` but ``seconds`` over the items that have it: their number, mean, 10th
        percentile and minimum (the values as ``metrics.csv`` rounds them); removed when no column has a value."""
        import numpy as np

        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(SUMMARY_HEADER)
        rows = 0
        for column in METRICS_HEADER[1:]:
            if column == "seconds":  # timings differ from run to run: summary.csv holds what a rerun reproduces
                continue
            values = np.array([float(f"{r[column]:.6g}") for r in records if r.get(column) is not None], dtype=np.float64)
            if values.size:
                writer.writerow([column, values.size, *(f"{v:.6g}" for v in (values.mean(), np.percentile(values, 10), values.min()))])
                rows += 1
        if rows:
            self.folder.write_run_file("summary.csv", buf.getvalue().encode())
        else:
            self.folder.remove_run_file("summary.csv")

    def warn_collapsed(self, records: Sequence[dict[str, Any]], num_particles: Optional[int]) -> None:
        """One warning line when the particles of some items descend from at most :data:`COLLAPSED` ancestors (a
        resampling method's ``ancestors``), with ``N`` above that."""
        if num_particles is None or int(num_particles) <= COLLAPSED + 1:
            return
        counted = [r for r in records if r.get("ancestors") is not None]
        collapsed = [r for r in counted if r["ancestors"] <= COLLAPSED]
        if collapsed:
            print(f"dwgf: warning: the particles of {len(collapsed)} of {len(counted)} items descend from at most {COLLAPSED} of their "
                  f"{int(num_particles)} first particles (metrics.csv's ancestors column): their spread and intervals understate the "
                  "uncertainty; see docs/running.md, \"Particles that collapsed\"", file=sys.stderr, flush=True)
