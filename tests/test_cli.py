"""The ``dwgf`` command end to end on tiny priors (offline)."""

import csv
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from dwgf.cli import main
from dwgf.testing import make_images
from tests.runs import LDM_CONFIG, NAN_REGULARIZER, base, one_line_error, predict
from tests.test_methods import _digits

ROOT = Path(__file__).resolve().parents[1]
SD_CONFIGS = [ROOT / "configs/sd21/ffhq_box_inpaint.yaml", ROOT / "configs/sd21/ffhq_sr8.yaml"]
ITEM_FILES = {"mean.png", "std.png", "measurement.png", "ground_truth.png", "metrics.json", "summary.png"}


def run(*args):
    main(list(map(str, args)))


def check_outputs(out: Path, names, particles, with_truth=True):
    for name in names:
        files = {p.name for p in (out / name).iterdir()}
        expected = {f"particle_{k}.png" for k in range(particles)} | ITEM_FILES | {".dwgf-item.json"}
        if "Inpainting" in (out / "config.yaml").read_text():  # an operator with unobserved pixels shows them
            expected |= {"unobserved.png"}
        if not with_truth:
            expected -= {"ground_truth.png"}
        assert files == expected, (name, files)
        assert not any(f.startswith(".") for f in files - {".dwgf-item.json"})  # no temporary files left
    with open(out / "metrics.csv") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["name", "psnr", "ssim", "psnr_mean", "ssim_mean", "seconds", "spread", "crps", "coverage90", "calibrated_width",
                       "calibrated_coverage", "coverage90_unobserved", "calibrated_width_unobserved", "calibrated_coverage_unobserved",
                       "ancestors", "min_ess"]
    assert [r[0] for r in rows[1:]] == list(names)
    for r in rows[1:]:
        assert float(r[5]) > 0
        if with_truth:
            assert all(float(v) == float(v) for v in r[1:5] + r[6:9])  # not NaN
            assert 0 <= float(r[8]) <= 1 and float(r[6]) >= 0 and float(r[7]) >= 0
        else:
            assert r[1:5] + r[6:9] == ["", "", "", "", "", "", ""]
        assert r[9:11] == ["", ""] and r[12:14] == ["", ""]  # no --model.calibration: the calibrated columns are empty
        assert r[14:] == ["", ""]  # DWGF does not resample: no ancestors, no min_ess
        if with_truth:  # the particles' coverage of the unobserved pixels (every pixel unless the operator has a region)
            assert 0 <= float(r[11]) <= 1 and ("Inpainting" in (out / "config.yaml").read_text() or r[11] == r[8])
        else:
            assert r[11] == ""
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
    # the generic solver and every method of dwgf.methods (with its settings) are listed; other bases and internals are not
    assert "InverseSolver" in listed
    from dwgf import methods

    for name in ("dwgf", "latent_dps", "psld", "red_diff", "decoder_inversion", "smc"):
        assert name in listed and f"Settings: {getattr(methods, name).settings_class.__name__} (" in listed[name], name
    assert not {"ForwardOperator", "Regularizer", "FlowState", "ItemDraws", "DWGFError"} & set(listed)




def test_optimizer_and_likelihood_by_short_name_on_the_command_line(tmp_path):
    from dwgf.cli import main

    out = tmp_path / "out"
    main(["predict", "--config", str(ROOT / "configs" / "quickstart.yaml"), "--data.images", _digits(tmp_path, 1),
          "--model.num_steps", "2", "--output", str(out), "--trainer.logger", "false",
          "--model.optimizer", "Langevin", "--model.optimizer.temperature", "0.5", "--model.likelihood", "GaussianLikelihood"])
    assert (out / "metrics.csv").is_file()


def test_betas_with_an_optimizer_on_the_command_line_is_one_line(tmp_path, capsys):
    from dwgf.cli import main

    with pytest.raises(SystemExit):
        main(["predict", "--config", str(ROOT / "configs" / "quickstart.yaml"), "--data.images", str(ROOT / "examples" / "mnist"),
              "--output", str(tmp_path / "o"), "--model.optimizer", "GradientDescent", "--model.betas", "[0.5, 0.9]"])
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("dwgf: error: --model.betas apply to the default optimizer only"), err
    assert "--model.optimizer" in err[-1]


