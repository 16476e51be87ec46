"""TensorBoard logging of ``dwgf predict`` (on by default, under the output folder)."""

from pathlib import Path

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from dwgf.cli import main

ROOT = Path(__file__).resolve().parents[1]
LDM_CONFIG = ROOT / "tests/conf/ldm_sr.yaml"  # SR x2, KLPrior, 3 iterations


def predict(ldm_path, image_dir, out, *extra):
    main(["predict", "--config", str(LDM_CONFIG), "--model.prior.pretrained", str(ldm_path), "--data.images", str(image_dir),
          "--output", str(out), "--data.batch_size", "2", *map(str, extra)])


def events(out: Path) -> EventAccumulator:
    (path,) = (out / "tensorboard").glob("version_0/events.out.tfevents.*")
    acc = EventAccumulator(str(path), size_guidance={"scalars": 0, "images": 0})
    acc.Reload()
    return acc


def test_event_files_hold_per_iteration_scalars_and_mean_images(ldm_path, image_dir, tmp_path):
    out = tmp_path / "o"
    predict(ldm_path, image_dir, out)  # 3 images, batches of 2: 2 batches (a small run: images on)
    acc = events(out)
    for batch, items in (("batch_0000", 2), ("batch_0001", 1)):
        for name in ("data_term", "KLPrior_force", "step_size", "t"):
            values = acc.Scalars(f"predict/{batch}/{name}")
            assert [v.step for v in values] == [0, 1, 2], (batch, name)
        assert all(0 <= v.value <= 999 for v in acc.Scalars(f"predict/{batch}/t"))
        assert all(v.value > 0 for v in acc.Scalars(f"predict/{batch}/KLPrior_force"))
        lr = [v.value for v in acc.Scalars(f"predict/{batch}/step_size")]
        assert lr == sorted(lr, reverse=True) and lr[0] > lr[-1]  # the config's decaying schedule
        images = acc.Images(f"predict/{batch}/particle_mean")
        assert images and images[-1].step == 2
        assert (images[-1].width, images[-1].height) == (32 * items, 32)  # the batch's particle means side by side
    # the data term falls as the flow fits the measurement
    data = [v.value for v in acc.Scalars("predict/batch_0000/data_term")]
    assert data[-1] < data[0]


def test_image_logging_interval_and_off_switch(ldm_path, image_dir, tmp_path):
    predict(ldm_path, image_dir, tmp_path / "a", "--model.log_images_every", "0")
    acc = events(tmp_path / "a")
    assert acc.Tags()["images"] == [] and "predict/batch_0000/data_term" in acc.Tags()["scalars"]
    predict(ldm_path, image_dir, tmp_path / "b", "--trainer.logger", "false")
    assert not (tmp_path / "b" / "tensorboard").exists()
    # the image interval does not change the results, so a resume with another interval is the same run: no item is
    # recomputed (only the end-of-run contact sheet is assembled again)
    written = {f: f.stat().st_mtime_ns for f in (tmp_path / "a").glob("*/*.png")}
    predict(ldm_path, image_dir, tmp_path / "a", "--model.log_images_every", "1")
    assert written and {f: f.stat().st_mtime_ns for f in (tmp_path / "a").glob("*/*.png")} == written
