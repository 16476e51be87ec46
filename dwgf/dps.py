"""Latent DPS and PSLD as plain functions: guided DDIM sampling of the prior (no Lightning).

Latent DPS (Chung et al. 2023, in latent space): DDIM sampling of the prior where each step also goes
down the gradient, with respect to ``z_t``, of ``guidance * ||y - A(D(z0_hat(z_t)))||`` (the residual
norm of each sample). PSLD (Rout et al. 2023) adds ``gluing * ||z0_hat - E(P(D(z0_hat)))||``, with
``P`` the projection onto the measurement's solutions (``x + A^T (y - A x)``). Both back-propagate
through the network and the decoder at every step. :class:`dwgf.baselines.LatentDPS` and
:class:`dwgf.baselines.PSLD` are the thin LightningModules that run them in ``dwgf predict``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import torch

from dwgf.flow import ItemNoise
from dwgf.operators.base import ForwardOperator, Params, repeat_params
from dwgf.precision import float32_but_the_unet
from dwgf.priors.base import LatentPrior
from dwgf.sampling import ddim_loop


@dataclass
class SamplerState:
    """What a sampler's callback sees after step ``iteration`` of ``num_iterations``.

    Attributes:
        z: the latents after the step, ``B x N x c x h x w`` (detached).
        t: the step's timesteps, ``(B,)``.
    """

    z: torch.Tensor
    t: torch.Tensor
    iteration: int
    num_iterations: int


def dps_sample(
    prior: LatentPrior,
    operator: ForwardOperator,
    y: torch.Tensor,
    params: Params,
    draw: ItemNoise,
    *,
    num_particles: int,
    num_steps: int,
    guidance: float,
    eta: float = 1.0,
    gluing: float = 0.0,
    callback: Optional[Callable[[SamplerState], None]] = None,
    size: Optional[Sequence[int]] = None,
    prompt: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """Posterior samples ``B x N x C x H x W`` for measurements ``y`` by Latent DPS (``gluing = 0``) or PSLD.

    Args:
        prior: the latent prior.
        operator: the forward operator (PSLD needs a linear one).
        y: measurements ``B x ...``.
        params: the operator's per-item parameters.
        draw: per-item noise (:class:`~dwgf.flow.ItemNoise`): the initial latents and each step's noise.
        num_particles: ``N`` samples per measurement. num_steps: DDIM steps (one network call each).
        guidance: the data term's weight (``zeta``); 0 with ``gluing = 0`` is plain DDIM sampling.
        eta: DDIM's stochasticity (1: DDPM-like, the DPS default).
        gluing: PSLD's weight (``gamma``); 0 is Latent DPS.
        callback: called with a :class:`SamplerState` after every step.
        size: ``(H, W)`` of the images; ``None``: the prior's native size.
        prompt: ``(B,)`` prompt-table rows, one per item; ``None``: the prior's own prompt.
    """
    b, n = y.shape[0], num_particles
    with float32_but_the_unet(y.device.type) as unet_dtype:
        latent_shape = prior.latent_shape_at(size)
        z = draw((n, *latent_shape)).flatten(0, 1)
        prompt_n = None if prompt is None else prompt.to(y.device).repeat_interleave(n)
        y_n, params_n = y.repeat_interleave(n, dim=0), repeat_params(params, n)

        def loss(z0: torch.Tensor) -> torch.Tensor:
            x0 = prior.flow_decode(z0)
            value = guidance * operator.residual_norm(x0, y_n, params_n)
            if gluing > 0:
                glued = prior.encode(operator.project(x0, y_n, params_n))
                value = value + gluing * (z0 - glued).flatten(1).norm(dim=1)
            return value

        def report(i: int, num: int, t: torch.Tensor, z_now: torch.Tensor) -> None:
            if callback is not None:
                callback(SamplerState(z_now.view(b, n, *z_now.shape[1:]), t.view(b, n)[:, 0], i, num))

        guided = guidance > 0 or gluing > 0
        z = ddim_loop(prior, z, num_steps, eta, lambda: draw((n, *latent_shape)).flatten(0, 1),
                      guidance=loss if guided else None, unet_dtype=unet_dtype, callback=report, prompt=prompt_n)
        with torch.no_grad():
            x = prior.decode(z)
    return x.view(b, n, *x.shape[1:])
