"""A latent prior composed of diffusers parts, and the unconditional family.

:class:`DiffusersLatentPrior` is an autoencoder (:class:`~dwgf.priors.components.Autoencoder`), a
denoising network with its call, a noise schedule, a denoiser adapter (what the network predicts, to
the flow's ``eps`` and ``z0``) and, for text-conditioned models, a conditioner (the prompt table and
classifier-free guidance, :class:`~dwgf.priors.conditioning.PromptConditioner`). A family (SD, SDXL,
SD3, FLUX, unconditional) is a thin recipe: a subclass whose constructor reads a folder into those
parts; :meth:`DiffusersLatentPrior.__init__` takes parts already in memory.
"""

from __future__ import annotations

from typing import Any, Callable, ClassVar, Optional, Sequence

import torch
from torch import nn

from dwgf.errors import DWGFError, argument_error
from dwgf.priors.base import LatentPrior
from dwgf.priors.components import ADAPTERS, Autoencoder, DDPMSchedule, DenoiserAdapter, FlowMatchingSchedule
from dwgf.priors.folders import TORCH_DTYPES, Folder, TorchDtype, resolve_pretrained, shipped_priors  # noqa: F401 - re-exported

# the families dwgf can load from a folder, by the diffusers class names that identify them (filled by the family classes)
FAMILIES: dict[str, type] = {}


class Denoiser(nn.Module):
    """A denoising network and its call ``(latent, timestep, text) -> output`` (``text``: the conditioner's
    embeddings for the rows, ``None`` for an unconditional model). The network is ``self.unet`` or
    ``self.transformer``, as diffusers names it."""

    def __init__(self, network: nn.Module, call: Callable[..., torch.Tensor], name: str = "unet"):
        super().__init__()
        self.name = name
        self.add_module(name, network)
        self._call = call

    @property
    def network(self) -> nn.Module:
        return self._modules[self.name]

    def forward(self, latent: torch.Tensor, timestep: torch.Tensor, text: Optional[dict[str, torch.Tensor]] = None) -> torch.Tensor:
        return self._call(self.network, latent, timestep, text)


def unet_call(unet: nn.Module, latent: torch.Tensor, timestep: torch.Tensor, text: Optional[dict] = None) -> torch.Tensor:
    """An unconditional UNet2DModel's output."""
    return unet(latent, timestep).sample


