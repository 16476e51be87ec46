"""Latent priors backed by diffusers models, loaded from a local folder or a hub id."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any, Literal, Optional

import torch

from dwgf.errors import DWGFError, argument_error
from dwgf.priors.base import LatentPrior



def _pretrained_error(owner: str, pretrained: str, detail: str, argument: str = "pretrained") -> DWGFError:
    """An error about the ``argument`` (a folder or hub id) of the prior class ``owner`` (the CLI names the option)."""
    return argument_error(owner, argument, f" {pretrained!r}{detail}")

# What a diffusers pipeline folder must hold for each prior, besides model_index.json.
_HUB_PATTERNS = ["model_index.json", "*/*.json", "*/*.txt", "*/*.safetensors", "*/*.model"]
_HUB_IGNORE = ["*.fp16.*", "*non_ema*", "*.bin", "*.ckpt", "*.msgpack", "*.onnx*", "*.h5",
               # components no prior reads: SD 1.5's safety checker, SDXL's extra autoencoder copies
               "safety_checker/*", "feature_extractor/*", "vae_1_0/*", "vae_decoder/*", "vae_encoder/*"]


SHIPPED_PREFIX = "dwgf:"


def shipped_priors() -> list[str]:
    """Names of the priors that ship inside the package (``dwgf:<name>``)."""
    from importlib.resources import files

    assets = files("dwgf") / "assets"
    if not assets.is_dir():
        return []
    return sorted(p.name for p in assets.iterdir() if p.is_dir() and (p / "model_index.json").is_file())


def resolve_pretrained(pretrained: str | os.PathLike, owner: str = "DiffusersLatentPrior", argument: str = "pretrained",
                       expected: str = "a diffusers folder (with model_index.json or vae/, unet/, scheduler/ subfolders)") -> Path:
    """A local folder for ``pretrained``: a shipped prior, the folder itself, or a hub id's snapshot.

    ``dwgf:<name>`` names a prior that ships with the package (``dwgf:mnist-ldm``).

    Hub ids are fetched with ``huggingface_hub`` (safetensors and configs only); with
    ``HF_HUB_OFFLINE=1`` or no network, only an already-cached snapshot works. Every failure is a
    one-line :class:`~dwgf.errors.DWGFError` about ``owner``'s ``pretrained`` argument.
    """
    text = str(pretrained)
    if text.startswith(SHIPPED_PREFIX):
        from importlib.resources import files

        name = text[len(SHIPPED_PREFIX) :]
        shipped = shipped_priors()
        if name not in shipped:
            listed = ", ".join(SHIPPED_PREFIX + n for n in shipped) or "none"
            raise _pretrained_error(owner, text, f": no such shipped prior (shipped: {listed})", argument)
        return Path(str(files("dwgf") / "assets" / name))
    path = Path(text).expanduser()
    if path.exists():
        if not path.is_dir():
            raise _pretrained_error(owner, text, f" is a file; expected {expected}", argument)
        return path
    if re.fullmatch(r"[A-Za-z0-9][\w.-]*/[\w.-]+", text) is None:  # hub ids are "org/name"
        raise _pretrained_error(owner, text, ": no such folder (and it is not a hub id of the form 'org/name')", argument)
    from huggingface_hub import snapshot_download

    try:
        local = snapshot_download(text, allow_patterns=_HUB_PATTERNS, ignore_patterns=_HUB_IGNORE)
    except Exception as err:  # noqa: BLE001 - every hub failure becomes one line
        offline = os.environ.get("HF_HUB_OFFLINE", "0").lower() in {"1", "true", "yes", "on"}
        why = "HF_HUB_OFFLINE is set and it is not in the local cache" if offline else "the Hugging Face Hub is unreachable or refused it"
        if offline:
            raise _pretrained_error(owner, text, f": not a local folder, and it could not be loaded as a hub id ({why}); download it where "
                f"the hub is reachable and pass the local folder", argument) from None
        reason = str(err).strip().splitlines()[0][:160] if str(err).strip() else type(err).__name__
        raise _pretrained_error(owner, text, f": not a local folder, and it could not be loaded as a hub id ({why}: {reason}); download it "
            f"where the hub is reachable and pass the local folder", argument) from None
    return Path(local)


def _read_config(path: Path, pretrained: str, owner: str, argument: str = "pretrained") -> dict[str, Any]:
    """A component's JSON config; a broken one is a one-line error naming the file and line."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise _pretrained_error(owner, pretrained, f": {path.parent.name}/{path.name} is not valid JSON (line {err.lineno}, column "
            f"{err.colno}: {err.msg})", argument) from None
    except (OSError, UnicodeDecodeError) as err:
        reason = getattr(err, "strerror", None) or err
        raise _pretrained_error(owner, pretrained, f": cannot read {path.parent.name}/{path.name} ({reason})", argument) from None
    if not isinstance(data, dict):
        raise _pretrained_error(owner, pretrained, f": {path.parent.name}/{path.name} must hold a JSON object", argument)
    return data


