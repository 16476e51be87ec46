"""Coverage where the measurement is silent: the operators' regions, the calibration modes (group-conditional, strata,
per image) against brute force, the per-image guarantee by simulation, the metrics columns against the files a user
checks them with, summary.csv and reliability.png."""

import csv
import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

from dwgf.calibration import (Calibration, ImageScores, _Pooled, calibrate, images_needed, per_image_rank, pixel_scales, required_scale,
                              target_miss_rate)
from dwgf.cli import main
from dwgf.operators import (BoxInpainting, GaussianBlur, RandomInpainting, SuperResolution)
from dwgf.testing import make_images
from tests.runs import LDM_CONFIG


def _brute_pooled(per_image, level):
    """The smallest candidate scale whose corrected empirical miss rate is at most 1 - level, trying every score."""
    n = len(per_image)
    for scale in sorted(torch.cat(per_image).unique().tolist()):
        miss = sum(float((s > scale).double().mean()) for s in per_image) / n
        if n / (n + 1) * miss + 1 / (n + 1) <= 1 - level + 1e-12:
            return scale
    raise AssertionError("no scale")


def _synthetic(n, seed, pixels=60):
    """Calibration images whose unobserved pixels (a box) have wider errors than the observed ones."""
    g = torch.Generator().manual_seed(seed)
    images = []
    for _ in range(n):
        mean = torch.rand(pixels, generator=g).double()
        std = 0.05 * torch.rand(pixels, generator=g).double()
        unobserved = torch.zeros(pixels, dtype=torch.bool)
        unobserved[: int(torch.randint(5, 25, (1,), generator=g))] = True
        noise = torch.randn(pixels, generator=g).double() * torch.where(unobserved, 0.2, 0.02)
        images.append(ImageScores(mean, std, (mean + noise).clamp(0, 1), unobserved))
    return images


@pytest.mark.parametrize("seed", [0, 1])
def test_the_region_mode_is_the_brute_force_quantile_of_each_group(seed):
    images = _synthetic(15, seed)
    fields = calibrate(images, 0.8, region="unobserved")
    for group, select in (("unobserved", lambda img: img.unobserved), ("observed", lambda img: ~img.unobserved)):
        per_image = [img.score[select(img)] for img in images]
        assert fields["scales"][group] == [pytest.approx(_brute_pooled(per_image, 0.8))]
    assert calibrate(images, 0.8)["scales"]["all"] == [pytest.approx(_brute_pooled([img.score for img in images], 0.8))]
    # the unobserved pixels, whose errors are wider, get the wider scale
    assert fields["scales"]["unobserved"][0] > fields["scales"]["observed"][0]


@pytest.mark.parametrize("strata", ["mean", "std"])
def test_each_stratum_gets_the_brute_force_quantile_of_its_pixels(strata):
    images = _synthetic(20, 3)
    fields = calibrate(images, 0.8, mode="strata", region="unobserved", strata=strata, bins=3)
    edges = fields["edges"]["unobserved"]
    values = torch.cat([(img.mean if strata == "mean" else img.std)[img.unobserved] for img in images])
    assert edges == pytest.approx(torch.quantile(values, torch.tensor([1 / 3, 2 / 3], dtype=torch.float64)).tolist())
    for j in range(3):
        low, high = ([-math.inf] + edges)[j], (edges + [math.inf])[j]
        cells = []
        for img in images:
            v = (img.mean if strata == "mean" else img.std)
            sel = img.unobserved & (v > low) & (v <= high)
            if bool(sel.any()):
                cells.append(img.score[sel])
        assert fields["scales"]["unobserved"][j] == pytest.approx(_brute_pooled(cells, 0.8))
    # a pixel's scale is its stratum's
    img = images[0]
    q = pixel_scales({**fields, "strata": strata}, img.mean, img.std, img.unobserved)
    v = (img.mean if strata == "mean" else img.std)
    k = int(torch.nonzero(img.unobserved)[0])
    assert float(q[k]) == fields["scales"]["unobserved"][int(torch.bucketize(v[k], torch.tensor(edges, dtype=torch.float64)))]


