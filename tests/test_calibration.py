"""Calibrated intervals (dwgf.calibration, dwgf calibrate, --model.calibration)."""

import json

import pytest
import torch

from dwgf.calibration import Calibration, conformal_scale, images_needed, interval, interval_metrics, scores
from dwgf.cli import main
from dwgf.errors import DWGFError
from dwgf.testing import make_images
from tests.runs import LDM_CONFIG


def _brute_force(per_image, level):
    """The smallest candidate scale whose corrected empirical miss rate is at most 1 - level, by trying every score."""
    n = len(per_image)
    for scale in sorted(torch.cat(per_image).unique().tolist()):
        miss = sum(float((s > scale).double().mean()) for s in per_image) / n
        if n / (n + 1) * miss + 1 / (n + 1) <= 1 - level + 1e-12:
            return scale
    raise AssertionError("no scale")


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("level", [0.8, 0.9])
def test_the_conformal_scale_is_the_brute_force_one(seed, level):
    g = torch.Generator().manual_seed(seed)
    per_image = [torch.randn(int(torch.randint(5, 40, (1,), generator=g)), generator=g).abs() for _ in range(12)]
    per_image[3] = torch.tensor([0.5, 0.5, 0.5, 1.0])  # ties
    assert conformal_scale(per_image, level) == pytest.approx(_brute_force(per_image, level))


def test_too_few_images_for_the_level_is_one_line():
    with pytest.raises(DWGFError, match="needs at least 9 images"):
        conformal_scale([torch.ones(3)] * 5, 0.9)


def test_the_interval_is_the_mean_plus_minus_scale_std_and_its_metrics():
    p = torch.tensor([[[[0.2, 0.5]]], [[[0.4, 0.5]]]])  # 2 particles, 1 x 1 x 2
    lo, hi = interval(p, 2.0)
    half = 2.0 * (0.1 + 1 / 255)
    assert torch.allclose(lo[0, 0], torch.tensor([0.3 - half, 0.5 - 2 / 255]), atol=1e-6)
    assert torch.allclose(hi[0, 0], torch.tensor([0.3 + half, 0.5 + 2 / 255]), atol=1e-6)
    m = interval_metrics(p, torch.tensor([[[0.3, 0.6]]]), 2.0)
    levels = [torch.ceil(lo[0, 0].double() * 255 - 1e-6) / 255, torch.floor(hi[0, 0].double() * 255 + 1e-6) / 255]  # rounded inwards
    assert m["calibrated_coverage"] == 0.5 and m["calibrated_width"] == pytest.approx(float((levels[1] - levels[0]).mean()))
    assert m["calibrated_coverage_unobserved"] == 0.5  # no region: every pixel
    assert torch.allclose(scores(p, torch.tensor([[[0.3, 0.6]]])), torch.tensor([0.0, 0.1 / (1 / 255)], dtype=torch.float64), atol=1e-5)


def test_calibrate_then_predict_and_a_file_for_another_config_is_refused(ldm_path, tmp_path, capsys):
    """dwgf calibrate writes calibration.json (the scale meets its own risk bound on its images); dwgf predict with it
    writes lower.png / upper.png and the two metrics columns; a file made for another configuration is one line,
    exit 2, and nothing is written."""
    cal = make_images(tmp_path / "cal", count=10, sizes=((32, 32),), mode="L")
    test = make_images(tmp_path / "test", count=2, sizes=((32, 32),), mode="L", seed=5)
    base = ["--config", str(LDM_CONFIG), "--model.prior.pretrained", str(ldm_path), "--trainer.logger", "false"]
    main(["calibrate", *base, "--data.images", str(cal), "--output", str(tmp_path / "c"), "--level", "0.8"])
    record = json.loads((tmp_path / "c" / "calibration.json").read_text())
    assert record["level"] == 0.8 and record["images"] == 10 and record["scale"] > 0
    assert 10 / 11 * record["miss_rate"] + 1 / 11 <= 0.2 + 1e-9
    assert "calibration.json" in (tmp_path / "c" / ".dwgf-run.json").read_text()  # a run file dwgf owns
    main(["predict", *base, "--data.images", str(test), "--output", str(tmp_path / "p"), "--model.calibration",
          str(tmp_path / "c" / "calibration.json")])
    assert (tmp_path / "c" / "reliability.png").is_file()
    header, *rows = (tmp_path / "p" / "metrics.csv").read_text().splitlines()
    column = header.split(",").index("calibrated_coverage")
    assert ",coverage90,calibrated_width,calibrated_coverage," in header and all(r.split(",")[column] for r in rows)
    item = next(p for p in (tmp_path / "p").iterdir() if (p / "lower.png").is_file())
    assert (item / "upper.png").is_file()
    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:
        main(["predict", *base, "--model.num_steps", "4", "--data.images", str(test), "--output", str(tmp_path / "q"),
              "--model.calibration", str(tmp_path / "c" / "calibration.json")])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len([line for line in err if line.startswith("dwgf: error")]) == 1 and "made for another configuration" in err[-1]
    assert not (tmp_path / "q").exists()
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(SystemExit):
        main(["predict", *base, "--data.images", str(test), "--output", str(tmp_path / "r"), "--model.calibration", str(tmp_path / "bad.json")])
    assert "not a dwgf calibration file" in capsys.readouterr().err and not (tmp_path / "r").exists()


def test_a_calibration_file_round_trips_and_its_folder_stands_for_it(tmp_path):
    c = Calibration(method="m", task="t", level=0.9, scale=1.5, images=20, config="abc", miss_rate=0.05)
    (tmp_path / "calibration.json").write_bytes(c.save(tmp_path / "calibration.json"))
    assert Calibration.load(tmp_path / "calibration.json") == c
    assert Calibration.load(tmp_path) == c  # dwgf calibrate's --output folder
    (tmp_path / "empty").mkdir()
    with pytest.raises(DWGFError, match="a folder without calibration.json"):
        Calibration.load(tmp_path / "empty")


@pytest.mark.parametrize("level,count,need", [(0.9, 8, 9), (0.8, 3, 4), (0.95, 18, 19)])
def test_images_needed_is_the_smallest_count_conformal_scale_accepts(level, count, need):
    assert images_needed(level) == need == count + 1
    conformal_scale([torch.ones(2)] * need, level)
    with pytest.raises(DWGFError, match=f"needs at least {need} images"):
        conformal_scale([torch.ones(2)] * count, level)


@pytest.mark.parametrize("inputs,message", [
    ("few", "calibration at level 0.9 needs at least 9 images with ground truth, the folder has 5"),
    ("measurements", "dwgf calibrate needs images with ground truth: give --data.images DIR (not --data.measurements)"),
])
def test_calibrate_refuses_unusable_inputs_before_it_runs(ldm_path, tmp_path, capsys, inputs, message):
    """Too few images for the level, or measurements without ground truth: one line, exit 2, before the method runs
    (no output folder)."""
    folder = make_images(tmp_path / "cal", count=5, sizes=((32, 32),), mode="L")
    option = "--data.images" if inputs == "few" else "--data.measurements"
    with pytest.raises(SystemExit) as exc:
        main(["calibrate", "--config", str(LDM_CONFIG), "--model.prior.pretrained", str(ldm_path), "--trainer.logger", "false",
              option, str(folder), "--output", str(tmp_path / "c")])
    assert exc.value.code == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and err[0].startswith("dwgf: error") and message in err[0], err
    assert not (tmp_path / "c").exists()


@pytest.mark.parametrize("level_args,message", [
    (["--level", "0.9", "--level", "0.8"], "--level is given more than once"),
    (["--level", "abc"], "--level needs a number in (0, 1), e.g. --level 0.9; got 'abc'"),
    (["--level=1.5"], "--level must be in (0, 1), got 1.5"),
    (["--level=0.8"], "calibration at level 0.8 needs at least 4 images with ground truth, the folder has 3"),  # = form read
])
def test_calibrate_reads_its_level_or_says_what_is_wrong(ldm_path, tmp_path, capsys, level_args, message):
    folder = make_images(tmp_path / "cal", count=3, sizes=((32, 32),), mode="L")
    with pytest.raises(SystemExit) as exc:
        main(["calibrate", "--config", str(LDM_CONFIG), "--model.prior.pretrained", str(ldm_path), "--trainer.logger", "false",
              "--data.images", str(folder), "--output", str(tmp_path / "c"), *level_args])
    assert exc.value.code == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and message in err[0], err
    assert not (tmp_path / "c").exists()


def test_calibrate_has_its_own_help_and_the_top_help_names_it(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["calibrate", "--config", "whatever.yaml", "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: dwgf calibrate --config CONFIG --data.images CALIBRATION_DIR --output DIR [--level 0.9]")
    assert "--model.calibration DIR/calibration.json" in out and "--level LEVEL" in out
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "dwgf calibrate --config CONFIG" in capsys.readouterr().out


def test_width_for_images_is_the_brute_force_count_and_ratio():
    """The ratio is the n-image scale over the pooled quantile at 1 - level; the count the first m (scanned) whose scale
    is within 10% of it."""
    from dwgf.calibration import _Pooled, target_miss_rate, width_for_images

    gen = torch.Generator().manual_seed(0)
    per_image = [torch.randn(256, generator=gen).abs() * (1 + i % 3) for i in range(12)]
    ratio, needed = width_for_images(per_image, 0.9)
    pooled = _Pooled(per_image)
    large = pooled.scale(0.1)
    assert ratio == pytest.approx(conformal_scale(per_image, 0.9) / large)
    brute = next(m for m in range(images_needed(0.9), 10**5) if pooled.scale(target_miss_rate(m, 0.9)) <= 1.1 * large)
    assert needed == brute and needed > 12 and ratio > 1.1
    # judged on the intervals' width (clipped to [0, 1]) from each image's mean and std
    from dwgf.calibration import mean_width, width_sample

    particles = [torch.rand(4, 1, 16, 16, generator=gen) for _ in per_image]
    samples = [width_sample(p, pixels=64) for p in particles]
    assert samples[0].shape == (2, 64) and torch.allclose(samples[0][0], particles[0].double().mean(0).flatten()[::4])
    ratio_w, needed_w = width_for_images(per_image, 0.9, samples=samples)
    widths = {m: mean_width(samples, pooled.scale(target_miss_rate(m, 0.9))) for m in range(images_needed(0.9), 2000)}
    assert ratio_w == pytest.approx(mean_width(samples, conformal_scale(per_image, 0.9)) / mean_width(samples, large))
    assert needed_w == next(m for m, w in widths.items() if w <= 1.1 * mean_width(samples, large)) and needed_w <= needed


def test_calibrate_at_the_fewest_images_warns_how_many_would_do(ldm_path, tmp_path, capsys):
    """Level 0.8 on 4 images (the fewest): one warning line saying how much wider the intervals are and how many images
    would bring them within 10%, then the result line."""
    cal = make_images(tmp_path / "cal", count=4, sizes=((32, 32),), mode="L")
    main(["calibrate", "--config", str(LDM_CONFIG), "--model.prior.pretrained", str(ldm_path), "--trainer.logger", "false",
          "--trainer.enable_progress_bar", "false", "--data.images", str(cal), "--output", str(tmp_path / "c"), "--level", "0.8"])
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("dwgf:")]
    warning = [line for line in err if line.startswith("dwgf: warning: 4 calibration images at level 0.8 make the intervals")]
    assert len(warning) == 1 and "give a width within 10% of that" in warning[0], err
    assert err[-1].startswith("dwgf: calibrated at level 0.8 on 4 images")


def test_the_shipped_calibration_digits_are_held_out_and_not_report_digits():
    from dwgf.data.images import input_folder, list_images

    files = list_images("dwgf:mnist-calibration", "images")
    indices = sorted(int(f.stem.rsplit("_", 1)[1]) for f in files)
    assert len(files) == 100 and all(450 <= i % 500 < 475 for i in indices)  # the tune split; report is 475..499
    assert input_folder("dwgf:mnist-calibration") == files[0].parent
