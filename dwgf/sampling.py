"""DDIM in plain torch: the update, one loop (unconditional or guided), unconditional sampling."""

from __future__ import annotations

import contextlib
from typing import Callable, Optional, Sequence

import torch

from dwgf.precision import unet_precision
from dwgf.priors.base import LatentPrior


@torch.no_grad()
def ddim_timesteps(num_steps: int, num_train_timesteps: int) -> torch.Tensor:
    """Descending DDIM timesteps, ``T/K`` apart, ending at 0 (``leading`` spacing)."""
    step = num_train_timesteps // num_steps
    # on the CPU: integer times, moved by the caller
    return (torch.arange(num_steps) * step).flip(0)


def ddim_step(z0: torch.Tensor, eps: torch.Tensor, abar: torch.Tensor, abar_prev: torch.Tensor, eta: float, noise=None) -> torch.Tensor:
    """One DDIM update to ``t'``: ``sqrt(abar') z0 + sqrt(1 - abar' - s^2) eps + s e``.

    ``s = eta sqrt((1-abar')/(1-abar) (1 - abar/abar'))``; ``noise()`` supplies ``e`` when ``eta > 0``.
    """
    # a step from abar = 1 (a rectified-flow prior's t = 0, the clean data) adds no noise
    s = eta * torch.where(abar < 1, (1 - abar_prev) / (1 - abar) * (1 - abar / abar_prev), 0.0).sqrt()
    z = abar_prev.sqrt() * z0 + (1 - abar_prev - s**2).clamp_min(0).sqrt() * eps
    if eta > 0:
        z = z + s * noise()
    return z


def ddim_loop(
    prior: LatentPrior, z: torch.Tensor, num_steps: int, eta: float, noise: Callable[[], torch.Tensor], *,
    guidance: Optional[Callable[[torch.Tensor], torch.Tensor]] = None, unet_dtype: Optional[torch.dtype] = None,
    callback: Optional[Callable[[int, int, torch.Tensor, torch.Tensor], None]] = None,
    prompt: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """DDIM from ``z`` (at the first DDIM timestep) down to ``t = 0``; returns the final latents.

    Each step: ``eps_hat = eps_theta(z_t, t)``, ``z0_hat = (z_t - sqrt(1 - abar) eps_hat) / sqrt(abar)``
    (:meth:`~dwgf.priors.LatentPrior.predict`), then :func:`ddim_step` to the next timestep. For a
    rectified-flow prior (in the flow's coordinates, see :class:`~dwgf.priors.LatentPrior`) the
    deterministic step is exactly the Euler step ``z_s' = z_s + (s' - s) v`` of diffusers'
    ``FlowMatchEulerDiscreteScheduler``. With ``guidance``, a per-sample loss of ``z0_hat``, the
    step also goes down its gradient with respect to ``z_t`` (Latent DPS and PSLD); the network is then
    differentiated, otherwise it runs without gradient.

    Args:
        prior: the latent prior. z: ``M x c x h x w`` starting latents (``N(0, I)``).
        num_steps: DDIM steps. eta: DDIM's stochasticity (0: deterministic).
        noise: draws a tensor shaped like ``z`` (per-item generators keep items independent of their batch).
        guidance: ``loss(z0_hat) -> (M,)``, or ``None``.
        unet_dtype: the network call's autocast dtype (:mod:`dwgf.precision`).
        callback: ``callback(i, num_steps, t, z)`` after each step, ``t`` the step's ``(M,)`` timesteps.
        prompt: each row's prompt (:meth:`~dwgf.priors.LatentPrior.prompt_ids`); ``None``: the prior's own.
    """
    ts = ddim_timesteps(num_steps, prior.num_train_timesteps).to(z.device)
    m = z.shape[0]
    for i, t in enumerate(ts):
        tt = t.repeat(m)
        abar = prior.abar(tt, z).view(-1, 1, 1, 1)
        abar_prev = prior.abar(ts[i + 1].repeat(m), z).view(-1, 1, 1, 1) if i + 1 < len(ts) else torch.ones_like(abar)
        z_in = z.detach().requires_grad_(guidance is not None)
        with contextlib.ExitStack() as stack:
            if guidance is None:
                stack.enter_context(torch.no_grad())
            with unet_precision(z.device.type, unet_dtype):
                eps, z0 = prior.predict(z_in, tt, prompt)
            z_next = ddim_step(z0.detach(), eps.detach(), abar, abar_prev, eta, noise)
            if guidance is not None:
                (grad,) = torch.autograd.grad(guidance(z0).sum(), z_in)
                z_next = z_next - grad
        z = z_next.detach()
        if callback is not None:
            callback(i, len(ts), tt, z)
    return z


@torch.no_grad()
def ddim_sample(
    prior: LatentPrior, num_samples: int, num_steps: int = 50, eta: float = 0.0, generator: Optional[torch.Generator] = None,
    device: torch.device | str = "cpu", *, latents: Optional[torch.Tensor] = None, size: Optional[Sequence[int]] = None,
    prompts: Optional[Sequence[Optional[str]]] = None, output: str = "image",
) -> torch.Tensor:
    """``num_samples`` images ``B x C x H x W`` by DDIM (Song et al. 2021) from ``z_T ~ N(0, I)`` (:func:`ddim_loop`).

    The timesteps are ``leading`` ones ending at 0 (:func:`ddim_timesteps`) and the last step goes to
    ``abar = 1``: diffusers' ``DDIMScheduler`` with ``timestep_spacing="leading"``, ``steps_offset=0``
    and ``set_alpha_to_one=True`` takes the same steps. A text-conditioned prior uses its prompt,
    negative prompt and guidance scale (classifier-free guidance at every step).

    Args:
        latents: the starting latents ``z_T`` (``B x c x h x w``) instead of a draw.
        size: ``(H, W)`` of the images (:meth:`~dwgf.priors.LatentPrior.latent_shape_at`); default the
            prior's native size.
        prompts: one prompt per sample (``None`` entries: the prior's own prompt).
        output: ``"image"`` (decoded) or ``"latent"`` (the final scaled latents, as a diffusers
            pipeline's ``output_type="latent"``).
    """
    if output not in ("image", "latent"):
        raise ValueError(f"output must be 'image' or 'latent', got {output!r}")
    shape = (num_samples, *prior.latent_shape_at(size))
    if latents is not None:
        if tuple(latents.shape) != shape:
            raise ValueError(f"latents have shape {tuple(latents.shape)}, expected {shape}")
        z = latents.to(device=device, dtype=torch.float32)
    else:
        z = torch.randn(shape, generator=generator, device=device)
    prompt = None
    if prompts is not None:
        if len(prompts) != num_samples:
            raise ValueError(f"{len(prompts)} prompts for {num_samples} samples")
        prompt = prior.prompt_ids(list(prompts))
        prompt = None if prompt is None else prompt.to(z.device)
    z = ddim_loop(prior, z, num_steps, eta, lambda: torch.randn(shape, generator=generator, device=device), prompt=prompt)
    return z if output == "latent" else prior.decode(z)
