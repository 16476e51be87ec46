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
from pathlib import Path
from typing import Any, Optional, Sequence

import torch

from dwgf.errors import DWGFError, argument_error
from dwgf.priors.base import LatentPrior
from dwgf.priors.diffusers_priors import TorchDtype, _component_config, _load, _read_config
from dwgf.priors.stable_diffusion import StableDiffusionPrior, _cat, _rows


class FlowMatchingSchedule:
    """The time map of a rectified-flow model: flow time ``t`` (``0 .. T-1``) to the model's ``s``.

    The arguments are those of diffusers' ``FlowMatchEulerDiscreteScheduler`` that describe the
    model (its ``scheduler/scheduler_config.json``); options that only change how a pipeline
    spaces its inference steps (Karras, exponential or beta sigmas, ``shift_terminal``) do not
    change the model and are not read.

    Args:
        num_train_timesteps: ``T``. shift: the static shift (SD3: 3.0; FLUX.1-schnell: 1.0).
        use_dynamic_shifting: the resolution-dependent shift (FLUX.1-dev), with ``mu`` linear in the
            number of image tokens between ``(base_image_seq_len, base_shift)`` and
            ``(max_image_seq_len, max_shift)``.
        time_shift_type: ``"exponential"`` (``exp(mu) / (exp(mu) + 1/u - 1)``) or ``"linear"``
            (``mu / (mu + 1/u - 1)``).
    """

    def __init__(self, num_train_timesteps: int = 1000, shift: float = 1.0, use_dynamic_shifting: bool = False,
                 base_shift: float = 0.5, max_shift: float = 1.15, base_image_seq_len: int = 256, max_image_seq_len: int = 4096,
                 time_shift_type: str = "exponential"):
        if time_shift_type not in ("exponential", "linear"):
            raise ValueError(f"time_shift_type must be 'exponential' or 'linear', got {time_shift_type!r}")
        if not num_train_timesteps >= 2 or not shift > 0:
            raise ValueError(f"need num_train_timesteps >= 2 and shift > 0, got {num_train_timesteps} and {shift}")
        self.num_train_timesteps = int(num_train_timesteps)
        self.shift, self.use_dynamic_shifting = float(shift), bool(use_dynamic_shifting)
        self.base_shift, self.max_shift = float(base_shift), float(max_shift)
        self.base_image_seq_len, self.max_image_seq_len = int(base_image_seq_len), int(max_image_seq_len)
        self.time_shift_type = time_shift_type
        self._cache: dict[Optional[int], torch.Tensor] = {}

    KEYS = ("num_train_timesteps", "shift", "use_dynamic_shifting", "base_shift", "max_shift", "base_image_seq_len",
            "max_image_seq_len", "time_shift_type")

    @classmethod
    def from_config(cls, cfg: dict[str, Any]) -> "FlowMatchingSchedule":
        """From a ``FlowMatchEulerDiscreteScheduler`` config dict (missing keys: the scheduler's defaults)."""
        return cls(**{k: cfg[k] for k in cls.KEYS if cfg.get(k) is not None})

    def mu(self, image_seq_len: int) -> float:
        """``mu`` of the dynamic shift for ``image_seq_len`` image tokens (diffusers' ``calculate_shift``)."""
        m = (self.max_shift - self.base_shift) / (self.max_image_seq_len - self.base_image_seq_len)
        return image_seq_len * m + (self.base_shift - m * self.base_image_seq_len)

    def sigmas(self, image_seq_len: Optional[int] = None) -> torch.Tensor:
        """The model's ``s`` for ``t = 0 .. T-1`` (float64; ``image_seq_len`` only read with dynamic shifting)."""
        key = int(image_seq_len) if self.use_dynamic_shifting else None
        if key not in self._cache:
            # on the CPU: the schedule is a float64 table, indexed where it is used
            u = torch.arange(self.num_train_timesteps, dtype=torch.float64) / self.num_train_timesteps
            if self.use_dynamic_shifting:
                if key is None:
                    raise ValueError("a resolution-dependent schedule needs the number of image tokens")
                mu = self.mu(key)
                scale = math.exp(mu) if self.time_shift_type == "exponential" else mu
                s = scale / (scale + (1 / u - 1))
            else:
                s = self.shift * u / (1 + (self.shift - 1) * u)
            self._cache[key] = s
        return self._cache[key]

    def alphas_cumprod(self, image_seq_len: Optional[int] = None) -> torch.Tensor:
        """The variance-preserving ``abar_t = (1 - s)^2 / ((1 - s)^2 + s^2)`` of the same times (float64)."""
        s = self.sigmas(image_seq_len)
        return (1 - s) ** 2 / ((1 - s) ** 2 + s**2)

    def __repr__(self) -> str:
        shift = (f"dynamic {self.time_shift_type} shift (mu {self.base_shift:g}..{self.max_shift:g} over "
                 f"{self.base_image_seq_len}..{self.max_image_seq_len} tokens)" if self.use_dynamic_shifting else f"shift={self.shift:g}")
        return f"FlowMatchingSchedule(T={self.num_train_timesteps}, {shift})"


