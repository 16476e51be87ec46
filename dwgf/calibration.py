"""Calibrated per-pixel intervals for any method: split conformal risk control on images with ground truth.

The interval of a pixel is the particles' mean plus or minus ``scale`` times their standard deviation (floored at
one gray level, ``DELTA``), clipped to the image range:

    ``[m - scale (s + DELTA), m + scale (s + DELTA)]``, ``m``, ``s``: the particles' mean and std at that pixel.

``dwgf calibrate`` runs a configuration on ``n`` calibration images with ground truth and chooses the smallest
``scale`` whose empirical miss rate ``R(scale)`` (the share of pixels outside their interval, averaged over the
images) satisfies ``n / (n + 1) R(scale) + 1 / (n + 1) <= 1 - level``: conformal risk control for the miss rate,
a loss in ``[0, 1]`` that falls as ``scale`` grows (Angelopoulos, Bates, Fisch, Lei and Schuster 2022; the
split-conformal recipe of Angelopoulos and Bates' tutorial, applied per image as in image-to-image regression
with distribution-free uncertainty quantification, Angelopoulos et al. 2022).

**The guarantee.** For a new image exchangeable with the calibration images (drawn from the same distribution,
degraded by the same operator, solved by the same configuration and seeds rule), the *expected* share of its
pixels inside their intervals is at least ``level``. **What it does not give**: coverage of every image (one
image may be covered far less), of every pixel or region (e.g. the masked box), or under any change of the
images, the operator, its noise or the method's settings; with few calibration images the guarantee holds
but the intervals are wide (``n`` must be at least ``1 / (1 - level) - 1``).

Particles are read as the 8-bit images dwgf writes, at calibration and at prediction alike, so the two
compute the same scores.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import torch

from dwgf.errors import DWGFError

DELTA = 1 / 255  # the floor of the particles' std in the interval's half-width: one gray level
FORMAT = "dwgf-calibration/1"


def quantize(images01: torch.Tensor) -> torch.Tensor:
    """``[0, 1]`` images as their 8-bit PNGs hold them."""
    return (images01.clamp(0, 1) * 255).round() / 255


def scores(particles01: torch.Tensor, truth01: torch.Tensor) -> torch.Tensor:
    """Each pixel's (and channel's) normalised error ``|x - m| / (s + DELTA)``, flattened; particles ``N x C x H x W``."""
    p, x = particles01.double(), truth01.double()
    mean = p.mean(0)
    std = p.std(0, unbiased=False) if p.shape[0] > 1 else torch.zeros_like(mean)
    return ((x - mean).abs() / (std + DELTA)).flatten()


def interval(particles01: torch.Tensor, scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    """``(lower, upper)``, each ``C x H x W`` in ``[0, 1]``: the calibrated interval of every pixel."""
    p = particles01.double()
    mean = p.mean(0)
    std = p.std(0, unbiased=False) if p.shape[0] > 1 else torch.zeros_like(mean)
    half = scale * (std + DELTA)
    return (mean - half).clamp(0, 1).float(), (mean + half).clamp(0, 1).float()


def interval_metrics(particles01: torch.Tensor, truth01: torch.Tensor, scale: float) -> dict[str, float]:
    """``calibrated_width`` (the interval's mean width, in ``[0, 1]`` units) and ``calibrated_coverage`` (the share of
    pixels whose truth lies inside)."""
    lo, hi = interval(particles01, scale)
    x = truth01.float()
    return {"calibrated_width": float((hi - lo).mean()), "calibrated_coverage": float(((x >= lo) & (x <= hi)).float().mean())}


def images_needed(level: float) -> int:
    """The fewest calibration images for which a finite scale meets the level: ``(n + 1) (1 - level) >= 1``."""
    return max(1, math.ceil(1 / (1 - float(level)) - 1 - 1e-9))


def conformal_scale(per_image_scores: Sequence[torch.Tensor], level: float) -> float:
    """The smallest ``scale`` with ``n / (n + 1) R(scale) + 1 / (n + 1) <= 1 - level``, ``R`` the miss rate averaged over
    the ``n`` images (a pixel misses when its score exceeds ``scale``)."""
    n = len(per_image_scores)
    alpha = 1 - float(level)
    if n < images_needed(level):
        raise DWGFError(f"calibration at level {level} needs at least {images_needed(level)} images with ground truth, got {n}")
    target = ((n + 1) * alpha - 1) / n
    values = torch.cat([s.double() for s in per_image_scores])
    weights = torch.cat([torch.full((len(s),), 1.0 / (n * len(s)), dtype=torch.float64, device=s.device) for s in per_image_scores])
    order = torch.argsort(values, descending=True)
    values, weights = values[order], weights[order]
    # the miss rate at scale values[k] is the weight of the scores strictly above it
    above = torch.cumsum(weights, 0) - weights
    distinct = torch.ones_like(values, dtype=torch.bool)
    distinct[1:] = values[1:] != values[:-1]
    above = torch.where(distinct, above, torch.zeros_like(above)).cummax(0).values  # ties: the weight above the tie's first
    ok = above <= target + 1e-12
    k = int(ok.nonzero().max()) if bool(ok.any()) else 0
    return float(values[k])


@dataclass(frozen=True)
class Calibration:
    """What ``dwgf calibrate`` writes to ``calibration.json`` and ``--model.calibration`` reads."""

    method: str
    task: str
    level: float
    scale: float
    images: int
    config: str  # the configuration's fingerprint (``dwgf.cli.fingerprint``), which a prediction must match
    miss_rate: float  # the calibration images' average miss rate at ``scale``
    format: str = FORMAT

    def save(self, path: Path) -> bytes:
        return json.dumps(asdict(self), indent=1, sort_keys=True).encode() + b"\n"

    @classmethod
    def load(cls, path: str | Path) -> "Calibration":
        path = Path(path).expanduser()
        if path.is_dir():  # the --output folder of dwgf calibrate: its calibration.json
            if not (path / "calibration.json").is_file():
                raise DWGFError(f"calibration {str(path)!r} is a folder without calibration.json: give the file dwgf calibrate wrote")
            path = path / "calibration.json"
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise DWGFError(f"calibration {str(path)!r}: no such file (make one with dwgf calibrate)") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            raise DWGFError(f"calibration {str(path)!r}: cannot read it as JSON ({err})") from None
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise DWGFError(f"calibration {str(path)!r}: not a dwgf calibration file (format {FORMAT!r})")
        try:
            return cls(**{k: data[k] for k in cls.__dataclass_fields__})
        except (KeyError, TypeError) as err:
            raise DWGFError(f"calibration {str(path)!r}: a field is missing or wrong ({err})") from None
