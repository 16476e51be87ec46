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

Particles are read as the 8-bit images dwgf writes, at calibration and at prediction alike, so the two
compute the same scores.

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
from typing import Any, Callable, Sequence

import torch

from dwgf.errors import DWGFError, argument_error

DELTA = 1 / 255  # added to the particles' std in the interval's half-width: one gray level
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


@dataclass(frozen=True)
class Calibration:
    """What ``dwgf calibrate`` writes to ``calibration.json`` and ``--model.calibration`` reads."""

    method: str
    task: str
    level: float
    scale: float
    images: int
    config: str  # the configuration's fingerprint (:func:`dwgf.outputs.fingerprint`), which a prediction must match
    miss_rate: float  # the calibration images' average miss rate at ``scale``
    format: str = FORMAT

    def save(self, path: Path) -> bytes:
        return json.dumps(asdict(self), indent=1, sort_keys=True).encode() + b"\n"

    @classmethod
    def load(cls, path: str | Path, owner: object = "InverseSolver") -> "Calibration":
        """Reads a ``calibration.json`` (or the folder ``dwgf calibrate`` wrote it to). Errors are one line about
        ``owner``'s ``calibration`` argument (:func:`~dwgf.errors.argument_error`: the command names ``--model.calibration``)."""
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
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise error(f"not a dwgf calibration file (format {FORMAT!r})")
        try:
            return cls(**{k: data[k] for k in cls.__dataclass_fields__})
        except (KeyError, TypeError) as err:
            raise error(f"a field is missing or wrong ({err})") from None


# -- dwgf calibrate ----------------------------------------------------------------------------------
WIDTH_WITHIN = 0.1  # dwgf calibrate warns when its images make the intervals more than this much wider than many would
LAST_RUN: dict[str, Any] = {}  # the output folder of the last dwgf predict run in this process (dwgf.cli.main sets it)

CALIBRATE_USAGE = "dwgf calibrate --config CONFIG --data.images CALIBRATION_DIR --output DIR [--level 0.9]"
CALIBRATE_HELP = f"""usage: {CALIBRATE_USAGE}

Runs the configuration as dwgf predict does, on images with ground truth (into --output), then writes
<output>/calibration.json: the scale q of the interval mean +- q (std + 1/255) whose pixel coverage, averaged over
these images, meets the level with split conformal's correction. Use it with
  dwgf predict --config CONFIG ... --model.calibration DIR/calibration.json
which writes lower.png and upper.png per item and calibrated_width, calibrated_coverage in metrics.csv; a file made
for another configuration is refused.

options:
  --level LEVEL   the coverage to reach, in (0, 1) (default 0.9); level 0.9 needs at least 9 images, and a
                  warning says when the images are too few for intervals within 10% of the narrowest
  every option of dwgf predict (dwgf predict --help), except --model.calibration and --data.measurements

Images to calibrate on: your own with ground truth, or for the shipped MNIST prior --data.images
dwgf:mnist-calibration (100 held-out digits that ship with dwgf, none of them a report digit).

What it guarantees and what it does not: docs/running.md, "Calibrated intervals"."""



CALIBRATING: dict[str, float] = {}  # set while dwgf calibrate runs its predict: the level, for the checks before the run


def check_inputs(init_args: Any, level: float) -> None:
    """dwgf calibrate's inputs, before anything is written or run: images with ground truth, enough of them for the level."""
    from dwgf.data.images import IMAGE_SUFFIXES, list_images

    if init_args is None or not init_args.get("images") or init_args.get("measurements"):
        raise DWGFError("dwgf calibrate needs images with ground truth: give --data.images DIR (not --data.measurements)")
    try:
        count = sum(path.suffix.lower() in IMAGE_SUFFIXES for path in list_images(init_args["images"], "images"))
    except DWGFError:
        return  # a missing or empty folder: reported by predict's own input check, in its words
    if count < images_needed(level):
        raise DWGFError(f"--data.images {str(init_args['images'])!r}: calibration at level {level:g} needs at least "
                        f"{images_needed(level)} images with ground truth, the folder has {count}")


