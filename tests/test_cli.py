"""The ``dwgf`` command end to end on tiny priors (offline)."""

import csv
import textwrap
from pathlib import Path

import pytest
import torch
import yaml
from PIL import Image

from dwgf.cli import main
from dwgf.testing import make_images

ROOT = Path(__file__).resolve().parents[1]
SD_CONFIGS = [ROOT / "configs/sd21/ffhq_box_inpaint.yaml", ROOT / "configs/sd21/ffhq_sr8.yaml"]
LDM_CONFIG = ROOT / "tests/conf/ldm_sr.yaml"
ITEM_FILES = {"mean.png", "std.png", "measurement.png", "ground_truth.png", "metrics.json", "summary.png"}


def run(*args):
    main(list(map(str, args)))


def check_outputs(out: Path, names, particles, with_truth=True):
    for name in names:
        files = {p.name for p in (out / name).iterdir()}
        expected = {f"particle_{k}.png" for k in range(particles)} | ITEM_FILES | {".dwgf-item.json"}
        if not with_truth:
            expected -= {"ground_truth.png"}
        assert files == expected, (name, files)
        assert not any(f.startswith(".") for f in files - {".dwgf-item.json"})  # no temporary files left
    with open(out / "metrics.csv") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["name", "psnr", "ssim", "psnr_mean", "ssim_mean", "seconds", "spread", "crps", "coverage90"]
    assert [r[0] for r in rows[1:]] == list(names)
    for r in rows[1:]:
        assert float(r[5]) > 0
        if with_truth:
            assert all(float(v) == float(v) for v in r[1:5] + r[6:])  # not NaN
            assert 0 <= float(r[8]) <= 1 and float(r[6]) >= 0 and float(r[7]) >= 0
        else:
            assert r[1:5] + r[6:] == ["", "", "", "", "", "", ""]
    assert (out / "config.yaml").is_file()
    sheet = Image.open(out / "summary.png")
    item = Image.open(out / names[0] / "summary.png")
    # one row per item (up to 8), and per item: measurement, N particles, mean, std (+ truth)
    assert sheet.height == sum(item.height + 4 for _ in names[:8])
    assert item.width == (particles + 3 + with_truth) * (96 + 2) - 2
    return rows


@pytest.mark.parametrize("config", SD_CONFIGS, ids=lambda p: p.stem)
def test_print_config_offline(config, capsys, monkeypatch):
    """The shipped SD 2.1 configs parse with no network (the prior is a hub id; nothing is loaded)."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(SystemExit) as exc:
        main(["predict", "--config", str(config), "--print_config"])
    assert exc.value.code == 0
    cfg = yaml.safe_load(capsys.readouterr().out)
    assert cfg["model"]["init_args"]["prior"]["init_args"]["pretrained"] == "stabilityai/stable-diffusion-2-1-base"
    assert cfg["model"]["init_args"]["num_steps"] == 998 and cfg["model"]["init_args"]["num_particles"] == 4


def test_sd_box_inpainting_end_to_end(sd_path, image_dir, tmp_path):
    """The acceptance run: the paper's config on a tiny SD-layout folder and 3 images of any size."""
    out = tmp_path / "O"
    run("predict", "--config", SD_CONFIGS[0], "--model.prior.pretrained", sd_path, "--model.num_steps", 3,
        "--data.images", image_dir, "--output", out)
    rows = check_outputs(out, ["img0", "img1", "img2"], particles=4)
    assert len(rows) == 4
    cfg = yaml.safe_load((out / "config.yaml").read_text())
    assert cfg["model"]["init_args"]["num_steps"] == 3
    assert cfg["model"]["init_args"]["prior"]["init_args"]["pretrained"] == str(sd_path)
    assert cfg["data"]["init_args"]["seed"] == 0
    # the paper's box, scaled to 32 pixels: rows 9-27, cols 16-27 are unobserved (gray)
    meas = torch.tensor(list(Image.open(out / "img0" / "measurement.png").getdata())).view(32, 32, 3)
    assert (meas[10:27, 16:27] == 128).all() and not (meas[:9] == 128).all()


