"""Any image size (fit: cover / keep, --data.size H W), batches of one size, per-item prompts, and the SD-family configs end to end."""

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from dwgf.cli import main
from dwgf.data import MeasurementDataModule
from dwgf.data.datamodule import batches_by_group
from dwgf.errors import DWGFError
from dwgf.operators import BoxInpainting, SuperResolution
from dwgf.testing import make_images, make_tiny_sd_prior, make_tiny_sdxl_prior

ROOT = Path(__file__).resolve().parents[1]
PER_ITEM = {"mean.png", "std.png", "measurement.png", "ground_truth.png", "metrics.json", "summary.png", ".dwgf-item.json"}


def run(*args):
    main(list(map(str, args)))


def png_size(path):
    with Image.open(path) as img:
        return img.size[1], img.size[0]  # (height, width)


@pytest.fixture(scope="module")
def layouts(tmp_path_factory):
    root = tmp_path_factory.mktemp("layouts")
    return {"sd15": make_tiny_sd_prior(root / "sd15"),
            "sd21_768": make_tiny_sd_prior(root / "sd21v", prediction_type="v_prediction", version="2"),
            "sdxl": make_tiny_sdxl_prior(root / "sdxl")}


@pytest.fixture(scope="module")
def odd_images(tmp_path_factory):
    """A wide image whose sides are not multiples of the tiny priors' 4 px (padded), and a tall one that is."""
    folder = tmp_path_factory.mktemp("odd")
    make_images(folder, count=2, sizes=((34, 50), (56, 40)))
    (folder / "img1.txt").write_text("  a tall smooth pattern \n")
    with open(folder / "prompts.csv", "w", newline="") as f:
        csv.writer(f).writerows([["name", "prompt"], ["img0", "a wide pattern, in colour"]])
    return folder


