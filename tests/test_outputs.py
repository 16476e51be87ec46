"""Reliability: resume, exactly-once multi-process runs, failed items, numerical guard, bad input."""

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from dwgf.cli import main
from dwgf.outputs import ITEM_MANIFEST, item_folder_names
from dwgf.rendering import wrap_name
from dwgf.testing import make_images
from tests.runs import LDM_CONFIG, NAMES, NAN_REGULARIZER, base, item_files, mtimes, one_line_error, predict, state

ROOT = Path(__file__).resolve().parents[1]


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
    manifest = out / "img3" / ITEM_MANIFEST  # killed while writing img3: its files may be partial
    manifest.write_text(manifest.read_text().replace('"complete"', '"writing"'))
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
        "wrongmask": f"{masks / 'wrongmask.png'}: mask is 20x20 (width x height), expected 32x32 (the images' size)",
    }
    assert state(out, "good") == "complete"


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


def test_no_file_outside_the_output_folder():
    for name in ("../../etc/passwd", "..", ".hidden", "a/b\\c", "", "x\x00y.png", "con:.png"):
        (cleaned,) = item_folder_names([name])
        assert "/" not in cleaned and "\\" not in cleaned and "\x00" not in cleaned and not cleaned.startswith(".") and cleaned


# -- issue 14: one test per numbered case ------------------------------------------------------------
def test_a_failed_item_never_deletes_or_follows_what_dwgf_did_not_write(ldm_path, tmp_path, capsys):
    images = make_images(tmp_path / "in", count=2, sizes=((32, 32),), mode="L")
    (images / "report.png").write_bytes(b"not an image")
    out = tmp_path / "O"
    (out / "report").mkdir(parents=True)
    (out / "report" / "figure1.png").write_bytes(b"the user's figure")
    (out / "report" / "results.json").write_text('{"mine": true}')
    (out / "img1").mkdir()
    (out / "img1" / "notes.json").write_text("user notes")
    with pytest.raises(SystemExit) as exc:
        predict(ldm_path, images, out)
    assert exc.value.code == 1
    assert (out / "report" / "figure1.png").read_bytes() == b"the user's figure"
    assert (out / "report" / "results.json").read_text() == '{"mine": true}'
    assert (out / "img1" / "notes.json").read_text() == "user notes" and state(out, "img1") == "complete"
    with pytest.raises(SystemExit):  # a rewrite (here: --overwrite) and another failure leave them too
        predict(ldm_path, images, out, "--overwrite", "true")
    assert (out / "report" / "figure1.png").read_bytes() == b"the user's figure"
    assert (out / "img1" / "notes.json").read_text() == "user notes"
    # a link where an item folder would go is never followed
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "mean.png").write_bytes(b"precious")
    out2 = tmp_path / "O2"
    out2.mkdir()
    (out2 / "img0").symlink_to(elsewhere, target_is_directory=True)
    line = one_line_error(capsys, "predict", "--config", LDM_CONFIG, "--model.prior.pretrained", ldm_path, "--data.images", images,
                          "--output", out2)
    assert line == f"dwgf: error: --output {str(out2)!r}: img0 is a link, not a folder dwgf made; move it or choose another --output"
    assert sorted(p.name for p in elsewhere.iterdir()) == ["mean.png"] and (elsewhere / "mean.png").read_bytes() == b"precious"
    # a file with a name dwgf writes, in an item folder, that dwgf did not write: refused, untouched
    out3 = tmp_path / "O3"
    (out3 / "img0").mkdir(parents=True)
    (out3 / "img0" / "mean.png").write_bytes(b"user's mean")
    line = one_line_error(capsys, "predict", "--config", LDM_CONFIG, "--model.prior.pretrained", ldm_path, "--data.images", images,
                          "--output", out3)
    assert line == f"dwgf: error: --output {str(out3)!r}: img0/mean.png exists and was not written by dwgf; move it or choose another --output"
    assert (out3 / "img0" / "mean.png").read_bytes() == b"user's mean" and not (out3 / "img1").exists()