def command(argv: list[str], predict: Callable[[list[str]], None]) -> None:  # noqa: C901 - one command, read top to bottom
    """``dwgf calibrate --config CONFIG --data.images DIR --output DIR [--level 0.9]``: the predict run on images with
    ground truth, then ``<output>/calibration.json`` (:mod:`dwgf.calibration`) for ``--model.calibration``. ``predict``
    runs ``dwgf predict`` (:func:`dwgf.cli.main`, which hands ``dwgf calibrate`` here)."""
    import yaml

    from dwgf.outputs import OutputFolder, OutputLock, fingerprint

    if any(a in ("-h", "--help") for a in argv):
        print(CALIBRATE_HELP)
        raise SystemExit(0)
    argv, given = list(argv), []
    for i in reversed(range(len(argv))):  # --level X and --level=X; taken out of what predict parses
        if argv[i] == "--level" or argv[i].startswith("--level="):
            value = argv[i].partition("=")[2] if "=" in argv[i] else (argv[i + 1] if i + 1 < len(argv) else "")
            del argv[i : i + (1 if "=" in argv[i] else 2)]
            given.append(value)
    if len(given) > 1:
        print("dwgf: error: --level is given more than once; give it once, e.g. --level 0.9", file=sys.stderr)
        raise SystemExit(2)
    try:
        level = float(given[0]) if given else 0.9
    except ValueError:
        print(f"dwgf: error: --level needs a number in (0, 1), e.g. --level 0.9; got {given[0]!r}", file=sys.stderr)
        raise SystemExit(2) from None
    if not 0 < level < 1:
        print(f"dwgf: error: --level must be in (0, 1), got {level}", file=sys.stderr)
        raise SystemExit(2)
    if any(a.startswith("--model.calibration") for a in argv):
        print("dwgf: error: --model.calibration is for dwgf predict; dwgf calibrate makes the file", file=sys.stderr)
        raise SystemExit(2)
    CALIBRATING["level"] = level
    try:
        predict(["predict", *argv])
    finally:
        CALIBRATING.clear()
    output = LAST_RUN.get("output")
    try:
        if output is None:
            raise DWGFError("dwgf calibrate: the run wrote no output folder")
        config = yaml.safe_load((output / "config.yaml").read_text())
        per_image, samples = read_scores(output)
        scale = conformal_scale(per_image, level)
        ratio, needed = width_for_images(per_image, level, samples=samples)
        miss = float(sum(float((s > scale).double().mean()) for s in per_image) / len(per_image))
        model, data = config.get("model") or {}, config.get("data") or {}
        method = str(model.get("class_path", ""))
        if (model.get("init_args") or {}).get("method"):
            method += f" ({model['init_args']['method']})"
        operator = ((data.get("init_args") or {}).get("operator") or {})
        task = f"{operator.get('class_path', '')} {json.dumps(operator.get('init_args') or {}, sort_keys=True)}"
        result = Calibration(method=method, task=task, level=level, scale=scale, images=len(per_image), config=fingerprint(config),
                             miss_rate=miss)
        lock = OutputLock(output)
        lock.acquire()
        try:
            OutputFolder(output).write_run_file("calibration.json", result.save(output / "calibration.json"))
        finally:
            lock.release()
    except DWGFError as err:
        print(f"dwgf: error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    if ratio > 1 + WIDTH_WITHIN:
        print(f"dwgf: warning: {len(per_image)} calibration images at level {level:g} make the intervals {ratio:.2g}x as wide as many "
              f"such images would; about {needed} give a width within {WIDTH_WITHIN:.0%} of that (judged on these images)",
              file=sys.stderr)
    print(f"dwgf: calibrated at level {level:g} on {len(per_image)} images: interval = mean +- {scale:.4g} (std + 1/255), "
          f"coverage on them {1 - miss:.4f}; {output / 'calibration.json'} (use it with --model.calibration)", file=sys.stderr)


def read_scores(output: Path) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Each item's scores (:func:`scores`) and width sample (:func:`width_sample`) from what ``dwgf predict`` wrote to
    ``output`` (its particles' and ground truth's PNGs, the items of ``metrics.csv``)."""
    names = [row.split(",", 1)[0] for row in (output / "metrics.csv").read_text().splitlines()[1:] if row]
    per_image, samples = [], []
    for name in names:
        folder = output / name
        if not (folder / "ground_truth.png").is_file():
            raise DWGFError("dwgf calibrate needs images with ground truth: give --data.images (not --data.measurements)")
        particles = torch.stack([_read_unit(p) for p in sorted(folder.glob("particle_*.png"))])
        per_image.append(scores(particles, _read_unit(folder / "ground_truth.png")))
        samples.append(width_sample(particles))
    return per_image, samples


def _read_unit(path: Path) -> torch.Tensor:
    """A PNG dwgf wrote, as ``C x H x W`` in ``[0, 1]``."""
    import numpy as np
    from PIL import Image

    arr = np.asarray(Image.open(path), dtype=np.float64) / 255
    return torch.from_numpy(arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1).copy())


