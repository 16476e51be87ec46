"""Reliability: resume, exactly-once multi-process runs, failed items, numerical guard, bad input."""

import csv
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dwgf.cli import main
from dwgf.testing import make_images
from dwgf.writers import COMPLETE, safe_name

ROOT = Path(__file__).resolve().parents[1]
LDM_CONFIG = ROOT / "tests/conf/ldm_sr.yaml"
NAMES = [f"img{i}" for i in range(5)]


@pytest.fixture(scope="module")
def five_images(tmp_path_factory):
    return make_images(tmp_path_factory.mktemp("five"), count=5, sizes=((32, 32), (40, 36)), mode="L")


def predict(ldm_path, images, out, *extra):
    main(["predict", "--config", str(LDM_CONFIG), "--model.prior.pretrained", str(ldm_path), "--data.images", str(images),
          "--output", str(out), *map(str, extra)])


def item_files(out: Path, name: str) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((out / name).iterdir()) if p.name != "summary.png" and p.name != "metrics.json"}


def mtimes(out: Path, name: str) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in (out / name).iterdir()}


def test_resume_after_a_kill_matches_an_uninterrupted_run(ldm_path, five_images, tmp_path):
    full, part = tmp_path / "full", tmp_path / "part"
    predict(ldm_path, five_images, full)
    # "killed" after the first batch: only batch 0 (img0, img1) finished
    predict(ldm_path, five_images, part, "--trainer.limit_predict_batches", 1)
    assert sorted(p.name for p in part.iterdir() if p.is_dir() and p.name != "tensorboard") == ["img0", "img1"]
    with open(part / "metrics.csv") as f:
        assert [r["name"] for r in csv.DictReader(f)] == ["img0", "img1"]
    before = {n: mtimes(part, n) for n in ("img0", "img1")}
    predict(ldm_path, five_images, part)  # the same command again
    for name in NAMES:
        assert item_files(part, name) == item_files(full, name), name
    assert {n: mtimes(part, n) for n in ("img0", "img1")} == before  # finished items were not rewritten
    with open(part / "metrics.csv") as f:
        assert [r["name"] for r in csv.DictReader(f)] == NAMES


def test_resume_recomputes_a_half_written_batch_without_rewriting_its_finished_item(ldm_path, five_images, tmp_path):
    out, ref = tmp_path / "out", tmp_path / "ref"
    predict(ldm_path, five_images, ref)
    predict(ldm_path, five_images, out)
    (out / "img3" / COMPLETE).unlink()  # killed while writing img3: its files may be partial
    (out / "img3" / "mean.png").write_bytes(b"partial")
    kept = mtimes(out, "img2")
    predict(ldm_path, five_images, out)
    assert item_files(out, "img3") == item_files(ref, "img3")
    assert mtimes(out, "img2") == kept


def test_overwrite_recomputes_and_a_different_config_is_refused(ldm_path, five_images, tmp_path, capsys):
    out = tmp_path / "o"
    predict(ldm_path, five_images, out)
    first = mtimes(out, "img0")
    predict(ldm_path, five_images, out, "--overwrite", "true")
    assert mtimes(out, "img0")["mean.png"] != first["mean.png"]
    with pytest.raises(SystemExit) as exc:
        predict(ldm_path, five_images, out, "--model.num_steps", 2)
    assert exc.value.code == 2
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert line.startswith("dwgf: error: --output") and "different configuration" in line and "--overwrite" in line


