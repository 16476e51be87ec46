"""Stable Diffusion 1.x / 2.x and SDXL as latent priors: prompts, negative prompts and classifier-free guidance.

Conditioning follows diffusers' own pipelines term by term (``StableDiffusionPipeline.encode_prompt``,
``StableDiffusionXLPipeline.encode_prompt`` and ``_get_add_time_ids``, and the guidance step
``eps_uncond + g (eps_cond - eps_uncond)`` on the network's output); ``tests/test_sd_family.py``
checks every term against those pipelines on tiny random folders of each layout.

Prompts live in a table: row 0 is the prior's own ``prompt``, further rows are added by
:meth:`StableDiffusionPrior.prompt_ids` for per-item prompts. Each distinct prompt is encoded once;
the text encoders are loaded from the folder for that and released right after, so they hold no
memory during the flow.
"""

from __future__ import annotations

import contextlib
import json
import math
import warnings
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence

import torch

from dwgf.errors import DWGFError, argument_error, argument_warning
from dwgf.priors.diffusers_priors import DiffusersLatentPrior, TorchDtype, _component_config, _load, _read_config


def _quiet_load(cls: Any, root: Path, subfolder: str, pretrained: str, owner: str) -> Any:
    """Loads a transformers component without its progress bar (a one-second load needs none)."""
    from transformers.utils import logging as hf_logging

    bar = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        return _load(cls, root, subfolder, pretrained, owner)
    finally:
        if bar:
            hf_logging.enable_progress_bar()


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
        channels_last: see :class:`~dwgf.priors.DiffusersLatentPrior`.
        flow_decoder: see :class:`~dwgf.priors.DiffusersLatentPrior`.
        torch_dtype: see :class:`~dwgf.priors.DiffusersLatentPrior`.

    Example:
        >>> prior = StableDiffusionPrior("path/to/stable-diffusion-2-1-base")  # doctest: +SKIP
        >>> prior.latent_shape, prior.image_size  # doctest: +SKIP
        ((4, 64, 64), 512)
        >>> prior.latent_shape_at((512, 768))  # doctest: +SKIP
        (4, 64, 96)
    """

    text_components: tuple[tuple[str, str], ...] = (("tokenizer", "text_encoder"),)
    optional_text_components: tuple[str, ...] = ()  # encoders a folder may lack (SD3's T5)
    cfg_option = "guidance_scale"  # the option that sets the classifier-free guidance scale (FLUX: true_cfg_scale)
    prompt: str = ""
    negative_prompt: Optional[str] = None
    guidance_scale: float = 1.0

    def __init__(self, pretrained: str, prompt: str = "", negative_prompt: Optional[str] = None, guidance_scale: float = 1.0,
                 channels_last: bool = True, flow_decoder: Optional[str] = None, torch_dtype: TorchDtype = "float32"):
        if not isinstance(prompt, str):
            raise argument_error(type(self).__name__, "prompt", f" must be text, got {type(prompt).__name__}")
        if negative_prompt is not None and not isinstance(negative_prompt, str):
            raise argument_error(type(self).__name__, "negative_prompt", f" must be text or null, got {type(negative_prompt).__name__}")
        if isinstance(guidance_scale, bool) or not isinstance(guidance_scale, (int, float)) or not math.isfinite(guidance_scale) \
                or guidance_scale < 0:
            raise argument_error(type(self).__name__, "guidance_scale", f" must be a finite number >= 0 (1: no guidance), got {guidance_scale!r}")
        self.prompt, self.negative_prompt, self.guidance_scale = prompt, negative_prompt, float(guidance_scale)
        if negative_prompt is not None and not self.guided:
            opt = self.cfg_option
            warnings.warn(argument_warning(type(self).__name__, "negative_prompt", f" has no effect without guidance (<{opt}> 1): "
                                           "it is only used by guided calls", also=(opt,)), stacklevel=2)
        self._prompt_rows: dict[str, int] = {prompt: 0}  # the prompt table's rows (row 0: the prior's own prompt)
        super().__init__(pretrained, channels_last, flow_decoder, torch_dtype)

    @property
    def guided(self) -> bool:
        """Whether network calls are classifier-free guided (``guidance_scale != 1``): two rows per latent."""
        return self.guidance_scale != 1.0

    @classmethod
    def from_modules(cls, vae: Any, unet: Any, alphas_cumprod: torch.Tensor, *, prediction_type: str = "epsilon", channels_last: bool = True,
                     guidance_scale: float = 1.0, **buffers: torch.Tensor) -> "StableDiffusionPrior":
        """The prior from networks in memory (see :meth:`DiffusersLatentPrior.from_modules`) and its
        prompt table as tensors: ``prompt_embeds`` (``P x L x D``, row 0 the default prompt) and, for
        guidance, ``negative_embeds`` (``1 x L x D``); SDXL also ``prompt_pooled`` / ``negative_pooled``.
        Such a prior has no text encoder: per-item prompts cannot be added to it."""
        self = super().from_modules(vae, unet, alphas_cumprod, prediction_type=prediction_type, channels_last=channels_last, **buffers)
        self.guidance_scale = float(guidance_scale)
        self._prompt_rows = {self.prompt: 0}
        if self.guided and "negative_embeds" not in buffers:
            raise argument_error(cls.__name__, "guidance_scale", f" {guidance_scale} needs negative_embeds")
        return self

    # -- loading ---------------------------------------------------------------------------------
    def _check_unet(self, cfg: dict[str, Any]) -> None:
        if cfg.get("_class_name") not in (None, "UNet2DConditionModel"):
            raise self._pretrained_error(f": unet/ is a {cfg.get('_class_name')}; {type(self).__name__} needs a "
                                         f"UNet2DConditionModel (use UnconditionalLatentPrior, or load_prior to pick the class)")
        if cfg.get("addition_embed_type") == "text_time":
            raise self._pretrained_error(": unet/ is an SDXL UNet (text_time embeddings); use StableDiffusionXLPrior "
                                         "(class_path: dwgf.priors.StableDiffusionXLPrior, as configs/sdxl/; in Python, load_prior picks the class)")

    def _load_denoiser(self, root: Path) -> None:
        """The denoising network, then the prompt table's first rows (the prior's prompt, and the negative
        one with guidance); a folder without its text components fails now, not at the first prompt."""
        owner = type(self).__name__
        self._check_network(root)  # the wrong class for the folder is the first thing to say
        for tokenizer, encoder in self.text_components:
            if encoder in self.optional_text_components and not (root / encoder).is_dir():
                continue
            _component_config(root, (encoder,), encoder, self.pretrained, owner)
            if not (root / tokenizer).is_dir():
                raise self._pretrained_error(f": the folder lacks the {tokenizer} component (expected {tokenizer}/)")
        self._load_network(root)
        with self._text_encoders() as encoders:
            for name, value in self._encode_text(encoders, [self.prompt]).items():
                self.register_buffer(f"prompt_{name}", value, persistent=False)
            if self.guided:
                for name, value in self._negative(encoders).items():
                    self.register_buffer(f"negative_{name}", value, persistent=False)
        self._check_conditioning()

    def _check_network(self, root: Path) -> None:
        """The denoiser's config says it is this class's (before anything is loaded)."""
        _, cfg = _component_config(root, ("unet",), "unet", self.pretrained, type(self).__name__)
        self._check_unet(cfg)

    def _load_network(self, root: Path) -> None:
        from diffusers import UNet2DConditionModel

        self.unet = _load(UNet2DConditionModel, root, "unet", self.pretrained, type(self).__name__, self.weights_dtype)

    def _check_conditioning(self) -> None:
        """The text embeddings fit the UNet's cross-attention (a mismatched folder fails at load)."""
        want = self.unet.config.cross_attention_dim
        got = self.prompt_embeds.shape[-1]
        if isinstance(want, int) and want != got:
            raise self._pretrained_error(f": the text encoder gives {got}-dim embeddings but unet/ expects cross_attention_dim {want}")

    @contextlib.contextmanager
    def _text_encoders(self) -> Iterator["_LazyEncoders"]:
        """The folder's ``(tokenizer, text encoder)`` pairs for a ``with`` block: each loaded when first
        asked for, the previous one released first (SD3's and FLUX's T5-XXL is 19 GB in float32), and
        none left after. An absent optional encoder (:attr:`optional_text_components`) is ``None``."""
        from transformers import AutoTokenizer, CLIPTextModel, CLIPTextModelWithProjection, T5EncoderModel

        root, owner = self._root, type(self).__name__
        if root is None:
            raise DWGFError(f"{owner} was built in memory without text encoders: it knows only the prompts given to from_modules")
        classes = {"CLIPTextModel": CLIPTextModel, "CLIPTextModelWithProjection": CLIPTextModelWithProjection, "T5EncoderModel": T5EncoderModel}

        def load(i: int):
            tok_name, enc_name = self.text_components[i]
            if enc_name in self.optional_text_components and not (root / enc_name).is_dir():
                return None
            try:
                tokenizer = AutoTokenizer.from_pretrained(root, subfolder=tok_name, trust_remote_code=False)
            except Exception as err:  # noqa: BLE001 - includes a tokenizer that asks for remote code (never run)
                raise self._pretrained_error(f": could not load {tok_name}/ ({str(err).splitlines()[0][:200]})") from None
            arch = (_read_config(root / enc_name / "config.json", self.pretrained, owner).get("architectures") or ["CLIPTextModel"])[0]
            if arch not in classes:
                raise self._pretrained_error(f": {enc_name}/ is a {arch}; expected one of {', '.join(sorted(classes))}")
            return tokenizer, _quiet_load(classes[arch], root, enc_name, self.pretrained, owner)

        encoders = _LazyEncoders(load, len(self.text_components))
        try:
            yield encoders
        finally:
            encoders.clear()  # the last encoder goes with its last reference

    @torch.no_grad()
    def _encode_text(self, encoders: list[tuple[Any, Any]], texts: list[str], max_length: Optional[int] = None) -> dict[str, torch.Tensor]:
        """``{"embeds": P x L x D}`` for ``texts``, as ``StableDiffusionPipeline.encode_prompt`` computes them."""
        ((tokenizer, encoder),) = encoders
        tokens = tokenizer(texts, padding="max_length", max_length=max_length or tokenizer.model_max_length, truncation=True,
                           return_tensors="pt")
        mask = tokens.attention_mask if getattr(encoder.config, "use_attention_mask", False) else None
        return {"embeds": encoder(tokens.input_ids, attention_mask=mask)[0].float()}

    def _negative(self, encoders: list[tuple[Any, Any]]) -> dict[str, torch.Tensor]:
        """The negative prompt's row (diffusers: the empty prompt when none is given)."""
        return self._encode_text(encoders, [self.negative_prompt or ""], max_length=self.prompt_embeds.shape[1])

    # -- the prompt table -----------------------------------------------------------------------
    def prompt_ids(self, prompts: Sequence[Optional[str]]) -> torch.Tensor:
        """Rows of the prompt table for ``prompts`` (``None``: the prior's own prompt, row 0).

        Prompts not in the table yet are encoded together (the text encoders are loaded from the
        folder for it and released after) and appended.
        """
        rows = self._prompt_rows
        new = [p for p in dict.fromkeys(prompts) if p is not None and p not in rows]
        if any(not isinstance(p, str) for p in new):
            raise DWGFError(f"{type(self).__name__}: prompts must be text, got {[type(p).__name__ for p in new if not isinstance(p, str)][0]}")
        if new:
            with self._text_encoders() as encoders:
                table = self._encode_text(encoders, new)
            for name, value in table.items():
                old = getattr(self, f"prompt_{name}")
                self.register_buffer(f"prompt_{name}", torch.cat([old, value.to(old.device, old.dtype)]), persistent=False)
            for p in new:
                rows[p] = len(rows)
        # on the CPU: callers move the rows to the particles' device (InverseSolver.prompt_rows)
        return torch.tensor([0 if p is None else rows[p] for p in prompts], dtype=torch.long)

    @property
    def prompts(self) -> list[str]:
        """The prompts in the table, in row order (row 0 is :attr:`prompt`)."""
        return sorted(self._prompt_rows, key=self._prompt_rows.get)

    # -- maths -----------------------------------------------------------------------------------
    def _conditioning(self, rows: Optional[torch.Tensor], z_t: torch.Tensor, negative: bool) -> dict[str, Any]:
        """The UNet's keyword arguments for latents ``z_t`` whose prompts are table ``rows`` (``None``:
        row 0 for every latent; the negative row is the same for all)."""
        return {"encoder_hidden_states": _rows(self.negative_embeds if negative else self.prompt_embeds, None if negative else rows, z_t.shape[0])}

    def _eps(self, z_t: torch.Tensor, t: torch.Tensor, prompt: Optional[torch.Tensor] = None) -> torch.Tensor:
        rows = None if prompt is None else prompt.to(z_t.device).long()
        if rows is not None and rows.shape != (z_t.shape[0],):
            raise ValueError(f"prompt has shape {tuple(rows.shape)}, expected ({z_t.shape[0]},): one table row per latent")
        t = t.to(z_t.device).expand(z_t.shape[0]) if t.dim() == 0 else t.to(z_t.device)
        cond = self._conditioning(rows, z_t, negative=False)
        if not self.guided:
            return self.unet(z_t, t, **cond).sample
        uncond = self._conditioning(rows, z_t, negative=True)
        both = {k: _cat(uncond[k], cond[k]) for k in cond}
        out = self.unet(torch.cat([z_t, z_t]), torch.cat([t, t]), **both).sample
        out_uncond, out_cond = out.chunk(2)
        return out_uncond + self.guidance_scale * (out_cond - out_uncond)

    def extra_repr(self) -> str:
        text = super().extra_repr()
        if self.prompt:
            text += f", prompt={self.prompt!r}"
        if self.guided:
            text += f", {self.cfg_option}={self.guidance_scale:g}"
        return text


