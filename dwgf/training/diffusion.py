"""Training a diffusers UNet2DModel on the latents of a frozen autoencoder (a small LDM)."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Optional

import torch
import torch.nn.functional as F
from lightning.pytorch import LightningModule

from dwgf.errors import argument_error


class LatentDiffusionTraining(LightningModule):
    """Trains an epsilon-prediction ``UNet2DModel`` on scaled latents, with an EMA of its weights.

    Each step encodes a batch with the frozen autoencoder (a posterior sample times its
    ``scaling_factor``), diffuses it to a uniform random ``t`` with the Stable Diffusion schedule
    (1000 steps, ``scaled_linear``, beta 0.00085 to 0.012) and regresses the noise. The EMA decays
    with ``min(ema_decay, (1 + step) / (10 + step))``. At the end of training a complete diffusers
    folder (``vae/``, ``unet/`` with the EMA weights, ``scheduler/``, ``model_index.json``) is written
    to ``export_dir``; :class:`dwgf.priors.UnconditionalLatentPrior` reads it.

    Args:
        vae: folder of the trained ``AutoencoderKL`` (``save_pretrained`` layout).
        block_out_channels: UNet channels per level. Default ``(64, 128, 128)``.
        layers_per_block: ResNet layers per level. Default 1.
        down_block_types: UNet down blocks (the up blocks mirror them).
        attention_head_dim: attention head size. Default 32.
        norm_num_groups: GroupNorm groups. Default 32.
        lr: AdamW learning rate (linear warm-up over 200 steps, cosine decay to 10%). Default 3e-4.
        ema_decay: EMA decay. Default 0.999.
        export_dir: where the prior folder is written. ``None``: not written.
        init_unet: folder of a trained ``UNet2DModel`` (``save_pretrained`` layout, e.g. the
            ``unet/`` of an exported prior) to continue training from: the live and the EMA
            weights start from it, and its architecture replaces the arguments above.
            ``None`` (default): a new UNet from the arguments.
    """

    def __init__(
        self,
        vae: str,
        block_out_channels: tuple[int, ...] = (64, 128, 128),
        layers_per_block: int = 1,
        down_block_types: tuple[str, ...] = ("DownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D"),
        attention_head_dim: int = 32,
        norm_num_groups: int = 32,
        lr: float = 3e-4,
        ema_decay: float = 0.999,
        export_dir: Optional[str] = None,
        init_unet: Optional[str] = None,
    ):
        super().__init__()
        from diffusers import AutoencoderKL, DDPMScheduler, UNet2DModel

        self.save_hyperparameters()
        if not (Path(vae) / "config.json").is_file():
            raise argument_error(self, "vae", f" {vae!r}: no trained autoencoder there (run dwgf fit --config configs/train/mnist_vae.yaml first)")
        self.vae = AutoencoderKL.from_pretrained(vae, use_safetensors=True, low_cpu_mem_usage=False)
        self.vae.requires_grad_(False).eval()
        self.scaling_factor = float(self.vae.config.scaling_factor)
        latent_size = self.vae.config.sample_size // 2 ** (len(self.vae.config.block_out_channels) - 1)
        if init_unet is not None:
            if not (Path(init_unet) / "config.json").is_file():
                raise argument_error(self, "init_unet", f" {init_unet!r}: no trained UNet2DModel there "
                                     "(expected config.json and safetensors weights)")
            self.unet = UNet2DModel.from_pretrained(init_unet, use_safetensors=True, low_cpu_mem_usage=False)
            size = self.unet.config.sample_size
            size = (size, size) if isinstance(size, int) else tuple(size)
            if size != (latent_size, latent_size) or self.unet.config.in_channels != self.vae.config.latent_channels:
                raise argument_error(
                    self, "init_unet", f" {init_unet!r}: it takes {self.unet.config.in_channels}x{size[0]}x{size[1]} latents, "
                    f"the autoencoder makes {self.vae.config.latent_channels}x{latent_size}x{latent_size}"
                )
        else:
            self.unet = UNet2DModel(
                sample_size=latent_size, in_channels=self.vae.config.latent_channels,
                out_channels=self.vae.config.latent_channels, block_out_channels=tuple(block_out_channels),
                layers_per_block=layers_per_block, down_block_types=tuple(down_block_types),
                up_block_types=tuple(b.replace("Down", "Up") for b in reversed(down_block_types)),
                attention_head_dim=attention_head_dim, norm_num_groups=norm_num_groups,
            )
        self.unet.train()
        self.ema = copy.deepcopy(self.unet).requires_grad_(False).eval()
        self.scheduler = DDPMScheduler(
            num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
            prediction_type="epsilon", clip_sample=False,
        )
        self.register_buffer("alphas_cumprod", self.scheduler.alphas_cumprod.clone(), persistent=False)

    def train(self, mode: bool = True):
        super().train(mode)
        self.vae.eval()
        self.ema.eval()
        return self

    def training_step(self, batch, batch_idx):
        x = batch[0]
        with torch.no_grad():
            z0 = self.vae.encode(x).latent_dist.sample() * self.scaling_factor
        noise = torch.randn_like(z0)
        t = torch.randint(0, self.alphas_cumprod.shape[0], (z0.shape[0],), device=z0.device)
        abar = self.alphas_cumprod[t].float().view(-1, 1, 1, 1)
        z_t = abar.sqrt() * z0 + (1 - abar).sqrt() * noise
        loss = F.mse_loss(self.unet(z_t, t).sample, noise)
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def on_train_batch_end(self, outputs, batch, batch_idx) -> None:
        step = self.global_step
        decay = min(self.hparams.ema_decay, (1 + step) / (10 + step))
        with torch.no_grad():
            ema, live = list(self.ema.parameters()), list(self.unet.parameters())
            torch._foreach_lerp_(ema, live, 1 - decay)
            for be, bl in zip(self.ema.buffers(), self.unet.buffers()):
                be.copy_(bl)

    def configure_optimizers(self):
        opt = torch.optim.AdamW(self.unet.parameters(), lr=self.hparams.lr, weight_decay=0.0)
        total = max(1, int(self.trainer.estimated_stepping_batches))
        warm = min(200, total // 10 + 1)

        def factor(step: int) -> float:
            if step < warm:
                return (step + 1) / warm
            p = (step - warm) / max(1, total - warm)
            # on the CPU: a scalar (float32 cos, as the shipped prior was trained with)
            return 0.1 + 0.9 * 0.5 * (1 + torch.cos(torch.tensor(torch.pi * min(1.0, p))).item())

        sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    def export(self, out: str | Path) -> Path:
        """Writes the diffusers prior folder (EMA weights) to ``out``."""
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        self.vae.save_pretrained(out / "vae", safe_serialization=True)
        self.ema.save_pretrained(out / "unet", safe_serialization=True)
        self.scheduler.save_pretrained(out / "scheduler")
        index = {
            "_class_name": "LDMPipeline", "unet": ["diffusers", "UNet2DModel"], "vae": ["diffusers", "AutoencoderKL"],
            "scheduler": ["diffusers", "DDPMScheduler"],
        }
        (out / "model_index.json").write_text(json.dumps(index, indent=2) + "\n")
        return out

    def on_fit_end(self) -> None:
        if self.hparams.export_dir and self.trainer.is_global_zero:
            print(f"saved the latent diffusion prior to {self.export(self.hparams.export_dir)}")