def test_inputs_never_share_an_output_folder(ldm_path, tmp_path):
    images = tmp_path / "in"
    images.mkdir()
    base = Image.new("L", (32, 32), 100)
    names = ["a b.png", "a_b.png", "猫.png", "狗.png", "x.png", "x.jpg", "tensorboard.png", "a:b.png"]
    for i, name in enumerate(names):
        Image.new("L", (32, 32), 20 * i).save(images / name) if not name.endswith(".jpg") else base.save(images / name)
    out = tmp_path / "out"
    predict(ldm_path, images, out)
    folders = item_folder_names(sorted(names))
    assert len({f.casefold() for f in folders}) == len(names)
    assert {"a b", "a_b", "猫", "狗", "x_png", "x_jpg", "tensorboard_png"} <= set(folders)
    assert [f for f in folders if f.startswith("a_b-")]  # "a:b" became "a_b-<hash>", not "a_b"
    with open(out / "metrics.csv", encoding="utf-8") as f:
        rows = [r["name"] for r in csv.DictReader(f)]
    assert sorted(rows) == sorted(folders)
    for folder in folders:
        assert state(out, folder) == "complete"
        assert json.loads((out / folder / "metrics.json").read_text())["file"] in names
    # every result comes from its own input: the ground truths differ
    truths = {folder: (out / folder / "ground_truth.png").read_bytes() for folder in folders}
    assert truths["a b"] != truths["a_b"] and truths["猫"] != truths["狗"]
    assert item_folder_names(["A.png", "a.png"])[0].casefold() != item_folder_names(["A.png", "a.png"])[1].casefold()
    assert item_folder_names(["a b.png"]) == item_folder_names(["a b.png", "zzz.png"])[:1]  # stable when others are added


def test_end_of_run_files_are_assembled_when_every_item_is_complete(ldm_path, five_images, tmp_path, capsys):
    out = tmp_path / "o"
    predict(ldm_path, five_images, out)
    expected = {n: (out / n).read_bytes() for n in ("metrics.csv", "summary.png")}
    for name in expected:  # as after a kill between the last item and the end of the run
        (out / name).unlink()
    predict(ldm_path, five_images, out)
    assert {n: (out / n).read_bytes() for n in expected} == expected
    assert "0 items" not in capsys.readouterr().err


def test_overwrite_removes_the_previous_runs_files_and_a_second_run_is_locked_out(ldm_path, five_images, tmp_path, capsys):
    out = tmp_path / "o"
    predict(ldm_path, five_images, out, "--model.num_particles", 4)
    assert (out / "img0" / "particle_3.png").is_file()
    predict(ldm_path, five_images, out, "--model.num_particles", 2, "--overwrite", "true")
    for name in NAMES:
        assert sorted(p.name for p in (out / name).glob("particle_*.png")) == ["particle_0.png", "particle_1.png"]
    from dwgf.outputs import OutputLock

    other = OutputLock(out)  # another run's lock (an flock on its own open file; -m slow runs a real second dwgf)
    other.acquire()
    try:
        line = one_line_error(capsys, "predict", "--config", LDM_CONFIG, "--model.prior.pretrained", ldm_path,
                              "--data.images", five_images, "--output", out, "--model.num_particles", 3)
    finally:
        other.release()
    assert line.startswith(f"dwgf: error: --output {str(out)!r} is in use by another dwgf run (pid {os.getpid()}, host ")
    assert line.endswith("wait for it to end or choose another --output")
    assert not list(out.glob("*/particle_2.png"))  # the refused run wrote nothing