def test_configuration_errors_are_one_line(ldm_path, five_images, tmp_path, capsys):
    base = ["predict", "--config", LDM_CONFIG, "--model.prior.pretrained", ldm_path, "--output", tmp_path / "o"]
    assert one_line_error(capsys, *base, "--data.images", tmp_path / "nowhere") == (
        f"dwgf: error: --data.images {str(tmp_path / 'nowhere')!r}: no such folder")
    (tmp_path / "empty").mkdir()
    assert one_line_error(capsys, *base, "--data.images", tmp_path / "empty") == (
        f"dwgf: error: --data.images {str(tmp_path / 'empty')!r}: no images found "
        "(it is empty; expected .png, .jpg, .jpeg, .bmp, .tif, .tiff, .webp files)")
    assert one_line_error(capsys, *base, "--data.images", five_images, "--data.operator.sigma_y", -0.1) == (
        "dwgf: error: --data.operator.sigma_y must be >= 0, got -0.1")
    assert one_line_error(capsys, *base, "--data.images", five_images, "--data.operator.factor", 3) == (
        "dwgf: error: --data.operator.factor 3 does not divide the 32x32 image size")
    assert one_line_error(capsys, *base, "--data.images", five_images, "--data.operator", "BoxInpainting", "--data.operator.size", "[40, 8]") == (
        "dwgf: error: BoxInpainting: the 40x8 box is larger than the 32x32 image")


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
        "dwgf: error: --data.operator.sigma_y must be >= 0, got -1.0")
    assert one_line_error(capsys, *base, "--data.images", tmp_path / "nowhere") == (
        f"dwgf: error: --data.images {str(tmp_path / 'nowhere')!r}: no such folder")
    assert "no-prior" in one_line_error(capsys, *base, "--data.images", five_images)


def test_user_errors_are_one_line_with_exit_2(ldm_path, five_images, tmp_path, capsys):
    base = ["predict", "--config", LDM_CONFIG, "--model.prior.pretrained", ldm_path, "--data.images", five_images, "--output", tmp_path / "o"]
    assert one_line_error(capsys, *base, "--trainer.devices", 0) == (
        "dwgf: error: --trainer.devices: expected a number of devices >= 1, -1 (all), a list of device indices or 'auto', got '0'")
    assert one_line_error(capsys, *base, "--trainer.devices", -1, "--trainer.accelerator", "cpu") == (
        "dwgf: error: --trainer.devices: -1 (all devices) is for GPUs; on the CPU give a number of processes >= 1")
    line = one_line_error(capsys, *base, "--trainer.precision", "bogus")
    assert line.startswith("dwgf: error: --trainer.precision: expected one of ") and "bf16-mixed" in line
    bad = tmp_path / "bad.yaml"
    bad.write_text("model:\n  init_args:\n    num_steps: [1,\n")
    assert one_line_error(capsys, *base, "--config", bad) == (
        f"dwgf: error: --config {str(bad)!r}: invalid YAML at line 4, column 1: expected the node content, but found '<stream end>'")
    for key, value, option in (("lr", ".inf", "--model.step_size.lr"), ("decoder_noise", ".nan", "--model.decoder_noise")):
        cfg = tmp_path / f"{key}.yaml"
        nested = f"    step_size:\n      init_args:\n        lr: {value}\n" if key == "lr" else f"    decoder_noise: {value}\n"
        cfg.write_text("model:\n  init_args:\n" + nested)
        expected = f"dwgf: error: {option}: must be a finite number, got {'inf' if key == 'lr' else 'nan'}"
        assert one_line_error(capsys, *base, "--config", cfg) == expected
    # a broken prior folder
    import shutil

    broken = tmp_path / "broken-prior"
    shutil.copytree(ldm_path, broken)
    (broken / "unet" / "config.json").write_text('{"sample_size": 8,')
    line = one_line_error(capsys, *base, "--model.prior.pretrained", broken)
    assert line.startswith(f"dwgf: error: --model.prior.pretrained {str(broken)!r}: unet/config.json is not valid JSON (line 1")
    shutil.rmtree(broken)
    shutil.copytree(ldm_path, broken)
    sched = broken / "scheduler" / "scheduler_config.json"
    sched.write_text(sched.read_text().replace('"beta_schedule": "', '"beta_schedule": "bogus_'))
    line = one_line_error(capsys, *base, "--model.prior.pretrained", broken)
    assert line.startswith(f"dwgf: error: --model.prior.pretrained {str(broken)!r}: scheduler/scheduler_config.json does not describe")
    assert "beta_schedule 'bogus_" in line


