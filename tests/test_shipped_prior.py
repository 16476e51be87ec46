"""The MNIST prior that ships inside the package."""

from pathlib import Path

import pytest
import torch

from dwgf.cli import main
from dwgf.errors import DWGFError
from dwgf.priors import UnconditionalLatentPrior, resolve_pretrained, shipped_priors
from dwgf.training.export import export

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def mnist_prior():
    return UnconditionalLatentPrior("dwgf:mnist-ldm")


def test_shipped_prior_loads_offline(mnist_prior):
    assert "mnist-ldm" in shipped_priors()
    assert (mnist_prior.image_size, mnist_prior.image_channels, mnist_prior.latent_shape) == (32, 1, (4, 8, 8))
    assert mnist_prior.prediction_type == "epsilon" and mnist_prior.num_train_timesteps == 1000
    folder = resolve_pretrained("dwgf:mnist-ldm")
    weights = sum(p.stat().st_size for p in folder.rglob("*.safetensors"))
    assert weights <= 25e6
    assert not list(folder.rglob("*.bin")) and not list(folder.rglob("*.ckpt"))


def test_shipped_prior_reconstructs_held_out_digits(mnist_prior):
    """A quick quality floor: the autoencoder reconstructs the 8 example digits (held out) well."""
    from dwgf.data import load_image

    x = torch.stack([load_image(p, 1, (32, 32)) for p in sorted((ROOT / "examples/mnist").glob("*.png"))])
    with torch.no_grad():
        rec = mnist_prior.decode(mnist_prior.encode(x)).clamp(-1, 1)
    mse = ((rec - x) / 2).square().flatten(1).mean(1)
    assert (10 * torch.log10(1 / mse)).mean() > 25


def test_unknown_shipped_prior():
    with pytest.raises(DWGFError, match="dwgf:mnist-ldm"):
        resolve_pretrained("dwgf:nope")


def test_export_round_trips_through_the_loader(ldm_path, tmp_path):
    size = export(ldm_path, tmp_path / "exported")
    assert 0 < size < 25
    original, exported = UnconditionalLatentPrior(str(ldm_path)), UnconditionalLatentPrior(str(tmp_path / "exported"))
    z = torch.randn(2, *original.latent_shape)
    t = torch.tensor([10, 500])
    assert torch.equal(original.eps(z, t), exported.eps(z, t))
    assert torch.equal(original.decode(z), exported.decode(z))
    assert torch.equal(original.alphas_cumprod, exported.alphas_cumprod)


def test_quickstart_runs_a_few_iterations(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    out = tmp_path / "quick"
    main(["predict", "--config", "configs/quickstart.yaml", "--model.num_steps", "3", "--output", str(out)])
    names = sorted(p.stem for p in (ROOT / "examples/mnist").glob("*.png"))
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == sorted([*names, "tensorboard"])  # items + the logs
    assert (out / "metrics.csv").read_text().count("\n") == 9 and (out / "summary.png").is_file()
