"""Stable Diffusion 1.x / 2.x and SDXL: recipes of a :class:`~dwgf.priors.DiffusersLatentPrior`.

Conditioning follows diffusers' own pipelines term by term (``StableDiffusionPipeline.encode_prompt``,
``StableDiffusionXLPipeline.encode_prompt`` and ``_get_add_time_ids``); the prompt table and the
guidance step are the shared conditioner's (:mod:`dwgf.priors.conditioning`). ``tests/test_sd_family.py``
checks every term against those pipelines on tiny random folders of each layout.
"""

from __future__ import annotations

from typing import Any, Optional

import torch
from torch import nn

from dwgf.priors.components import ADAPTERS, Autoencoder, DDPMSchedule
from dwgf.priors.conditioning import PromptConditioner, TextEncoding, check_text_folder
from dwgf.priors.diffusers_priors import Denoiser, DiffusersLatentPrior, ddpm_shapes
from dwgf.priors.folders import Folder, TorchDtype


class CLIPEncoding(TextEncoding):
    """SD 1.x / 2.x: one CLIP text encoder's last hidden states (``StableDiffusionPipeline.encode_prompt``)."""

    @torch.no_grad()
    def encode(self, encoders, texts, max_length=None):
        ((tokenizer, encoder),) = encoders
        tokens = tokenizer(texts, padding="max_length", max_length=max_length or tokenizer.model_max_length, truncation=True,
                           return_tensors="pt")
        mask = tokens.attention_mask if getattr(encoder.config, "use_attention_mask", False) else None
        return {"embeds": encoder(tokens.input_ids, attention_mask=mask)[0].float()}

    def negative(self, conditioner, encoders):
        return self.encode(encoders, [conditioner.negative_prompt or ""], max_length=conditioner.prompt_embeds.shape[1])


class SDXLEncoding(TextEncoding):
    """SDXL: both encoders' penultimate hidden states side by side and the second's pooled projection
    (``StableDiffusionXLPipeline.encode_prompt``); the negative row is zeros for no negative prompt when
    the folder says ``force_zeros_for_empty_prompt``."""

    components = (("tokenizer", "text_encoder"), ("tokenizer_2", "text_encoder_2"))

    def __init__(self, force_zeros_for_empty_prompt: bool = True, error=None):
        self.force_zeros, self.error = bool(force_zeros_for_empty_prompt), error

    @torch.no_grad()
    def encode(self, encoders, texts, max_length=None):
        hidden, pooled = [], None
        for tokenizer, encoder in encoders:
            ids = tokenizer(texts, padding="max_length", max_length=max_length or tokenizer.model_max_length, truncation=True,
                            return_tensors="pt").input_ids
            out = encoder(ids, output_hidden_states=True)
            if pooled is None and out[0].ndim == 2:  # the projection of the encoder that has one
                pooled = out[0]
            hidden.append(out.hidden_states[-2])
            del tokenizer, encoder, out  # released before the next encoder loads
        if pooled is None:
            raise self.error(": neither text encoder gives a pooled (projected) embedding; SDXL's text_encoder_2 is a "
                             "CLIPTextModelWithProjection")
        return {"embeds": torch.cat(hidden, dim=-1).float(), "pooled": pooled.float()}

    def negative(self, conditioner, encoders):
        if conditioner.negative_prompt is None and self.force_zeros:
            return {"embeds": torch.zeros_like(conditioner.prompt_embeds[:1]), "pooled": torch.zeros_like(conditioner.prompt_pooled[:1])}
        return self.encode(encoders, [conditioner.negative_prompt or ""], max_length=conditioner.prompt_embeds.shape[1])