@pytest.mark.parametrize("family", ["sd15", "sd21_768", "sdxl"])
@pytest.mark.parametrize("task", ["box_inpaint", "sr8"])
def test_each_family_config_end_to_end_at_the_inputs_own_size(layouts, odd_images, tmp_path, family, task):
    """The acceptance run: the config on its tiny folder, non-square images, prompts and guidance 3."""
    out = tmp_path / "out"
    images = odd_images
    if task == "sr8":  # the factor must divide both sides of each image: one 40x56 image
        images = tmp_path / "sr_images"
        make_images(images, count=1, sizes=((40, 56),))
        (images / "img0.txt").write_text("a pattern")
    run("predict", "--config", ROOT / f"configs/{family}/{task}.yaml", "--model.prior.pretrained", layouts[family],
        "--model.prior.prompt", "a photo", "--model.prior.guidance_scale", 3, "--model.num_steps", 2, "--model.num_particles", 2,
        "--data.fit", "keep", "--data.images", images, "--output", out, "--trainer.logger", "false")
    names = ["img0", "img1"] if task == "box_inpaint" else ["img0"]
    for name in names:
        own = png_size(images / f"{name}.png")
        files = {p.name for p in (out / name).iterdir()}
        assert files == PER_ITEM | {"particle_0.png", "particle_1.png"} | ({"unobserved.png"} if task == "box_inpaint" else set()), files
        for f in ["particle_0.png", "particle_1.png", "mean.png", "std.png", "ground_truth.png"]:
            assert png_size(out / name / f) == own, (name, f)
        want = own if task == "box_inpaint" else (own[0] // 8, own[1] // 8)
        assert png_size(out / name / "measurement.png") == want
        record = json.loads((out / name / "metrics.json").read_text())
        assert record["psnr_mean"] is not None and record["psnr_mean"] == record["psnr_mean"]
    rows = list(csv.reader(open(out / "metrics.csv")))
    assert [r[0] for r in rows[1:]] == names
    cfg = (out / "config.yaml").read_text()
    assert "guidance_scale: 3.0" in cfg and "fit: keep" in cfg


def test_family_configs_state_their_mode_and_the_papers_settings():
    import yaml

    for family, cls, hub in [("sd15", "StableDiffusionPrior", "stable-diffusion-v1-5/stable-diffusion-v1-5"),
                             ("sd21_768", "StableDiffusionPrior", "stabilityai/stable-diffusion-2-1"),
                             ("sdxl", "StableDiffusionXLPrior", "stabilityai/stable-diffusion-xl-base-1.0")]:
        for task in ["box_inpaint", "sr8"]:
            cfg = yaml.safe_load((ROOT / f"configs/{family}/{task}.yaml").read_text())
            model, data = cfg["model"]["init_args"], cfg["data"]["init_args"]
            assert model["prior"]["class_path"] == f"dwgf.priors.{cls}" and model["prior"]["init_args"]["pretrained"] == hub
            assert model["prior"]["init_args"]["prompt"] == "" and model["prior"]["init_args"]["guidance_scale"] == 1.0
            assert (model["num_particles"], model["num_steps"], model["decoder_noise"]) == (4, 998, 0.01)
            assert model["step_size"]["init_args"]["lr"] == 1.0
            assert [(r["class_path"].rsplit(".", 1)[1], r["init_args"]["weight"]) for r in model["regularizers"]] == [
                ("KLPrior", 0.15), ("EncoderConsistency", 0.1)]
            assert data["fit"] == "cover" and data["operator"]["init_args"]["sigma_y"] == 0.001
            assert data["operator"]["init_args"].get("factor", 8) == 8


def test_same_size_batches_give_what_items_alone_give(layouts, tmp_path):
    """Items of different sizes are batched by size; an item's result does not depend on its batch beyond float rounding
    (docs/running.md, "What is reproducible"): the PNGs of a batch of 3 and of the item alone agree to one 8-bit level."""
    images = make_images(tmp_path / "mixed", count=5, sizes=((32, 48), (36, 36), (32, 48), (36, 36), (32, 48)))
    base = ["predict", "--config", ROOT / "configs/sd15/box_inpaint.yaml", "--model.prior.pretrained", layouts["sd15"],
            "--model.num_steps", 2, "--model.num_particles", 2, "--data.fit", "keep", "--data.images", images, "--trainer.logger", "false"]
    run(*base, "--data.batch_size", 3, "--output", tmp_path / "b3")
    run(*base, "--data.batch_size", 1, "--output", tmp_path / "b1")
    for i in range(5):
        for f in ["particle_0.png", "particle_1.png", "measurement.png"]:
            a, b = (np.asarray(Image.open(tmp_path / run_dir / f"img{i}" / f), dtype=np.int16) for run_dir in ("b3", "b1"))
            assert np.abs(a - b).max() <= 1, (i, f)
    assert batches_by_group(5, 2, [(32, 48), (36, 36), (32, 48), (36, 36), (32, 48)]) == [[0, 2], [4], [1, 3]]
    assert batches_by_group(5, 2) == [[0, 1], [2, 3], [4]]


def test_fixed_size_option_takes_two_numbers(layouts, tmp_path):
    images = make_images(tmp_path / "i", count=1, sizes=((50, 70),))
    out = tmp_path / "o"
    run("predict", "--config", ROOT / "configs/sd15/box_inpaint.yaml", "--model.prior.pretrained", layouts["sd15"],
        "--model.num_steps", 1, "--model.num_particles", 1, "--data.size", 24, 40, "--data.images", images, "--output", out,
        "--trainer.logger", "false")
    assert png_size(out / "img0" / "mean.png") == (24, 40) and png_size(out / "img0" / "ground_truth.png") == (24, 40)


@pytest.mark.parametrize("args, message", [
    (["--data.size", 30, 40], r"--data.size 30 40: StableDiffusionPrior takes sides that are multiples of 4 px \(e.g. 32 40\)"),
    (["--data.size", "[0, 4]"], r"--data.size must be two positive whole numbers"),
    (["--data.fit", "stretch"], r"--data.fit must be one of cover, keep, got 'stretch'"),
    (["--data.fit", "keep", "--data.size", 32, 32], r"--data.fit keep keeps each image's own size; it takes no --data.size"),
    (["--model.prior.guidance_scale", -2], r"--model.prior.guidance_scale must be a finite number >= 0"),
    (["--data.size", 512], r"--data.size takes two whole numbers, height and width \(e.g. --data.size 512 768\); got 512$"),
    (["--data.size", 32, "wide"], r"--data.size takes two whole numbers, .*; got 32 wide$"),
])
def test_bad_size_and_guidance_options_are_one_line_errors(layouts, image_dir, tmp_path, capsys, args, message):
    with pytest.raises(SystemExit) as exc:
        run("predict", "--config", ROOT / "configs/sd15/box_inpaint.yaml", "--model.prior.pretrained", layouts["sd15"],
            "--data.images", image_dir, "--output", tmp_path / "o", *args)
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("dwgf: error: ")
    import re

    assert re.search(message, err), err


def test_keep_mode_item_that_the_factor_does_not_divide_fails_alone(layouts, tmp_path, capsys):
    images = make_images(tmp_path / "i", count=2, sizes=((40, 56), (36, 52)))
    out = tmp_path / "o"
    with pytest.raises(SystemExit) as exc:
        run("predict", "--config", ROOT / "configs/sd15/sr8.yaml", "--model.prior.pretrained", layouts["sd15"],
            "--model.num_steps", 1, "--model.num_particles", 1, "--data.fit", "keep", "--data.images", images, "--output", out,
            "--trainer.logger", "false")
    assert exc.value.code == 1  # some items failed
    assert (out / "img0" / "mean.png").is_file()
    reason = json.loads((out / "img1" / "failure.json").read_text())["reason"]
    assert "factor 8 does not divide the 36x52 image size" in reason


def test_prompts_from_csv_and_txt_are_read_and_checked(tmp_path):
    folder = make_images(tmp_path / "p", count=3, sizes=((32, 32),))
    (folder / "prompts.csv").write_text('name,prompt\nimg0.png,"a cat, sitting"\nimg2,a dog\nghost,nobody\n')
    (folder / "img1.txt").write_text("a bird\n")
    data = MeasurementDataModule(BoxInpainting(size=[8, 8]), images=str(folder), size=[32, 32], channels=3)
    with pytest.warns(UserWarning, match=r"prompts.csv names 1 file\(s\) that are not images of the folder: 'ghost'"):
        data.setup("predict")
    assert [data.dataset.prompt(i) for i in range(3)] == ["a cat, sitting", "a bird", "a dog"]
    assert data.prompts() == ["a cat, sitting", "a bird", "a dog"]
    assert len(data.dataset) == 3  # prompts.csv and img1.txt are not items
    # a prompt is part of the item's identity (and so of its seeds and resume key)
    before = data.dataset.identity(1)
    (folder / "img1.txt").write_text("a fish")
    again = MeasurementDataModule(BoxInpainting(size=[8, 8]), images=str(folder), size=[32, 32], channels=3)
    with pytest.warns(UserWarning):
        again.setup("predict")
    assert again.dataset.identity(1) != before and again.dataset.identity(0) == data.dataset.identity(0)
    # two prompts for one image, and a bad header, are one-line errors naming the file
    (folder / "img2.txt").write_text("a second prompt")
    with pytest.raises(DWGFError, match=r"img2.txt: img2.png already has a prompt \(prompts.csv line 3\)"):
        MeasurementDataModule(BoxInpainting(size=[8, 8]), images=str(folder), size=[32, 32], channels=3).setup("predict")
    (folder / "img2.txt").unlink()
    (folder / "prompts.csv").write_text("file;text\nimg0;x\n")
    with pytest.raises(DWGFError, match=r"prompts.csv: the first line must be the header 'name,prompt'"):
        MeasurementDataModule(BoxInpainting(size=[8, 8]), images=str(folder), size=[32, 32], channels=3).setup("predict")


def test_prompts_for_a_prior_without_text_are_a_one_line_error(ldm_path, tmp_path, capsys):
    folder = make_images(tmp_path / "p", count=1, sizes=((32, 32),))
    (folder / "img0.txt").write_text("a digit")
    with pytest.raises(SystemExit) as exc:
        run("predict", "--config", ROOT / "tests/conf/ldm_sr.yaml", "--model.prior.pretrained", ldm_path, "--data.images", folder,
            "--output", tmp_path / "o", "--trainer.logger", "false")
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert "UnconditionalLatentPrior takes no text prompt" in err and err.count("\n") == 0


def test_per_item_prompts_reach_the_network(layouts):
    """An item's own prompt gives what a prior with that prompt gives, in a batch beside an item without one."""
    from dwgf.priors import StableDiffusionPrior
    from dwgf.regularizers import KLPrior
    from dwgf.solver import DWGF

    op = BoxInpainting(size=[10, 12], position=[4, 6])
    x = torch.rand(2, 3, 32, 40, generator=torch.Generator().manual_seed(0)) * 2 - 1
    params = {"mask": torch.stack([op.sample_params((3, 32, 40), torch.Generator())["mask"]] * 2)}
    y = op(x, params)

    def solver(prompt):
        prior = StableDiffusionPrior(str(layouts["sd15"]), prompt=prompt, guidance_scale=3.0)
        return DWGF(prior, num_steps=3, num_particles=2, regularizers=[KLPrior(0.15)]).set_operator(op)

    mixed = solver("a cat").solve(y, params, [1, 2], size=(32, 40), prompts=["a dog", None])
    dog = solver("a dog").solve(y[:1], {"mask": params["mask"][:1]}, [1], size=(32, 40))
    cat = solver("a cat").solve(y[1:], {"mask": params["mask"][1:]}, [2], size=(32, 40))
    assert mixed.shape == (2, 2, 3, 32, 40)
    assert torch.allclose(mixed[:1], dog, atol=1e-5) and torch.allclose(mixed[1:], cat, atol=1e-5)
    assert not torch.allclose(mixed[:1], solver("a cat").solve(y[:1], {"mask": params["mask"][:1]}, [1], size=(32, 40)), atol=1e-3)


def test_super_resolution_factor_must_divide_a_fixed_size():
    data = MeasurementDataModule(SuperResolution(factor=8), images="unused", size=[40, 60], channels=3)
    with pytest.raises(DWGFError, match="factor 8 does not divide the 40x60 image size"):
        data.operator.measurement_shape((3, *data.size))


def test_a_negative_prompt_without_guidance_is_a_warning(layouts):
    from dwgf.priors import StableDiffusionPrior

    with pytest.warns(UserWarning, match=r"negative_prompt has no effect without guidance \(guidance_scale 1\)"):
        StableDiffusionPrior(str(layouts["sd15"]), negative_prompt="blurry")


def test_each_distinct_prompt_is_encoded_once_per_run(layouts, tmp_path, monkeypatch):
    """Three items, two distinct per-item prompts, one batch each: the text encoders are loaded once for
    the prior's own prompt and negative prompt, once for the items' prompts (before the first batch), never in the flow."""
    from dwgf.priors import PromptConditioner
    from dwgf.priors.stable_diffusion import CLIPEncoding

    folder = make_images(tmp_path / "p", count=3, sizes=((32, 32),))
    (folder / "prompts.csv").write_text("name,prompt\nimg0,a cat\nimg1,a dog\nimg2,a cat\n")
    encoded = []
    load = PromptConditioner.text_encoders
    encode = CLIPEncoding.encode

    def count_loads(self):
        encoded.append("load")
        return load(self)

    def count_texts(self, encoders, texts, max_length=None):
        encoded.append(tuple(texts))
        return encode(self, encoders, texts, max_length)

    monkeypatch.setattr(PromptConditioner, "text_encoders", count_loads)
    monkeypatch.setattr(CLIPEncoding, "encode", count_texts)
    run("predict", "--config", ROOT / "configs/sd15/box_inpaint.yaml", "--model.prior.pretrained", layouts["sd15"],
        "--model.num_steps", 2, "--model.num_particles", 1, "--model.prior.guidance_scale", 2, "--data.images", folder,
        "--output", tmp_path / "o", "--trainer.logger", "false")
    assert encoded == ["load", ("",), ("",), "load", ("a cat", "a dog")]


@pytest.mark.parametrize("method", ["flow_dps", "latent_daps", "resample"])
def test_the_latent_solvers_run_over_the_sd21_config(layouts, tmp_path, method):
    """configs/sd21_768/box_inpaint.yaml with each latent solver's overlay resolves offline and runs on the tiny v-prediction layout."""
    from tests.test_latent_solvers import FAST

    images = tmp_path / "images"
    make_images(images, count=1, sizes=((32, 48),))
    out = tmp_path / "out"
    run("predict", "--config", ROOT / "configs/sd21_768/box_inpaint.yaml", "--config", ROOT / f"configs/methods/{method}.yaml",
        "--model.prior.pretrained", layouts["sd21_768"], "--model.num_particles", 2, "--data.fit", "keep", "--data.images", images,
        "--output", out, "--trainer.logger", "false", *FAST[method])
    assert {p.name for p in (out / "img0").glob("particle_*.png")} == {"particle_0.png", "particle_1.png"}
    record = json.loads((out / "img0" / "metrics.json").read_text())
    assert record["psnr_mean"] == record["psnr_mean"]