def test_a_stratum_with_too_few_images_gets_the_whole_range():
    """Unobserved means all 0 but one pixel of one image: the strata are {0} and (0, 1]; the second has one image, fewer
    than level 0.8 needs (4), so its pixels get the whole range (``None`` in the file, ``inf`` as a scale)."""
    images = _synthetic(10, 4)
    for img in images:
        img.mean[img.unobserved] = 0.0
    images[0].mean[0] = 0.9
    fields = calibrate(images, 0.8, mode="strata", region="unobserved", strata="mean", bins=2)
    assert fields["edges"]["unobserved"] == [0.0] and fields["scales"]["unobserved"][1] is None
    assert fields["scales"]["unobserved"][0] is not None
    q = pixel_scales(fields, images[0].mean, images[0].std, images[0].unobserved)
    assert math.isinf(float(q[0])) and math.isfinite(float(q[1]))


@pytest.mark.parametrize("delta", [0.1, 0.2])
def test_the_per_image_scale_is_the_brute_force_one(delta):
    images = _synthetic(19, 5)
    level = 0.9
    fields = calibrate(images, level, mode="per-image", region="unobserved", delta=delta)
    per_image = [img.score[img.unobserved] for img in images]
    need = math.ceil((len(images) + 1) * (1 - delta))
    candidates = sorted(torch.cat(per_image).unique().tolist())
    brute = next(q for q in candidates if sum(float((s <= q).double().mean()) >= level for s in per_image) >= need)
    assert fields["scales"]["unobserved"][0] == pytest.approx(brute)
    assert required_scale(torch.tensor([3.0, 1.0, 2.0, 4.0]), 0.5) == 2.0 and required_scale(torch.tensor([3.0, 1.0, 2.0, 4.0]), 0.51) == 3.0


def test_the_per_image_guarantee_holds_in_at_least_1_minus_delta_of_200_repetitions():
    """Each repetition draws 30 calibration images and a new one from the same law (each image with its own error
    scale, so that images differ); the new image has at least the level of its unobserved pixels covered in at
    least 1 - delta of the repetitions, within three Monte Carlo standard errors, and not far above 1 - delta + 1/(n+1)
    (split conformal is tight)."""
    level, delta, n, reps = 0.9, 0.1, 30, 200
    g = torch.Generator().manual_seed(11)

    def draw():
        pixels = 80
        mean = torch.rand(pixels, generator=g).double() * 0.5 + 0.25
        std = 0.02 + 0.02 * torch.rand(pixels, generator=g).double()
        scale = float(torch.exp(0.5 * torch.randn(1, generator=g)))
        unobserved = torch.zeros(pixels, dtype=torch.bool)
        unobserved[:40] = True
        truth = mean + scale * std * torch.randn(pixels, generator=g).double() * torch.where(unobserved, 2.0, 1.0)
        return ImageScores(mean, std, truth, unobserved)

    hits = 0
    for _ in range(reps):
        fields = calibrate([draw() for _ in range(n)], level, mode="per-image", region="unobserved", delta=delta)
        new = draw()
        q = pixel_scales(fields, new.mean, new.std, new.unobserved)
        hits += float((new.score[new.unobserved] <= q[new.unobserved]).double().mean()) >= level
    rate, error = hits / reps, math.sqrt(delta * (1 - delta) / reps)
    assert rate >= 1 - delta - 3 * error, rate
    assert rate <= 1 - delta + 1 / (n + 1) + 3 * error, rate
    assert per_image_rank(n, delta) == 28


def test_the_pooled_mode_is_todays_scale():
    images = _synthetic(12, 6)
    per_image = [img.score for img in images]
    assert calibrate(images, 0.9)["scales"]["all"][0] == _Pooled(per_image).scale(target_miss_rate(12, 0.9))
    assert images_needed(0.9) == 9


