"""``load_prior``: the prior class for a diffusers folder, picked from the folder itself."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dwgf.priors.diffusers_priors import (
    DiffusersLatentPrior, UnconditionalLatentPrior, _component_config, _pretrained_error, _read_config, resolve_pretrained,
)
from dwgf.priors.flow_matching import FluxPrior, StableDiffusion3Prior
from dwgf.priors.stable_diffusion import StableDiffusionPrior, StableDiffusionXLPrior

_TRANSFORMERS = {"SD3Transformer2DModel": "StableDiffusion3Prior", "FluxTransformer2DModel": "FluxPrior"}


def prior_class_of(root: Path, pretrained: str = "") -> str:
    """The prior class for a diffusers folder: ``"StableDiffusion3Prior"`` or ``"FluxPrior"`` (a
    ``transformer/`` of that kind), ``"StableDiffusionXLPrior"``, ``"StableDiffusionPrior"`` or
    ``"UnconditionalLatentPrior"``, from ``model_index.json`` and ``unet/config.json``."""
    index = root / "model_index.json"
    pipeline = _read_config(index, pretrained or str(root), "load_prior").get("_class_name", "") if index.is_file() else ""
    if (root / "transformer" / "config.json").is_file() and not (root / "unet").is_dir():
        _, cfg = _component_config(root, ("transformer",), "transformer", pretrained or str(root), "load_prior")
        name = str(cfg.get("_class_name", ""))
        if name not in _TRANSFORMERS:
            raise _pretrained_error("load_prior", pretrained or str(root), f": transformer/ is a {name or 'model of no class'}; dwgf loads "
                                    f"{' and '.join(_TRANSFORMERS)} (Stable Diffusion 3 / 3.5, FLUX.1)")
        return _TRANSFORMERS[name]
    _, cfg = _component_config(root, ("unet",), "unet", pretrained or str(root), "load_prior")
    if "XL" in str(pipeline) or cfg.get("addition_embed_type") == "text_time" or (root / "text_encoder_2").is_dir():
        return "StableDiffusionXLPrior"
    if cfg.get("_class_name") == "UNet2DConditionModel":
        return "StableDiffusionPrior"
    return "UnconditionalLatentPrior"


def load_prior(pretrained: str, **kwargs: Any) -> DiffusersLatentPrior:
    """Loads a prior, choosing the class from the folder (:func:`prior_class_of`): SD 3 / 3.5 or
    FLUX.1 (a ``transformer/`` of that class), SDXL (a ``text_encoder_2/`` or a UNet with
    ``text_time`` embeddings), SD 1.x/2.x (a conditional UNet) or an unconditional latent
    diffusion model. ``kwargs`` go to the class (``prompt``,
    ``guidance_scale``, ...).

    Example:
        >>> prior = load_prior("path/to/folder")  # doctest: +SKIP
    """
    root = resolve_pretrained(pretrained, "load_prior")
    name = prior_class_of(root, str(pretrained))
    classes = {"StableDiffusionXLPrior": StableDiffusionXLPrior, "StableDiffusionPrior": StableDiffusionPrior,
               "StableDiffusion3Prior": StableDiffusion3Prior, "FluxPrior": FluxPrior}
    cls = classes.get(name, UnconditionalLatentPrior)
    return cls(str(root), **kwargs)