class _LazyEncoders:
    """``(tokenizer, encoder)`` pairs loaded on demand by ``load(i)``; loading one releases the previous."""

    def __init__(self, load, count: int):
        self._load, self._count, self._index, self._pair = load, count, None, None

    def __len__(self) -> int:
        return self._count

    def __getitem__(self, i: int):
        if self._index != i:
            self._pair = None  # release the previous encoder before loading the next
            self._pair, self._index = self._load(i), i
        return self._pair

    def __iter__(self):
        for i in range(self._count):
            yield self[i]

    def clear(self) -> None:
        self._pair, self._index = None, None


def _rows(table: torch.Tensor, rows: Optional[torch.Tensor], count: int) -> torch.Tensor:
    """``count`` rows of a prompt table: row 0 for all (``rows`` ``None``, no copy), else the given ones."""
    return table[:1].expand(count, *table.shape[1:]) if rows is None else table.index_select(0, rows)


def _cat(a: Any, b: Any) -> Any:
    """Concatenates two rows of UNet keyword arguments (tensors, or dicts of tensors for SDXL)."""
    if isinstance(a, dict):
        return {k: torch.cat([a[k], b[k]]) for k in a}
    return torch.cat([a, b])


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
    """

    text_components = (("tokenizer", "text_encoder"), ("tokenizer_2", "text_encoder_2"))

    def _check_unet(self, cfg: dict[str, Any]) -> None:
        if cfg.get("_class_name") not in (None, "UNet2DConditionModel") or cfg.get("addition_embed_type") != "text_time":
            raise self._pretrained_error(": unet/ is not an SDXL UNet (a UNet2DConditionModel with addition_embed_type "
                                         "'text_time'); use StableDiffusionPrior for SD 1.x/2.x (or load_prior to pick the class)")

    @property
    def force_zeros_for_empty_prompt(self) -> bool:
        index = None if self._root is None else self._root / "model_index.json"
        if index is None or not index.is_file():
            return True  # the pipeline's default
        return bool(json.loads(index.read_text(encoding="utf-8")).get("force_zeros_for_empty_prompt", True))

    def _check_conditioning(self) -> None:
        super()._check_conditioning()
        cfg = self.unet.config
        passed = int(cfg.addition_time_embed_dim) * 6 + int(self.prompt_pooled.shape[-1])
        expected = self.unet.add_embedding.linear_1.in_features
        if passed != expected:
            raise self._pretrained_error(f": unet/ expects {expected} added-embedding inputs, but 6 time ids and the "
                                         f"{self.prompt_pooled.shape[-1]}-dim pooled text embedding give {passed} (an SDXL refiner, "
                                         "which also takes an aesthetic score, is not supported)")

    @torch.no_grad()
    def _encode_text(self, encoders: list[tuple[Any, Any]], texts: list[str], max_length: Optional[int] = None) -> dict[str, torch.Tensor]:
        """``{"embeds": P x L x D1+D2, "pooled": P x Dp}``, as ``StableDiffusionXLPipeline.encode_prompt``."""
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
            raise self._pretrained_error(": neither text encoder gives a pooled (projected) embedding; SDXL's "
                                         "text_encoder_2 is a CLIPTextModelWithProjection")
        return {"embeds": torch.cat(hidden, dim=-1).float(), "pooled": pooled.float()}

    def _negative(self, encoders: list[tuple[Any, Any]]) -> dict[str, torch.Tensor]:
        if self.negative_prompt is None and self.force_zeros_for_empty_prompt:
            return {"embeds": torch.zeros_like(self.prompt_embeds[:1]), "pooled": torch.zeros_like(self.prompt_pooled[:1])}
        return super()._negative(encoders)

    def time_ids(self, z_t: torch.Tensor) -> torch.Tensor:
        """SDXL's ``time_ids`` ``(H, W, 0, 0, H, W)`` for the images of latents ``z_t``, one row per latent
        (built once per size and device, not at every network call)."""
        _, h, w = self.image_shape_of(z_t)
        key = (h, w, z_t.device, self.prompt_embeds.dtype)
        cache = self.__dict__.setdefault("_time_ids", {})
        if key not in cache:
            cache[key] = torch.tensor([[h, w, 0, 0, h, w]], dtype=self.prompt_embeds.dtype, device=z_t.device)
        return cache[key].expand(z_t.shape[0], -1)

    def _conditioning(self, rows: Optional[torch.Tensor], z_t: torch.Tensor, negative: bool) -> dict[str, Any]:
        out = super()._conditioning(rows, z_t, negative)
        pooled = _rows(self.negative_pooled if negative else self.prompt_pooled, None if negative else rows, z_t.shape[0])
        out["added_cond_kwargs"] = {"text_embeds": pooled, "time_ids": self.time_ids(z_t)}
        return out