def test_the_installed_command_never_imports_from_the_working_directory(ldm_path, five_images, tmp_path):
    """A stray safetensors.py in the working directory is never executed; the user's own modules still load."""
    command = Path(sys.executable).with_name("dwgf")
    assert command.is_file(), "the dwgf console script is installed beside the interpreter"
    marker = tmp_path / "STRAY_RAN"
    for stray in ("safetensors", "requests", "tensorboard", "diffusers"):
        (tmp_path / f"{stray}.py").write_text(f"open({str(marker)!r}, 'a').write('{stray} ')\n")
    (tmp_path / "my_reg.py").write_text(NAN_REGULARIZER)
    run = subprocess.run([str(command), "predict", "--config", str(LDM_CONFIG), "--model.prior.pretrained", str(ldm_path),
                          "--data.images", str(five_images), "--output", str(tmp_path / "o"), "--trainer.logger", "false",
                          "--model.regularizers", "[{class_path: my_reg.PoisonItem, init_args: {item: 0, at: 99}}]"],
                         cwd=tmp_path, env={**os.environ, "HF_HUB_OFFLINE": "1"}, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    assert not marker.exists(), marker.read_text()


def test_skipped_entries_masks_and_class_paths_are_reported(ldm_path, five_images, tmp_path, capsys):
    images = make_images(tmp_path / "in", count=2, sizes=((32, 32),), mode="L")
    (images / "sub").mkdir()
    (images / "folder.png").mkdir()
    (images / "broken.png").symlink_to(tmp_path / "nowhere.png")
    (images / "loop.png").symlink_to(images / "loop.png")
    out = tmp_path / "out"
    with pytest.warns(UserWarning, match=r"4 entries are not image files and were skipped: broken.png \(a broken symbolic link\), "
                                          r"folder.png \(a folder\), loop.png \(a symbolic link loop\), sub \(a folder\)"):
        predict(ldm_path, images, out)
    assert sorted(p.name for p in out.iterdir() if p.is_dir() and p.name != "tensorboard") == ["img0", "img1"]
    # masks: a grey mask warns; a mask with an operator that takes none fails at start-up, once
    meas, masks = tmp_path / "meas", tmp_path / "masks"
    meas.mkdir(), masks.mkdir()
    np.save(meas / "m.npy", np.zeros((1, 32, 32), np.float32))
    grey = np.full((32, 32), 255, np.uint8)
    grey[:8] = 128
    Image.fromarray(grey).save(masks / "m.png")
    args = ["predict", "--config", str(LDM_CONFIG), "--model.prior.pretrained", str(ldm_path), "--data.measurements", str(meas),
            "--data.masks", str(masks), "--output", str(tmp_path / "o2")]
    assert one_line_error(capsys, *args) == (
        "dwgf: error: --data.masks: SuperResolution takes no mask; give no masks or an inpainting operator")
    with pytest.warns(UserWarning, match=r"m.png: the mask is not black and white; pixels brighter than mid-gray are taken as observed"):
        main([*args, "--data.operator", "BoxInpainting", "--data.operator.size", "[8, 8]"])
    base = ["predict", "--config", LDM_CONFIG, "--model.prior.pretrained", ldm_path, "--data.images", five_images, "--output", tmp_path / "o3"]
    assert one_line_error(capsys, *base, "--data.operator", "dwgf.operators.BoxInpaintin") == (
        "dwgf: error: --data.operator: no class 'BoxInpaintin' in module 'dwgf.operators' (did you mean 'BoxInpainting'?)")
    assert one_line_error(capsys, *base, "--data.operator", "nomodule.Box") == (
        "dwgf: error: --data.operator: cannot import module 'nomodule' for class_path 'nomodule.Box' (No module named 'nomodule'); a module "
        "of your own is found in the working directory or on PYTHONPATH: run dwgf where nomodule.py is, or PYTHONPATH=<its folder> dwgf ...")


def test_library_errors_name_arguments_and_the_cli_names_options(ldm_prior, five_images, ldm_path, tmp_path, capsys):
    """The Python API speaks of a class's own arguments; the command line turns them into its options."""
    from dwgf.errors import DWGFError
    from dwgf.operators import SuperResolution
    from dwgf.solver import DWGF

    with pytest.raises(DWGFError, match=r"^DWGF: num_steps must be >= 1, got 0$"):
        DWGF(ldm_prior, num_steps=0)
    with pytest.raises(DWGFError, match=r"^SuperResolution: sigma_y must be >= 0, got -1$"):
        SuperResolution(2, sigma_y=-1)
    base = ["predict", "--config", LDM_CONFIG, "--model.prior.pretrained", ldm_path, "--data.images", five_images, "--output", tmp_path / "o"]
    assert one_line_error(capsys, *base, "--model.num_steps", 0) == "dwgf: error: --model.num_steps must be >= 1, got 0"
    assert one_line_error(capsys, *base, "--model.step_size.lr", -1) == "dwgf: error: --model.step_size.lr must be > 0, got -1.0"
    assert one_line_error(capsys, *base, "--data.batch_size", 0) == "dwgf: error: --data.batch_size must be >= 1, got 0"


def test_measured_inpainting_without_masks_is_an_error_naming_the_option(ldm_path, tmp_path, capsys):
    meas = tmp_path / "meas"
    meas.mkdir()
    Image.new("L", (32, 32), 0).save(meas / "photo.png")
    with pytest.raises(SystemExit) as exc:
        main([*base(ldm_path, tmp_path / "o"), "--data.measurements", str(meas), "--data.operator", "BoxInpainting",
              "--data.operator.size", "[8, 8]"])
    assert exc.value.code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        "dwgf: error: --data.measurements with BoxInpainting need masks (a folder: one mask per measurement, same file name, "
        "white = observed, black = missing): without them the missing region is unknown")
    assert not (tmp_path / "o" / "photo").exists()