def test_sd_super_resolution_with_overrides(sd_path, image_dir, tmp_path):
    out = tmp_path / "sr"
    run("predict", "--config", SD_CONFIGS[1], "--model.prior.pretrained", sd_path, "--model.num_steps", 2,
        "--model.num_particles", 2, "--data.images", image_dir, "--data.operator.factor", 4, "--output", out)
    check_outputs(out, ["img0", "img1", "img2"], particles=2)
    assert Image.open(out / "img0" / "measurement.png").size == (8, 8)


def test_unconditional_prior_short_names_and_batches(ldm_path, image_dir, tmp_path):
    out = tmp_path / "ldm"
    run("predict", "--config", LDM_CONFIG, "--model.prior.pretrained", ldm_path, "--data.images", image_dir,
        "--output", out, "--seed_everything", 7)
    check_outputs(out, ["img0", "img1", "img2"], particles=2)
    assert Image.open(out / "img1" / "mean.png").mode == "L"  # grayscale prior: RGB inputs converted


def test_same_seed_same_files_and_batch_size_invariance(ldm_path, image_dir, tmp_path):
    for name, bs in (("a", 1), ("b", 3)):
        run("predict", "--config", LDM_CONFIG, "--model.prior.pretrained", ldm_path, "--data.images", image_dir,
            "--output", tmp_path / name, "--data.batch_size", bs)
    for item in ("img0", "img1", "img2"):
        a = torch.tensor(list(Image.open(tmp_path / "a" / item / "particle_1.png").getdata()), dtype=torch.float)
        b = torch.tensor(list(Image.open(tmp_path / "b" / item / "particle_1.png").getdata()), dtype=torch.float)
        assert (a - b).abs().max() <= 1  # identical up to one 8-bit level of rounding


def test_measurement_only_mode(ldm_path, tmp_path):
    meas = make_images(tmp_path / "lr", count=2, sizes=((16, 16),), mode="L")
    out = tmp_path / "mo"
    run("predict", "--config", LDM_CONFIG, "--model.prior.pretrained", ldm_path, "--data.measurements", meas, "--output", out)
    check_outputs(out, ["img0", "img1"], particles=2, with_truth=False)


def test_user_regularizer_plugs_in_by_class_path(ldm_path, image_dir, tmp_path, monkeypatch):
    """A regularizer in the user's own module, named only by class_path in their config."""
    (tmp_path / "my_regs.py").write_text(textwrap.dedent('''
        import torch
        from dwgf.regularizers import Regularizer

        class ImageTV(Regularizer):
            """Total variation in image space; counts its calls in a file."""
            space = "image"

            def __init__(self, weight: float = 0.01, log: str = "calls.txt"):
                self.weight, self.log = weight, log

            def force(self, state):
                with open(self.log, "a") as f:
                    f.write(f"{state.iteration}\\n")
                x = state.x.detach().flatten(0, 1).requires_grad_(True)
                tv = (x[..., 1:, :] - x[..., :-1, :]).abs().mean() + (x[..., 1:] - x[..., :-1]).abs().mean()
                (g,) = torch.autograd.grad(tv, x)
                return self.weight * g.view_as(state.x)
    '''))
    (tmp_path / "mine.yaml").write_text(textwrap.dedent(f'''
        model:
          init_args:
            regularizers:
              - class_path: KLPrior
              - class_path: my_regs.ImageTV
                init_args:
                  weight: 0.05
                  log: {tmp_path / "calls.txt"}
    '''))
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    run("predict", "--config", LDM_CONFIG, "--config", tmp_path / "mine.yaml", "--model.prior.pretrained", ldm_path,
        "--data.images", image_dir, "--output", tmp_path / "tv")
    calls = (tmp_path / "calls.txt").read_text().split()
    assert calls == ["0", "1", "2"] * 2  # 3 iterations, 2 batches
    check_outputs(tmp_path / "tv", ["img0", "img1", "img2"], particles=2)