@pytest.mark.slow
def test_a_second_run_is_locked_out_by_a_running_one(ldm_path, five_images, tmp_path, capsys):
    out = tmp_path / "o"
    # another run, paused in the middle of its first batch, holds the folder
    sentinels = tmp_path / "sentinels"
    command = ["predict", "--config", LDM_CONFIG, "--model.prior.pretrained", ldm_path, "--data.images", five_images,
               "--output", out, "--model.num_particles", 2, "--trainer.logger", "false", "--overwrite", "true"]
    other = subprocess.Popen([sys.executable, str(ROOT / "tests/pause_run.py"), "first-item", str(sentinels), *map(str, command)],
                             env={**os.environ, "HF_HUB_OFFLINE": "1"}, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 180
        while not (sentinels / "0.pid").exists():
            assert other.poll() is None and time.monotonic() < deadline, other.stderr.read()[-2000:] if other.poll() is not None else "timeout"
            time.sleep(0.05)
        line = one_line_error(capsys, "predict", "--config", LDM_CONFIG, "--model.prior.pretrained", ldm_path,
                              "--data.images", five_images, "--output", out, "--model.num_particles", 3)
    finally:
        other.send_signal(signal.SIGTERM)
        assert other.wait(timeout=120) == 128 + signal.SIGTERM
    assert line.startswith(f"dwgf: error: --output {str(out)!r} is in use by another dwgf run (pid {other.pid}, host ")
    assert line.endswith("wait for it to end or choose another --output") and "its command: " in line
    assert not list(out.glob("*/particle_2.png"))  # the refused run wrote nothing


def test_seeds_follow_the_item_and_resume_sees_changed_inputs(ldm_path, tmp_path):
    images = make_images(tmp_path / "in", count=3, sizes=((32, 32),), mode="L")
    out = tmp_path / "out"
    predict(ldm_path, images, out, "--data.batch_size", 1)
    before = {n: item_files(out, n) for n in ("img0", "img1", "img2")}
    times = {n: mtimes(out, n) for n in ("img0", "img1", "img2")}
    # a new file that sorts first shifts every position: a fresh run gives the same results for the old items
    Image.new("L", (32, 32), 77).save(images / "aaa.png")
    fresh = tmp_path / "fresh"
    predict(ldm_path, images, fresh, "--data.batch_size", 1)
    for name in before:
        assert item_files(fresh, name) == before[name], name
    # resume computes only the new item; a replaced image with the same name is recomputed
    predict(ldm_path, images, out, "--data.batch_size", 1)
    assert {n: mtimes(out, n) for n in before} == times
    assert item_files(out, "aaa") == item_files(fresh, "aaa")
    Image.new("L", (32, 32), 200).save(images / "img1.png")
    predict(ldm_path, images, out, "--data.batch_size", 1)
    assert item_files(out, "img1")["ground_truth.png"] != before["img1"]["ground_truth.png"]
    assert mtimes(out, "img0") == times["img0"]
    fresh2 = tmp_path / "fresh2"
    predict(ldm_path, images, fresh2, "--data.batch_size", 1)
    assert item_files(out, "img1") == item_files(fresh2, "img1")


def test_images_of_any_bit_depth_are_rescaled_from_their_own_range(ldm_path, tmp_path):
    from dwgf.data import load_image

    eight = np.linspace(0, 255, 32 * 32).reshape(32, 32).round().astype(np.uint8)
    folders = {k: tmp_path / k for k in ("u8", "u16", "f32")}
    for folder in folders.values():
        folder.mkdir()
    Image.fromarray(eight).save(folders["u8"] / "img.png")
    Image.fromarray(eight.astype(np.uint16) * 257).save(folders["u16"] / "img.png")  # the same picture in 16 bits
    Image.fromarray(eight.astype(np.float32) / 255).save(folders["f32"] / "img.tif")  # and as a float TIFF in [0, 1]
    ref = load_image(folders["u8"] / "img.png", 1, (32, 32))
    assert torch.allclose(load_image(folders["u16"] / "img.png", 1, (32, 32)), ref, atol=1e-6)
    assert torch.allclose(load_image(folders["f32"] / "img.tif", 1, (32, 32)), ref, atol=1e-6)
    wide = tmp_path / "wide.tif"
    Image.fromarray(eight.astype(np.float32) * 4 - 100).save(wide)
    with pytest.warns(UserWarning, match=r"float image with values in \[-100, 920\]; rescaled"):
        assert torch.allclose(load_image(wide, 1, (32, 32)), ref, atol=1e-5)
    outs = {}
    for key, folder in folders.items():
        outs[key] = tmp_path / f"out_{key}"
        predict(ldm_path, folder, outs[key])
    truth = (outs["u8"] / "img" / "ground_truth.png").read_bytes()
    assert (outs["u16"] / "img" / "ground_truth.png").read_bytes() == truth
    assert (outs["f32"] / "img" / "ground_truth.png").read_bytes() == truth


def test_a_npy_of_strings_is_a_failed_item_not_a_crash(ldm_path, tmp_path, capsys):
    meas = tmp_path / "meas"
    meas.mkdir()
    np.save(meas / "good.npy", np.zeros((1, 16, 16), np.float32))
    np.save(meas / "words.npy", np.array([["a", "b"], ["c", "d"]]))
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as exc:
        main(["predict", "--config", str(LDM_CONFIG), "--model.prior.pretrained", str(ldm_path), "--data.measurements", str(meas),
              "--output", str(out)])
    assert exc.value.code == 1
    assert capsys.readouterr().err.strip().splitlines()[-1] == f"dwgf: error: 1 item(s) failed and were skipped; see {out / 'failures.csv'}"
    with open(out / "failures.csv") as f:
        (row,) = list(csv.DictReader(f))
    assert row["reason"] == f"{meas / 'words.npy'}: the array holds <U1 values; expected numbers (float32, C x H x W, in [-1, 1])"
    assert state(out, "good") == "complete"


def test_a_full_disk_is_one_line_and_leaves_no_temporary_file(ldm_path, five_images, tmp_path):
    """A real write error (the file-size limit, EFBIG, as a full disk gives ENOSPC) in a real run."""
    import resource

    out = tmp_path / "o"

    def limit():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (1500, 1500))

    run = subprocess.run([sys.executable, "-m", "dwgf", "predict", "--config", str(LDM_CONFIG), "--model.prior.pretrained", str(ldm_path),
                          "--data.images", str(five_images), "--output", str(out), "--trainer.logger", "false"],
                         env={**os.environ, "HF_HUB_OFFLINE": "1"}, cwd=ROOT, preexec_fn=limit, capture_output=True, text=True, timeout=300)
    assert run.returncode == 2, run.stderr[-2000:]
    assert run.stderr.strip().splitlines()[-1] == f"dwgf: error: {out / 'config.yaml'}: cannot write (File too large)"
    assert not [p for p in out.rglob("*") if ".dwgf-tmp" in p.name]