class ConditionalUNet:
    """The call of a UNet2DConditionModel: cross-attention on the prompt's embeddings, and for SDXL
    (a ``pooled`` embedding) the added ``text_embeds`` and ``time_ids`` ``(H, W, 0, 0, H, W)`` of the
    latents' images (original size = target size = the image's, no crop), built once per size and device."""

    def __init__(self, factor: int):
        self.factor, self._time_ids = factor, {}

    def time_ids(self, latent: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        h, w = (int(v) * self.factor for v in latent.shape[-2:])
        key = (h, w, latent.device, dtype)
        if key not in self._time_ids:
            self._time_ids[key] = torch.tensor([[h, w, 0, 0, h, w]], dtype=dtype, device=latent.device)
        return self._time_ids[key].expand(latent.shape[0], -1)

    def __call__(self, unet: nn.Module, latent: torch.Tensor, timestep: torch.Tensor, text: dict[str, torch.Tensor]) -> torch.Tensor:
        kwargs: dict[str, Any] = {"encoder_hidden_states": text["embeds"]}
        if "pooled" in text:
            kwargs["added_cond_kwargs"] = {"text_embeds": text["pooled"], "time_ids": self.time_ids(latent, text["embeds"].dtype)}
        return unet(latent, timestep, **kwargs).sample


class StableDiffusionPrior(DiffusersLatentPrior):
    """Stable Diffusion 1.x / 2.x (512 epsilon or 768 v-prediction) as a latent prior, with an optional prompt.

    Reads a diffusers Stable Diffusion folder: ``vae/`` (AutoencoderKL), ``unet/``
    (UNet2DConditionModel), ``text_encoder/`` + ``tokenizer/`` (CLIP) and ``scheduler/`` (its
    ``prediction_type`` says epsilon or v-prediction; both work). The method's default is the
    paper's: the empty prompt and no guidance, so the prior is the model's unconditional one.

    With ``guidance_scale = g != 1`` every network call is classifier-free guided:
    ``out = out(negative) + g (out(prompt) - out(negative))``, the two rows of each latent batched
    into one call (twice the network's work). ``g = 1`` runs the prompt's row only.

    Args:
        pretrained: a local diffusers folder, or a hub id such as
            ``stable-diffusion-v1-5/stable-diffusion-v1-5``, ``stabilityai/stable-diffusion-2-1-base``
            or ``stabilityai/stable-diffusion-2-1`` (only if reachable or already cached).
        prompt: the text condition of every item without a prompt of its own (default ``""``).
        negative_prompt: the condition guidance steers away from; ``None`` (default) is the empty
            prompt, as in diffusers.
        guidance_scale: classifier-free guidance ``g`` (default 1: no guidance, one network row).
        channels_last: see :class:`~dwgf.priors.UnconditionalLatentPrior`.
        flow_decoder: see :class:`~dwgf.priors.UnconditionalLatentPrior`.
        torch_dtype: see :class:`~dwgf.priors.UnconditionalLatentPrior`.

    Example:
        >>> prior = StableDiffusionPrior("path/to/stable-diffusion-2-1-base")  # doctest: +SKIP
        >>> prior.latent_shape, prior.image_size  # doctest: +SKIP
        ((4, 64, 64), 512)
        >>> prior.latent_shape_at((512, 768))  # doctest: +SKIP
        (4, 64, 96)
    """

    family = "Stable Diffusion 1.x / 2.x"
    pipelines = ("StableDiffusionPipeline",)
    xl = False

    def __init__(self, pretrained: str, prompt: str = "", negative_prompt: Optional[str] = None, guidance_scale: float = 1.0,
                 channels_last: bool = True, flow_decoder: Optional[str] = None, torch_dtype: TorchDtype = "float32"):
        from diffusers import UNet2DConditionModel

        owner = type(self).__name__
        conditioner_args = dict(prompt=prompt, negative_prompt=negative_prompt, guidance_scale=guidance_scale, owner=owner)
        PromptConditioner.check_arguments(**conditioner_args)  # bad options fail before the folder is read
        folder = Folder(pretrained, owner, torch_dtype)
        autoencoder = folder.autoencoder()
        schedule, prediction = folder.ddpm_schedule()
        self._check_unet(folder, folder.config(("unet",), "unet")[1])
        encoding = self._encoding(folder)
        check_text_folder(folder, encoding)
        unet = folder.load(UNet2DConditionModel, "unet")
        conditioner = PromptConditioner(encoding, folder=folder, **conditioner_args)
        _check_embeddings(folder, unet, conditioner, self.xl)
        super().__init__(autoencoder, Denoiser(unet, ConditionalUNet(autoencoder.factor)), schedule, ADAPTERS[prediction](), conditioner,
                         **ddpm_shapes(unet, autoencoder), channels_last=channels_last, pretrained=pretrained, torch_dtype=torch_dtype)
        self._use_flow_decoder(folder, flow_decoder)

    def _encoding(self, folder: Folder) -> TextEncoding:
        return CLIPEncoding()

    def _check_unet(self, folder: Folder, cfg: dict[str, Any]) -> None:
        if cfg.get("_class_name") not in (None, "UNet2DConditionModel"):
            raise folder.error(f": unet/ is a {cfg.get('_class_name')}; {type(self).__name__} needs a "
                               f"UNet2DConditionModel (use UnconditionalLatentPrior, or load_prior to pick the class)")
        if cfg.get("addition_embed_type") == "text_time":
            raise folder.error(": unet/ is an SDXL UNet (text_time embeddings); use StableDiffusionXLPrior "
                               "(class_path: dwgf.priors.StableDiffusionXLPrior, as configs/sdxl/; in Python, load_prior picks the class)")

    def time_ids(self, z_t: torch.Tensor) -> torch.Tensor:
        """SDXL's ``time_ids`` ``(H, W, 0, 0, H, W)`` for the images of latents ``z_t``, one row per latent."""
        return self.denoiser._call.time_ids(z_t, self.conditioner.prompt_embeds.dtype)

    @classmethod
    def from_modules(cls, vae: Any, unet: Any, alphas_cumprod: torch.Tensor, *, prediction_type: str = "epsilon", channels_last: bool = True,
                     guidance_scale: float = 1.0, **tables: torch.Tensor) -> DiffusersLatentPrior:
        """The prior from networks in memory: a :class:`DiffusersLatentPrior` with this family's parts and its
        prompt table as tensors: ``prompt_embeds`` (``P x L x D``, row 0 the default prompt) and, for guidance,
        ``negative_embeds`` (``1 x L x D``); SDXL also ``prompt_pooled`` / ``negative_pooled``. Such a prior has
        no text encoder: per-item prompts cannot be added to it."""
        autoencoder = Autoencoder(vae)
        conditioner = PromptConditioner(None, guidance_scale=guidance_scale, owner=cls.__name__, tables=tables)
        return DiffusersLatentPrior(autoencoder, Denoiser(unet, ConditionalUNet(autoencoder.factor)), DDPMSchedule(alphas_cumprod),
                                    ADAPTERS[prediction_type](), conditioner, **ddpm_shapes(unet, autoencoder), channels_last=channels_last)


class StableDiffusionXLPrior(StableDiffusionPrior):
    """Stable Diffusion XL base 1.0 as a latent prior: two text encoders, a pooled embedding and size-dependent time ids.

    Reads a diffusers SDXL folder: ``vae/``, ``unet/`` (UNet2DConditionModel with ``text_time``
    added embeddings), ``text_encoder/`` + ``tokenizer/`` (CLIP ViT-L), ``text_encoder_2/`` +
    ``tokenizer_2/`` (OpenCLIP ViT-bigG with projection) and ``scheduler/``. As in diffusers, the
    prompt embedding is both encoders' penultimate hidden states side by side, the pooled embedding
    the second encoder's projection, and the UNet's ``time_ids`` are
    ``(H, W, 0, 0, H, W)`` for ``H x W`` images (original size = target size = the image's, no crop),
    so an image of any size is modelled at its own size. With guidance and no ``negative_prompt``,
    the negative embeddings are zeros when the folder's ``model_index.json`` says
    ``force_zeros_for_empty_prompt`` (SDXL base does), as diffusers does.

    Under ``16-mixed`` the autoencoder stays in float32 (its config asks for it: SDXL's overflows in
    float16, as diffusers warns); under ``bf16-mixed`` the flow's decoder pass runs in bfloat16 with
    the UNet (:func:`dwgf.precision.autoencoder_dtype`).

    Args:
        pretrained: a local diffusers folder, or ``stabilityai/stable-diffusion-xl-base-1.0`` (only if
            reachable or already cached).
        prompt: as :class:`StableDiffusionPrior`.
        negative_prompt: as :class:`StableDiffusionPrior`.
        guidance_scale: as :class:`StableDiffusionPrior`.
        channels_last: as :class:`StableDiffusionPrior`.
        flow_decoder: as :class:`StableDiffusionPrior`.
        torch_dtype: as :class:`StableDiffusionPrior`.
    """

    family = "Stable Diffusion XL"
    pipelines = ("StableDiffusionXLPipeline",)
    xl = True

    def _encoding(self, folder: Folder) -> TextEncoding:
        return SDXLEncoding(folder.json("model_index.json").get("force_zeros_for_empty_prompt", True), folder.error)

    def _check_unet(self, folder: Folder, cfg: dict[str, Any]) -> None:
        if cfg.get("_class_name") not in (None, "UNet2DConditionModel") or cfg.get("addition_embed_type") != "text_time":
            raise folder.error(": unet/ is not an SDXL UNet (a UNet2DConditionModel with addition_embed_type "
                               "'text_time'); use StableDiffusionPrior for SD 1.x/2.x (or load_prior to pick the class)")


def _check_embeddings(folder: Folder, unet: nn.Module, conditioner: PromptConditioner, xl: bool) -> None:
    """The text embeddings fit the UNet's cross-attention (and SDXL's added embeddings): a mismatched folder fails at load."""
    want, got = unet.config.cross_attention_dim, conditioner.prompt_embeds.shape[-1]
    if isinstance(want, int) and want != got:
        raise folder.error(f": the text encoder gives {got}-dim embeddings but unet/ expects cross_attention_dim {want}")
    if xl:
        pooled = int(conditioner.prompt_pooled.shape[-1])
        passed, expected = int(unet.config.addition_time_embed_dim) * 6 + pooled, unet.add_embedding.linear_1.in_features
        if passed != expected:
            raise folder.error(f": unet/ expects {expected} added-embedding inputs, but 6 time ids and the {pooled}-dim pooled text "
                               "embedding give {passed} (an SDXL refiner, which also takes an aesthetic score, is not supported)"
                               .replace("{passed}", str(passed)))