class DiffusersLatentPrior(LatentPrior):
    """A latent prior composed of diffusers parts (see the module docstring); every family is one.

    Args:
        autoencoder: the :class:`~dwgf.priors.components.Autoencoder` (with its flow decoder, if any).
        denoiser: the network and its call (:class:`Denoiser`).
        schedule: :class:`~dwgf.priors.components.DDPMSchedule` or :class:`~dwgf.priors.components.FlowMatchingSchedule`.
        adapter: what the network predicts (:class:`~dwgf.priors.components.DenoiserAdapter`).
        conditioner: the prompt table and guidance (``None``: an unconditional model).
        latent_channels: ``c``, the latent's channels.
        native_latent_size: the side of the native latent.
        size_multiple: image sides the prior takes are multiples of it.
        patch_size: the transformer's patch side in latent pixels (rectified-flow models; image tokens
            select a resolution-dependent schedule).
        max_latent_side: the largest latent side the network takes (SD3's position grid), or ``None``.
        channels_last: store the autoencoder's weights channels-last (results equal to float rounding).
        pretrained: where the parts came from (for display and checks).
        torch_dtype: the parts' dtype (for display and checks).
    """

    family: ClassVar[str] = "latent diffusion"
    pipelines: ClassVar[tuple[str, ...]] = ()  # diffusers pipeline class names this family loads (load_prior)
    flow_decoder: Optional[str] = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for name in cls.__dict__.get("pipelines", ()):
            FAMILIES[name] = cls

    def __init__(self, autoencoder: Autoencoder, denoiser: Denoiser, schedule: DDPMSchedule | FlowMatchingSchedule,
                 adapter: DenoiserAdapter, conditioner: Optional[nn.Module] = None, *, latent_channels: int, native_latent_size: int,
                 size_multiple: int, patch_size: int = 1, max_latent_side: Optional[int] = None, channels_last: bool = True,
                 pretrained: str = "(in memory)", torch_dtype: TorchDtype = "float32"):
        super().__init__()
        self.autoencoder, self.denoiser, self.conditioner = autoencoder, denoiser, conditioner
        self.schedule, self.adapter = schedule, adapter
        self.prediction_type = adapter.prediction_type
        self.pretrained, self.channels_last, self.torch_dtype = str(pretrained), bool(channels_last), str(torch_dtype)
        self.patch_size, self.max_latent_side = int(patch_size), max_latent_side
        factor = autoencoder.factor
        self.latent_factor = factor
        self.image_size = int(native_latent_size) * factor
        self.image_channels = int(autoencoder.vae.config.in_channels)
        self.latent_shape = (int(latent_channels), int(native_latent_size), int(native_latent_size))
        self.size_multiple = int(size_multiple)
        self._register_schedule(schedule.alphas_cumprod(self.image_tokens(native_latent_size, native_latent_size)))
        if self.channels_last:
            autoencoder.vae.to(memory_format=torch.channels_last)
        if "flow_vae" in autoencoder._modules:
            self.set_flow_decoder(autoencoder.flow_vae)
        self.freeze()

    # -- the parts, as diffusers names them ---------------------------------------------------------
    @property
    def vae(self) -> nn.Module:
        return self.autoencoder.vae

    @property
    def flow_vae(self) -> Optional[nn.Module]:
        return self.autoencoder._modules.get("flow_vae")

    @property
    def is_vq(self) -> bool:
        return self.autoencoder.is_vq

    def __getattr__(self, name: str) -> Any:
        # the network by its diffusers name (prior.unet, prior.transformer), and the prompt table's tensors
        try:
            return super().__getattr__(name)
        except AttributeError:
            modules = self.__dict__.get("_modules", {})
            denoiser, conditioner = modules.get("denoiser"), modules.get("conditioner")
            if denoiser is not None and name == denoiser.name:
                return denoiser.network
            if conditioner is not None and name in conditioner._buffers:
                return conditioner._buffers[name]
            raise

    # -- the flow decoder -------------------------------------------------------------------------
    def set_flow_decoder(self, vae: Optional[nn.Module]) -> None:
        """Uses ``vae`` (an ``AutoencoderTiny``, in memory) as the flow decoder; ``None`` removes it.

        Its latents must be this prior's: the same number of channels, decoding to images with the
        prior's channels at the same factor. It is frozen like the prior's other networks.
        """
        if vae is None:
            self.autoencoder.set_flow_vae(None)
            return
        cfg, owner = vae.config, type(self).__name__
        channels = int(self.latent_shape[0])
        if int(cfg.latent_channels) != channels or int(cfg.out_channels) != self.image_channels:
            raise argument_error(owner, "flow_decoder", f": an AutoencoderTiny for {cfg.latent_channels}-channel latents and "
                                 f"{cfg.out_channels}-channel images; this prior has {channels}-channel latents and "
                                 f"{self.image_channels}-channel images")
        ups = int(getattr(cfg, "upsampling_scaling_factor", 2)) ** max(0, len(cfg.decoder_block_out_channels) - 1)
        if ups != self.latent_factor:
            raise argument_error(owner, "flow_decoder", f": an AutoencoderTiny that upsamples latents {ups}x; this prior's "
                                 f"autoencoder is {self.latent_factor}x")
        self.autoencoder.set_flow_vae(vae)
        if self.channels_last:
            vae.to(memory_format=torch.channels_last)
        vae.eval().requires_grad_(False)

    def _use_flow_decoder(self, folder: Folder, flow_decoder: Optional[str]) -> None:
        self.flow_decoder = None if flow_decoder is None else str(flow_decoder)
        if flow_decoder is not None:
            self.set_flow_decoder(folder.flow_decoder(str(flow_decoder)))

    def flow_decode(self, z: torch.Tensor) -> torch.Tensor:
        if self.flow_vae is None:
            return self.decode(z)
        with self._autoencoder_precision(z.device):
            return self.autoencoder.flow_decode(z).to(z.dtype)

    # -- shapes and time --------------------------------------------------------------------------
    def image_tokens(self, h: int, w: int) -> int:
        """The transformer's number of image tokens for ``h x w`` latents (``patch_size`` squares)."""
        return (int(h) // self.patch_size) * (int(w) // self.patch_size)

    def latent_shape_at(self, size: Optional[Sequence[int]] = None) -> tuple[int, int, int]:
        shape = super().latent_shape_at(size)
        grid = self.max_latent_side
        if grid is not None and max(shape[1:]) > grid:
            h, w = shape[1] * self.latent_factor, shape[2] * self.latent_factor
            raise DWGFError(f"{type(self).__name__}: a {h}x{w} image is beyond the transformer's position grid ({grid // self.patch_size} "
                            f"patches of {self.patch_size * self.latent_factor} px a side: at most {grid * self.latent_factor} px)")
        return shape

    def abar(self, t: torch.Tensor, latent: Optional[torch.Tensor] = None) -> torch.Tensor:
        if latent is None or not self.schedule.use_dynamic_shifting:
            return super().abar(t)
        table = self.schedule.alphas_cumprod(self.image_tokens(*latent.shape[-2:]))
        return table.to(t.device)[t.long()].to(torch.float32)

    def sigma(self, t: torch.Tensor, latent: Optional[torch.Tensor] = None) -> torch.Tensor:
        """A rectified-flow model's ``s`` for flow times ``t`` (float32 on ``t``'s device) for latents shaped like ``latent``."""
        h, w = (self.latent_shape[1:] if latent is None else latent.shape[-2:])
        return self.schedule.sigmas(self.image_tokens(h, w)).to(t.device)[t.long()].to(torch.float32)

    # -- the network ------------------------------------------------------------------------------
    def _eps(self, z_t: torch.Tensor, t: torch.Tensor, prompt: Optional[torch.Tensor] = None) -> torch.Tensor:
        """The network's output at flow-coordinate latents ``z_t`` and flow times ``t`` (guided, if the
        conditioner guides; not yet converted by the adapter)."""
        t = t.to(z_t.device).expand(z_t.shape[0]) if t.dim() == 0 else t.to(z_t.device)
        rows = None if prompt is None else prompt.to(z_t.device).long()
        if rows is not None and rows.shape != (z_t.shape[0],):
            raise ValueError(f"prompt has shape {tuple(rows.shape)}, expected ({z_t.shape[0]},): one table row per latent")
        latent, timestep = self.adapter.network_input(self, z_t, t)
        if self.conditioner is None:
            return self.denoiser(latent, timestep)
        return self.conditioner.guide(self.denoiser, latent, timestep, rows)

    def _network(self, z_t: torch.Tensor, t: torch.Tensor, prompt: Optional[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(t, the network's latent, its float32 output)``, the network in its precision (:meth:`_denoiser_precision`)."""
        t = t.to(z_t.device).expand(z_t.shape[0]) if t.dim() == 0 else t.to(z_t.device)
        with self._denoiser_precision(z_t.device):
            out = (self._eps(z_t, t) if prompt is None else self._eps(z_t, t, prompt)).float()
        return t, self.adapter.network_input(self, z_t, t)[0], out

    def eps(self, z_t: torch.Tensor, t: torch.Tensor, prompt: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Epsilon prediction in the flow's coordinates: the network's output through the adapter (see :meth:`LatentPrior.eps`)."""
        t, latent, out = self._network(z_t, t, prompt)
        return self.adapter.eps(self, z_t, t, latent, out)

    def predict(self, z_t: torch.Tensor, t: torch.Tensor, prompt: Optional[torch.Tensor] = None) -> tuple[torch.Tensor, torch.Tensor]:
        t, latent, out = self._network(z_t, t, prompt)
        return self.adapter.predict(self, z_t, t, latent, out)

    def model_latent(self, z_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.adapter.network_input(self, z_t, t.to(z_t.device))[0].to(z_t.dtype)

    # -- prompts ----------------------------------------------------------------------------------
    def prompt_ids(self, prompts: Sequence[Optional[str]]) -> Optional[torch.Tensor]:
        if self.conditioner is None:
            return super().prompt_ids(prompts)
        return self.conditioner.prompt_ids(prompts)

    @property
    def prompts(self) -> list[str]:
        return [] if self.conditioner is None else self.conditioner.prompts

    @property
    def guided(self) -> bool:
        return self.conditioner is not None and self.conditioner.guided

    @property
    def prompt(self) -> str:
        return "" if self.conditioner is None else self.conditioner.prompt

    @property
    def guidance_scale(self) -> float:
        return 1.0 if self.conditioner is None else self.conditioner.guidance_scale

    # -- the autoencoder --------------------------------------------------------------------------
    def _encode(self, x: torch.Tensor, noise: Optional[torch.Tensor]) -> torch.Tensor:
        return self.autoencoder.encode(x, noise)

    def _decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.autoencoder.decode(z)

    @property
    def autoencoder_dtype(self) -> torch.dtype:
        return self.autoencoder.dtype

    @property
    def weights_dtype(self) -> torch.dtype:
        """The dtype the networks are loaded in (``torch_dtype``)."""
        return TORCH_DTYPES[self.torch_dtype]

    @property
    def denoiser_dtype(self) -> torch.dtype:
        return next(self.denoiser.parameters()).dtype

    def extra_repr(self) -> str:
        text = (f"pretrained={self.pretrained!r}, image={self.image_channels}x{self.image_size}x{self.image_size}, latent={self.latent_shape}, "
                f"sizes=multiples of {self.size_multiple} px, {self.schedule!r}, {self.adapter!r}")
        return text + (f", torch_dtype={self.torch_dtype}" if self.torch_dtype != "float32" else "")


def ddpm_shapes(unet: nn.Module, autoencoder: Autoencoder) -> dict[str, int]:
    """A DDPM UNet's latent channels, native latent side and the image multiple its halvings need."""
    size = unet.config.sample_size
    size = int(size[0] if isinstance(size, (list, tuple)) else size)
    halvings = max(0, len(getattr(unet.config, "down_block_types", ())) - 1)  # the last block keeps its size
    return {"latent_channels": int(unet.config.in_channels), "native_latent_size": size, "size_multiple": autoencoder.factor * 2**halvings}


class UnconditionalLatentPrior(DiffusersLatentPrior):
    """An unconditional latent diffusion model: AutoencoderKL or VQModel + UNet2DModel.

    Reads a diffusers folder with ``vae/`` or ``vqvae/``, ``unet/`` (UNet2DModel) and ``scheduler/``,
    the layout of e.g. ``CompVis/ldm-celebahq-256`` and of the prior that ships with dwgf.

    Args:
        pretrained: a local diffusers folder, a hub id (only if reachable or already cached), or
            ``dwgf:<name>`` for a prior that ships with dwgf (``dwgf:mnist-ldm``).
        channels_last: store the autoencoder's weights channels-last (default ``True``; results
            equal to float rounding). What it is worth is measured by ``benchmarks/flow_speed.py
            --changes vae_channels_last`` (docs/performance.md).
        flow_decoder: an ``AutoencoderTiny`` folder (TAESD and its SDXL / SD3 / FLUX versions: a
            folder with ``config.json``, or with ``vae/config.json``, or a hub id) for the latents of
            this prior, or ``None`` (default). The flow's inner loop then decodes and differentiates
            the tiny decoder (:meth:`~dwgf.priors.LatentPrior.flow_decode`); the final images and
            every metric still come from the prior's own autoencoder.
        torch_dtype: the weights' dtype (``--model.prior.torch_dtype``): ``"float32"`` (default),
            ``"bfloat16"`` or ``"float16"``, as diffusers' ``from_pretrained(torch_dtype=...)``: the
            denoiser, the autoencoder and the flow decoder are loaded in it. The networks then compute
            in it; their inputs are cast to it and their outputs returned in float32, so the flow's
            schedule, data term and optimiser stay float32. Text encoders run once, in float32.
    """

    pipelines = ("LDMPipeline", "DDPMPipeline", "DDIMPipeline")

    def __init__(self, pretrained: str, channels_last: bool = True, flow_decoder: Optional[str] = None, torch_dtype: TorchDtype = "float32"):
        from diffusers import UNet2DModel

        folder = Folder(pretrained, type(self).__name__, torch_dtype)
        autoencoder = folder.autoencoder()
        schedule, prediction = folder.ddpm_schedule()
        _, cfg = folder.config(("unet",), "unet")
        if cfg.get("_class_name") not in (None, "UNet2DModel"):
            raise folder.error(f": unet/ is a {cfg.get('_class_name')}; UnconditionalLatentPrior needs a "
                               f"UNet2DModel (use StableDiffusionPrior, or load_prior to pick the class)")
        unet = folder.load(UNet2DModel, "unet")
        super().__init__(autoencoder, Denoiser(unet, unet_call), schedule, ADAPTERS[prediction](), **ddpm_shapes(unet, autoencoder),
                         channels_last=channels_last, pretrained=pretrained, torch_dtype=torch_dtype)
        self._use_flow_decoder(folder, flow_decoder)

    @classmethod
    def from_modules(cls, vae: Any, unet: Any, alphas_cumprod: torch.Tensor, *, prediction_type: str = "epsilon",
                     channels_last: bool = True) -> DiffusersLatentPrior:
        """The prior made of networks already in memory (no folder): a :class:`DiffusersLatentPrior` with this family's parts."""
        autoencoder = Autoencoder(vae)
        return DiffusersLatentPrior(autoencoder, Denoiser(unet, unet_call), DDPMSchedule(alphas_cumprod), ADAPTERS[prediction_type](),
                                    **ddpm_shapes(unet, autoencoder), channels_last=channels_last)