@pytest.mark.parametrize("make,expected", [
    (lambda: BoxInpainting(size=[2, 3], position=[1, 1]), "box"),
    (lambda: RandomInpainting(missing=0.5), "random"),
    (lambda: SuperResolution(factor=2), None),
    (lambda: GaussianBlur(kernel_size=3, sigma=1.0), None),
])
def test_each_operator_says_which_pixels_it_does_not_measure(make, expected):
    op = make()
    params = {k: v[None] for k, v in op.sample_params((1, 6, 6), torch.Generator().manual_seed(0)).items()}
    region = op.unobserved(params)
    if expected is None:
        assert region is None  # every pixel
        return
    assert torch.equal(region, 1 - params["mask"])
    if expected == "box":
        box = torch.zeros(1, 1, 6, 6)
        box[..., 1:3, 1:4] = 1
        assert torch.equal(region, box)


def _read(path):
    return np.asarray(Image.open(path), dtype=np.float64) / 255


def test_the_coverage_columns_are_what_the_files_say_and_summary_csv_sums_them_up(ldm_path, tmp_path):
    """Box inpainting with a calibration of the unobserved pixels: unobserved.png is the box, and metrics.csv's
    calibrated_coverage(_unobserved) and width are recomputed exactly from lower.png, upper.png, ground_truth.png and
    unobserved.png (the same pixels, the same 8-bit values); coverage90_unobserved is on the box; summary.csv holds each
    column's mean, 10th percentile and minimum over the items."""
    cal = make_images(tmp_path / "cal", count=10, sizes=((32, 32),), mode="L")
    test = make_images(tmp_path / "test", count=3, sizes=((32, 32),), mode="L", seed=5)
    base = ["--config", str(LDM_CONFIG), "--model.prior.pretrained", str(ldm_path), "--trainer.logger", "false",
            "--data.operator", "BoxInpainting", "--data.operator.size", "[8, 10]", "--data.operator.sigma_y", "0.01"]
    main(["calibrate", *base, "--data.images", str(cal), "--output", str(tmp_path / "c"), "--level", "0.8", "--region", "unobserved"])
    record = json.loads((tmp_path / "c" / "calibration.json").read_text())
    assert record["region"] == "unobserved" and record["mode"] == "pooled" and record["images"] == 10 and record["scale"] is None
    assert set(record["scales"]) == {"unobserved", "observed"} and record["level"] == 0.8
    main(["predict", *base, "--data.images", str(test), "--output", str(tmp_path / "p"), "--model.calibration", str(tmp_path / "c")])
    rows = list(csv.DictReader(open(tmp_path / "p" / "metrics.csv")))
    assert len(rows) == 3
    for row in rows:
        folder = tmp_path / "p" / row["name"]
        lo, hi, truth, region = (_read(folder / f) for f in ("lower.png", "upper.png", "ground_truth.png", "unobserved.png"))
        assert region.sum() == 80  # the 8 x 10 box
        inside = (truth >= lo - 1e-9) & (truth <= hi + 1e-9)
        width = np.clip(hi - lo, 0, None)
        assert float(row["calibrated_coverage"]) == pytest.approx(inside.mean(), abs=1e-6)
        assert float(row["calibrated_coverage_unobserved"]) == pytest.approx(inside[region > 0.5].mean(), abs=1e-6)
        assert float(row["calibrated_width_unobserved"]) == pytest.approx(width[region > 0.5].mean(), abs=1e-6)
        assert float(row["calibrated_width"]) == pytest.approx(width.mean(), abs=1e-6)
        assert row["coverage90_unobserved"] != "" and row["ancestors"] == "" and row["min_ess"] == ""
    summary = {r["column"]: r for r in csv.DictReader(open(tmp_path / "p" / "summary.csv"))}
    for column in ("psnr_mean", "calibrated_coverage_unobserved", "coverage90"):
        values = np.array([float(r[column]) for r in rows])
        assert float(summary[column]["mean"]) == pytest.approx(values.mean(), rel=1e-5)
        assert float(summary[column]["p10"]) == pytest.approx(np.percentile(values, 10), rel=1e-5)
        assert float(summary[column]["min"]) == pytest.approx(values.min(), rel=1e-5)
        assert summary[column]["items"] == "3"
    assert "ancestors" not in summary
    Image.open(tmp_path / "c" / "reliability.png").verify()


