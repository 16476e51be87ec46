"""``load_prior``: the prior family for a diffusers folder, picked by the diffusers class names it holds."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import dwgf.priors.flow_matching  # noqa: F401 - the built-in families register their pipelines
import dwgf.priors.stable_diffusion  # noqa: F401
from dwgf.priors.diffusers_priors import FAMILIES, DiffusersLatentPrior
from dwgf.priors.folders import _component_config, _pretrained_error, _read_config, resolve_pretrained

# a folder without model_index.json is recognised by its denoiser's class (and SDXL's UNet by its text_time embeddings)
_DENOISERS = {"SD3Transformer2DModel": "StableDiffusion3Pipeline", "FluxTransformer2DModel": "FluxPipeline",
              "UNet2DConditionModel": "StableDiffusionPipeline", "UNet2DModel": "LDMPipeline"}


def prior_class_of(root: Path, pretrained: str = "") -> str:
    """The name of the prior class for a diffusers folder (``"StableDiffusion3Prior"``, ``"FluxPrior"``,
    ``"StableDiffusionXLPrior"``, ``"StableDiffusionPrior"``, ``"UnconditionalLatentPrior"``, or a family of
    your own that names its pipeline in ``pipelines``): the pipeline class of ``model_index.json`` when a
    family registers it, else the denoiser's class (``unet/`` or ``transformer/``)."""
    where = pretrained or str(root)
    index = root / "model_index.json"
    pipeline = str(_read_config(index, where, "load_prior").get("_class_name", "")) if index.is_file() else ""
    if pipeline in FAMILIES:
        return FAMILIES[pipeline].__name__
    if (root / "transformer" / "config.json").is_file() and not (root / "unet").is_dir():
        _, cfg = _component_config(root, ("transformer",), "transformer", where, "load_prior")
        name = str(cfg.get("_class_name", ""))
        if name not in _DENOISERS:
            raise _pretrained_error("load_prior", where, f": transformer/ is a {name or 'model of no class'}; dwgf loads "
                                    "SD3Transformer2DModel and FluxTransformer2DModel (Stable Diffusion 3 / 3.5, FLUX.1)")
        return FAMILIES[_DENOISERS[name]].__name__
    _, cfg = _component_config(root, ("unet",), "unet", where, "load_prior")
    if "XL" in pipeline or cfg.get("addition_embed_type") == "text_time" or (root / "text_encoder_2").is_dir():
        return FAMILIES["StableDiffusionXLPipeline"].__name__
    return FAMILIES[_DENOISERS.get(str(cfg.get("_class_name")), "LDMPipeline")].__name__


def load_prior(pretrained: str, **kwargs: Any) -> DiffusersLatentPrior:
    """Loads a prior, choosing the family from the folder (:func:`prior_class_of`): SD 3 / 3.5 or FLUX.1 (a
    ``transformer/`` of that class), SDXL (a ``text_encoder_2/`` or a UNet with ``text_time``
    embeddings), SD 1.x/2.x (a conditional UNet) or an unconditional latent diffusion model.
    ``kwargs`` go to the class (``prompt``, ``guidance_scale``, ...).

    Example:
        >>> prior = load_prior("path/to/folder")  # doctest: +SKIP
    """
    root = resolve_pretrained(pretrained, "load_prior")
    name = prior_class_of(root, str(pretrained))
    cls = next(c for c in FAMILIES.values() if c.__name__ == name)
    return cls(str(root), **kwargs)