def test_an_input_folder_is_never_the_output_and_no_remote_code_prompt(ldm_path, five_images, tmp_path, capsys):
    base = ["predict", "--config", LDM_CONFIG, "--model.prior.pretrained", ldm_path, "--data.images", five_images]
    assert one_line_error(capsys, *base, "--output", five_images) == (
        f"dwgf: error: --output {str(five_images)!r} is also an input folder (--data.images); choose another --output")
    assert sorted(p.name for p in five_images.iterdir()) == [f"{n}.png" for n in NAMES]


def test_a_resumed_run_says_what_it_skipped_and_leaves_no_empty_log(ldm_path, tmp_path, capfd):
    images = make_images(tmp_path / "in", count=3, sizes=((32, 32),), mode="L")
    out = tmp_path / "o"
    main([*base(ldm_path, out), "--data.images", str(images)])
    capfd.readouterr()
    main([*base(ldm_path, out), "--data.images", str(images)])
    err = capfd.readouterr().err
    assert "predict: 3 of 3 items already complete, skipped" in err.splitlines()
    assert "Total length of `DataLoader`" not in err and "0 items" not in err
    assert sorted(p.name for p in (out / "tensorboard").iterdir()) == ["version_0"]
    (images / "img3.png").write_bytes((images / "img0.png").read_bytes())  # one new item: 3 of 4 skipped, one version logged
    main([*base(ldm_path, out), "--data.images", str(images)])
    assert "predict: 3 of 4 items already complete, skipped" in capfd.readouterr().err.splitlines()
    assert sorted(p.name for p in (out / "tensorboard").iterdir()) == ["version_0", "version_1"]


def test_contact_sheet_names_break_between_words():
    assert wrap_name("digit0_mnist_0475", 14) == ["digit0_mnist_", "0475"]
    assert wrap_name("IMG 2024 01 01 holiday", 14) == ["IMG 2024 01", "01 holiday"]
    assert all(len(line) <= 14 for line in wrap_name("averyveryverylongnamewithoutbreaks", 14))