def test_bad_prior_path_is_one_line_exit_2(image_dir, tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        run("predict", "--config", LDM_CONFIG, "--model.prior.pretrained", tmp_path / "missing",
            "--data.images", image_dir, "--output", tmp_path / "x")
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("dwgf: error: --model.prior.pretrained") and "no such folder" in err[-1]


def test_operator_errors_come_before_the_prior_is_loaded(image_dir, tmp_path, capsys):
    """The data module (and its operator) is built before the solver: a bad operator argument is
    reported even when the prior could not be loaded at all."""
    with pytest.raises(SystemExit) as exc:
        run("predict", "--config", LDM_CONFIG, "--model.prior.pretrained", tmp_path / "missing",
            "--data.operator.factor", 0, "--data.images", image_dir, "--output", tmp_path / "x")
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("dwgf: error: --data.operator.factor") and "pretrained" not in err[-1]


def test_the_cli_links_operator_prior_and_resume_explicitly(ldm_path, image_dir, tmp_path, monkeypatch):
    """One operator for data and solver, the prior's resolution for the data, one Resume for writer and data."""
    from dwgf import cli

    seen = {}
    build = cli.DWGFCLI.instantiate_trainer

    def spy(self, **kwargs):
        trainer = build(self, **kwargs)
        seen.update(model=self.model, data=self.datamodule, writer=self.writer)
        return trainer

    monkeypatch.setattr(cli.DWGFCLI, "instantiate_trainer", spy)
    run("predict", "--config", LDM_CONFIG, "--model.prior.pretrained", ldm_path, "--data.images", image_dir,
        "--model.num_steps", 2, "--output", tmp_path / "o")
    model, data, writer = seen["model"], seen["data"], seen["writer"]
    assert model.operator is data.operator and writer.data is data and writer.resume is data.resume
    assert data.dataset.size == (model.prior.image_size,) * 2 and data.dataset.channels == model.prior.image_channels


def test_the_data_module_needs_a_shape_or_a_prior(image_dir):
    from dwgf.data import MeasurementDataModule
    from dwgf.errors import DWGFError
    from dwgf.operators import Denoising

    with pytest.raises(DWGFError, match="give size and channels, or call use_prior"):
        MeasurementDataModule(Denoising(), images=str(image_dir)).setup("predict")


def test_mixed_precision_runs_on_cpu(ldm_path, image_dir, tmp_path):
    out = tmp_path / "bf16"
    run("predict", "--config", LDM_CONFIG, "--model.prior.pretrained", ldm_path, "--data.images", image_dir,
        "--output", out, "--trainer.precision", "bf16-mixed")
    check_outputs(out, ["img0", "img1", "img2"], particles=2)


def test_help_lists_the_built_ins_by_short_name(capsys):
    with pytest.raises(SystemExit) as exc:
        run("predict", "--help")
    assert exc.value.code == 0
    out = capsys.readouterr().out
    lines = out[out.index("built-in classes"):].splitlines()
    listed = {line.split()[0]: line for line in lines if line.startswith("    ")}
    from dwgf.cli import _KINDS  # every kind has a heading
    for title, _ in _KINDS:
        assert f"  {title}:" in lines
    for name in ("DWGF", "LatentDPS", "PSLD", "DecoderInversion", "UnconditionalLatentPrior", "StableDiffusionPrior",
                 "BoxInpainting", "RandomInpainting", "SuperResolution", "GaussianBlur", "MotionBlur", "Denoising",
                 "KLPrior", "EncoderConsistency", "ConstantStepSize", "CosineStepSize", "DescendingTimesteps",
                 "MeasurementDataModule"):
        assert name in listed and len(listed[name].split()) > 2, name  # a name and a one-line description
    # base classes and internals are not offered as choices
    assert not {"InverseSolver", "ForwardOperator", "Regularizer", "FlowState", "ItemNoise", "DWGFError"} & set(listed)
