"""Latent diffusion priors: :class:`LatentPrior`, and :class:`DiffusersLatentPrior` composed of an autoencoder,
a denoiser with its adapter, a noise schedule and a conditioner; the families (SD, SDXL, SD3, FLUX,
unconditional) are recipes that read a diffusers folder into those parts."""

from dwgf.priors.base import LatentPrior
from dwgf.priors.components import (
    Autoencoder,
    DDPMSchedule,
    DenoiserAdapter,
    EpsilonAdapter,
    FlowMatchingSchedule,
    RectifiedFlowAdapter,
    VPredictionAdapter,
)
from dwgf.priors.conditioning import PromptConditioner, TextEncoding
from dwgf.priors.diffusers_priors import Denoiser, DiffusersLatentPrior, UnconditionalLatentPrior, ddpm_shapes, unet_call
from dwgf.priors.folders import Folder, resolve_pretrained, shipped_priors
from dwgf.priors.stable_diffusion import StableDiffusionPrior, StableDiffusionXLPrior
from dwgf.priors.flow_matching import FluxPrior, StableDiffusion3Prior
from dwgf.priors.loading import load_prior, prior_class_of
from dwgf.priors.gaussian_mixture import GaussianMixture, GaussianMixturePrior, ddpm_schedule, grid_mixture

__all__ = [
    "LatentPrior",
    "DiffusersLatentPrior",
    "StableDiffusionPrior",
    "StableDiffusionXLPrior",
    "StableDiffusion3Prior",
    "FluxPrior",
    "FlowMatchingSchedule",
    "Autoencoder",
    "Denoiser",
    "DDPMSchedule",
    "DenoiserAdapter",
    "EpsilonAdapter",
    "VPredictionAdapter",
    "RectifiedFlowAdapter",
    "PromptConditioner",
    "TextEncoding",
    "Folder",
    "ddpm_shapes",
    "unet_call",
    "UnconditionalLatentPrior",
    "load_prior",
    "prior_class_of",
    "resolve_pretrained",
    "shipped_priors",
    "GaussianMixture",
    "GaussianMixturePrior",
    "grid_mixture",
    "ddpm_schedule",
]
