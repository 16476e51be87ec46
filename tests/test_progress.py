"""What ``dwgf predict`` shows while it runs."""

import re
from pathlib import Path

import pytest

from dwgf.cli import main
from dwgf.progress import FlowProgressBar, _clock

ROOT = Path(__file__).resolve().parents[1]
LDM_CONFIG = ROOT / "tests/conf/ldm_sr.yaml"  # 3 iterations


def predict(ldm_path, image_dir, out, *extra):
    main(["predict", "--config", str(LDM_CONFIG), "--model.prior.pretrained", str(ldm_path), "--data.images", str(image_dir),
          "--output", str(out), "--data.batch_size", "2", *map(str, extra)])


def test_non_interactive_run_prints_one_line_per_batch(ldm_path, image_dir, tmp_path, capsys):
    predict(ldm_path, image_dir, tmp_path / "o")  # 3 images in batches of 2: 2 batches; stderr is not a terminal here
    err = capsys.readouterr().err
    assert "\r" not in err
    lines = [line for line in err.splitlines() if line.startswith("predict:")]
    assert len(lines) == 2, err
    assert re.fullmatch(r"predict: batch 1/2: 2 items, 3 iterations in [\d.]+ s \([\d.]+ it/s\); ETA \d:\d\d:\d\d", lines[0])
    assert re.fullmatch(r"predict: batch 2/2: 1 items, 3 iterations in [\d.]+ s \([\d.]+ it/s\)", lines[1])
    assert "litlogger" not in err.lower()


def test_interactive_run_redraws_batch_and_iteration_with_eta(ldm_path, image_dir, tmp_path, capsys):
    bar = "[{class_path: dwgf.progress.FlowProgressBar, init_args: {interactive: true, refresh_seconds: 0}}]"
    predict(ldm_path, image_dir, tmp_path / "o", "--trainer.callbacks", bar)
    err = capsys.readouterr().err
    draws = [d.strip() for d in err.split("\r") if d.strip().startswith("predict:")]
    pattern = r"predict: batch (\d)/2 \| iteration (\d)/3 \| [\d.]+ it/s \| ETA batch \d:\d\d:\d\d, all \d:\d\d:\d\d"
    seen = [tuple(map(int, re.match(pattern, d).groups())) for d in draws]
    assert seen[0] == (1, 1) and (1, 3) in seen and (2, 3) in seen, seen
    assert seen == sorted(seen)  # never goes backwards
    assert err.endswith("\n")  # the last line is kept


def test_progress_bar_can_be_turned_off(ldm_path, image_dir, tmp_path, capsys):
    predict(ldm_path, image_dir, tmp_path / "o", "--trainer.enable_progress_bar", "false")
    assert "predict: batch" not in capsys.readouterr().err


def test_eta_extrapolates_the_time_per_iteration():
    bar = FlowProgressBar(interactive=False)
    bar._start, bar._batches, bar._batch, bar._K, bar._k, bar._in_batch, bar._done = 0.0, 3, 2, 10, 5, True, 10
    # 15 iterations took 30 s: 2 s each; 5 left in this batch and 10 in the last
    assert bar._eta(30.0) == pytest.approx(30.0)
    assert _clock(3725) == "1:02:05"


def test_a_log_file_gets_a_line_at_least_every_log_seconds(ldm_path, image_dir, tmp_path, capsys):
    """In a log file a long batch is not silent: with log_seconds 0 every iteration but the last prints its line
    (iteration, items, rate, ETA), then the batch's closing line."""
    bar = "[{class_path: dwgf.progress.FlowProgressBar, init_args: {interactive: false, log_seconds: 0}}]"
    predict(ldm_path, image_dir, tmp_path / "o", "--trainer.callbacks", bar)
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("predict:")]
    pattern = r"predict: batch (\d)/2: (\d) items, iteration (\d)/3 \([\d.]+ it/s\); ETA batch \d:\d\d:\d\d, all \d:\d\d:\d\d"
    during = [tuple(map(int, re.fullmatch(pattern, line).groups())) for line in lines if "iteration " in line]
    assert during == [(1, 2, 1), (1, 2, 2), (2, 1, 1), (2, 1, 2)], lines
    assert len(lines) == 6 and re.fullmatch(r"predict: batch 2/2: 1 items, 3 iterations in [\d.]+ s \([\d.]+ it/s\)", lines[-1])
