"""Rectified-flow latent priors: Stable Diffusion 3 / 3.5 and FLUX.1, in the flow's coordinates.

A rectified-flow model is trained on ``z_s = (1 - s) z + s eps`` and predicts the velocity
``v = eps - z`` (diffusers' ``FlowMatchEulerDiscreteScheduler`` steps ``z_s' = z_s + (s' - s) v``).
The flow and the baselines see every prior as a variance-preserving diffusion over integer times
``t = 0 .. T-1`` (:class:`~dwgf.priors.LatentPrior`); for these models:

- the time map (:class:`FlowMatchingSchedule`): ``u = t / T``, the model's ``s`` is ``u`` through
  the scheduler's shift (SD3: ``shift u / (1 + (shift - 1) u)``; FLUX: the resolution-dependent
  ``exp(mu) / (exp(mu) + 1/u - 1)`` with ``mu`` from the number of image tokens), and the network
  is given ``1000 s``, as the pipelines do;
- the coordinates: ``z_s = c_s z_t`` with ``c_s = sqrt((1 - s)^2 + s^2)``, so that
  ``abar_t = (1 - s)^2 / c_s^2``;
- the predictions: ``eps_hat = z_s + (1 - s) v_hat`` and ``z0_hat = z_s - s v_hat``.

Prompts follow diffusers' ``StableDiffusion3Pipeline.encode_prompt`` and ``FluxPipeline.encode_prompt``
term by term (``tests/test_flow_family.py`` checks them, the velocity and a few sampling steps
against those pipelines on tiny random folders). As for SD and SDXL, the text encoders (T5-XXL
included) are loaded one at a time to encode a run's distinct prompts and released right after.
"""

from __future__ import annotations

import math
from typing import Any, Optional

import torch
from torch import nn

from dwgf.errors import argument_error
from dwgf.priors.components import Autoencoder, FlowMatchingSchedule, RectifiedFlowAdapter
from dwgf.priors.conditioning import PromptConditioner, TextEncoding, check_text_folder
from dwgf.priors.diffusers_priors import Denoiser, DiffusersLatentPrior
from dwgf.priors.folders import Folder, TorchDtype

__all__ = ["FlowMatchingSchedule", "StableDiffusion3Prior", "FluxPrior"]


class SD3Encoding(TextEncoding):
    """Both CLIPs' penultimate hidden states side by side, zero-padded to T5's width, then T5's tokens; the
    pooled embedding both CLIP projections (``StableDiffusion3Pipeline.encode_prompt``). Without T5 its part is zeros."""

    components = (("tokenizer", "text_encoder"), ("tokenizer_2", "text_encoder_2"), ("tokenizer_3", "text_encoder_3"))
    optional = ("text_encoder_3",)

    def __init__(self, max_sequence_length: int, width: int):
        self.max_sequence_length, self.width = int(max_sequence_length), int(width)

    @torch.no_grad()
    def encode(self, encoders, texts, max_length=None):
        hidden, pooled = [], []
        for i in (0, 1):
            tokenizer, encoder = encoders[i]
            ids = tokenizer(texts, padding="max_length", max_length=tokenizer.model_max_length, truncation=True, return_tensors="pt").input_ids
            out = encoder(ids, output_hidden_states=True)
            pooled.append(out[0].float())
            hidden.append(out.hidden_states[-2].float())
            del tokenizer, encoder, out
        clip = torch.cat(hidden, dim=-1)
        t5_pair = encoders[2]
        if t5_pair is None:
            t5 = torch.zeros(len(texts), self.max_sequence_length, self.width, device=clip.device)
        else:
            tokenizer, encoder = t5_pair
            del t5_pair
            ids = tokenizer(texts, padding="max_length", max_length=self.max_sequence_length, truncation=True, add_special_tokens=True,
                            return_tensors="pt").input_ids
            t5 = encoder(ids)[0].float()
        clip = torch.nn.functional.pad(clip, (0, t5.shape[-1] - clip.shape[-1]))
        return {"embeds": torch.cat([clip, t5], dim=-2), "pooled": torch.cat(pooled, dim=-1)}