class FlowMatchingPrior(StableDiffusionPrior):
    """Shared maths of the rectified-flow priors (:class:`StableDiffusion3Prior`, :class:`FluxPrior`).

    Subclasses load the transformer and encode prompts; this class reads the scheduler's time map,
    sets the shapes and converts the velocity into the flow's ``eps`` and ``z0`` predictions (see
    the module docstring). The denoiser is ``self.transformer``.
    """

    prediction_type = "flow"
    patch_size = 2

    # -- loading ---------------------------------------------------------------------------------
    def _load_schedule(self, root: Path) -> None:
        cfg_path = root / "scheduler" / "scheduler_config.json"
        if not cfg_path.is_file():
            raise self._pretrained_error(": the folder lacks the scheduler component (expected scheduler/scheduler_config.json)")
        cfg = _read_config(cfg_path, self.pretrained, type(self).__name__)
        if cfg.get("_class_name") not in (None, "FlowMatchEulerDiscreteScheduler"):
            raise self._pretrained_error(f": scheduler/ is a {cfg.get('_class_name')}; a rectified-flow prior needs "
                                         "FlowMatchEulerDiscreteScheduler's time map")
        try:
            self.schedule = FlowMatchingSchedule.from_config(cfg)
        except (TypeError, ValueError) as err:
            raise self._pretrained_error(f": scheduler/scheduler_config.json does not describe a flow-matching time map ({err})") from None

    def _check_network(self, root: Path) -> None:
        _, cfg = _component_config(root, ("transformer",), "transformer", self.pretrained, type(self).__name__)
        if cfg.get("_class_name") != self.transformer_class:
            raise self._pretrained_error(f": transformer/ is a {cfg.get('_class_name')}; {type(self).__name__} needs a "
                                         f"{self.transformer_class} (load_prior picks the class from the folder)")

    def _load_network(self, root: Path) -> None:
        import diffusers

        self.transformer = _load(getattr(diffusers, self.transformer_class), root, "transformer", self.pretrained, type(self).__name__,
                                 self.weights_dtype)

    transformer_class = ""

    def _check_conditioning(self) -> None:
        cfg = self.transformer.config
        got, want = self.prompt_embeds.shape[-1], int(cfg.joint_attention_dim)
        if got != want:
            raise self._pretrained_error(f": the text encoders give {got}-dim embeddings but transformer/ expects joint_attention_dim {want}")
        got, want = self.prompt_pooled.shape[-1], int(cfg.pooled_projection_dim)
        if got != want:
            raise self._pretrained_error(f": the text encoders give a {got}-dim pooled embedding but transformer/ expects "
                                         f"pooled_projection_dim {want}")

    def _negative(self, encoders) -> dict[str, torch.Tensor]:
        """The negative prompt's row (the pipelines' empty prompt when none is given)."""
        return self._encode_text(encoders, [self.negative_prompt or ""])

    # -- shapes ----------------------------------------------------------------------------------
    def _set_shapes(self) -> None:
        factor = 2 ** (len(self.vae.config.block_out_channels) - 1)
        size = self._native_latent_size()
        self.latent_factor = factor
        self.image_size = size * factor
        self.image_channels = int(self.vae.config.in_channels)
        self.latent_shape = (int(self.vae.config.latent_channels), size, size)
        self.size_multiple = factor * self.patch_size
        self._register_schedule(self.schedule.alphas_cumprod(self.image_tokens(size, size)))

    def _native_latent_size(self) -> int:
        raise NotImplementedError

    def image_tokens(self, h: int, w: int) -> int:
        """The transformer's number of image tokens for ``h x w`` latents (``patch_size`` squares)."""
        return (int(h) // self.patch_size) * (int(w) // self.patch_size)

    # -- maths -----------------------------------------------------------------------------------
    def sigma(self, t: torch.Tensor, latent: Optional[torch.Tensor] = None) -> torch.Tensor:
        """The model's ``s`` for flow times ``t`` (float32 on ``t``'s device) for latents shaped like ``latent``."""
        h, w = (self.latent_shape[1:] if latent is None else latent.shape[-2:])
        return self.schedule.sigmas(self.image_tokens(h, w)).to(t.device)[t.long()].to(torch.float32)

    def abar(self, t: torch.Tensor, latent: Optional[torch.Tensor] = None) -> torch.Tensor:
        if latent is None or not self.schedule.use_dynamic_shifting:
            return super().abar(t)
        h, w = latent.shape[-2:]
        table = self.schedule.alphas_cumprod(self.image_tokens(h, w))
        return table.to(t.device)[t.long()].to(torch.float32)

    def _velocity_at(self, z_t: torch.Tensor, t: torch.Tensor, prompt: Optional[torch.Tensor]):
        """``(z_s, s, v_hat)`` for flow-coordinate latents ``z_t`` (``B x c x h x w``) at flow times ``t``."""
        t = t.to(z_t.device).expand(z_t.shape[0]) if t.dim() == 0 else t.to(z_t.device)
        sigma = self.sigma(t, z_t)
        s = sigma.view(-1, *([1] * (z_t.dim() - 1)))
        z_s = ((1 - s) ** 2 + s**2).sqrt() * z_t.float()
        rows = None if prompt is None else prompt.to(z_t.device).long()
        if rows is not None and rows.shape != (z_t.shape[0],):
            raise ValueError(f"prompt has shape {tuple(rows.shape)}, expected ({z_t.shape[0]},): one table row per latent")
        timestep = sigma * self.schedule.num_train_timesteps  # what the pipelines give the network
        cond = self._conditioning(rows, z_s, negative=False)
        with self._denoiser_precision(z_t.device):
            if not self.guided:
                v = self._transformer(z_s, timestep, cond).float()
            else:
                uncond = self._conditioning(rows, z_s, negative=True)
                both = {k: _cat(uncond[k], cond[k]) for k in cond}
                v_uncond, v_cond = self._transformer(torch.cat([z_s, z_s]), torch.cat([timestep, timestep]), both).float().chunk(2)
                v = v_uncond + self.guidance_scale * (v_cond - v_uncond)
        return z_s, s, v

    def eps(self, z_t: torch.Tensor, t: torch.Tensor, prompt: Optional[torch.Tensor] = None) -> torch.Tensor:
        """``eps_hat = z_s + (1 - s) v_hat`` for flow-coordinate latents ``z_t`` (see the module docstring)."""
        z_s, s, v = self._velocity_at(z_t, t, prompt)
        return z_s + (1 - s) * v

    def predict(self, z_t: torch.Tensor, t: torch.Tensor, prompt: Optional[torch.Tensor] = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``(z_s + (1 - s) v_hat, z_s - s v_hat)``: both from one network call, no division."""
        z_s, s, v = self._velocity_at(z_t, t, prompt)
        return z_s + (1 - s) * v, z_s - s * v

    def model_latent(self, z_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """The model's own latent ``z_s = c_s z_t`` for flow-coordinate latents ``z_t`` at flow times ``t``."""
        s = self.sigma(t.to(z_t.device), z_t).view(-1, *([1] * (z_t.dim() - 1)))
        return ((1 - s) ** 2 + s**2).sqrt() * z_t

    def _transformer(self, z_s: torch.Tensor, timestep: torch.Tensor, cond: dict[str, Any]) -> torch.Tensor:
        raise NotImplementedError

    def _conditioning(self, rows: Optional[torch.Tensor], z_t: torch.Tensor, negative: bool) -> dict[str, Any]:
        n = z_t.shape[0]
        return {"encoder_hidden_states": _rows(self.negative_embeds if negative else self.prompt_embeds, None if negative else rows, n),
                "pooled_projections": _rows(self.negative_pooled if negative else self.prompt_pooled, None if negative else rows, n)}

    @classmethod
    def from_modules(cls, vae: Any, transformer: Any, schedule: FlowMatchingSchedule, *, channels_last: bool = True,
                     guidance_scale: Optional[float] = None, image_size: Optional[int] = None, **kwargs: Any) -> "FlowMatchingPrior":
        """The prior from networks in memory: ``vae``, ``transformer``, the time map, and its prompt table
        as tensors (``prompt_embeds`` ``P x L x D`` and ``prompt_pooled`` ``P x Dp``; with guidance also
        ``negative_embeds`` / ``negative_pooled``); ``image_size``: the native image side (default the
        class's). Benchmarks use it for published layouts with random weights. Such a prior has no
        text encoder: per-item prompts cannot be added to it."""
        self = cls.__new__(cls)
        LatentPrior.__init__(self)
        self.pretrained, self.channels_last, self._root = "(in memory)", bool(channels_last), None
        if image_size is not None:
            self._native_size = int(image_size) // 2 ** (len(vae.config.block_out_channels) - 1)
        self.vae, self.transformer, self.schedule = vae, transformer, schedule
        self.is_vq = False
        self.scaling_factor = float(getattr(vae.config, "scaling_factor", None) or 1.0)
        self.shift_factor = float(getattr(vae.config, "shift_factor", None) or 0.0)
        self.prompt, self.negative_prompt = "", None
        self._set_guidance(guidance_scale, kwargs)
        self._prompt_rows = {self.prompt: 0}
        for name, value in kwargs.items():
            self.register_buffer(name, value, persistent=False)
        if self.guided and "negative_embeds" not in kwargs:
            raise argument_error(cls.__name__, "guidance_scale", " needs negative_embeds")
        self._finish()
        return self

    def _set_guidance(self, guidance_scale: Optional[float], kwargs: dict[str, Any]) -> None:
        self.guidance_scale = 1.0 if guidance_scale is None else float(guidance_scale)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", {self.schedule!r}"


class StableDiffusion3Prior(FlowMatchingPrior):
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
        channels_last: see :class:`~dwgf.priors.DiffusersLatentPrior`.
        flow_decoder: see :class:`~dwgf.priors.DiffusersLatentPrior`.
        torch_dtype: see :class:`~dwgf.priors.DiffusersLatentPrior`.
    """

    text_components = (("tokenizer", "text_encoder"), ("tokenizer_2", "text_encoder_2"), ("tokenizer_3", "text_encoder_3"))
    optional_text_components = ("text_encoder_3",)
    transformer_class = "SD3Transformer2DModel"
    max_sequence_length = 256

    def __init__(self, pretrained: str, prompt: str = "", negative_prompt: Optional[str] = None, guidance_scale: float = 1.0,
                 max_sequence_length: int = 256, channels_last: bool = True, flow_decoder: Optional[str] = None,
                 torch_dtype: TorchDtype = "float32"):
        if isinstance(max_sequence_length, bool) or not isinstance(max_sequence_length, int) or max_sequence_length < 1:
            raise argument_error(type(self).__name__, "max_sequence_length", f" must be a positive integer, got {max_sequence_length!r}")
        self.max_sequence_length = int(max_sequence_length)
        super().__init__(pretrained, prompt, negative_prompt, guidance_scale, channels_last, flow_decoder, torch_dtype)

    def _native_latent_size(self) -> int:
        return int(self.__dict__.get("_native_size") or self.transformer.config.sample_size)

    @property
    def patch_size(self) -> int:  # type: ignore[override]
        return int(self.transformer.config.patch_size)

    def latent_shape_at(self, size: Optional[Sequence[int]] = None) -> tuple[int, int, int]:
        shape = super().latent_shape_at(size)
        grid = getattr(self.transformer.config, "pos_embed_max_size", None)
        if grid is not None and max(shape[1:]) // self.patch_size > int(grid):
            h, w = shape[1] * self.latent_factor, shape[2] * self.latent_factor
            raise DWGFError(f"{type(self).__name__}: a {h}x{w} image is beyond the transformer's position grid ({grid} patches of "
                            f"{self.patch_size * self.latent_factor} px a side: at most {int(grid) * self.patch_size * self.latent_factor} px)")
        return shape

    @torch.no_grad()
    def _encode_text(self, encoders, texts: list[str], max_length: Optional[int] = None) -> dict[str, torch.Tensor]:
        """``{"embeds": P x (77 + L) x D, "pooled": P x (D1 + D2)}``, as ``StableDiffusion3Pipeline.encode_prompt``."""
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
        width = int(self.transformer.config.joint_attention_dim)
        if t5_pair is None:
            t5 = torch.zeros(len(texts), self.max_sequence_length, width, device=clip.device)
        else:
            tokenizer, encoder = t5_pair
            del t5_pair
            ids = tokenizer(texts, padding="max_length", max_length=self.max_sequence_length, truncation=True, add_special_tokens=True,
                            return_tensors="pt").input_ids
            t5 = encoder(ids)[0].float()
        clip = torch.nn.functional.pad(clip, (0, t5.shape[-1] - clip.shape[-1]))
        return {"embeds": torch.cat([clip, t5], dim=-2), "pooled": torch.cat(pooled, dim=-1)}

    def _transformer(self, z_s: torch.Tensor, timestep: torch.Tensor, cond: dict[str, Any]) -> torch.Tensor:
        return self.transformer(hidden_states=z_s, timestep=timestep, **cond).sample


class FluxPrior(FlowMatchingPrior):
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
        channels_last: see :class:`~dwgf.priors.DiffusersLatentPrior`.
        flow_decoder: see :class:`~dwgf.priors.DiffusersLatentPrior`.
        torch_dtype: see :class:`~dwgf.priors.DiffusersLatentPrior`.
    """

    text_components = (("tokenizer", "text_encoder"), ("tokenizer_2", "text_encoder_2"))
    transformer_class = "FluxTransformer2DModel"
    max_sequence_length = 512
    embedded_guidance: Optional[float] = None
    cfg_option = "true_cfg_scale"

    @property
    def true_cfg_scale(self) -> float:
        """The classifier-free guidance scale (held as ``guidance_scale``, the attribute the SD machinery guides with)."""
        return self.guidance_scale

    def __init__(self, pretrained: str, prompt: str = "", negative_prompt: Optional[str] = None, guidance_scale: Optional[float] = None,
                 true_cfg_scale: float = 1.0, max_sequence_length: int = 512, channels_last: bool = True, flow_decoder: Optional[str] = None,
                 torch_dtype: TorchDtype = "float32"):
        owner = type(self).__name__
        if isinstance(max_sequence_length, bool) or not isinstance(max_sequence_length, int) or max_sequence_length < 1:
            raise argument_error(owner, "max_sequence_length", f" must be a positive integer, got {max_sequence_length!r}")
        for name, value in (("true_cfg_scale", true_cfg_scale), ("guidance_scale", 0.0 if guidance_scale is None else guidance_scale)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise argument_error(owner, name, f" must be a finite number >= 0, got {value!r}")
        self.max_sequence_length = int(max_sequence_length)
        self.embedded_guidance = None if guidance_scale is None else float(guidance_scale)
        # StableDiffusionPrior's guidance_scale is the classifier-free one: here true_cfg_scale
        super().__init__(pretrained, prompt, negative_prompt, float(true_cfg_scale), channels_last, flow_decoder, torch_dtype)
        self._check_guidance()

    def _set_guidance(self, guidance_scale: Optional[float], kwargs: dict[str, Any]) -> None:
        self.guidance_scale = float(kwargs.pop("true_cfg_scale", 1.0))
        self.embedded_guidance = None if guidance_scale is None else float(guidance_scale)

    def _finish(self) -> None:
        super()._finish()
        if self._root is None:
            self._check_guidance()

    def _check_guidance(self) -> None:
        has_embedding = bool(self.transformer.config.guidance_embeds)
        if has_embedding and self.embedded_guidance is None:
            self.embedded_guidance = 3.5  # FluxPipeline's default
        if not has_embedding and self.embedded_guidance is not None:
            raise argument_error(type(self).__name__, "guidance_scale", f" {self.embedded_guidance:g}: this transformer has no guidance "
                                 "embedding (FLUX.1-schnell); leave it unset, or use true_cfg_scale for classifier-free guidance")

    def _native_latent_size(self) -> int:
        return int(self.__dict__.get("_native_size") or 128)  # FluxPipeline's default_sample_size: 1024 px with an 8x autoencoder

    def _load_network(self, root: Path) -> None:
        super()._load_network(root)
        if self.transformer.config.in_channels != 4 * int(self.vae.config.latent_channels):
            raise self._pretrained_error(f": transformer/ takes {self.transformer.config.in_channels} channels, but 2x2 patches of "
                                         f"vae/'s {self.vae.config.latent_channels}-channel latents have {4 * self.vae.config.latent_channels}")

    @torch.no_grad()
    def _encode_text(self, encoders, texts: list[str], max_length: Optional[int] = None) -> dict[str, torch.Tensor]:
        """``{"embeds": P x L x D (T5), "pooled": P x Dp (CLIP's pooled output)}``, as ``FluxPipeline.encode_prompt``."""
        tokenizer, encoder = encoders[0]
        ids = tokenizer(texts, padding="max_length", max_length=tokenizer.model_max_length, truncation=True, return_tensors="pt").input_ids
        pooled = encoder(ids, output_hidden_states=False).pooler_output.float()
        del tokenizer, encoder
        tokenizer, encoder = encoders[1]
        ids = tokenizer(texts, padding="max_length", max_length=self.max_sequence_length, truncation=True, return_tensors="pt").input_ids
        embeds = encoder(ids, output_hidden_states=False)[0].float()
        return {"embeds": embeds, "pooled": pooled}

    def _position_ids(self, h: int, w: int, device: torch.device, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """``(img_ids, txt_ids)`` for ``h x w`` latents, built once per size and device."""
        key = (h, w, device, dtype)
        cache = self.__dict__.setdefault("_ids", {})
        if key not in cache:
            ids = torch.zeros(h // 2, w // 2, 3, device=device)
            ids[..., 1] += torch.arange(h // 2, device=device)[:, None]
            ids[..., 2] += torch.arange(w // 2, device=device)[None, :]
            cache[key] = (ids.reshape(-1, 3).to(device=device, dtype=dtype),
                          torch.zeros(self.prompt_embeds.shape[1], 3, device=device, dtype=dtype))
        return cache[key]

    def _transformer(self, z_s: torch.Tensor, timestep: torch.Tensor, cond: dict[str, Any]) -> torch.Tensor:
        b, c, h, w = z_s.shape
        packed = z_s.view(b, c, h // 2, 2, w // 2, 2).permute(0, 2, 4, 1, 3, 5).reshape(b, (h // 2) * (w // 2), c * 4)
        img_ids, txt_ids = self._position_ids(h, w, z_s.device, self.prompt_embeds.dtype)
        guidance = None
        if self.transformer.config.guidance_embeds:
            guidance = torch.full((b,), float(self.embedded_guidance), device=z_s.device, dtype=torch.float32)
        out = self.transformer(hidden_states=packed, timestep=timestep / 1000, guidance=guidance, img_ids=img_ids, txt_ids=txt_ids,
                               **cond).sample
        return out.view(b, h // 2, w // 2, c, 2, 2).permute(0, 3, 1, 4, 2, 5).reshape(b, c, h, w)

    def extra_repr(self) -> str:
        text = super().extra_repr()
        if self.embedded_guidance is not None:
            text += f", embedded guidance={self.embedded_guidance:g}"
        return text
