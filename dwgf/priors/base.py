"""The latent diffusion prior interface used by every solver."""

from __future__ import annotations

import contextlib
from typing import Optional

import torch
from torch import nn


class LatentPrior(nn.Module):
    """A frozen latent diffusion model: an autoencoder and a noise-prediction network.

    Latents are *scaled* latents (the VAE latent times its ``scaling_factor``), as in Stable
    Diffusion, so that they have roughly unit variance. Images are ``float32`` in ``[-1, 1]``.

    Subclasses implement :meth:`_encode`, :meth:`_decode` and :meth:`_eps` and set the attributes
    below; this base class keeps the networks frozen, runs the autoencoder in float32 even under
    mixed-precision autocast, and converts v-prediction to epsilon.

    Attributes:
        image_size (int): side of the square images the prior models, in pixels.
        image_channels (int): channels of those images (3 for RGB, 1 for grayscale).
        latent_shape (tuple[int, int, int]): ``(c, h, w)`` of one latent.
        prediction_type (str): ``"epsilon"`` or ``"v_prediction"``.
        alphas_cumprod (Tensor): ``abar_t`` for ``t = 0 .. T-1``, float64 buffer.
    """

    image_size: int
    image_channels: int
    latent_shape: tuple[int, int, int]
    prediction_type: str = "epsilon"

    def freeze(self) -> None:
        """Puts every network in eval mode and stops gradients into its weights."""
        self.eval()
        self.requires_grad_(False)

    def train(self, mode: bool = True) -> "LatentPrior":
        # The prior is frozen: Lightning's ``model.train()`` must not switch dropout or norm layers.
        return super().train(False)

    def compile_networks(self, **kwargs) -> "LatentPrior":
        """``torch.compile`` the denoiser and the decoder in place (``kwargs`` go to ``torch.compile``).

        Compilation happens at the first calls, which are slow (seconds to minutes); it pays on
        long runs. Parameter names and results are unchanged (to float rounding).
        """
        for module in (getattr(self, "unet", None), getattr(getattr(self, "vae", None), "decoder", None)):
            if isinstance(module, nn.Module):
                module.compile(**kwargs)
        return self

    @property
    def num_train_timesteps(self) -> int:
        return int(self.alphas_cumprod.shape[0])

    def _register_schedule(self, alphas_cumprod: torch.Tensor) -> None:
        self.register_buffer("alphas_cumprod", alphas_cumprod.to(torch.float64), persistent=False)

    def abar(self, t: torch.Tensor) -> torch.Tensor:
        """``abar_t`` for integer timesteps ``t``, as float32 on ``t``'s device."""
        return self.alphas_cumprod.to(t.device)[t.long()].to(torch.float32)

    @contextlib.contextmanager
    def _full_precision(self, device: torch.device):
        """Disables autocast so that the autoencoder runs in float32 under mixed precision."""
        if torch.is_autocast_enabled(device.type):
            with torch.autocast(device_type=device.type, enabled=False):
                yield
        else:
            yield

    def encode(self, x: torch.Tensor, noise: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Scaled latents of images ``x`` (``B x C x H x W`` in ``[-1, 1]``).

        Args:
            x: images.
            noise: standard normal noise of the latent shape; if given, a sample of the encoder's
                posterior ``mean + std * noise`` is returned (Stable Diffusion's encoder is a
                Gaussian), else its mean. Deterministic encoders ignore it.
        """
        with self._full_precision(x.device):
            dtype = self.autoencoder_dtype
            return self._encode(x.to(dtype), None if noise is None else noise.to(dtype))

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Images (``B x C x H x W``, nominally in ``[-1, 1]``) from scaled latents ``z``."""
        with self._full_precision(z.device):
            return self._decode(z.to(self.autoencoder_dtype))

    def eps(self, z_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Epsilon prediction ``eps_theta(z_t, t)`` for latents ``z_t`` (``B x c x h x w``).

        ``t`` is a tensor of integer timesteps of shape ``(B,)``. v-prediction models are converted:
        ``eps = sqrt(abar) v + sqrt(1 - abar) z_t``. Under autocast the network runs in the low
        precision; the result is returned in float32.
        """
        out = self._eps(z_t, t).float()
        if self.prediction_type == "epsilon":
            return out
        if self.prediction_type == "v_prediction":
            abar = self.abar(t).view(-1, *([1] * (z_t.dim() - 1)))
            return abar.sqrt() * out + (1 - abar).sqrt() * z_t.float()
        raise ValueError(f"unsupported prediction_type {self.prediction_type!r}")

    @property
    def autoencoder_dtype(self) -> torch.dtype:
        """The autoencoder's weight dtype (float32 unless converted); its inputs are cast to it."""
        return torch.float32

    def _encode(self, x: torch.Tensor, noise: Optional[torch.Tensor]) -> torch.Tensor:
        raise NotImplementedError

    def _decode(self, z: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _eps(self, z_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError
