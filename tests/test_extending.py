"""The documentation's worked examples ("Extending dwgf", docs/extending.md): a user's own operator (a function and a
class), regularizer, schedule, optimiser, method and prior, run through dwgf predict as the page shows them.

The page holds its code inline. The tests build the module ``my_extensions`` from the page's Python blocks (after the
imports of examples/extending/my_extensions.py, the runnable copy the page's commands name) and run that; another test
keeps examples/extending/ in step with the page, block for block.
"""

import importlib
import json
import re
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from dwgf.cli import main
from dwgf.likelihoods import MeanSquaredError

MSE = MeanSquaredError()  # the paper's data term: the data fit lives in the data terms

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples/extending"
PAGE = ROOT / "docs" / "extending.md"
PARTS = ("function", "operator", "regularizer", "schedule", "method", "prior", "optimizer")  # the module's order


def page_blocks(language: str) -> list[str]:
    """The page's code blocks in ``language``, in order."""
    return [m.group(1) for m in re.finditer(rf"```{language}\n(.*?)```", PAGE.read_text(), re.S)]


def module_parts() -> dict[str, str]:
    source = (EXAMPLE / "my_extensions.py").read_text()
    return {part: re.search(rf"# --8<-- \[start:{part}\]\n(.+?)# --8<-- \[end:{part}\]", source, re.S).group(1) for part in PARTS}


def module_from_page() -> str:
    """examples/extending/my_extensions.py's docstring and imports, then the page's Python blocks."""
    source = (EXAMPLE / "my_extensions.py").read_text()
    header = source[: source.index("# --8<-- [start:")]
    return header + "\n\n".join(page_blocks("python"))


@pytest.fixture
def user_module(monkeypatch, tmp_path):
    """``my_extensions`` built from the page's code, importable as PYTHONPATH=examples/extending makes the copy."""
    folder = tmp_path / "from_the_page"
    folder.mkdir()
    (folder / "my_extensions.py").write_text(module_from_page())
    monkeypatch.syspath_prepend(str(folder))
    sys.modules.pop("my_extensions", None)
    module = importlib.import_module("my_extensions")
    yield module
    sys.modules.pop("my_extensions", None)


def test_the_page_shows_the_code_inline_and_the_examples_folder_holds_the_same():
    """Every example's code is on the page (readable as plain Markdown, no include markers), and the runnable copy in
    examples/extending/ is the same code, block for block (and latent_map.yaml the page's YAML block)."""
    text = PAGE.read_text()
    assert "--8<--" not in text
    blocks = page_blocks("python")
    parts = module_parts()
    assert sorted(blocks, key=len) == sorted(parts.values(), key=len)
    assert (EXAMPLE / "latent_map.yaml").read_text() in page_blocks("yaml")


def test_user_extensions_run_through_dwgf_predict(user_module, ldm_path, tmp_path):
    images = tmp_path / "digits"
    images.mkdir()
    for name in ("digit0_mnist_0475.png", "digit1_mnist_0975.png"):
        (images / name).write_bytes((ROOT / "examples/mnist" / name).read_bytes())
    config = yaml.safe_load((EXAMPLE / "scanlines.yaml").read_text())
    config["model"]["init_args"]["prior"]["init_args"]["pretrained"] = str(ldm_path)  # a tiny prior for the test
    config["model"]["init_args"]["num_steps"] = 4
    config["model"]["init_args"]["step_size"]["init_args"]["every"] = 2
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(config))
    out = tmp_path / "o"
    main(["predict", "--config", str(path), "--data.images", str(images), "--output", str(out)])
    for name in ("digit0_mnist_0475", "digit1_mnist_0975"):
        assert json.loads((out / name / ".dwgf-item.json").read_text())["state"] == "complete"
        meas = np.asarray(Image.open(out / name / "measurement.png"), dtype=float)
        # the scanline operator was used: every 3rd row is lost (0 in [-1, 1], mid-gray in the PNG)
        dropped = np.where(np.abs(meas - 127.5).max(1) < 2)[0]
        assert len(dropped) in (10, 11) and len(set(dropped % 3)) == 1, dropped
    resolved = (out / "config.yaml").read_text()
    assert "my_extensions.ScanlineDropout" in resolved and "my_extensions.TotalVariation" in resolved and "my_extensions.StepDecay" in resolved