def test_an_operator_that_mixes_pixels_writes_no_region_and_its_unobserved_columns_are_every_pixel(ldm_path, tmp_path):
    test = make_images(tmp_path / "test", count=2, sizes=((32, 32),), mode="L", seed=5)
    main(["predict", "--config", str(LDM_CONFIG), "--model.prior.pretrained", str(ldm_path), "--trainer.logger", "false",
          "--data.images", str(test), "--output", str(tmp_path / "p")])
    rows = list(csv.DictReader(open(tmp_path / "p" / "metrics.csv")))
    for row in rows:
        assert not (tmp_path / "p" / row["name"] / "unobserved.png").exists()
        assert row["coverage90_unobserved"] == row["coverage90"]


@pytest.mark.parametrize("args,message", [
    (["--region", "box"], "--region must be one of all, unobserved, got 'box'"),
    (["--strata", "mean", "--per-image", "0.1"], "--strata and --per-image are two modes: give one of them"),
    (["--per-image", "1.5"], "--per-image must be in (0, 1), got 1.5"),
    (["--bins", "3"], "--bins is the number of strata: give it with --strata mean (or std)"),
    (["--strata", "mean", "--bins", "1"], "--bins must be >= 2, got 1"),
    (["--per-image", "0.05"], "--per-image 0.05 at level 0.9 needs at least 19 images with ground truth, the folder has 10"),
])
def test_calibrate_modes_say_what_is_wrong_in_one_line_before_the_run(ldm_path, tmp_path, capsys, args, message):
    folder = make_images(tmp_path / "cal", count=10, sizes=((32, 32),), mode="L")
    with pytest.raises(SystemExit) as exc:
        main(["calibrate", "--config", str(LDM_CONFIG), "--model.prior.pretrained", str(ldm_path), "--trainer.logger", "false",
              "--data.images", str(folder), "--output", str(tmp_path / "c"), *args])
    assert exc.value.code == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and message in err[0], err
    assert not (tmp_path / "c").exists()


def test_a_file_of_the_first_format_reads_as_pooled_every_pixel(tmp_path):
    old = {"format": "dwgf-calibration/1", "method": "m", "task": "t", "level": 0.9, "scale": 1.5, "images": 20, "config": "abc",
           "miss_rate": 0.05}
    (tmp_path / "calibration.json").write_text(json.dumps(old))
    c = Calibration.load(tmp_path)
    assert c.mode == "pooled" and c.region == "all" and c.fields["scales"] == {"all": [1.5]}
    p = torch.rand(4, 1, 3, 3)
    assert torch.equal(c.scale_map(p), torch.full((1, 3, 3), 1.5, dtype=torch.float64))
    new = Calibration(method="m", task="t", level=0.9, scale=None, images=20, config="abc", miss_rate=0.05, mode="per-image",
                      region="unobserved", delta=0.1, scales={"unobserved": [2.0], "observed": [None]})
    (tmp_path / "new.json").write_bytes(new.save(tmp_path / "new.json"))
    assert Calibration.load(tmp_path / "new.json") == new
    region = torch.zeros(1, 3, 3)
    region[0, 0, 0] = 1
    m = new.scale_map(p, region)
    assert float(m[0, 0, 0]) == 2.0 and math.isinf(float(m[0, 1, 1]))  # too few observed images: the whole range