def _component_config(root: Path, names: tuple[str, ...], what: str, pretrained: str, owner: str) -> tuple[str, dict[str, Any]]:
    for name in names:
        cfg = root / name / "config.json"
        if cfg.is_file():
            return name, _read_config(cfg, pretrained, owner)
    wanted = " or ".join(f"{n}/config.json" for n in names)
    raise _pretrained_error(owner, pretrained, f": the folder lacks the {what} component (expected {wanted})")


TORCH_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
TorchDtype = Literal["float32", "bfloat16", "float16"]


def _load(cls: Any, root: Path, subfolder: str, pretrained: str, owner: str, torch_dtype: Optional[torch.dtype] = None) -> Any:
    try:
        model = cls.from_pretrained(root, subfolder=subfolder, use_safetensors=True, low_cpu_mem_usage=False, torch_dtype=torch_dtype)
    except Exception as err:  # noqa: BLE001 - a broken component (bad config values, bad weights) is the folder's problem
        reason = str(err).strip().splitlines()[0][:200] if str(err).strip() else type(err).__name__
        raise _pretrained_error(owner, pretrained, f": could not load {subfolder}/ as {cls.__name__} from safetensors ({reason})") from None
    if torch_dtype is not None and any(p.dtype != torch_dtype for p in model.parameters()):
        from diffusers.utils import logging as diffusers_logging

        level = diffusers_logging.get_verbosity()
        diffusers_logging.set_verbosity_error()  # its advice (torch_dtype in from_pretrained) is what was done
        try:
            model.to(torch_dtype)  # diffusers 0.42 leaves some models (SD3's transformer) in float32 without accelerate
        finally:
            diffusers_logging.set_verbosity(level)
    return model


