"""What dwgf's output images show, as plain functions (no Lightning, no files): PNG bytes, the summary row
of an item, the std map, the contact sheet, and the per-item metrics."""

from __future__ import annotations

import io
import json
import re
from typing import Any, Callable, Optional, Sequence

import numpy as np
import torch
from PIL import Image
from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure

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


COVERAGE_LEVEL = 0.9  # coverage90: the particles' central 90% interval, per pixel


def crps(particles: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
    """The ensemble CRPS per pixel, averaged: ``E|X - x| - 1/2 E|X - X'|`` over particles ``X, X'``
    (all ``N^2`` pairs, the estimator torchmetrics uses), ``particles`` ``N x ...``, ``truth`` ``...``.
    One particle: ``|X - x|`` (torchmetrics needs two)."""
    if particles.shape[0] == 1:
        return (particles[0] - truth).abs().mean()
    from torchmetrics.functional.regression import continuous_ranked_probability_score

    return continuous_ranked_probability_score(particles.flatten(1).T.double(), truth.flatten().double()).float()


def uncertainty_metrics(particles01: torch.Tensor, truth01: torch.Tensor, unobserved: Optional[torch.Tensor] = None) -> dict[str, float]:
    """How the particles (``N x C x H x W`` in ``[0, 1]``) spread around the truth (``C x H x W``), per pixel.

    ``spread``: the mean over pixels of the particles' standard deviation (what ``std.png`` shows,
    before its gain), ``crps``: :func:`crps`, ``coverage90``: the share of pixels (and channels)
    whose truth lies between the 5% and the 95% quantile of the particles (``torch.quantile``,
    linear between order statistics). With one particle, spread is 0 and the interval a point.
    ``coverage90_unobserved``: the same share on the pixels the measurement is silent about
    (``unobserved``, ``1 x H x W`` 0/1, :meth:`~dwgf.operators.ForwardOperator.unobserved`; ``None``: every
    pixel); ``None`` when there is no such pixel.
    """
    p, x = particles01.double(), truth01.double()
    spread = p.std(0, unbiased=False).mean(0).mean() if p.shape[0] > 1 else torch.zeros((), dtype=torch.float64, device=p.device)
    tail = (1 - COVERAGE_LEVEL) / 2
    lo, hi = torch.quantile(p, torch.tensor([tail, 1 - tail], dtype=torch.float64, device=p.device), dim=0)
    inside = ((x >= lo) & (x <= hi)).double()
    region = torch.ones_like(inside) if unobserved is None else (unobserved.to(x.device).double() > 0.5).double().expand_as(inside)
    count = float(region.sum())
    return {"spread": float(spread), "crps": float(crps(p, x)), "coverage90": float(inside.mean()),
            "coverage90_unobserved": float((inside * region).sum()) / count if count else None}


SUMMARY_TILE = 96  # minimum tile side in summary pictures, in pixels (small images are enlarged)
SHEET_ITEMS = 8  # items on the contact sheet <output>/summary.png


def _tile(image01: torch.Tensor, width: int, height: int) -> Image.Image:
    """A ``C x h x w`` image in ``[0, 1]`` as an RGB tile of ``width x height`` (nearest neighbour)."""
    img = Image.open(io.BytesIO(png_bytes(image01))).convert("RGB")
    return img.resize((width, height), Image.NEAREST)


def summary_picture(tiles: Sequence[torch.Tensor], labels: Sequence[str], label_row: bool = True) -> Image.Image:
    """Tiles side by side, 2 px apart, with their labels on a strip above (if ``label_row``)."""
    from PIL import ImageDraw

    h = max(max(t.shape[-2:]) for t in tiles)
    side = max(SUMMARY_TILE, h * max(1, SUMMARY_TILE // h))  # the long side of a tile
    ih, iw = max(tiles, key=lambda t: t.shape[-2] * t.shape[-1]).shape[-2:]  # tiles share the image's aspect ratio
    width, height = (side, max(1, round(side * ih / iw))) if iw >= ih else (max(1, round(side * iw / ih)), side)
    top = 14 if label_row else 0
    sheet = Image.new("RGB", (len(tiles) * (width + 2) - 2, height + top), "white")
    draw = ImageDraw.Draw(sheet)
    for i, (tile, label) in enumerate(zip(tiles, labels)):
        x = i * (width + 2)
        sheet.paste(_tile(tile, width, height), (x, top))
        if label_row:
            draw.text((x + 2, 1), label, fill="black")
    return sheet


def image_bytes(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def std_map(particles01: torch.Tensor) -> torch.Tensor:
    """Per-pixel standard deviation across particles (``N x C x H x W`` in ``[0, 1]``), averaged over
    channels, as ``std.png`` shows it: ``1 x H x W``, ``min(1, STD_GAIN * std)``; zeros for one particle."""
    if particles01.shape[0] > 1:
        std = particles01.std(0, unbiased=False).mean(0, keepdim=True)
    else:
        std = torch.zeros_like(particles01[0, :1])
    return (STD_GAIN * std).clamp(0, 1)


def render_item(name: str, particles: torch.Tensor, measurement: torch.Tensor, image: Optional[torch.Tensor], seconds: float,
                file: str = "", align: Optional[Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = None,
                calibration: Any = None, unobserved: Optional[torch.Tensor] = None,
                report: Optional[dict[str, float]] = None) -> tuple[dict[str, bytes], dict[str, Any]]:
    """An item's files (``{file name: bytes}``) and its metrics record.

    ``particles`` is ``N x C x H x W`` in ``[-1, 1]``; ``measurement`` the measurement as an image;
    ``image`` the ground truth or ``None``. Files: ``particle_<k>.png``, ``mean.png``, ``std.png``,
    ``measurement.png``, ``ground_truth.png`` (with a truth), ``summary.png`` and ``metrics.json``.
    ``align(particles, image)``, where given (the operator's :meth:`~dwgf.operators.ForwardOperator.align`),
    moves the particles by the measurement's symmetries before the metrics; the images are saved as found.
    ``calibration``: a :class:`~dwgf.calibration.Calibration` (or one scale for every pixel): the item also gets
    ``lower.png`` and ``upper.png`` (also shown in ``summary.png``, after the std; bounds rounded inwards to 8-bit levels,
    :func:`~dwgf.calibration.interval_levels`), and with a truth ``calibrated_width`` and ``calibrated_coverage``, and the
    same two on the unobserved pixels. ``unobserved``: the pixels the measurement is silent about (``1 x H x W`` 0/1;
    ``None``: every pixel), written as ``unobserved.png`` (white: unobserved) when given. ``report``: per-item figures
    of the method (e.g. ``ancestors``, ``min_ess``), added to the record.
    """
    files: dict[str, bytes] = {}
    p01 = to_unit(particles)
    for k, p in enumerate(p01):
        files[f"particle_{k}.png"] = png_bytes(p)
    mean = p01.mean(0)
    files["mean.png"] = png_bytes(mean)
    std = std_map(p01)
    files["std.png"] = png_bytes(std)
    files["measurement.png"] = png_bytes(to_unit(measurement))
    record: dict[str, Any] = {"name": name, "file": file, "psnr": None, "ssim": None, "psnr_mean": None, "ssim_mean": None,
                              "spread": None, "crps": None, "coverage90": None, "calibrated_width": None, "calibrated_coverage": None,
                              "coverage90_unobserved": None, "calibrated_width_unobserved": None, "calibrated_coverage_unobserved": None,
                              **(report or {})}
    if unobserved is not None:
        unobserved = (unobserved.detach().float().cpu() > 0.5).float()
        files["unobserved.png"] = png_bytes(unobserved)
    if calibration is not None:  # from the particles as their PNGs hold them, as dwgf calibrate read them
        from dwgf.calibration import interval_levels, quantize

        scale = calibration.scale_map(quantize(p01), unobserved) if hasattr(calibration, "scale_map") else float(calibration)
        lower, upper = interval_levels(quantize(p01), scale)
        files["lower.png"], files["upper.png"] = png_bytes(lower), png_bytes(upper)
    tiles = [to_unit(measurement), *p01, mean, std]
    labels = ["measurement", *(f"particle {k}" for k in range(len(p01))), "mean", "std x4"]
    if calibration is not None:  # the calibrated interval beside the particles' spread
        tiles += [lower, upper]
        labels += ["lower", "upper"]
    if image is not None:
        truth = to_unit(image)
        files["ground_truth.png"] = png_bytes(truth)
        q01 = p01 if align is None else to_unit(align(particles, image))
        record.update(image_metrics(q01, truth[None]))
        record.update(uncertainty_metrics(q01, truth, unobserved))
        if calibration is not None:
            from dwgf.calibration import interval_metrics, quantize

            if align is not None:  # the aligned particles' own scales (the same as the files' where align moves nothing)
                scale = calibration.scale_map(quantize(q01), unobserved) if hasattr(calibration, "scale_map") else float(calibration)
            record.update(interval_metrics(quantize(q01), truth, scale, unobserved))
        tiles.append(truth)
        labels.append("truth")
    record["seconds"] = float(seconds)
    files["summary.png"] = image_bytes(summary_picture(tiles, labels))
    files["metrics.json"] = json.dumps(record, ensure_ascii=False).encode()
    return files, record


def contact_sheet(rows: Sequence[tuple[str, Image.Image, Optional[float]]], margin: int = 90) -> Image.Image:
    """Item summaries stacked one per row, each with its name (and particle-mean PSNR) on the left."""
    from PIL import ImageDraw

    width = margin + max(pic.width for _, pic, _ in rows)
    sheet = Image.new("RGB", (width, sum(pic.height + 4 for _, pic, _ in rows)), "white")
    draw = ImageDraw.Draw(sheet)
    y = 0
    for name, pic, psnr in rows:
        sheet.paste(pic, (margin, y))
        lines = wrap_name(name, 14)[:3]
        if psnr is not None and psnr == psnr:
            lines.append(f"mean {float(psnr):.1f} dB")
        top = y + pic.height // 2 - 6 * len(lines)
        for i, line in enumerate(lines):
            draw.text((2, top + 12 * i), line, fill="black")
        y += pic.height + 4
    return sheet


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