def test_example_classes_do_what_they_say(user_module):
    op = user_module.ScanlineDropout(period=3)
    p = op.sample_params((1, 6, 4), torch.Generator().manual_seed(0))
    rows = p["mask"][0, :, 0]
    assert rows.sum() == 4 and torch.equal(rows, rows.roll(3))
    x, y = torch.randn(1, 1, 6, 4), torch.randn(1, 1, 6, 4)
    pb = {k: v[None] for k, v in p.items()}
    assert torch.allclose((op(x, pb) * y).sum(), (x * op.adjoint(y, pb)).sum())  # the derived adjoint
    sched = user_module.StepDecay(lr=0.4, factor=0.5, every=2)
    assert [sched(k, 6) for k in range(6)] == [0.4, 0.4, 0.2, 0.2, 0.1, 0.1]
    with pytest.raises(Exception, match="period must be >= 2"):
        user_module.ScanlineDropout(period=1)



def _two_digits(tmp_path):
    images = tmp_path / "digits"
    images.mkdir()
    for name in ("digit0_mnist_0475.png", "digit1_mnist_0975.png"):
        (images / name).write_bytes((ROOT / "examples/mnist" / name).read_bytes())
    return images


def test_a_users_function_operator_and_method_run_through_dwgf_predict(user_module, ldm_path, tmp_path):
    """FunctionOperator naming my_extensions.square_law under the user's own method (latent_map, run by the generic
    InverseSolver), as the page shows them."""
    images = _two_digits(tmp_path)
    out = tmp_path / "o"
    main(["predict", "--config", str(ROOT / "configs/mnist/box_inpaint.yaml"), "--config", str(EXAMPLE / "latent_map.yaml"),
          "--model.prior.pretrained", str(ldm_path), "--model.settings", "{num_steps: 3}", "--data.images", str(images), "--output", str(out),
          "--data.operator", "FunctionOperator", "--data.operator.function", "my_extensions.square_law", "--data.operator.sigma_y", "0.01",
          "--trainer.logger", "false"])
    resolved = (out / "config.yaml").read_text()
    assert "my_extensions.latent_map" in resolved and "my_extensions.square_law" in resolved
    for name in ("digit0_mnist_0475", "digit1_mnist_0975"):
        assert json.loads((out / name / ".dwgf-item.json").read_text())["state"] == "complete"
        assert len(list((out / name).glob("particle_*.png"))) == 4


def test_the_users_method_fits_the_measurement_and_leaves_the_prior_frozen(user_module, ldm_prior):
    from dwgf.operators import BoxInpainting

    x = torch.rand(2, ldm_prior.image_channels, ldm_prior.image_size, ldm_prior.image_size, generator=torch.Generator().manual_seed(0)) * 2 - 1
    op = BoxInpainting(size=[8, 8], sigma_y=0.0)
    y, params = op.measure(x, seeds=[0, 1])
    data_loss = {}
    from dwgf.solver import InverseSolver

    def solver_of(**settings):
        return InverseSolver(ldm_prior, method=user_module.latent_map, settings=settings, num_particles=2).set_operator(op)

    for steps in (1, 30):
        solver = solver_of(num_steps=steps, lr=0.1, weight=0.0)
        particles = solver.solve(y, params, seeds=[0, 1])
        assert particles.shape == (2, 2, *x.shape[1:])
        params_n = {k: v.repeat_interleave(2, 0) for k, v in params.items()}
        data_loss[steps] = float(MSE.loss(op, particles.flatten(0, 1), y.repeat_interleave(2, 0), params_n).mean())
    assert data_loss[30] < 0.5 * data_loss[1]
    assert all(p.grad is None for p in ldm_prior.parameters())
    alone = solver_of(num_steps=3).solve(y[1:], {k: v[1:] for k, v in params.items()}, seeds=[1])
    both = solver_of(num_steps=3).solve(y, params, seeds=[0, 1])
    assert torch.allclose(alone[0], both[1], atol=1e-5)  # an item alone = the same item in a batch