class DiffusersLatentPrior(LatentPrior):
    """Shared loading of a diffusers autoencoder (AutoencoderKL or VQModel) and noise schedule.

    Subclasses load the denoising network. See :class:`StableDiffusionPrior` and
    :class:`UnconditionalLatentPrior`.

    Args:
        pretrained: a local diffusers folder, a hub id (only if reachable or already cached), or
            ``dwgf:<name>`` for a prior that ships with dwgf.
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
            denoiser, the autoencoder and the flow decoder are loaded in it (half the memory of
            float32; FLUX.1-dev's 12 B parameters: 24 GB instead of 48). The networks then compute in
            it; their inputs are cast to it and their outputs returned in float32, so the flow's
            schedule, data term and optimiser stay float32. Text encoders run once, in float32.
    """

    flow_decoder: Optional[str] = None  # the folder (the module, when set, is the submodule ``flow_vae``)

    def _pretrained_error(self, detail: str) -> DWGFError:
        return _pretrained_error(type(self).__name__, self.pretrained, detail)

    def __init__(self, pretrained: str, channels_last: bool = True, flow_decoder: Optional[str] = None, torch_dtype: TorchDtype = "float32"):
        super().__init__()
        if torch_dtype not in TORCH_DTYPES:
            raise argument_error(type(self).__name__, "torch_dtype", f" must be one of {', '.join(TORCH_DTYPES)}, got {torch_dtype!r}")
        self.torch_dtype = str(torch_dtype)
        self.pretrained = str(pretrained)
        self.channels_last = bool(channels_last)
        root = resolve_pretrained(pretrained, type(self).__name__)
        self._root = root
        self._load_autoencoder(root)
        self._load_schedule(root)
        self._load_denoiser(root)
        self._finish()
        self.flow_decoder = None if flow_decoder is None else str(flow_decoder)
        if flow_decoder is not None:
            self.set_flow_decoder(self._load_flow_decoder(str(flow_decoder)))

    def _finish(self) -> None:
        self._set_shapes()
        if self.channels_last:
            self.vae.to(memory_format=torch.channels_last)
        self.freeze()

    # -- the flow decoder -------------------------------------------------------------------------
    def _load_flow_decoder(self, flow_decoder: str) -> torch.nn.Module:
        from diffusers import AutoencoderTiny

        owner = type(self).__name__
        root = resolve_pretrained(flow_decoder, owner, "flow_decoder", "an AutoencoderTiny folder (config.json or vae/config.json)")
        sub = "" if (root / "config.json").is_file() else "vae" if (root / "vae" / "config.json").is_file() else None
        if sub is None:
            raise argument_error(owner, "flow_decoder", f" {flow_decoder!r}: the folder has neither config.json nor vae/config.json "
                                 "(expected an AutoencoderTiny folder such as madebyollin/taesd)")
        cfg = _read_config(root / sub / "config.json", flow_decoder, owner, "flow_decoder")
        if cfg.get("_class_name") != "AutoencoderTiny":
            raise argument_error(owner, "flow_decoder", f" {flow_decoder!r}: {sub + '/' if sub else ''}config.json describes a "
                                 f"{cfg.get('_class_name') or 'model of no class'}; expected an AutoencoderTiny (TAESD)")
        try:
            return AutoencoderTiny.from_pretrained(root, subfolder=sub or None, use_safetensors=True, low_cpu_mem_usage=False,
                                                   torch_dtype=self.weights_dtype)
        except Exception as err:  # noqa: BLE001 - a broken folder is one line
            reason = str(err).strip().splitlines()[0][:200] if str(err).strip() else type(err).__name__
            raise argument_error(owner, "flow_decoder", f" {flow_decoder!r}: could not load it as AutoencoderTiny from safetensors "
                                 f"({reason})") from None

    def set_flow_decoder(self, vae: Optional[torch.nn.Module]) -> None:
        """Uses ``vae`` (an ``AutoencoderTiny``, in memory) as the flow decoder; ``None`` removes it.

        Its latents must be this prior's: the same number of channels, decoding to images with the
        prior's channels at the same factor. It is frozen like the prior's other networks.
        """
        if vae is None:
            self._modules.pop("flow_vae", None)
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
        self.flow_vae = vae
        self.flow_vae_scaling = float(getattr(cfg, "scaling_factor", None) or 1.0)
        self.flow_vae_shift = float(getattr(cfg, "shift_factor", None) or 0.0)
        if self.channels_last:
            vae.to(memory_format=torch.channels_last)
        vae.eval().requires_grad_(False)

    def flow_decode(self, z: torch.Tensor) -> torch.Tensor:
        tiny = self._modules.get("flow_vae")
        if tiny is None:
            return self.decode(z)
        with self._autoencoder_precision(z.device):
            latent = z.to(next(tiny.parameters()).dtype) / self.flow_vae_scaling
            if self.flow_vae_shift:
                latent = latent + self.flow_vae_shift
            return tiny.decode(latent).sample.to(z.dtype)

    @classmethod
    def from_modules(cls, vae: Any, unet: Any, alphas_cumprod: torch.Tensor, *, prediction_type: str = "epsilon",
                     channels_last: bool = True, **buffers: torch.Tensor) -> "DiffusersLatentPrior":
        """The prior made of networks already in memory, with no folder: the same maths as a loaded one.

        ``vae`` is an AutoencoderKL or VQModel, ``unet`` the denoiser the class expects, ``alphas_cumprod``
        the training noise schedule; ``buffers`` are the class's other tensors (``prompt_embeds``
        for :class:`StableDiffusionPrior`). Benchmarks use it for networks with random weights in a
        published layout, too large to write to disk.
        """
        self = cls.__new__(cls)
        LatentPrior.__init__(self)
        self.pretrained, self.channels_last, self._root = "(in memory)", bool(channels_last), None
        self.vae, self.unet = vae, unet
        self.is_vq = type(vae).__name__ == "VQModel"
        self.scaling_factor = float(getattr(vae.config, "scaling_factor", None) or 1.0)
        self.shift_factor = float(getattr(vae.config, "shift_factor", None) or 0.0)
        self._register_schedule(alphas_cumprod)
        self.prediction_type = prediction_type
        for name, value in buffers.items():
            self.register_buffer(name, value, persistent=False)
        self._finish()
        return self

    # -- loading -------------------------------------------------------------------------------
    def _load_autoencoder(self, root: Path) -> None:
        from diffusers import AutoencoderKL, VQModel

        sub, cfg = _component_config(root, ("vae", "vqvae"), "autoencoder", self.pretrained, type(self).__name__)
        cls_name = cfg.get("_class_name", "AutoencoderKL")
        classes = {"AutoencoderKL": AutoencoderKL, "VQModel": VQModel}
        if cls_name not in classes:
            raise self._pretrained_error(f": {sub}/ is a {cls_name}; expected AutoencoderKL or VQModel")
        self.vae = _load(classes[cls_name], root, sub, self.pretrained, type(self).__name__, self.weights_dtype)
        self.is_vq = cls_name == "VQModel"
        self.scaling_factor = float(getattr(self.vae.config, "scaling_factor", None) or 1.0)
        # SD3 and FLUX autoencoders also shift: scaled latent = (latent - shift_factor) * scaling_factor
        self.shift_factor = float(getattr(self.vae.config, "shift_factor", None) or 0.0)

    def _load_schedule(self, root: Path) -> None:
        from diffusers import DDPMScheduler

        cfg_path = root / "scheduler" / "scheduler_config.json"
        if not cfg_path.is_file():
            raise self._pretrained_error(": the folder lacks the scheduler component (expected scheduler/scheduler_config.json)")
        cfg = _read_config(cfg_path, self.pretrained, type(self).__name__)
        keys = ("num_train_timesteps", "beta_start", "beta_end", "beta_schedule", "trained_betas", "rescale_betas_zero_snr")
        try:
            sched = DDPMScheduler(**{k: cfg[k] for k in keys if k in cfg})
        except Exception as err:  # noqa: BLE001 - diffusers raises NotImplementedError, ValueError, TypeError for bad values
            values = ", ".join(f"{k} {cfg[k]!r}" for k in keys if k in cfg and k != "trained_betas")
            reason = str(err).strip().splitlines()[0][:160] if str(err).strip() else type(err).__name__
            raise self._pretrained_error(f": scheduler/scheduler_config.json does not describe a noise schedule "
                            f"dwgf can build ({values}: {reason})") from None
        self._register_schedule(sched.alphas_cumprod)
        self.prediction_type = cfg.get("prediction_type", "epsilon")
        if self.prediction_type not in ("epsilon", "v_prediction"):
            raise self._pretrained_error(f": prediction_type {self.prediction_type!r} is not supported (epsilon or v_prediction)")

    def _load_denoiser(self, root: Path) -> None:
        raise NotImplementedError

    def _set_shapes(self) -> None:
        size = self.unet.config.sample_size
        size = int(size[0] if isinstance(size, (list, tuple)) else size)
        factor = 2 ** (len(self.vae.config.block_out_channels) - 1)
        self.image_size = size * factor
        self.image_channels = int(self.vae.config.in_channels)
        self.latent_shape = (int(self.unet.config.in_channels), size, size)
        self.latent_factor = factor
        halvings = max(0, len(getattr(self.unet.config, "down_block_types", ())) - 1)  # the last block keeps its size
        self.size_multiple = factor * 2**halvings

    @property
    def autoencoder_dtype(self) -> torch.dtype:
        return next(self.vae.parameters()).dtype

    @property
    def weights_dtype(self) -> torch.dtype:
        """The dtype the networks are loaded in (``torch_dtype``)."""
        return TORCH_DTYPES[getattr(self, "torch_dtype", "float32")]

    @property
    def denoiser_dtype(self) -> torch.dtype:
        network = self._modules.get("unet") or self._modules.get("transformer")
        return next(network.parameters()).dtype if network is not None else torch.float32

    # -- maths -----------------------------------------------------------------------------------
    def _encode(self, x: torch.Tensor, noise: Optional[torch.Tensor]) -> torch.Tensor:
        if self.is_vq:
            return self.vae.encode(x).latents * self.scaling_factor
        dist = self.vae.encode(x).latent_dist
        z = dist.mean if noise is None else dist.mean + dist.std * noise
        if self.shift_factor:
            z = z - self.shift_factor
        return z * self.scaling_factor

    def _decode(self, z: torch.Tensor) -> torch.Tensor:
        latent = z / self.scaling_factor
        if self.shift_factor:
            latent = latent + self.shift_factor
        return self.vae.decode(latent).sample

    def extra_repr(self) -> str:
        text = (f"pretrained={self.pretrained!r}, image={self.image_channels}x{self.image_size}x{self.image_size}, latent={self.latent_shape}, "
                f"sizes=multiples of {self.size_multiple} px")
        return text + (f", torch_dtype={self.torch_dtype}" if getattr(self, "torch_dtype", "float32") != "float32" else "")


