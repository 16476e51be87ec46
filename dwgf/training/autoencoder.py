"""Training a diffusers AutoencoderKL (the latent space of a small prior)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import torch
import torch.nn.functional as F
from lightning.pytorch import LightningModule


class AutoencoderTraining(LightningModule):
    """Trains an ``AutoencoderKL``: reconstruction MSE plus a small KL to ``N(0, I)``.

    ``loss = mean (D(z) - x)^2 + kl_weight * KL(q(z|x) || N(0, I)) / latent elements``, with
    ``z`` sampled from the encoder's posterior. At the end of training the latent scaling factor is
    set as Stable Diffusion does, ``1 / std`` of the training latents, and the model is saved with
    ``save_pretrained`` (safetensors) to ``export_dir``.

    Args:
        in_channels: image channels. Default 1.
        block_out_channels: channels per resolution level; ``len - 1`` downsamplings by 2.
        layers_per_block: ResNet layers per level. Default 1.
        latent_channels: latent channels. Default 4.
        norm_num_groups: GroupNorm groups. Default 8.
        sample_size: image side. Default 32.
        kl_weight: weight of the KL term. Default 1e-5.
        lr: AdamW learning rate (cosine-annealed to 1% over training). Default 1e-3.
        export_dir: where the trained model is written (``vae/`` layout). ``None``: not written.
    """

    def __init__(
        self,
        in_channels: int = 1,
        block_out_channels: tuple[int, ...] = (16, 32, 64),
        layers_per_block: int = 1,
        latent_channels: int = 4,
        norm_num_groups: int = 8,
        sample_size: int = 32,
        kl_weight: float = 1e-5,
        lr: float = 1e-3,
        export_dir: Optional[str] = None,
    ):
        super().__init__()
        from diffusers import AutoencoderKL

        self.save_hyperparameters()
        n = len(block_out_channels)
        self.vae = AutoencoderKL(
            in_channels=in_channels, out_channels=in_channels, down_block_types=("DownEncoderBlock2D",) * n,
            up_block_types=("UpDecoderBlock2D",) * n, block_out_channels=tuple(block_out_channels),
            layers_per_block=layers_per_block, latent_channels=latent_channels, norm_num_groups=norm_num_groups,
            sample_size=sample_size,
        )

    def training_step(self, batch, batch_idx):
        x = batch[0]
        posterior = self.vae.encode(x).latent_dist
        z = posterior.sample()
        rec = self.vae.decode(z).sample
        mse = F.mse_loss(rec, x)
        kl = posterior.kl().mean() / z[0].numel()
        loss = mse + self.hparams.kl_weight * kl
        psnr = 10 * torch.log10(4.0 / mse.detach())  # [-1, 1] images: peak-to-peak 2
        self.log_dict({"train/loss": loss, "train/mse": mse, "train/kl": kl, "train/psnr": psnr}, prog_bar=True)
        return loss

    def configure_optimizers(self):
        opt = torch.optim.AdamW(self.vae.parameters(), lr=self.hparams.lr, weight_decay=0.0)
        total = max(1, int(self.trainer.estimated_stepping_batches))
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total, eta_min=self.hparams.lr * 0.01)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    @torch.no_grad()
    def latent_std(self, images: torch.Tensor, batch_size: int = 500) -> float:
        """Standard deviation of posterior samples of the (unscaled) latents of ``images``."""
        self.vae.eval()
        samples = [self.vae.encode(images[i : i + batch_size].to(self.device)).latent_dist.sample() for i in range(0, len(images), batch_size)]
        return float(torch.cat(samples).std())

    def on_fit_end(self) -> None:
        data = self.trainer.datamodule.dataset.tensors[0]
        generator_state = torch.random.get_rng_state()
        torch.manual_seed(0)
        std = self.latent_std(data)
        torch.random.set_rng_state(generator_state)
        self.vae.register_to_config(scaling_factor=1.0 / std)
        if self.hparams.export_dir and self.trainer.is_global_zero:
            out = Path(self.hparams.export_dir)
            out.mkdir(parents=True, exist_ok=True)
            self.vae.save_pretrained(out, safe_serialization=True)
            print(f"saved AutoencoderKL (scaling_factor {1.0 / std:.5f}) to {out}")
