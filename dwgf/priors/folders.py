"""Diffusers folders: where a prior's files are (a shipped prior, a folder, a hub id), their configs and
components, read with one-line errors; :class:`Folder` loads the parts of :mod:`dwgf.priors.components`."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any, Literal, Optional

import torch

from dwgf.errors import DWGFError, argument_error
from dwgf.priors.components import Autoencoder, DDPMSchedule, FlowMatchingSchedule


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


class Folder:
    """A prior's diffusers folder, read for the class ``owner`` (errors name its ``pretrained`` argument)
    with the weights in ``torch_dtype``."""

    def __init__(self, pretrained: str, owner: str, torch_dtype: str = "float32"):
        if torch_dtype not in TORCH_DTYPES:
            raise argument_error(owner, "torch_dtype", f" must be one of {', '.join(TORCH_DTYPES)}, got {torch_dtype!r}")
        self.pretrained, self.owner, self.dtype = str(pretrained), owner, TORCH_DTYPES[torch_dtype]
        self.root = resolve_pretrained(pretrained, owner)

    def error(self, detail: str) -> DWGFError:
        return _pretrained_error(self.owner, self.pretrained, detail)

    def config(self, names: tuple[str, ...], what: str) -> tuple[str, dict[str, Any]]:
        """``(subfolder, config)`` of the first of ``names`` the folder has."""
        return _component_config(self.root, names, what, self.pretrained, self.owner)

    def read(self, relative: str) -> dict[str, Any]:
        return _read_config(self.root / relative, self.pretrained, self.owner)

    def load(self, cls: Any, subfolder: str, dtype: Optional[torch.dtype] = "weights") -> Any:
        """A diffusers or transformers component, in the folder's dtype (``dtype=None``: its own)."""
        return _load(cls, self.root, subfolder, self.pretrained, self.owner, self.dtype if dtype == "weights" else dtype)

    def autoencoder(self) -> Autoencoder:
        """``vae/`` or ``vqvae/``: an AutoencoderKL or a VQModel."""
        from diffusers import AutoencoderKL, VQModel

        sub, cfg = self.config(("vae", "vqvae"), "autoencoder")
        cls_name = cfg.get("_class_name", "AutoencoderKL")
        classes = {"AutoencoderKL": AutoencoderKL, "VQModel": VQModel}
        if cls_name not in classes:
            raise self.error(f": {sub}/ is a {cls_name}; expected AutoencoderKL or VQModel")
        return Autoencoder(self.load(classes[cls_name], sub))

    def _scheduler_config(self) -> dict[str, Any]:
        if not (self.root / "scheduler" / "scheduler_config.json").is_file():
            raise self.error(": the folder lacks the scheduler component (expected scheduler/scheduler_config.json)")
        return self.read("scheduler/scheduler_config.json")

    def ddpm_schedule(self, predictions: tuple[str, ...] = ("epsilon", "v_prediction")) -> tuple[DDPMSchedule, str]:
        """The DDPM noise schedule of ``scheduler/`` and the network's ``prediction_type`` (one of ``predictions``)."""
        from diffusers import DDPMScheduler

        cfg = self._scheduler_config()
        keys = ("num_train_timesteps", "beta_start", "beta_end", "beta_schedule", "trained_betas", "rescale_betas_zero_snr")
        try:
            sched = DDPMScheduler(**{k: cfg[k] for k in keys if k in cfg})
        except Exception as err:  # noqa: BLE001 - diffusers raises NotImplementedError, ValueError, TypeError for bad values
            values = ", ".join(f"{k} {cfg[k]!r}" for k in keys if k in cfg and k != "trained_betas")
            reason = str(err).strip().splitlines()[0][:160] if str(err).strip() else type(err).__name__
            raise self.error(f": scheduler/scheduler_config.json does not describe a noise schedule dwgf can build ({values}: {reason})") from None
        prediction = cfg.get("prediction_type", "epsilon")
        if prediction not in predictions:
            raise self.error(f": prediction_type {prediction!r} is not supported ({' or '.join(predictions)})")
        return DDPMSchedule(sched.alphas_cumprod), prediction

    def flow_schedule(self) -> FlowMatchingSchedule:
        """The rectified-flow time map of ``scheduler/`` (a FlowMatchEulerDiscreteScheduler)."""
        cfg = self._scheduler_config()
        if cfg.get("_class_name") not in (None, "FlowMatchEulerDiscreteScheduler"):
            raise self.error(f": scheduler/ is a {cfg.get('_class_name')}; a rectified-flow prior needs FlowMatchEulerDiscreteScheduler's time map")
        try:
            return FlowMatchingSchedule.from_config(cfg)
        except (TypeError, ValueError) as err:
            raise self.error(f": scheduler/scheduler_config.json does not describe a flow-matching time map ({err})") from None

    def flow_decoder(self, flow_decoder: str) -> Any:
        """An ``AutoencoderTiny`` folder (``config.json`` or ``vae/config.json``) in this folder's dtype."""
        from diffusers import AutoencoderTiny

        owner = self.owner
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
                                                   torch_dtype=self.dtype)
        except Exception as err:  # noqa: BLE001 - a broken folder is one line
            reason = str(err).strip().splitlines()[0][:200] if str(err).strip() else type(err).__name__
            raise argument_error(owner, "flow_decoder", f" {flow_decoder!r}: could not load it as AutoencoderTiny from safetensors "
                                 f"({reason})") from None

    def model_index(self) -> dict[str, Any]:
        index = self.root / "model_index.json"
        return self.read("model_index.json") if index.is_file() else {}

    def json(self, relative: str) -> dict[str, Any]:
        """A JSON file of the folder read plainly ({} when absent)."""
        path = self.root / relative
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
