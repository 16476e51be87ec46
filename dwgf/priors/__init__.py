"""Latent diffusion priors: :class:`LatentPrior` and its diffusers-backed implementations."""

from dwgf.priors.base import LatentPrior
from dwgf.priors.diffusers_priors import (
    DiffusersLatentPrior,
    UnconditionalLatentPrior,
    resolve_pretrained,
    shipped_priors,
)
from dwgf.priors.stable_diffusion import StableDiffusionPrior, StableDiffusionXLPrior
from dwgf.priors.flow_matching import FlowMatchingPrior, FlowMatchingSchedule, FluxPrior, StableDiffusion3Prior
from dwgf.priors.loading import load_prior, prior_class_of
from dwgf.priors.gaussian_mixture import GaussianMixture, GaussianMixturePrior, ddpm_schedule, grid_mixture

__all__ = [
    "LatentPrior",
    "DiffusersLatentPrior",
    "StableDiffusionPrior",
    "StableDiffusionXLPrior",
    "StableDiffusion3Prior",
    "FluxPrior",
    "FlowMatchingPrior",
    "FlowMatchingSchedule",
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
