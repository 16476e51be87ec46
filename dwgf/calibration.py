"""Calibrated per-pixel intervals for any method: split conformal risk control on images with ground truth.

The interval of a pixel is the particles' mean plus or minus ``scale`` times their standard deviation plus one gray
level (``DELTA``), clipped to the image range:

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

**Modes** (:func:`calibrate`; ``dwgf calibrate --region unobserved``, ``--strata mean|std``, ``--per-image DELTA``).
The pooled guarantee is carried by the pixels that were never in doubt (in box inpainting most pixels are measured).
``--region unobserved`` chooses a scale on the pixels the measurement is silent about alone
(:meth:`~dwgf.operators.ForwardOperator.unobserved`; group-conditional split conformal: the same guarantee, for the
share of an image's *unobserved* pixels; the observed ones get their own scale). ``--strata`` gives each stratum of
the region's pixels, binned by the particles' mean or std (known at prediction time), its own scale: the guarantee
holds per stratum, for images with pixels in it; a stratum that too few calibration images reach gets the whole
range. ``--per-image DELTA``: with probability at least ``1 - DELTA`` a new image has at least ``level`` of its
region's pixels covered (split conformal on each image's required scale, :func:`required_scale`, the marginal bound
``P(r_new <= r_(k)) >= k / (n + 1)`` for ``k = ceil((n + 1)(1 - DELTA))``; not conditional on the calibration set).
**What none of them gives**: coverage under any change of the images, the operator, its noise or the method's
settings; a guarantee about pixels chosen by their truth (e.g. the digit's strokes).

Particles are read as the 8-bit images dwgf writes, at calibration and at prediction alike, so the two
compute the same scores; the bounds written (``lower.png``, ``upper.png``) are rounded inwards to 8-bit levels
(:func:`interval_levels`), so that a truth on those levels is inside them exactly when its score is at most the scale.

**How many images.** The scale meets the miss rate ``((n + 1) (1 - level) - 1) / n``, below ``1 - level`` for few
images, so few images give wide intervals (at the fewest, the largest score: an interval that holds every pixel of
every calibration image). ``dwgf calibrate`` compares its scale with the one many images like its own would give
(:func:`width_for_images`: the intervals' mean width on a sample of each image's pixels at both scales) and warns in one
line when its intervals are more than 10% wider, saying how many images would bring them within 10%. Measured on
MNIST box inpainting (``benchmarks/results/calibration_size_box_inpaint.md``): 9 images (the fewest at level 0.9) give
intervals 23x as wide as many images do, 40 images 1.10x, 50 images 1.09x.

``dwgf calibrate`` itself (:func:`command`) runs ``dwgf predict`` on the calibration images and writes
``calibration.json``; :func:`check_inputs` checks its images before the run.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
import sys
from typing import Any, Callable, Optional, Sequence

import torch

from dwgf.errors import DWGFError, argument_error

DELTA = 1 / 255  # added to the particles' std in the interval's half-width: one gray level
FORMAT = "dwgf-calibration/2"
FORMAT_1 = "dwgf-calibration/1"  # one pooled scale: read as mode pooled, region all


def quantize(images01: torch.Tensor) -> torch.Tensor:
    """``[0, 1]`` images as their 8-bit PNGs hold them."""
    return (images01.clamp(0, 1) * 255).round() / 255


def scores(particles01: torch.Tensor, truth01: torch.Tensor) -> torch.Tensor:
    """Each pixel's (and channel's) normalised error ``|x - m| / (s + DELTA)``, flattened; particles ``N x C x H x W``."""
    p, x = particles01.double(), truth01.double()
    mean = p.mean(0)
    std = p.std(0, unbiased=False) if p.shape[0] > 1 else torch.zeros_like(mean)
    return ((x - mean).abs() / (std + DELTA)).flatten()


def _mean_std(particles01: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    p = particles01.double()
    mean = p.mean(0)
    return mean, (p.std(0, unbiased=False) if p.shape[0] > 1 else torch.zeros_like(mean))


def interval(particles01: torch.Tensor, scale: float | torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(lower, upper)``, each ``C x H x W`` in ``[0, 1]``: the calibrated interval of every pixel, unrounded. ``scale``:
    one number, or one per pixel (:meth:`Calibration.scale_map`; ``inf``: the whole range)."""
    mean, std = _mean_std(particles01)
    half = torch.as_tensor(scale, dtype=torch.float64, device=mean.device) * (std + DELTA)
    return (mean - half).clamp(0, 1).float(), (mean + half).clamp(0, 1).float()