def test_bad_items_are_skipped_recorded_and_the_run_exits_nonzero(ldm_path, tmp_path, capsys):
    images = make_images(tmp_path / "in", count=3, sizes=((32, 32),), mode="L")
    (images / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    (images / "notes.txt").write_text("hello")
    Image.new("L", (8, 8), 128).save(images / "tiny.png")
    out = tmp_path / "out"
    with pytest.warns(UserWarning, match=r"tiny.png: 8x8 is smaller than 32x32; upscaled"):
        with pytest.raises(SystemExit) as exc:
            predict(ldm_path, images, out)
    assert exc.value.code == 1
    assert capsys.readouterr().err.strip().splitlines()[-1] == f"dwgf: error: 2 item(s) failed and were skipped; see {out / 'failures.csv'}"
    with open(out / "failures.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["name"] for r in rows] == ["broken", "notes"]
    assert rows[0]["reason"].startswith(f"{images / 'broken.png'}: cannot read the image")
    assert rows[1]["reason"] == f"{images / 'notes.txt'}: unsupported file type '.txt' (expected .png, .jpg, .jpeg, .bmp, .tif, .tiff, .webp)"
    assert not list((out / "broken").glob("*.png"))
    with open(out / "metrics.csv") as f:
        assert [r["name"] for r in csv.DictReader(f)] == ["img0", "img1", "img2", "tiny"]


def test_measurement_with_nan_and_mask_of_wrong_size_are_failed_items(ldm_path, tmp_path):
    meas, masks = tmp_path / "meas", tmp_path / "masks"
    meas.mkdir(), masks.mkdir()
    good = np.zeros((1, 32, 32), np.float32)
    np.save(meas / "good.npy", good)
    bad = good.copy()
    bad[0, 3, 4] = np.nan
    np.save(meas / "nan.npy", bad)
    np.save(meas / "wrongmask.npy", good)
    for name, size in (("good", 32), ("nan", 32), ("wrongmask", 20)):
        Image.new("L", (size, size), 255).save(masks / f"{name}.png")
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as exc:
        main(["predict", "--config", str(LDM_CONFIG), "--model.prior.pretrained", str(ldm_path), "--data.measurements", str(meas),
              "--data.masks", str(masks), "--data.operator", "BoxInpainting", "--data.operator.size", "[8, 8]", "--output", str(out)])
    assert exc.value.code == 1
    with open(out / "failures.csv") as f:
        reasons = {r["name"]: r["reason"] for r in csv.DictReader(f)}
    assert reasons == {
        "nan": f"{meas / 'nan.npy'}: measurement contains NaN or Inf",
        "wrongmask": f"{masks / 'wrongmask.png'}: mask is 20x20, expected 32x32 (the prior's resolution)",
    }
    assert (out / "good" / COMPLETE).is_file()


NAN_REGULARIZER = textwrap.dedent(
    """
    import torch
    from dwgf.regularizers import Regularizer

    class PoisonItem(Regularizer):
        space = "latent"

        def __init__(self, item: int = 1, at: int = 2):
            self.item, self.at = item, at

        def force(self, state):
            f = torch.zeros_like(state.z)
            if state.iteration == self.at and self.item < f.shape[0]:
                f[self.item] = float("nan")
            return f
    """
)


def test_nonfinite_particles_stop_the_item_and_are_never_written(ldm_path, five_images, tmp_path, monkeypatch):
    (tmp_path / "poison.py").write_text(NAN_REGULARIZER)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    out, ref = tmp_path / "out", tmp_path / "ref"
    with pytest.raises(SystemExit) as exc:
        predict(ldm_path, five_images, out, "--model.regularizers", "[{class_path: poison.PoisonItem, init_args: {item: 1, at: 2}}]",
                "--model.num_steps", 4)
    assert exc.value.code == 1
    with open(out / "failures.csv") as f:
        rows = list(csv.DictReader(f))
    # batch size 2: item 1 of batch 0 is img1, of batch 1 img3
    assert [r["name"] for r in rows] == ["img1", "img3"]
    assert rows[0]["reason"] == "the particles became NaN or Inf at iteration 2; nothing was written for this item"
    assert not list((out / "img1").glob("*.png"))
    predict(ldm_path, five_images, ref, "--model.regularizers", "[{class_path: poison.PoisonItem, init_args: {item: 1, at: 99}}]",
            "--model.num_steps", 4)
    assert item_files(out, "img0")["particle_0.png"] == item_files(ref, "img0")["particle_0.png"]  # the other items are untouched


def one_line_error(capsys, *args) -> str:
    with pytest.raises(SystemExit) as exc:
        main([str(a) for a in args])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    return err[-1]


def test_configuration_errors_are_one_line(ldm_path, five_images, tmp_path, capsys):
    base = ["predict", "--config", LDM_CONFIG, "--model.prior.pretrained", ldm_path, "--output", tmp_path / "o"]
    assert one_line_error(capsys, *base, "--data.images", tmp_path / "nowhere") == f"dwgf: error: --data.images {str(tmp_path / 'nowhere')!r}: no such folder"
    (tmp_path / "empty").mkdir()
    assert one_line_error(capsys, *base, "--data.images", tmp_path / "empty") == (
        f"dwgf: error: --data.images {str(tmp_path / 'empty')!r}: no images found (it is empty; expected .png, .jpg, .jpeg, .bmp, .tif, .tiff, .webp files)")
    assert one_line_error(capsys, *base, "--data.images", five_images, "--data.operator.sigma_y", -0.1) == (
        "dwgf: error: SuperResolution: sigma_y must be >= 0, got -0.1")
    assert one_line_error(capsys, *base, "--data.images", five_images, "--data.operator.factor", 3) == (
        "dwgf: error: SuperResolution: factor 3 does not divide the 32x32 image size")
    assert one_line_error(capsys, *base, "--data.images", five_images, "--data.operator", "BoxInpainting", "--data.operator.size", "[40, 8]") == (
        "dwgf: error: BoxInpainting: the 40x8 box is larger than the 32x32 image")


def test_no_file_outside_the_output_folder():
    for name in ("../../etc/passwd", "..", ".hidden", "a/b\\c", ""):
        cleaned = safe_name(name)
        assert "/" not in cleaned and "\\" not in cleaned and not cleaned.startswith(".") and cleaned


def test_weights_are_loaded_safely():
    """No pickle loading and no remote code anywhere in the package."""
    for path in (ROOT / "dwgf").rglob("*.py"):
        text = path.read_text()
        for line in text.splitlines():
            if "torch.load(" in line:
                assert "weights_only=True" in line, (path, line)
        assert "trust_remote_code=True" not in text, path
    text = (ROOT / "dwgf/priors/diffusers_priors.py").read_text()
    assert "use_safetensors=True" in text


def test_two_processes_write_every_item_once_identical_to_one(ldm_path, five_images, tmp_path):
    """DDP on CPU (gloo): each item once, bit-identical to a one-process run."""
    common = [sys.executable, "-m", "dwgf", "predict", "--config", str(LDM_CONFIG), "--model.prior.pretrained", str(ldm_path),
              "--data.images", str(five_images), "--trainer.accelerator", "cpu"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    one, two = tmp_path / "one", tmp_path / "two"
    subprocess.run([*common, "--output", str(one), "--trainer.devices", "1"], check=True, env=env, cwd=ROOT, timeout=600)
    subprocess.run([*common, "--output", str(two), "--trainer.devices", "2", "--trainer.strategy", "ddp"], check=True, env=env, cwd=ROOT, timeout=600)
    for name in NAMES:
        assert item_files(two, name) == item_files(one, name), name
    assert (one / "metrics.csv").read_text().splitlines()[0] == (two / "metrics.csv").read_text().splitlines()[0]
    with open(two / "metrics.csv") as f:
        assert [r["name"] for r in csv.DictReader(f)] == NAMES  # every item exactly once


def test_unknown_class_and_misspelled_option_suggest_the_closest(ldm_path, five_images, tmp_path, capsys):
    base = ["predict", "--config", LDM_CONFIG, "--model.prior.pretrained", ldm_path, "--data.images", five_images, "--output", tmp_path / "o"]
    line = one_line_error(capsys, *base, "--data.operator", "BoxInpaint")
    assert line.startswith("dwgf: error: --data.operator: unknown class 'BoxInpaint' (did you mean 'BoxInpainting'?)")
    line = one_line_error(capsys, *base, "--model.regularizers", "[{class_path: KLPriorr}]")
    assert line.startswith("dwgf: error: --model.regularizers: unknown class 'KLPriorr' (did you mean 'KLPrior'?)")
    line = one_line_error(capsys, *base, "--model.num_stepz", 3)
    assert line.startswith("dwgf: error: --model.num_stepz: DWGF has no option 'num_stepz' (did you mean 'num_steps'?)")
    line = one_line_error(capsys, *base, "--data.operator.factr", 2)
    assert line.startswith("dwgf: error: --data.operator.factr: SuperResolution has no option 'factr' (did you mean 'factor'?)")
    line = one_line_error(capsys, *base, "--outptu", "x")
    assert line == "dwgf: error: unrecognized option --outptu (did you mean '--output'?); dwgf predict --help lists the options"
    line = one_line_error(capsys, *base, "--model.num_steps", "abc")
    assert line == "dwgf: error: --model.num_steps: Expected a <class 'int'>. Got value: abc"


def test_data_problems_are_found_before_the_prior_is_loaded(five_images, tmp_path, capsys):
    """The prior path does not exist, yet the data and operator errors come first."""
    base = ["predict", "--config", LDM_CONFIG, "--model.prior.pretrained", tmp_path / "no-prior", "--output", tmp_path / "o"]
    assert one_line_error(capsys, *base, "--data.images", five_images, "--data.operator.sigma_y", -1) == (
        "dwgf: error: SuperResolution: sigma_y must be >= 0, got -1.0")
    assert one_line_error(capsys, *base, "--data.images", tmp_path / "nowhere") == (
        f"dwgf: error: --data.images {str(tmp_path / 'nowhere')!r}: no such folder")
    assert "no-prior" in one_line_error(capsys, *base, "--data.images", five_images)
