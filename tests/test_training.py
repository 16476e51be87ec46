"""Training the latent diffusion prior (the stage-2 module of the shipped MNIST prior), on a tiny model."""

import pytest
import torch
from lightning.pytorch import Trainer
from torch.utils.data import DataLoader, TensorDataset

from dwgf.errors import DWGFError
from dwgf.priors import UnconditionalLatentPrior
from dwgf.testing import make_tiny_unconditional_prior
from dwgf.training import LatentDiffusionTraining

TINY = dict(
    block_out_channels=(16, 32), down_block_types=("DownBlock2D", "AttnDownBlock2D"),
    attention_head_dim=4, norm_num_groups=8,
)


def images(n: int = 8, size: int = 32) -> DataLoader:
    g = torch.Generator().manual_seed(0)
    return DataLoader(TensorDataset(torch.rand(n, 1, size, size, generator=g) * 2 - 1), batch_size=4)


def fit(module: LatentDiffusionTraining, steps: int = 2) -> None:
    Trainer(accelerator="cpu", max_steps=steps, logger=False, enable_checkpointing=False,
            enable_progress_bar=False, enable_model_summary=False).fit(module, images())


def state(module: torch.nn.Module) -> dict:
    return {k: v.clone() for k, v in module.state_dict().items()}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    tiny = make_tiny_unconditional_prior(tmp_path_factory.mktemp("tiny"))
    out = tmp_path_factory.mktemp("trained") / "prior"
    torch.manual_seed(0)
    module = LatentDiffusionTraining(str(tiny / "vae"), export_dir=str(out), **TINY)
    fit(module)
    return tiny, out, module


def test_training_exports_a_prior_the_loader_reads(trained):
    _, out, module = trained
    prior = UnconditionalLatentPrior(str(out))
    z = torch.randn(2, *prior.latent_shape)
    t = torch.tensor([10, 500])
    with torch.no_grad():
        assert torch.allclose(prior.eps(z, t), module.ema(z, t).sample, atol=1e-6)


def test_continued_training_starts_from_the_given_unet(trained):
    tiny, out, module = trained
    again = LatentDiffusionTraining(str(tiny / "vae"), init_unet=str(out / "unet"))
    exported = state(module.ema)
    for name, value in again.unet.state_dict().items():
        assert torch.equal(value, exported[name]), name
    for name, value in again.ema.state_dict().items():
        assert torch.equal(value, exported[name]), name
    assert again.unet.training and not again.ema.training
    before = state(again.unet)
    fit(again, steps=1)
    assert any(not torch.equal(before[k], v) for k, v in again.unet.state_dict().items())  # it trains


def test_continued_training_refuses_a_missing_or_mismatched_unet(trained, tmp_path):
    tiny, _, _ = trained
    with pytest.raises(DWGFError, match="^LatentDiffusionTraining: init_unet 'nowhere': no trained UNet2DModel there"):
        LatentDiffusionTraining(str(tiny / "vae"), init_unet="nowhere")
    other = make_tiny_unconditional_prior(tmp_path / "other", image_size=64)
    with pytest.raises(DWGFError, match="takes 4x32x32 latents, the autoencoder makes 4x16x16"):
        LatentDiffusionTraining(str(tiny / "vae"), init_unet=str(other / "unet"))