def interval_levels(particles01: torch.Tensor, scale: float | torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The interval as ``lower.png`` and ``upper.png`` hold it: its bounds rounded *inwards* to 8-bit levels (``lower``
    up, ``upper`` down; float64 multiples of 1/255). A truth on the 8-bit levels (``ground_truth.png``) lies between
    these bounds exactly when it lies in the unrounded interval, i.e. when its score is at most the scale: the coverage
    read from the files is the coverage the calibration speaks of. An interval holding no 8-bit level has
    ``lower > upper`` (it holds no truth)."""
    return _bounds(*_mean_std(particles01), scale)


def _bounds(mean: torch.Tensor, std: torch.Tensor, scale: float | torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`interval_levels` from the particles' mean and std."""
    half = torch.as_tensor(scale, dtype=torch.float64, device=mean.device) * (std.double() + DELTA)
    lower = torch.ceil(((mean.double() - half).clamp(0, 1) * 255) - 1e-9) / 255
    upper = torch.floor(((mean.double() + half).clamp(0, 1) * 255) + 1e-9) / 255
    return lower, upper


def interval_metrics(particles01: torch.Tensor, truth01: torch.Tensor, scale: float | torch.Tensor,
                     unobserved: Optional[torch.Tensor] = None) -> dict[str, float]:
    """``calibrated_width`` (the interval's mean width, in ``[0, 1]`` units, 0 where it holds no 8-bit level) and
    ``calibrated_coverage`` (the share of pixels, and channels, whose truth lies inside), and the same two on the
    pixels the measurement is silent about (``unobserved``, ``1 x H x W`` 0/1; ``None``: every pixel):
    ``calibrated_width_unobserved``, ``calibrated_coverage_unobserved`` (``None`` when there is no such pixel).
    Computed from the 8-bit values the files hold (:func:`quantize`, :func:`interval_levels`), so that
    ``lower.png``, ``upper.png`` and ``ground_truth.png`` give the same figures."""
    lo, hi = interval_levels(particles01, scale)
    x = quantize(truth01.double())
    inside = ((x >= lo) & (x <= hi)).double()
    width = (hi - lo).clamp_min(0)
    record = {"calibrated_width": float(width.mean()), "calibrated_coverage": float(inside.mean())}
    region = _region(unobserved, inside)
    count = float(region.sum())
    record["calibrated_width_unobserved"] = float((width * region).sum() / count) if count else None
    record["calibrated_coverage_unobserved"] = float((inside * region).sum() / count) if count else None
    return record


def _region(unobserved: Optional[torch.Tensor], like: torch.Tensor) -> torch.Tensor:
    """The unobserved pixels as 0/1 float64 of ``like``'s shape (``C x H x W``); ``None``: every pixel."""
    if unobserved is None:
        return torch.ones_like(like, dtype=torch.float64)
    return (unobserved.to(like.device).double() > 0.5).double().expand_as(like)


def images_needed(level: float) -> int:
    """The fewest calibration images for which a finite scale meets the level: ``(n + 1) (1 - level) >= 1``."""
    return max(1, math.ceil(1 / (1 - float(level)) - 1 - 1e-9))


def conformal_scale(per_image_scores: Sequence[torch.Tensor], level: float) -> float:
    """The smallest ``scale`` with ``n / (n + 1) R(scale) + 1 / (n + 1) <= 1 - level``, ``R`` the miss rate averaged over
    the ``n`` images (a pixel misses when its score exceeds ``scale``)."""
    n = len(per_image_scores)
    if n < images_needed(level):
        raise DWGFError(f"calibration at level {level} needs at least {images_needed(level)} images with ground truth, got {n}")
    return _Pooled(per_image_scores).scale(target_miss_rate(n, level))


def target_miss_rate(n: int, level: float) -> float:
    """The miss rate ``R`` that ``n`` calibration images must reach: ``((n + 1) (1 - level) - 1) / n``, which grows to
    ``1 - level`` as ``n`` grows (so the scale, and the intervals' width, shrink to what many images give)."""
    return ((n + 1) * (1 - float(level)) - 1) / n


class _Pooled:
    """The images' scores pooled, each image weighing the same: the scale at which a given miss rate is reached."""

    def __init__(self, per_image_scores: Sequence[torch.Tensor]):
        n = len(per_image_scores)
        values = torch.cat([s.double() for s in per_image_scores])
        weights = torch.cat([torch.full((len(s),), 1.0 / (n * len(s)), dtype=torch.float64, device=s.device) for s in per_image_scores])
        order = torch.argsort(values, descending=True)
        self.values, weights = values[order], weights[order]
        # the miss rate at scale values[k] is the weight of the scores strictly above it
        above = torch.cumsum(weights, 0) - weights
        distinct = torch.ones_like(self.values, dtype=torch.bool)
        distinct[1:] = self.values[1:] != self.values[:-1]
        self.above = torch.where(distinct, above, torch.zeros_like(above)).cummax(0).values  # ties: the weight above the tie's first

    def scale(self, target: float) -> float:
        ok = self.above <= target + 1e-12
        k = int(ok.nonzero().max()) if bool(ok.any()) else 0
        return float(self.values[k])


def width_sample(particles01: torch.Tensor, pixels: int = 4096) -> torch.Tensor:
    """The particles' mean and std (``2 x P``) at up to ``pixels`` evenly spaced pixels of one image: enough to measure the
    intervals' mean width at any scale (:func:`mean_width`) without keeping every pixel of every image."""
    p = particles01.double()
    mean = p.mean(0).flatten()
    std = (p.std(0, unbiased=False) if p.shape[0] > 1 else torch.zeros_like(p[0])).flatten()
    step = max(1, mean.numel() // pixels)
    return torch.stack([mean[::step], std[::step]])


def mean_width(samples: Sequence[torch.Tensor], scale: float) -> float:
    """The calibrated intervals' mean width at ``scale`` (clipped to ``[0, 1]``), averaged over images (:func:`width_sample`'s)."""
    total = 0.0
    for sample in samples:
        mean, half = sample[0], scale * (sample[1] + DELTA)
        total += float(((mean + half).clamp(0, 1) - (mean - half).clamp(0, 1)).mean())
    return total / len(samples)


def width_for_images(per_image_scores: Sequence[torch.Tensor], level: float, within: float = 0.1,
                     samples: Sequence[torch.Tensor] | None = None) -> tuple[float, int]:
    """How much the number of calibration images widens the intervals, judged on these images' own scores.

    Returns ``(ratio, needed)``: ``ratio`` is the intervals' mean width at the scale these ``n`` images give over their
    width at the scale that many images like them would give (the pooled quantile at miss rate ``1 - level``), and
    ``needed`` the fewest images whose width is within ``within`` of that (``ratio <= 1 + within``), the images' scores
    standing for the distribution. The width is measured on ``samples`` (:func:`width_sample`, one per image); without
    them the scales are compared instead (the width grows with the scale, less where an interval is clipped).
    """
    pooled = _Pooled(per_image_scores)
    large = pooled.scale(1 - float(level))
    n = len(per_image_scores)
    measure = (lambda s: mean_width(samples, s)) if samples is not None else (lambda s: s)
    reference = measure(large)

    def ratio(m: int) -> float:
        value = measure(pooled.scale(target_miss_rate(m, level)))
        return value / reference if reference > 0 else (1.0 if value == 0 else math.inf)

    low, high = images_needed(level), images_needed(level)
    while ratio(high) > 1 + within and high < 10**7:
        low, high = high, high * 2
    while low < high:  # the scale falls as the number of images grows: the first within ``within``
        mid = (low + high) // 2
        if ratio(mid) <= 1 + within:
            high = mid
        else:
            low = mid + 1
    return ratio(n), high


# -- modes: which pixels a scale speaks for ------------------------------------------------------------
MODES = ("pooled", "strata", "per-image")
REGIONS = ("all", "unobserved")
STRATA = ("mean", "std")  # what --strata bins pixels by: the particles' mean or std, known at prediction time
BINS = 4  # --bins: strata per group (quantiles of the stratifying value; fewer where quantiles coincide)


@dataclass
class ImageScores:
    """One calibration image, per pixel and channel, flattened (``P`` entries): the particles' mean and std (as their
    PNGs hold them), the truth (``ground_truth.png``'s), whether the measurement is silent there (``unobserved``, from
    the item's ``unobserved.png``; every pixel without one) and the score (:func:`scores`)."""

    mean: torch.Tensor
    std: torch.Tensor
    truth: torch.Tensor
    unobserved: torch.Tensor  # bool
    own: Optional[torch.Tensor] = None  # the particles' own central intervals at RELIABILITY_LEVELS: own_intervals()

    @classmethod
    def of(cls, particles01: torch.Tensor, truth01: torch.Tensor, unobserved: Optional[torch.Tensor] = None) -> "ImageScores":
        mean, std = _mean_std(particles01)
        region = _region(unobserved, mean) > 0.5
        return cls(mean.flatten(), std.flatten(), truth01.double().flatten(), region.flatten(),
                   own_intervals(particles01, truth01, region))

    @property
    def score(self) -> torch.Tensor:
        return (self.truth - self.mean).abs() / (self.std + DELTA)


RELIABILITY_LEVELS = (0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95, 0.99)  # reliability.png's nominal levels


def own_intervals(particles01: torch.Tensor, truth01: torch.Tensor, unobserved: torch.Tensor,
                  levels: Sequence[float] = RELIABILITY_LEVELS) -> torch.Tensor:
    """The particles' own central interval at each level (their ``(1 - level) / 2`` and ``(1 + level) / 2`` quantiles,
    as ``coverage90`` takes them), uncalibrated: ``len(levels) x 4`` (coverage of every pixel, of the unobserved ones,
    mean width of every pixel, of the unobserved ones; NaN without unobserved pixels)."""
    p, x = particles01.double(), truth01.double()
    region = unobserved.double().expand_as(x)
    count = float(region.sum())
    rows = []
    for level in levels:
        tail = (1 - level) / 2
        lo, hi = torch.quantile(p, torch.tensor([tail, 1 - tail], dtype=torch.float64, device=p.device), dim=0)
        inside, width = ((x >= lo) & (x <= hi)).double(), hi - lo
        nan = float("nan")
        rows.append([float(inside.mean()), float((inside * region).sum()) / count if count else nan, float(width.mean()),
                     float((width * region).sum()) / count if count else nan])
    return torch.tensor(rows, dtype=torch.float64)  # on the CPU: a small table of figures, read as numbers


def _groups(region: str) -> tuple[str, ...]:
    """The pixel groups that get their own scales: ``all``, or the unobserved pixels and the observed ones."""
    return ("all",) if region == "all" else ("unobserved", "observed")


def _in_group(group: str, unobserved: torch.Tensor) -> torch.Tensor:
    return torch.ones_like(unobserved) if group == "all" else unobserved if group == "unobserved" else ~unobserved


def _stratum_value(strata: str, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    return mean if strata == "mean" else std


def strata_edges(values: torch.Tensor, bins: int) -> list[float]:
    """Inner edges of ``bins`` strata: the quantiles ``k / bins`` of ``values``, distinct (bin ``j`` holds the values in
    ``(edge[j-1], edge[j]]``; the last bin everything above the last edge)."""
    if values.numel() == 0 or bins < 2:
        return []
    qs = torch.quantile(values.double()[:: max(1, values.numel() // 2_000_000)],
                        torch.arange(1, bins, dtype=torch.float64, device=values.device) / bins).tolist()
    return sorted(set(qs))


def required_scale(score: torch.Tensor, level: float) -> float:
    """The smallest scale that puts at least ``level`` of these scores inside their intervals (an image's own)."""
    if score.numel() == 0:
        return 0.0
    k = max(1, math.ceil(float(level) * score.numel() - 1e-9))
    return float(torch.sort(score.double()).values[k - 1])


def per_image_rank(n: int, delta: float) -> int:
    """Split conformal's rank for the per-image guarantee: the ``ceil((n + 1)(1 - delta))``-th smallest required scale."""
    return math.ceil((n + 1) * (1 - float(delta)) - 1e-9)


def images_needed_per_image(delta: float) -> int:
    """The fewest calibration images for ``--per-image DELTA``: ``ceil((n + 1)(1 - delta)) <= n``."""
    n = 1
    while per_image_rank(n, delta) > n:
        n += 1
    return n


def calibrate(images: Sequence[ImageScores], level: float, mode: str = "pooled", region: str = "all", delta: Optional[float] = None,
              strata: Optional[str] = None, bins: int = BINS) -> dict[str, Any]:
    """The scales of one mode, from calibration images (:class:`ImageScores`). Returns ``scales`` (``{group: [scale per
    stratum]}``; ``None``: the whole range, for a group or stratum too few images have pixels in), ``edges`` (``{group:
    inner edges}`` with strata) and ``miss_rate`` (the images' average miss rate on the guarded pixels at these scales).

    * ``pooled``: conformal risk control of the miss rate per group (:func:`conformal_scale`): the expected share of
      a new image's pixels *of the group* inside their intervals is at least ``level``.
    * ``strata``: the same in each stratum of the guarded group (pixels binned by the particles' ``mean`` or ``std``,
      which are known at prediction time; images with no pixel in a stratum do not take part in it): for a new image
      with pixels in a stratum, the expected share of them covered is at least ``level``.
    * ``per-image``: split conformal on each image's required scale (:func:`required_scale`, on the group's pixels):
      with probability at least ``1 - delta`` a new image has at least ``level`` of the group's pixels covered.

    ``region``: ``all`` (one group), or ``unobserved`` (the pixels the measurement is silent about guarded alone; the
    observed pixels get their own scale by the same rule, unstratified).
    """
    groups = _groups(region)
    scales: dict[str, list[Optional[float]]] = {}
    edges: dict[str, list[float]] = {}
    for group in groups:
        members = [img for img in images if bool(_in_group(group, img.unobserved).any())]
        guarded = group != "observed"
        cells: list[list[torch.Tensor]]
        if mode == "strata" and guarded:
            value = [_stratum_value(strata or "mean", img.mean, img.std)[_in_group(group, img.unobserved)] for img in members]
            edges[group] = strata_edges(torch.cat(value) if value else torch.zeros(0, dtype=torch.float64), bins)  # CPU when empty
            cuts = torch.tensor(edges[group], dtype=torch.float64, device=value[0].device if value else None)
            which = [torch.bucketize(v.double(), cuts) for v in value]
            chosen = [img.score[_in_group(group, img.unobserved)] for img in members]
            cells = [[s[w == j] for s, w in zip(chosen, which) if bool((w == j).any())] for j in range(len(edges[group]) + 1)]
        else:
            cells = [[img.score[_in_group(group, img.unobserved)] for img in members]]
        found: list[Optional[float]] = []
        for cell in cells:
            if mode == "per-image":
                n = len(cell)
                rank = per_image_rank(n, delta if delta is not None else 0.1)
                found.append(sorted(required_scale(s, level) for s in cell)[rank - 1] if n and rank <= n else None)
            else:
                found.append(_Pooled(cell).scale(target_miss_rate(len(cell), level)) if len(cell) >= images_needed(level) else None)
        scales[group] = found
    fields = {"scales": scales, "edges": edges or None, "strata": strata if mode == "strata" else None}
    misses = []
    for img in images:
        guard = _in_group(groups[0], img.unobserved)
        if bool(guard.any()):
            q = pixel_scales(fields, img.mean, img.std, img.unobserved)
            misses.append(float((img.score[guard] > q[guard]).double().mean()))
    fields["miss_rate"] = sum(misses) / len(misses) if misses else 0.0
    return fields


def pixel_scales(fields: dict[str, Any], mean: torch.Tensor, std: torch.Tensor, unobserved: torch.Tensor,
                 strata: Optional[str] = None) -> torch.Tensor:
    """Each pixel's scale (float64, ``mean``'s shape; ``inf``: the whole range) under ``fields`` (``scales`` and
    ``edges``: :func:`calibrate`'s, or a :class:`Calibration`'s); ``unobserved``: bool, ``mean``'s shape."""
    strata = strata or fields.get("strata") or "mean"
    out = torch.full_like(mean, math.inf, dtype=torch.float64)
    edges = fields.get("edges") or {}
    for group, qs in fields["scales"].items():
        sel = _in_group(group, unobserved)
        table = torch.tensor([math.inf if q is None else float(q) for q in qs], dtype=torch.float64, device=mean.device)
        if group in edges:
            cuts = torch.tensor(edges[group], dtype=torch.float64, device=mean.device)
            q = table[torch.bucketize(_stratum_value(strata, mean, std).double(), cuts)]
        else:
            q = table[0].expand_as(out)
        out = torch.where(sel, q, out)
    return out


@dataclass(frozen=True)
class Calibration:
    """What ``dwgf calibrate`` writes to ``calibration.json`` and ``--model.calibration`` reads.

    ``mode`` (``pooled``, ``strata``, ``per-image``), ``region`` (``all``, ``unobserved``), ``delta`` (``per-image``'s),
    ``strata`` (``mean`` or ``std``), ``edges`` and ``scales``: :func:`calibrate`'s. ``scale``: the one scale of a
    ``pooled`` calibration of every pixel (the file's only scale before modes existed), else ``None``."""

    method: str
    task: str
    level: float
    scale: Optional[float]
    images: int
    config: str  # the configuration's fingerprint (:func:`dwgf.outputs.fingerprint`), which a prediction must match
    miss_rate: float  # the calibration images' average miss rate on the guarded pixels at these scales
    format: str = FORMAT
    mode: str = "pooled"
    region: str = "all"
    delta: Optional[float] = None
    strata: Optional[str] = None
    edges: Optional[dict[str, list[float]]] = None
    scales: Optional[dict[str, list[Optional[float]]]] = None

    @property
    def fields(self) -> dict[str, Any]:
        scales = self.scales if self.scales is not None else {"all": [self.scale]}
        return {"scales": scales, "edges": self.edges, "strata": self.strata}

    def scale_map(self, particles01: torch.Tensor, unobserved: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Each pixel's scale (``C x H x W``, float64; ``inf`` where the file gives the whole range) for particles
        ``N x C x H x W`` in ``[0, 1]`` (as their PNGs hold them) and the item's unobserved pixels (``1 x H x W``)."""
        mean, std = _mean_std(particles01)
        return pixel_scales(self.fields, mean, std, _region(unobserved, mean) > 0.5)

    def describe(self) -> str:
        """The mode in a few words, for messages."""
        words = {"pooled": "pooled", "strata": f"strata of the particles' {self.strata}",
                 "per-image": f"per image (delta {self.delta:g})" if self.delta is not None else "per image"}[self.mode]
        return f"{words}, {'every pixel' if self.region == 'all' else 'the unobserved pixels guarded alone'}"

    def save(self, path: Path) -> bytes:
        return json.dumps(asdict(self), indent=1, sort_keys=True).encode() + b"\n"

    @classmethod
    def load(cls, path: str | Path, owner: object = "InverseSolver") -> "Calibration":
        """Reads a ``calibration.json`` (or the folder ``dwgf calibrate`` wrote it to; a file of the first format, one
        pooled scale, too). Errors are one line about ``owner``'s ``calibration`` argument
        (:func:`~dwgf.errors.argument_error`: the command names ``--model.calibration``)."""
        given = str(path)

        def error(detail: str) -> DWGFError:
            return argument_error(owner, "calibration", f" {given!r}: {detail}")

        path = Path(path).expanduser()
        if path.is_dir():  # the --output folder of dwgf calibrate: its calibration.json
            if not (path / "calibration.json").is_file():
                raise error("a folder without calibration.json: give the file dwgf calibrate wrote")
            path = path / "calibration.json"
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise error("no such file (make one with dwgf calibrate)") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            raise error(f"cannot read it as JSON ({err})") from None
        if not isinstance(data, dict) or data.get("format") not in (FORMAT, FORMAT_1):
            raise error(f"not a dwgf calibration file (format {FORMAT!r})")
        required = ("method", "task", "level", "scale", "images", "config", "miss_rate")
        try:
            found = cls(**{k: data[k] for k in required}, **{k: data[k] for k in cls.__dataclass_fields__ if k not in required and k in data})
        except (KeyError, TypeError) as err:
            raise error(f"a field is missing or wrong ({err})") from None
        if found.mode not in MODES or found.region not in REGIONS or (found.scales is None and found.scale is None):
            raise error(f"a field is wrong (mode {found.mode!r}, region {found.region!r})")
        return found


# -- dwgf calibrate ----------------------------------------------------------------------------------
WIDTH_WITHIN = 0.1  # dwgf calibrate warns when its images make the intervals more than this much wider than many would
LAST_RUN: dict[str, Any] = {}  # the output folder of the last dwgf predict run in this process (dwgf.cli.main sets it)

CALIBRATE_USAGE = ("dwgf calibrate --config CONFIG --data.images CALIBRATION_DIR --output DIR [--level 0.9] [--region unobserved] "
                   "[--strata mean | --per-image DELTA]")
CALIBRATE_HELP = f"""usage: {CALIBRATE_USAGE}

Runs the configuration as dwgf predict does, on images with ground truth (into --output), then writes
<output>/calibration.json: the scale q of the interval mean +- q (std + 1/255), chosen so that the intervals
meet the level on these images with split conformal's correction, and <output>/reliability.png (coverage
against the level, 0.5 to 0.99, before and after calibration, and the intervals' width). Use it with
  dwgf predict --config CONFIG ... --model.calibration DIR/calibration.json
which writes lower.png and upper.png per item and calibrated_width, calibrated_coverage (and the same two on
the unobserved pixels) in metrics.csv; a file made for another configuration is refused.

options:
  --level LEVEL       the coverage to reach, in (0, 1) (default 0.9); level 0.9 needs at least 9 images, and a
                      warning says when the images are too few for intervals within 10% of the narrowest
  --region REGION     all (default): one scale for every pixel; the guarantee is about the share of an image's
                      pixels covered, on average over images. unobserved: the pixels the measurement is silent
                      about (inpainting's missing pixels; every pixel for blur, downsampling, nonlinear
                      operators) get a scale of their own, so the guarantee is about them; the observed pixels
                      keep their own scale
  --strata mean|std   a scale per stratum of the region's pixels, binned by the particles' mean (or std), which is
                      known at prediction time: e.g. bright predicted pixels (the strokes of a digit) get their own
  --bins K            strata (default 4: quantiles of the value on the calibration pixels)
  --per-image DELTA   a guarantee per image: with probability at least 1 - DELTA a new image has at least LEVEL of
                      its (region's) pixels covered; needs at least (1 - DELTA) / DELTA images (9 for 0.1)
  every option of dwgf predict (dwgf predict --help), except --model.calibration and --data.measurements

Images to calibrate on: your own with ground truth, or for the shipped MNIST prior --data.images
dwgf:mnist-calibration (100 held-out digits that ship with dwgf, none of them a report digit).

What each mode guarantees and what it does not: docs/running.md, "Calibrated intervals"."""



CALIBRATING: dict[str, Any] = {}  # set while dwgf calibrate runs its predict: its options (_options), for the checks before the run


def check_inputs(init_args: Any, options: dict[str, Any]) -> None:
    """dwgf calibrate's inputs, before anything is written or run: images with ground truth, enough of them for the level
    (and mode: :func:`images_required`)."""
    from dwgf.data.images import IMAGE_SUFFIXES, list_images

    if init_args is None or not init_args.get("images") or init_args.get("measurements"):
        raise DWGFError("dwgf calibrate needs images with ground truth: give --data.images DIR (not --data.measurements)")
    try:
        count = sum(path.suffix.lower() in IMAGE_SUFFIXES for path in list_images(init_args["images"], "images"))
    except DWGFError:
        return  # a missing or empty folder: reported by predict's own input check, in its words
    need = images_required(options)
    if count < need:
        raise DWGFError(f"--data.images {str(init_args['images'])!r}: {_mode_words(options)} at level {options['level']:g} needs at "
                        f"least {need} images with ground truth, the folder has {count}")


def _take_option(argv: list[str], name: str) -> Optional[str]:
    """Takes ``--name X`` or ``--name=X`` out of ``argv`` (what predict parses); exit 2 when given twice or without a value."""
    given = []
    for i in reversed(range(len(argv))):
        if argv[i] == name or argv[i].startswith(name + "="):
            value = argv[i].partition("=")[2] if "=" in argv[i] else (argv[i + 1] if i + 1 < len(argv) else "")
            del argv[i : i + (1 if "=" in argv[i] else 2)]
            given.append(value)
    if len(given) > 1:
        _usage_error(f"{name} is given more than once; give it once")
    return given[0] if given else None


def _usage_error(message: str) -> None:
    print(f"dwgf: error: {message}", file=sys.stderr)
    raise SystemExit(2)


def _options(argv: list[str]) -> dict[str, Any]:
    """dwgf calibrate's own options, taken out of ``argv``: level, mode, region, delta, strata, bins."""
    text = _take_option(argv, "--level")
    try:
        level = float(text) if text is not None else 0.9
    except ValueError:
        _usage_error(f"--level needs a number in (0, 1), e.g. --level 0.9; got {text!r}")
    if not 0 < level < 1:
        _usage_error(f"--level must be in (0, 1), got {level}")
    region = _take_option(argv, "--region") or "all"
    if region not in REGIONS:
        _usage_error(f"--region must be one of {', '.join(REGIONS)}, got {region!r}")
    strata, delta_text, bins_text = _take_option(argv, "--strata"), _take_option(argv, "--per-image"), _take_option(argv, "--bins")
    if strata is not None and strata not in STRATA:
        _usage_error(f"--strata must be one of {', '.join(STRATA)}, got {strata!r}")
    if strata is not None and delta_text is not None:
        _usage_error("--strata and --per-image are two modes: give one of them")
    delta = None
    if delta_text is not None:
        try:
            delta = float(delta_text)
        except ValueError:
            _usage_error(f"--per-image needs a number in (0, 1), e.g. --per-image 0.1; got {delta_text!r}")
        if not 0 < delta < 1:
            _usage_error(f"--per-image must be in (0, 1), got {delta}")
    bins = BINS
    if bins_text is not None:
        if strata is None:
            _usage_error("--bins is the number of strata: give it with --strata mean (or std)")
        try:
            bins = int(bins_text)
        except ValueError:
            _usage_error(f"--bins needs a whole number >= 2, got {bins_text!r}")
        if bins < 2:
            _usage_error(f"--bins must be >= 2, got {bins}")
    mode = "strata" if strata else "per-image" if delta is not None else "pooled"
    return {"level": level, "mode": mode, "region": region, "delta": delta, "strata": strata, "bins": bins}


def images_required(options: dict[str, Any]) -> int:
    """The fewest calibration images for these options (:func:`images_needed`, or the per-image rank's)."""
    if options.get("mode") == "per-image":
        return images_needed_per_image(options["delta"])
    return images_needed(options["level"])


def command(argv: list[str], predict: Callable[[list[str]], None]) -> None:  # noqa: C901 - one command, read top to bottom
    """``dwgf calibrate --config CONFIG --data.images DIR --output DIR [--level 0.9] [--region unobserved] [--strata mean |
    --per-image DELTA]``: the predict run on images with ground truth, then ``<output>/calibration.json``
    (:mod:`dwgf.calibration`) for ``--model.calibration`` and ``<output>/reliability.png``. ``predict`` runs ``dwgf predict``
    (:func:`dwgf.cli.main`, which hands ``dwgf calibrate`` here)."""
    import yaml

    from dwgf.outputs import OutputFolder, OutputLock, fingerprint

    if any(a in ("-h", "--help") for a in argv):
        print(CALIBRATE_HELP)
        raise SystemExit(0)
    argv = list(argv)
    options = _options(argv)
    level = options["level"]
    if any(a.startswith("--model.calibration") for a in argv):
        _usage_error("--model.calibration is for dwgf predict; dwgf calibrate makes the file")
    CALIBRATING.update(options)
    try:
        predict(["predict", *argv])
    finally:
        CALIBRATING.clear()
    output = LAST_RUN.get("output")
    try:
        if output is None:
            raise DWGFError("dwgf calibrate: the run wrote no output folder")
        config = yaml.safe_load((output / "config.yaml").read_text())
        images = read_images(output)
        if len(images) < images_required(options):
            raise DWGFError(f"{_mode_words(options)} at level {level:g} needs at least {images_required(options)} images with ground "
                            f"truth, the run has {len(images)}")
        fields = calibrate(images, level, options["mode"], options["region"], options["delta"], options["strata"], options["bins"])
        guarded = _groups(options["region"])[0]
        if fields["scales"][guarded][0] is None and options["mode"] != "strata":
            raise DWGFError(f"{_mode_words(options)}: no calibration image has a pixel in the region {guarded!r}")
        ratio = needed = None
        if options["mode"] == "pooled":  # how much the number of images widens the guarded group's intervals
            chosen = [img for img in images if bool(_in_group(guarded, img.unobserved).any())]
            per_image = [img.score[_in_group(guarded, img.unobserved)] for img in chosen]
            samples = [_group_sample(img, guarded) for img in chosen]
            ratio, needed = width_for_images(per_image, level, samples=samples)
        model, data = config.get("model") or {}, config.get("data") or {}
        method = str(model.get("class_path", ""))
        if (model.get("init_args") or {}).get("method"):
            method += f" ({model['init_args']['method']})"
        operator = ((data.get("init_args") or {}).get("operator") or {})
        task = f"{operator.get('class_path', '')} {json.dumps(operator.get('init_args') or {}, sort_keys=True)}"
        single = options["mode"] == "pooled" and options["region"] == "all"
        result = Calibration(method=method, task=task, level=level, scale=fields["scales"]["all"][0] if single else None,
                             images=len(images), config=fingerprint(config), miss_rate=fields["miss_rate"], mode=options["mode"],
                             region=options["region"], delta=options["delta"], strata=options["strata"], edges=fields["edges"],
                             scales=fields["scales"])
        from dwgf.reliability import reliability_png

        picture = reliability_png(reliability_table(images, options),
                                  f"{result.method} on {len(images)} calibration images; after: {result.describe()}, two-fold cross-fit")
        lock = OutputLock(output)
        lock.acquire()
        try:
            folder = OutputFolder(output)
            folder.write_run_file("calibration.json", result.save(output / "calibration.json"))
            folder.write_run_file("reliability.png", picture)
        finally:
            lock.release()
    except DWGFError as err:
        print(f"dwgf: error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    if ratio is not None and ratio > 1 + WIDTH_WITHIN:
        print(f"dwgf: warning: {len(images)} calibration images at level {level:g} make the intervals {ratio:.2g}x as wide as many "
              f"such images would; about {needed} give a width within {WIDTH_WITHIN:.0%} of that (judged on these images)",
              file=sys.stderr)
    shown = ", ".join(f"{g} {' '.join('whole range' if q is None else f'{q:.4g}' for q in qs)}" for g, qs in result.scales.items())
    covered = 1 - result.miss_rate
    extra = ""
    if options["mode"] == "per-image":
        share = _share_covered(images, result, guarded)
        extra = f"; {share:.0%} of these images have at least {level:g} of them covered"
    print(f"dwgf: calibrated at level {level:g} on {len(images)} images ({result.describe()}): interval = mean +- q (std + 1/255), "
          f"q: {shown}; coverage of the {'pixels' if guarded == 'all' else 'unobserved pixels'} on them {covered:.4f}{extra}; "
          f"{output / 'calibration.json'} (use it with --model.calibration), {output / 'reliability.png'}", file=sys.stderr)


def _mode_words(options: dict[str, Any]) -> str:
    if options["mode"] == "per-image":
        return f"--per-image {options['delta']:g}"
    return "calibration by strata" if options["mode"] == "strata" else "calibration"


def _group_sample(img: ImageScores, group: str, pixels: int = 4096) -> torch.Tensor:
    """:func:`width_sample` of one group's pixels."""
    sel = _in_group(group, img.unobserved)
    mean, std = img.mean[sel], img.std[sel]
    step = max(1, mean.numel() // pixels)
    return torch.stack([mean[::step], std[::step]])


def _share_covered(images: Sequence[ImageScores], calibration: Calibration, group: str) -> float:
    """The share of ``images`` with at least ``level`` of the group's pixels inside their intervals."""
    hits = []
    for img in images:
        sel = _in_group(group, img.unobserved)
        if bool(sel.any()):
            q = pixel_scales(calibration.fields, img.mean, img.std, img.unobserved)
            hits.append(float((img.score[sel] <= q[sel]).double().mean()) >= calibration.level - 1e-12)
    return sum(hits) / max(1, len(hits))


def _calibrated(images: Sequence[ImageScores], fields: dict[str, Any]) -> list[float]:
    """Mean over images of (coverage every pixel, unobserved, width every pixel, unobserved) at ``fields``'s scales."""
    sums, counts = [0.0] * 4, [0] * 4
    for img in images:
        q = pixel_scales(fields, img.mean, img.std, img.unobserved)
        inside = (img.score <= q).double()
        lo, hi = _bounds(img.mean, img.std, q)
        width = (hi - lo).clamp_min(0)
        region = _in_group("unobserved", img.unobserved)
        figures = [float(inside.mean()), float(inside[region].mean()) if bool(region.any()) else math.nan, float(width.mean()),
                   float(width[region].mean()) if bool(region.any()) else math.nan]
        for k, v in enumerate(figures):
            if v == v:
                sums[k] += v
                counts[k] += 1
    return [s / c if c else math.nan for s, c in zip(sums, counts)]


def reliability_table(images: Sequence[ImageScores], options: dict[str, Any]) -> list[dict[str, Any]]:
    """``reliability.png``'s figures (:mod:`dwgf.reliability`): per level of :data:`RELIABILITY_LEVELS`, ``coverage`` and
    ``width`` of four curves: before calibration (the particles' own central interval) on every pixel and on the
    unobserved ones, then after (the mode of ``options`` calibrated at that level on the even-numbered images and
    measured on the odd ones, and the other way round, averaged: out of sample); NaN where not measured (a level for
    which half the images are too few)."""
    rows = []
    halves = (images[0::2], images[1::2])
    for i, level in enumerate(RELIABILITY_LEVELS):
        own = [img.own[i] for img in images if img.own is not None]
        before = torch.stack(own).nanmean(0).tolist() if own else [math.nan] * 4
        after = [math.nan] * 4
        need = images_required({**options, "level": level})
        if min(len(h) for h in halves) >= need:
            folds = []
            for train, test in (halves, halves[::-1]):
                fields = calibrate(train, level, options["mode"], options["region"], options.get("delta"), options.get("strata"),
                                   options.get("bins", 4))
                folds.append(_calibrated(test, fields))
            after = [(a * len(halves[1]) + b * len(halves[0])) / len(images) for a, b in zip(*folds)]
        rows.append({"level": level, "coverage": [before[0], before[1], after[0], after[1]], "width": [before[2], before[3], after[2], after[3]]})
    return rows


def read_images(output: Path) -> list[ImageScores]:
    """Each item's :class:`ImageScores` from what ``dwgf predict`` wrote to ``output`` (its particles', ground truth's
    and ``unobserved.png``'s PNGs, the items of ``metrics.csv``)."""
    names = [row.split(",", 1)[0] for row in (output / "metrics.csv").read_text().splitlines()[1:] if row]
    found = []
    for name in names:
        folder = output / name
        if not (folder / "ground_truth.png").is_file():
            raise DWGFError("dwgf calibrate needs images with ground truth: give --data.images (not --data.measurements)")
        particles = torch.stack([_read_unit(p) for p in sorted(folder.glob("particle_*.png"))])
        region = _read_unit(folder / "unobserved.png") if (folder / "unobserved.png").is_file() else None
        found.append(ImageScores.of(particles, _read_unit(folder / "ground_truth.png"), region))
    return found


def read_scores(output: Path) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Each item's scores (:func:`scores`, every pixel) and width sample (:func:`width_sample`) from what ``dwgf predict``
    wrote to ``output``."""
    images = read_images(output)
    return [img.score for img in images], [_group_sample(img, "all") for img in images]


def _read_unit(path: Path) -> torch.Tensor:
    """A PNG dwgf wrote, as ``C x H x W`` in ``[0, 1]``."""
    import numpy as np
    from PIL import Image

    arr = np.asarray(Image.open(path), dtype=np.float64) / 255
    return torch.from_numpy(arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1).copy())


