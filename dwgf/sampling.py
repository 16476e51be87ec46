"""Unconditional sampling from a latent prior (DDIM), in plain torch."""

from __future__ import annotations

from typing import Optional

import torch

from dwgf.priors.base import LatentPrior


@torch.no_grad()
def ddim_timesteps(num_steps: int, num_train_timesteps: int) -> torch.Tensor:
    """Descending DDIM timesteps, ``T/K`` apart, ending at 0 (``leading`` spacing)."""
    step = num_train_timesteps // num_steps
    return (torch.arange(num_steps) * step).flip(0)


def ddim_step(z0: torch.Tensor, eps: torch.Tensor, abar: torch.Tensor, abar_prev: torch.Tensor, eta: float, noise=None) -> torch.Tensor:
    """One DDIM update to ``t'``: ``sqrt(abar') z0 + sqrt(1 - abar' - s^2) eps + s e``.

    ``s = eta sqrt((1-abar')/(1-abar) (1 - abar/abar'))``; ``noise()`` supplies ``e`` when ``eta > 0``.
    """
    s = eta * ((1 - abar_prev) / (1 - abar) * (1 - abar / abar_prev)).sqrt()
    z = abar_prev.sqrt() * z0 + (1 - abar_prev - s**2).clamp_min(0).sqrt() * eps
    if eta > 0:
        z = z + s * noise()
    return z


@torch.no_grad()
def ddim_sample(
    prior: LatentPrior, num_samples: int, num_steps: int = 50, eta: float = 0.0, generator: Optional[torch.Generator] = None,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """``num_samples`` images ``B x C x H x W`` by DDIM (Song et al. 2021) from ``z_T ~ N(0, I)``.

    ``z_{t'} = sqrt(abar') z0_hat + sqrt(1 - abar' - s^2) eps_hat + s e``, with
    ``z0_hat = (z_t - sqrt(1 - abar) eps_hat) / sqrt(abar)`` and ``s = eta sqrt((1-abar')/(1-abar)
    (1 - abar/abar'))``; ``eta = 0`` is deterministic.
    """
    z = torch.randn(num_samples, *prior.latent_shape, generator=generator, device=device)
    ts = ddim_timesteps(num_steps, prior.num_train_timesteps).to(device)
    for i, t in enumerate(ts):
        tt = t.repeat(num_samples)
        abar = prior.abar(tt).view(-1, 1, 1, 1)
        abar_prev = prior.abar(ts[i + 1].repeat(num_samples)).view(-1, 1, 1, 1) if i + 1 < len(ts) else torch.ones_like(abar)
        eps = prior.eps(z, tt)
        z0 = (z - (1 - abar).sqrt() * eps) / abar.sqrt()
        z = ddim_step(z0, eps, abar, abar_prev, eta, lambda shape=z.shape: torch.randn(shape, generator=generator, device=device))
    return prior.decode(z)