def _sample_prediction_folder(ldm_path, tmp_path):
    """The tiny prior's folder relabelled as a SamplePredictionPipeline with prediction_type 'sample'."""
    import shutil

    folder = tmp_path / "x0-prior"
    shutil.copytree(ldm_path, folder)
    index = json.loads((folder / "model_index.json").read_text()) if (folder / "model_index.json").is_file() else {}
    (folder / "model_index.json").write_text(json.dumps({**index, "_class_name": "SamplePredictionPipeline"}))
    sched = folder / "scheduler" / "scheduler_config.json"
    sched.write_text(json.dumps({**json.loads(sched.read_text()), "prediction_type": "sample"}))
    return folder


def test_a_users_prior_family_is_a_recipe_that_load_prior_and_dwgf_predict_find(user_module, ldm_path, tmp_path):
    """The docs' worked prior family: load_prior picks it by its pipeline's name, its adapter turns a z0 prediction
    into the flow's eps and z0 (checked against the formula), and dwgf predict runs it by class_path."""
    from dwgf.priors import UnconditionalLatentPrior, load_prior

    folder = _sample_prediction_folder(ldm_path, tmp_path)
    prior = load_prior(str(folder))
    assert type(prior) is user_module.SamplePredictionPrior and prior.prediction_type == "sample"
    plain = UnconditionalLatentPrior(str(ldm_path))
    z_t = torch.randn(2, *prior.latent_shape, generator=torch.Generator().manual_seed(0))
    t = torch.tensor([100, 800])
    out = plain.unet(z_t, t).sample  # the same network: its output read as z0
    abar = plain.abar(t).view(-1, 1, 1, 1)
    eps, z0 = prior.predict(z_t, t)
    torch.testing.assert_close(z0, out)
    torch.testing.assert_close(eps, (z_t - abar.sqrt() * out) / (1 - abar).sqrt())
    torch.testing.assert_close(prior.eps(z_t, t), eps)
    with pytest.raises(Exception, match="prediction_type 'sample' is not supported"):
        UnconditionalLatentPrior(str(folder))
    images = _two_digits(tmp_path)
    out_dir = tmp_path / "o"
    main(["predict", "--config", str(ROOT / "configs/mnist/box_inpaint.yaml"), "--model.prior", "my_extensions.SamplePredictionPrior",
          "--model.prior.pretrained", str(folder), "--model.num_steps", "2", "--model.num_particles", "2", "--data.images", str(images),
          "--output", str(out_dir), "--trainer.logger", "false"])
    assert "my_extensions.SamplePredictionPrior" in (out_dir / "config.yaml").read_text()
    for name in ("digit0_mnist_0475", "digit1_mnist_0975"):
        assert json.loads((out_dir / name / ".dwgf-item.json").read_text())["state"] == "complete"


def test_a_users_optimizer_is_gradient_descent_at_beta_zero_and_runs_through_dwgf_predict(user_module, ldm_prior, ldm_path, tmp_path):
    from dwgf import DWGF
    from dwgf.operators import BoxInpainting
    from dwgf.optimizers import GradientDescent

    op = BoxInpainting(size=[8, 8], sigma_y=0.01)
    x = torch.rand(2, 1, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
    y, params = op.measure(x, seeds=[0, 1])

    def solve(optimizer):
        return DWGF(ldm_prior, num_steps=3, num_particles=2, optimizer=optimizer).set_operator(op).solve(y, params, [0, 1])

    assert torch.equal(solve(user_module.HeavyBall(beta=0.0)), solve(GradientDescent()))
    assert not torch.allclose(solve(user_module.HeavyBall(beta=0.9)), solve(GradientDescent()), atol=1e-4)
    with pytest.raises(Exception, match="beta must be in"):
        user_module.HeavyBall(beta=1.0)
    out = tmp_path / "o"
    main(["predict", "--config", str(ROOT / "configs/mnist/box_inpaint.yaml"), "--model.prior.pretrained", str(ldm_path),
          "--model.optimizer", "my_extensions.HeavyBall", "--model.optimizer.beta", "0.5", "--model.num_steps", "2",
          "--data.images", str(_two_digits(tmp_path)), "--output", str(out), "--trainer.logger", "false"])
    assert "my_extensions.HeavyBall" in (out / "config.yaml").read_text()