class UnconditionalLatentPrior(DiffusersLatentPrior):
    """An unconditional latent diffusion model: AutoencoderKL or VQModel + UNet2DModel.

    Reads a diffusers folder with ``vae/`` or ``vqvae/``, ``unet/`` (UNet2DModel) and ``scheduler/``,
    the layout of e.g. ``CompVis/ldm-celebahq-256`` and of the prior that ships with dwgf.

    Args:
        pretrained: a local diffusers folder, a hub id (only if reachable or already cached), or
            ``dwgf:<name>`` for a prior that ships with dwgf (``dwgf:mnist-ldm``).
        channels_last: see :class:`DiffusersLatentPrior`.
        flow_decoder: see :class:`DiffusersLatentPrior`.
        torch_dtype: see :class:`DiffusersLatentPrior`.
    """

    def _load_denoiser(self, root: Path) -> None:
        from diffusers import UNet2DModel

        _, cfg = _component_config(root, ("unet",), "unet", self.pretrained, type(self).__name__)
        if cfg.get("_class_name") not in (None, "UNet2DModel"):
            raise self._pretrained_error(f": unet/ is a {cfg.get('_class_name')}; UnconditionalLatentPrior needs a "
                f"UNet2DModel (use StableDiffusionPrior, or load_prior to pick the class)")
        self.unet = _load(UNet2DModel, root, "unet", self.pretrained, type(self).__name__, self.weights_dtype)

    def _eps(self, z_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.unet(z_t, t).sample
