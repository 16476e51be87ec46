"""The latent diffusion prior interface used by every solver."""

from __future__ import annotations

import contextlib
from typing import Iterator, Optional, Sequence

import torch
from torch import nn

from dwgf.errors import DWGFError


def unsupported_size(name: str, native: int, multiple: Optional[int], h: int, w: int) -> Optional[str]:
    """Why a prior ``name`` (native ``native x native``, sides in multiples of ``multiple``; ``None``: the native size
    only) cannot take ``h x w`` images, or ``None`` if it can: the one size check, which the prior and the data module
    both use."""
    if (h, w) == (native, native):
        return None
    if multiple is None:
        return f"{name} models {native}x{native} images only"
    if h < multiple or w < multiple or h % multiple or w % multiple:
        return (f"{name} takes sides that are multiples of {multiple} px (e.g. {max(multiple, round(h / multiple) * multiple)} "
                f"{max(multiple, round(w / multiple) * multiple)})")
    return None


class LatentPrior(nn.Module):
    """A frozen latent diffusion model: an autoencoder and a noise-prediction network.

    Latents are *scaled* latents (the VAE latent times its ``scaling_factor``), as in Stable
    Diffusion, so that they have roughly unit variance. Images are ``float32`` in ``[-1, 1]``.

    Subclasses implement :meth:`_encode`, :meth:`_decode` and :meth:`_eps` and set the attributes
    below; this base class keeps the networks frozen, runs the autoencoder in float32 even under
    mixed-precision autocast unless the flow asks otherwise (:meth:`autoencoder_autocast`), returns
    float32 whatever dtype the weights have (``torch_dtype``). :meth:`_eps` returns ``eps``; a network that predicts
    something else is converted by the family (:class:`~dwgf.priors.DiffusersLatentPrior`'s adapters, e.g.
    :class:`~dwgf.priors.components.VPredictionAdapter`).

    Attributes:
        image_size (int): side of the square images the prior was trained on, in pixels (its
            native resolution; the default image size).
        image_channels (int): channels of those images (3 for RGB, 1 for grayscale).
        latent_shape (tuple[int, int, int]): ``(c, h, w)`` of one latent at the native resolution.
        latent_factor (int): image pixels per latent pixel along each side (8 for Stable Diffusion).
        size_multiple (int or None): image sides the prior takes are multiples of it (64 for SD 1/2:
            the autoencoder's factor 8 times the UNet's three halvings); ``None``: only the native
            size (:meth:`latent_shape_at`).
        prediction_type (str): what the network predicts: ``"epsilon"``, ``"v_prediction"`` (both DDPM
            models) or ``"flow"`` (a rectified-flow velocity, :mod:`dwgf.priors.flow_matching`).
        alphas_cumprod (Tensor): ``abar_t`` for ``t = 0 .. T-1``, float64 buffer (at the native size
            for priors whose schedule depends on the image size, see :meth:`abar`).

    **The flow's time and coordinates.** Every prior is presented to the flow and the baselines as
    a variance-preserving diffusion over integer times ``t = 0 .. T-1``: the diffused latent is
    :meth:`diffuse` ``z_t = sqrt(abar_t) z + sqrt(1 - abar_t) eps`` and :meth:`eps` predicts ``eps``
    from it, whatever the network was trained on. For DDPM models this is the model's own
    parametrisation. A rectified-flow model (``z_s = (1 - s) z + s eps``) is the same process up to
    a scale: ``z_s = c_s z_t`` with ``c_s = sqrt((1 - s)^2 + s^2)`` and ``abar_t = (1 - s)^2 / c_s^2``,
    the flow time ``t`` mapping to the model's ``s`` through its scheduler's shift; the prior does
    the conversion inside :meth:`eps` and :meth:`predict`, so regularizers written for the DDPM
    formulas hold unchanged for every family.
    """

    image_size: int
    image_channels: int
    latent_shape: tuple[int, int, int]
    prediction_type: str = "epsilon"
    latent_factor: int = 1
    size_multiple: Optional[int] = None

    def latent_shape_at(self, size: Optional[Sequence[int]] = None) -> tuple[int, int, int]:
        """``(c, h, w)`` of one latent for ``H x W`` images (``size``); ``None``: the native size.

        Raises :class:`~dwgf.errors.DWGFError` if the prior cannot take that size (a side that is
        not a multiple of :attr:`size_multiple`, or any other size for a fixed-size prior).
        """
        if size is None:
            return tuple(self.latent_shape)
        h, w = (int(v) for v in size)
        if (h, w) == (self.image_size, self.image_size):
            return tuple(self.latent_shape)
        reason = unsupported_size(type(self).__name__, self.image_size, self.size_multiple, h, w)
        if reason is not None:
            raise DWGFError(f"{reason}; got {h}x{w} (height x width)")
        return (int(self.latent_shape[0]), h // self.latent_factor, w // self.latent_factor)

    def image_shape_of(self, latent: torch.Tensor) -> tuple[int, int, int]:
        """``(C, H, W)`` of the images that latents shaped like ``latent`` (``... x c x h x w``) decode to."""
        h, w = latent.shape[-2:]
        if (h, w) == tuple(self.latent_shape[1:]):
            return (int(self.image_channels), int(self.image_size), int(self.image_size))
        return (int(self.image_channels), int(h) * self.latent_factor, int(w) * self.latent_factor)

    def prompt_ids(self, prompts: Sequence[Optional[str]]) -> Optional[torch.Tensor]:
        """Rows of the prior's prompt table for per-item ``prompts`` (``None``: the prior's own prompt).

        Priors without text conditioning take no prompt: they return ``None`` when every prompt is
        ``None`` or empty and raise :class:`~dwgf.errors.DWGFError` otherwise. Text-conditioned
        priors (:class:`~dwgf.priors.StableDiffusionPrior`) encode prompts they have not seen.
        """
        given = sorted({p for p in prompts if p})
        if given:
            raise DWGFError(f"{type(self).__name__} takes no text prompt; got {len(given)} (e.g. {given[0][:60]!r}): "
                            "prompts need a text-conditioned prior (StableDiffusionPrior, StableDiffusionXLPrior)")
        return None

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
        decoders = [getattr(getattr(self, name, None), "decoder", None) for name in ("vae", "flow_vae")]
        for module in (getattr(self, "unet", None), getattr(self, "transformer", None), *decoders):
            if isinstance(module, nn.Module):
                module.compile(**kwargs)
        return self

    @property
    def num_train_timesteps(self) -> int:
        return int(self.alphas_cumprod.shape[0])

    def _register_schedule(self, alphas_cumprod: torch.Tensor) -> None:
        self.register_buffer("alphas_cumprod", alphas_cumprod.to(torch.float64), persistent=False)

    def abar(self, t: torch.Tensor, latent: Optional[torch.Tensor] = None) -> torch.Tensor:
        """``abar_t`` for integer timesteps ``t``, as float32 on ``t``'s device.

        ``latent``: a latent (``... x c x h x w``) whose size selects the schedule, for priors whose
        schedule depends on the image size (FLUX's resolution-dependent shift); others ignore it.
        """
        return self.alphas_cumprod.to(t.device)[t.long()].to(torch.float32)

    def diffuse(self, z: torch.Tensor, eps: torch.Tensor, t: torch.Tensor, abar: Optional[torch.Tensor] = None) -> torch.Tensor:
        """The diffused latent ``z_t = sqrt(abar_t) z + sqrt(1 - abar_t) eps`` of latents ``z``
        (``B x ...``, ``t`` of shape ``(B,)``) in the flow's coordinates (see the class docstring).
        ``abar``: :meth:`abar` ``(t, z)`` when the caller has it already."""
        abar = (self.abar(t, z) if abar is None else abar).view(-1, *([1] * (z.dim() - 1)))
        return abar.sqrt() * z + (1 - abar).sqrt() * eps

    def model_latent(self, z_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """The network's own latent for flow-coordinate latents ``z_t`` at times ``t``: ``z_t`` itself
        for DDPM models (rectified-flow priors: ``c_s z_t``)."""
        return z_t

    def predict(self, z_t: torch.Tensor, t: torch.Tensor, prompt: Optional[torch.Tensor] = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``(eps_hat, z0_hat)``: the noise and the clean latent predicted from ``z_t`` at times ``t``.

        ``z0_hat = (z_t - sqrt(1 - abar) eps_hat) / sqrt(abar)`` for DDPM models; rectified-flow
        priors compute both from the velocity, with no division (finite up to ``s = 1``).
        Arguments as :meth:`eps`.
        """
        eps = self.eps(z_t, t, prompt)
        abar = self.abar(t, z_t).view(-1, *([1] * (z_t.dim() - 1)))
        return eps, (z_t - (1 - abar).sqrt() * eps) / abar.sqrt()

    @contextlib.contextmanager
    def autoencoder_autocast(self, dtype: Optional[torch.dtype]) -> Iterator[None]:
        """Within the block the autoencoder (:meth:`encode`, :meth:`decode`, :meth:`flow_decode`) runs
        under autocast to ``dtype`` (``torch.bfloat16``, ``torch.float16``); ``None``: as outside it.

        The flow uses it for its decoder forward, its vector-Jacobian product and the encoder term
        under mixed precision (:func:`dwgf.precision.autoencoder_dtype`); results come back in the input's dtype.
        """
        previous = self.__dict__.get("_autoencoder_autocast")
        self.__dict__["_autoencoder_autocast"] = dtype
        try:
            yield
        finally:
            self.__dict__["_autoencoder_autocast"] = previous

    def autoencoder_takes(self, dtype: torch.dtype) -> bool:
        """Whether the autoencoder may run in ``dtype`` under autocast. Always for bfloat16 (float32's
        range); for float16 unless the autoencoder asks to be upcast (diffusers' ``force_upcast``:
        SDXL's VAE overflows in float16)."""
        if dtype != torch.float16:
            return True
        vae = getattr(self, "vae", None)
        return not bool(getattr(getattr(vae, "config", None), "force_upcast", False))

    @contextlib.contextmanager
    def _autoencoder_precision(self, device: torch.device) -> Iterator[None]:
        """The autoencoder's precision: autocast to the dtype of :meth:`autoencoder_autocast` if one is
        set, else float32 (autocast switched off, e.g. under Lightning's mixed precision)."""
        dtype = self.__dict__.get("_autoencoder_autocast")
        if dtype is not None:
            with torch.autocast(device_type=device.type, dtype=dtype):
                yield
        elif torch.is_autocast_enabled(device.type):
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
        with self._autoencoder_precision(x.device):
            dtype = self.autoencoder_dtype
            return self._encode(x.to(dtype), None if noise is None else noise.to(dtype)).to(x.dtype)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Images (``B x C x H x W``, nominally in ``[-1, 1]``) from scaled latents ``z``, in ``z``'s dtype
        whatever the autoencoder's weights or autocast run in."""
        with self._autoencoder_precision(z.device):
            return self._decode(z.to(self.autoencoder_dtype)).to(z.dtype)

    def flow_decode(self, z: torch.Tensor) -> torch.Tensor:
        """The decoder the flow's inner loop differentiates: :meth:`decode` unless the prior has a
        cheaper flow decoder (``flow_decoder``, :class:`~dwgf.priors.DiffusersLatentPrior`). Final
        images and metrics always come from :meth:`decode`."""
        return self.decode(z)

    def eps(self, z_t: torch.Tensor, t: torch.Tensor, prompt: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Epsilon prediction ``eps_theta(z_t, t)`` for latents ``z_t`` (``B x c x h x w``).

        ``t`` is a tensor of integer timesteps of shape ``(B,)``; ``prompt`` (text-conditioned
        priors only) the rows' prompts as :meth:`prompt_ids` numbers them, ``None``: the prior's
        own prompt for every row. Classifier-free guidance, where the prior has it, is applied to
        the network's output. Under autocast the network runs in the low precision; the result is returned in
        float32. :meth:`_eps` returns ``eps`` (a v-prediction network is converted by its family's adapter,
        :class:`~dwgf.priors.components.VPredictionAdapter`).
        """
        with self._denoiser_precision(z_t.device):
            return (self._eps(z_t, t) if prompt is None else self._eps(z_t, t, prompt)).float()

    def _denoiser_precision(self, device: torch.device):
        """Weights loaded in a low precision (``torch_dtype``) compute in it: autocast to their dtype casts
        the float32 inputs (latents, prompt embeddings), unless autocast is on already (mixed precision)."""
        dtype = self.denoiser_dtype
        if dtype == torch.float32 or torch.is_autocast_enabled(device.type):
            return contextlib.nullcontext()
        return torch.autocast(device.type, dtype=dtype)

    @property
    def denoiser_dtype(self) -> torch.dtype:
        """The denoising network's weight dtype (float32 unless loaded in another ``torch_dtype``)."""
        return torch.float32

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
