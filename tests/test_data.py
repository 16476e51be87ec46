"""MeasurementDataModule: folders to batches with per-item params and seeds."""

import sys
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from dwgf.cli import main
from dwgf.data import MeasurementDataModule, item_seeds, load_image
from dwgf.errors import DWGFError
from dwgf.operators import BoxInpainting, SuperResolution
from dwgf.rendering import png_bytes
from dwgf.testing import make_images
from tests.runs import base


def _dm(op, **kw):
    kw.setdefault("image_size", 32)
    kw.setdefault("channels", 3)
    dm = MeasurementDataModule(op, **kw)
    dm.setup("predict")
    return dm


def test_item_seeds_are_deterministic_and_distinct():
    assert item_seeds(0, "a") == item_seeds(0, "a")
    seeds = {s for i in range(100) for s in item_seeds(0, f"item{i}")}
    assert len(seeds) == 200
    assert item_seeds(1, "a") != item_seeds(0, "a")
    assert all(0 <= s < 2**63 for s in item_seeds(123, "b"))


def test_images_are_resized_cropped_and_degraded(image_dir):
    dm = _dm(BoxInpainting(size=[8, 8], sigma_y=0.01), images=str(image_dir), batch_size=2)
    batch = next(iter(dm.predict_dataloader()))
    assert batch["image"].shape == (2, 3, 32, 32) and batch["measurement"].shape == (2, 3, 32, 32)
    assert batch["image"].min() >= -1 and batch["image"].max() <= 1
    assert batch["params"]["mask"].shape == (2, 1, 32, 32)
    assert batch["name"] == ["img0", "img1"] and batch["index"].tolist() == [0, 1]
    assert batch["seed"].tolist() == [item_seeds(0, dm.dataset.identity(0))[1], item_seeds(0, dm.dataset.identity(1))[1]]


def test_items_do_not_depend_on_batching(image_dir):
    a = _dm(BoxInpainting(size=[8, 8], sigma_y=0.05), images=str(image_dir), batch_size=3)
    b = _dm(BoxInpainting(size=[8, 8], sigma_y=0.05), images=str(image_dir), batch_size=1)
    big = next(iter(a.predict_dataloader()))
    for i, small in enumerate(b.predict_dataloader()):
        assert torch.equal(small["measurement"][0], big["measurement"][i])
        assert torch.equal(small["params"]["mask"][0], big["params"]["mask"][i])


def test_channel_conversion(tmp_path):
    gray = make_images(tmp_path / "gray", count=1, mode="L")
    rgb = make_images(tmp_path / "rgb", count=1)
    assert load_image(next(gray.iterdir()), 3, (16, 16)).shape == (3, 16, 16)
    assert load_image(next(rgb.iterdir()), 1, (16, 16)).shape == (1, 16, 16)
    x = load_image(next(gray.iterdir()), 3, None)
    assert torch.equal(x[0], x[1]) and torch.equal(x[1], x[2])


def test_center_crop_keeps_the_middle(tmp_path):
    arr = torch.zeros(20, 40, dtype=torch.uint8)
    arr[:, 10:30] = 255  # a white middle stripe, 20 wide
    Image.fromarray(arr.numpy()).save(tmp_path / "wide.png")
    x = load_image(tmp_path / "wide.png", 1, (20, 20))
    assert x.shape == (1, 20, 20) and x.min() > 0.9


def test_measurement_only_mode_with_masks(tmp_path):
    meas, masks = tmp_path / "meas", tmp_path / "masks"
    meas.mkdir(), masks.mkdir()
    y = torch.rand(3, 32, 32) * 2 - 1
    (meas / "a.png").write_bytes(png_bytes((y + 1) / 2))
    mask = torch.ones(1, 32, 32)
    mask[:, 4:10, 4:10] = 0
    (masks / "a.png").write_bytes(png_bytes(mask))
    dm = _dm(BoxInpainting(size=[2, 2]), measurements=str(meas), masks=str(masks))
    batch = next(iter(dm.predict_dataloader()))
    assert "image" not in batch and not dm.has_ground_truth
    assert torch.equal(batch["params"]["mask"][0], mask)
    assert torch.all(batch["measurement"][0][:, 4:10, 4:10] == 0)


def test_measurement_only_super_resolution_reads_low_resolution(tmp_path):
    meas = make_images(tmp_path / "lr", count=1, sizes=((8, 8),))
    dm = _dm(SuperResolution(4), measurements=str(meas))
    assert next(iter(dm.predict_dataloader()))["measurement"].shape == (1, 3, 8, 8)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({}, "^MeasurementDataModule: images or measurements must be given"),
        ({"images": "/nonexistent/folder"}, "^MeasurementDataModule: images .*no such folder"),
    ],
)
def test_bad_inputs(kwargs, match):
    with pytest.raises(DWGFError, match=match):
        _dm(BoxInpainting(size=[2, 2]), **kwargs)


def test_empty_folder(tmp_path):
    (tmp_path / "notes.txt").write_text("no images here")
    with pytest.raises(DWGFError, match="no images found"):
        _dm(BoxInpainting(size=[2, 2]), images=str(tmp_path))


def test_super_resolution_factor_must_divide(image_dir):
    with pytest.raises(DWGFError, match="does not divide"):
        _dm(SuperResolution(5), images=str(image_dir))


def test_images_and_measurements_are_exclusive(image_dir):
    with pytest.raises(DWGFError, match="^MeasurementDataModule: images .* and measurements .* are both given"):
        MeasurementDataModule(BoxInpainting(size=[2, 2]), images=str(image_dir), measurements=str(image_dir))


def test_inputs_far_from_the_prior_get_one_warning_line(ldm_path, tmp_path, capsys):
    images = make_images(tmp_path / "in", count=2, sizes=((32, 32),), mode="L")
    rgb = np.random.default_rng(0).integers(0, 255, (256, 256, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(images / "photo.png")  # a colour photograph, 8x the prior's 32 px
    Image.fromarray(rgb[:40, :40]).save(images / "patch.png")  # colour, near the prior's size

    def to_terminal(message, category, filename, lineno, file=None, line=None):  # as Python shows a warning, not as pytest records it
        sys.stderr.write(warnings.formatwarning(message, category, filename, lineno, line))

    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.showwarning = to_terminal
        main([*base(ldm_path, tmp_path / "o"), "--data.images", str(images)])
    lines = [ln for ln in capsys.readouterr().err.splitlines() if "far from what the prior models" in ln]
    assert lines == [f"dwgf: warning: --data.images {str(images)!r}: 2 of 4 images are far from what the prior models: 2 colour images converted "
                     "to grayscale for the grayscale prior; 1 image at least 4x the prior's 32x32 resolution shrunk to it; "
                     "expect poor results (is this the right prior?)"]


def test_own_masks_with_images_give_the_mask_and_metrics_against_the_images(ldm_path, tmp_path):
    """--data.images with --data.masks (box inpainting): each image's own mask (white = observed) is its mask, brought
    to the working size by the images' rule (cover and crop, nearest), and metrics.csv has PSNR against the images."""
    import csv

    images = make_images(tmp_path / "photos", count=2, sizes=((48, 40),), mode="L")
    masks = tmp_path / "masks"
    masks.mkdir()
    for i in range(2):  # at the photos' own size (48 x 40): the left half missing
        mask = np.full((48, 40), 255, np.uint8)
        mask[:, : 20 + 4 * i] = 0
        Image.fromarray(mask).save(masks / f"img{i}.png")
    dm = _dm(BoxInpainting(size=[8, 8]), images=str(images), masks=str(masks), channels=1, batch_size=2)
    batch = next(iter(dm.predict_dataloader()))
    expected = [load_image(masks / f"img{i}.png", 1, (32, 32), Image.NEAREST) > 0 for i in range(2)]
    assert torch.equal(batch["params"]["mask"], torch.stack(expected).float())
    assert set(batch["params"]["mask"].unique().tolist()) == {0.0, 1.0} and batch["image"].shape == (2, 1, 32, 32)
    out = tmp_path / "out"
    main([*base(ldm_path, out), "--data.images", str(images), "--data.masks", str(masks), "--data.operator", "BoxInpainting"])
    with open(out / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["name"] for r in rows] == ["img0", "img1"] and all(float(r["psnr"]) > 0 for r in rows)
    assert (out / "img0" / "ground_truth.png").is_file()


def test_a_mask_is_brought_to_the_working_size_with_its_measurement(tmp_path):
    """A 50 x 37 measurement is resized to the working size (cover and crop): its 50 x 37 mask follows it."""
    meas, masks = tmp_path / "meas", tmp_path / "masks"
    meas.mkdir(), masks.mkdir()
    Image.fromarray(np.full((37, 50, 3), 128, np.uint8)).save(meas / "a.png")
    mask = np.full((37, 50), 255, np.uint8)
    mask[10:20, 10:30] = 0
    Image.fromarray(mask).save(masks / "a.png")
    dm = _dm(BoxInpainting(size=[2, 2]), measurements=str(meas), masks=str(masks))
    got = next(iter(dm.predict_dataloader()))["params"]["mask"][0]
    assert got.shape == (1, 32, 32) and torch.equal(got, (load_image(masks / "a.png", 1, (32, 32), Image.NEAREST) > 0).float())
    assert 0 < float(got.mean()) < 1