class FluxEncoding(TextEncoding):
    """T5's token embeddings and CLIP-L's pooled output (``FluxPipeline.encode_prompt``)."""

    components = (("tokenizer", "text_encoder"), ("tokenizer_2", "text_encoder_2"))

    def __init__(self, max_sequence_length: int):
        self.max_sequence_length = int(max_sequence_length)

    @torch.no_grad()
    def encode(self, encoders, texts, max_length=None):
        tokenizer, encoder = encoders[0]
        ids = tokenizer(texts, padding="max_length", max_length=tokenizer.model_max_length, truncation=True, return_tensors="pt").input_ids
        pooled = encoder(ids, output_hidden_states=False).pooler_output.float()
        del tokenizer, encoder
        tokenizer, encoder = encoders[1]
        ids = tokenizer(texts, padding="max_length", max_length=self.max_sequence_length, truncation=True, return_tensors="pt").input_ids
        embeds = encoder(ids, output_hidden_states=False)[0].float()
        return {"embeds": embeds, "pooled": pooled}


def sd3_call(transformer: nn.Module, latent: torch.Tensor, timestep: torch.Tensor, text: dict[str, torch.Tensor]) -> torch.Tensor:
    """An SD3Transformer2DModel's velocity: the prompt's embeddings and pooled projection."""
    return transformer(hidden_states=latent, timestep=timestep, encoder_hidden_states=text["embeds"],
                       pooled_projections=text["pooled"]).sample


class FluxCall:
    """A FluxTransformer2DModel's velocity, as ``FluxPipeline`` calls it: the latents packed into 2x2 patches
    with ``(0, row, column)`` position ids, zero text ids, the timestep ``s`` (``1000 s / 1000``) and the
    embedded guidance when the model has a guidance embedding."""

    def __init__(self, embedded_guidance: Optional[float]):
        self.embedded_guidance, self._ids = embedded_guidance, {}

    def position_ids(self, h: int, w: int, tokens: int, device: torch.device, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """``(img_ids, txt_ids)`` for ``h x w`` latents and ``tokens`` text tokens, built once per size and device."""
        key = (h, w, tokens, device, dtype)
        if key not in self._ids:
            ids = torch.zeros(h // 2, w // 2, 3, device=device)
            ids[..., 1] += torch.arange(h // 2, device=device)[:, None]
            ids[..., 2] += torch.arange(w // 2, device=device)[None, :]
            self._ids[key] = (ids.reshape(-1, 3).to(device=device, dtype=dtype), torch.zeros(tokens, 3, device=device, dtype=dtype))
        return self._ids[key]

    def __call__(self, transformer: nn.Module, latent: torch.Tensor, timestep: torch.Tensor, text: dict[str, torch.Tensor]) -> torch.Tensor:
        b, c, h, w = latent.shape
        packed = latent.view(b, c, h // 2, 2, w // 2, 2).permute(0, 2, 4, 1, 3, 5).reshape(b, (h // 2) * (w // 2), c * 4)
        img_ids, txt_ids = self.position_ids(h, w, text["embeds"].shape[1], latent.device, text["embeds"].dtype)
        guidance = None
        if transformer.config.guidance_embeds:
            guidance = torch.full((b,), float(self.embedded_guidance), device=latent.device, dtype=torch.float32)
        out = transformer(hidden_states=packed, timestep=timestep / 1000, guidance=guidance, img_ids=img_ids, txt_ids=txt_ids,
                          encoder_hidden_states=text["embeds"], pooled_projections=text["pooled"]).sample
        return out.view(b, h // 2, w // 2, c, 2, 2).permute(0, 3, 1, 4, 2, 5).reshape(b, c, h, w)


def _max_sequence_length(owner: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise argument_error(owner, "max_sequence_length", f" must be a positive integer, got {value!r}")
    return int(value)


def _load_transformer(folder: Folder, class_name: str) -> nn.Module:
    import diffusers

    _, cfg = folder.config(("transformer",), "transformer")
    if cfg.get("_class_name") != class_name:
        raise folder.error(f": transformer/ is a {cfg.get('_class_name')}; {folder.owner} needs a {class_name} "
                           "(load_prior picks the class from the folder)")
    return folder.load(getattr(diffusers, class_name), "transformer")


def _check_embeddings(folder: Folder, transformer: nn.Module, conditioner: PromptConditioner) -> None:
    """The text embeddings fit the transformer (a mismatched folder fails at load)."""
    cfg = transformer.config
    got, want = conditioner.prompt_embeds.shape[-1], int(cfg.joint_attention_dim)
    if got != want:
        raise folder.error(f": the text encoders give {got}-dim embeddings but transformer/ expects joint_attention_dim {want}")
    got, want = conditioner.prompt_pooled.shape[-1], int(cfg.pooled_projection_dim)
    if got != want:
        raise folder.error(f": the text encoders give a {got}-dim pooled embedding but transformer/ expects pooled_projection_dim {want}")


def _shapes(autoencoder: Autoencoder, native_latent_size: int, patch_size: int, grid: Optional[int] = None) -> dict[str, Any]:
    return {"latent_channels": int(autoencoder.vae.config.latent_channels), "native_latent_size": int(native_latent_size),
            "size_multiple": autoencoder.factor * patch_size, "patch_size": patch_size,
            "max_latent_side": None if grid is None else int(grid) * patch_size}


class StableDiffusion3Prior(DiffusersLatentPrior):
    """Stable Diffusion 3 / 3.5 (medium, large) as a latent prior: a rectified-flow MMDiT over 16-channel latents.

    Reads a diffusers SD3 folder: ``vae/`` (AutoencoderKL, with ``shift_factor``), ``transformer/``
    (SD3Transformer2DModel), ``text_encoder/`` + ``tokenizer/`` (CLIP-L with projection),
    ``text_encoder_2/`` + ``tokenizer_2/`` (OpenCLIP bigG with projection), ``text_encoder_3/`` +
    ``tokenizer_3/`` (T5-XXL; optional: without it the T5 part of the embedding is zeros, as in
    diffusers) and ``scheduler/`` (FlowMatchEulerDiscreteScheduler, shift 3.0). As
    ``StableDiffusion3Pipeline.encode_prompt``: both CLIPs' penultimate hidden states side by side,
    zero-padded to T5's width, then T5's ``max_sequence_length`` tokens after them; the pooled
    embedding is both CLIP projections side by side. With guidance, the negative prompt defaults to
    the empty prompt. Images of any size with sides a multiple of 16 px (up to the transformer's
    position-embedding grid).

    Args:
        pretrained: a local diffusers folder or a hub id (``stabilityai/stable-diffusion-3.5-medium``,
            ``stabilityai/stable-diffusion-3-medium-diffusers``; only if reachable or already cached).
        prompt: as :class:`~dwgf.priors.StableDiffusionPrior`.
        negative_prompt: as :class:`~dwgf.priors.StableDiffusionPrior`.
        guidance_scale: classifier-free guidance ``g`` on the velocity (default 1: none, one row).
        max_sequence_length: T5 tokens (default 256, the pipeline's).
        channels_last: see :class:`~dwgf.priors.UnconditionalLatentPrior`.
        flow_decoder: see :class:`~dwgf.priors.UnconditionalLatentPrior`.
        torch_dtype: see :class:`~dwgf.priors.UnconditionalLatentPrior`.
    """

    family = "Stable Diffusion 3"
    pipelines = ("StableDiffusion3Pipeline",)

    def __init__(self, pretrained: str, prompt: str = "", negative_prompt: Optional[str] = None, guidance_scale: float = 1.0,
                 max_sequence_length: int = 256, channels_last: bool = True, flow_decoder: Optional[str] = None,
                 torch_dtype: TorchDtype = "float32"):
        owner = type(self).__name__
        self_max = _max_sequence_length(owner, max_sequence_length)
        args = dict(prompt=prompt, negative_prompt=negative_prompt, guidance_scale=guidance_scale, owner=owner)
        PromptConditioner.check_arguments(**args)
        folder = Folder(pretrained, owner, torch_dtype)
        autoencoder = folder.autoencoder()
        schedule = folder.flow_schedule()
        _, cfg = folder.config(("transformer",), "transformer")
        encoding = SD3Encoding(self_max, int(cfg.get("joint_attention_dim") or 4096))
        if cfg.get("_class_name") == "SD3Transformer2DModel":
            check_text_folder(folder, encoding)
        transformer = _load_transformer(folder, "SD3Transformer2DModel")
        conditioner = PromptConditioner(encoding, folder=folder, **args)
        _check_embeddings(folder, transformer, conditioner)
        tc = transformer.config
        super().__init__(autoencoder, Denoiser(transformer, sd3_call, "transformer"), schedule, RectifiedFlowAdapter(), conditioner,
                         **_shapes(autoencoder, tc.sample_size, int(tc.patch_size), getattr(tc, "pos_embed_max_size", None)),
                         channels_last=channels_last, pretrained=pretrained, torch_dtype=torch_dtype)
        self.max_sequence_length = self_max
        self._use_flow_decoder(folder, flow_decoder)

    @classmethod
    def from_modules(cls, vae: Any, transformer: Any, schedule: FlowMatchingSchedule, *, channels_last: bool = True,
                     guidance_scale: Optional[float] = None, image_size: Optional[int] = None, **tables: torch.Tensor) -> DiffusersLatentPrior:
        """The prior from networks in memory (a :class:`DiffusersLatentPrior` with this family's parts): ``vae``,
        ``transformer``, the time map, and its prompt table as tensors (``prompt_embeds`` ``P x L x D`` and
        ``prompt_pooled`` ``P x Dp``; with guidance also ``negative_embeds`` / ``negative_pooled``); ``image_size``:
        the native image side (default the transformer's). Such a prior has no text encoder."""
        autoencoder, tc = Autoencoder(vae), transformer.config
        native = tc.sample_size if image_size is None else int(image_size) // autoencoder.factor
        conditioner = PromptConditioner(None, guidance_scale=1.0 if guidance_scale is None else guidance_scale, owner=cls.__name__,
                                        tables=tables)
        return DiffusersLatentPrior(autoencoder, Denoiser(transformer, sd3_call, "transformer"), schedule, RectifiedFlowAdapter(),
                                    conditioner, **_shapes(autoencoder, native, int(tc.patch_size), getattr(tc, "pos_embed_max_size", None)),
                                    channels_last=channels_last)


class FluxPrior(DiffusersLatentPrior):
    """FLUX.1 [dev] or [schnell] as a latent prior: a rectified-flow transformer over packed 2x2 patches of 16-channel latents.

    Reads a diffusers FLUX folder: ``vae/`` (AutoencoderKL, with ``shift_factor``), ``transformer/``
    (FluxTransformer2DModel), ``text_encoder/`` + ``tokenizer/`` (CLIP-L: its pooled output),
    ``text_encoder_2/`` + ``tokenizer_2/`` (T5-XXL: the token embeddings) and ``scheduler/``
    (dev: the resolution-dependent shift; schnell: none). As ``FluxPipeline``: the latents are
    packed into 2x2 patches with ``(0, row, column)`` position ids, the text ids are zeros, the
    network is given ``s`` (``1000 s / 1000``), and FLUX.1-dev's distilled guidance is an input of
    the network (``guidance_scale``), not a second row. True classifier-free guidance
    (``true_cfg_scale`` != 1, FluxPipeline's) runs a second row with the negative prompt (the empty
    prompt when none is given; diffusers skips it then). The flow works on unpacked ``16 x h x w``
    latents; packing happens inside the network call. Images of any size with sides a multiple of
    16 px.

    Args:
        pretrained: a local diffusers folder or a hub id (``black-forest-labs/FLUX.1-dev``,
            ``black-forest-labs/FLUX.1-schnell``; only if reachable or already cached).
        prompt: as :class:`~dwgf.priors.StableDiffusionPrior`.
        negative_prompt: as :class:`~dwgf.priors.StableDiffusionPrior`.
        guidance_scale: FLUX.1-dev's embedded guidance (default ``None``: 3.5, the pipeline's); a
            model without a guidance embedding (schnell) takes none, and giving one is an error.
        true_cfg_scale: classifier-free guidance on the velocity (default 1: none, one row).
        max_sequence_length: T5 tokens (default 512, the pipeline's).
        channels_last: see :class:`~dwgf.priors.UnconditionalLatentPrior`.
        flow_decoder: see :class:`~dwgf.priors.UnconditionalLatentPrior`.
        torch_dtype: see :class:`~dwgf.priors.UnconditionalLatentPrior`.
    """

    family = "FLUX.1"
    pipelines = ("FluxPipeline",)
    native_latent_size = 128  # FluxPipeline's default_sample_size: 1024 px with an 8x autoencoder

    def __init__(self, pretrained: str, prompt: str = "", negative_prompt: Optional[str] = None, guidance_scale: Optional[float] = None,
                 true_cfg_scale: float = 1.0, max_sequence_length: int = 512, channels_last: bool = True, flow_decoder: Optional[str] = None,
                 torch_dtype: TorchDtype = "float32"):
        owner = type(self).__name__
        self_max = _max_sequence_length(owner, max_sequence_length)
        for name, value in (("true_cfg_scale", true_cfg_scale), ("guidance_scale", 0.0 if guidance_scale is None else guidance_scale)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise argument_error(owner, name, f" must be a finite number >= 0, got {value!r}")
        args = dict(prompt=prompt, negative_prompt=negative_prompt, guidance_scale=float(true_cfg_scale), owner=owner,
                    cfg_option="true_cfg_scale")
        PromptConditioner.check_arguments(**args)
        folder = Folder(pretrained, owner, torch_dtype)
        autoencoder = folder.autoencoder()
        schedule = folder.flow_schedule()
        _, cfg = folder.config(("transformer",), "transformer")
        encoding = FluxEncoding(self_max)
        if cfg.get("_class_name") == "FluxTransformer2DModel":
            check_text_folder(folder, encoding)
        transformer = _load_transformer(folder, "FluxTransformer2DModel")
        if transformer.config.in_channels != 4 * int(autoencoder.vae.config.latent_channels):
            raise folder.error(f": transformer/ takes {transformer.config.in_channels} channels, but 2x2 patches of "
                               f"vae/'s {autoencoder.vae.config.latent_channels}-channel latents have {4 * autoencoder.vae.config.latent_channels}")
        conditioner = PromptConditioner(encoding, folder=folder, **args)
        _check_embeddings(folder, transformer, conditioner)
        call = FluxCall(_embedded_guidance(owner, transformer, guidance_scale))
        super().__init__(autoencoder, Denoiser(transformer, call, "transformer"), schedule, RectifiedFlowAdapter(), conditioner,
                         **_shapes(autoencoder, self.native_latent_size, 2), channels_last=channels_last, pretrained=pretrained,
                         torch_dtype=torch_dtype)
        self.max_sequence_length = self_max
        self._use_flow_decoder(folder, flow_decoder)

    @property
    def embedded_guidance(self) -> Optional[float]:
        """FLUX.1-dev's embedded guidance (``guidance_scale``; ``None`` for a model without the embedding)."""
        return self.denoiser._call.embedded_guidance

    @property
    def true_cfg_scale(self) -> float:
        """The classifier-free guidance scale."""
        return self.guidance_scale

    @classmethod
    def from_modules(cls, vae: Any, transformer: Any, schedule: FlowMatchingSchedule, *, channels_last: bool = True,
                     guidance_scale: Optional[float] = None, true_cfg_scale: float = 1.0, image_size: Optional[int] = None,
                     **tables: torch.Tensor) -> DiffusersLatentPrior:
        """The prior from networks in memory, as :meth:`StableDiffusion3Prior.from_modules`; ``guidance_scale`` is the
        embedded guidance, ``true_cfg_scale`` the classifier-free one."""
        autoencoder = Autoencoder(vae)
        native = cls.native_latent_size if image_size is None else int(image_size) // autoencoder.factor
        conditioner = PromptConditioner(None, guidance_scale=true_cfg_scale, owner=cls.__name__, cfg_option="true_cfg_scale",
                                        tables=tables)
        call = FluxCall(_embedded_guidance(cls.__name__, transformer, guidance_scale))
        return DiffusersLatentPrior(autoencoder, Denoiser(transformer, call, "transformer"), schedule, RectifiedFlowAdapter(), conditioner,
                                    **_shapes(autoencoder, native, 2), channels_last=channels_last)


def _embedded_guidance(owner: str, transformer: nn.Module, guidance_scale: Optional[float]) -> Optional[float]:
    has_embedding = bool(transformer.config.guidance_embeds)
    if has_embedding:
        return 3.5 if guidance_scale is None else float(guidance_scale)  # FluxPipeline's default
    if guidance_scale is not None:
        raise argument_error(owner, "guidance_scale", f" {float(guidance_scale):g}: this transformer has no guidance embedding "
                             "(FLUX.1-schnell); leave it unset, or use true_cfg_scale for classifier-free guidance")
    return None
