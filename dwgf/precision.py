"""Mixed precision as dwgf's solvers use it: only the network call in the low precision.

Under Lightning's ``bf16-mixed`` / ``16-mixed`` the whole predict step runs under autocast. The
solvers switch autocast off (the autoencoder, the noise schedule, the data term and the optimizer
stay in float32) and switch it back on around the UNet call alone.
"""

from __future__ import annotations

import contextlib
from typing import Iterator, Optional

import torch


def unet_precision(device_type: str, dtype: Optional[torch.dtype]):
    """Autocast to ``dtype`` around the network call (mixed precision), or nothing when ``None``."""
    return torch.autocast(device_type, dtype=dtype) if dtype is not None else contextlib.nullcontext()


@contextlib.contextmanager
def float32_but_the_unet(device_type: str) -> Iterator[Optional[torch.dtype]]:
    """Runs the block in float32 with gradients on, yielding the dtype for :func:`unet_precision`
    (the autocast dtype in force on entry, or ``None``). Lightning's predict loop runs under no_grad."""
    unet_dtype = torch.get_autocast_dtype(device_type) if torch.is_autocast_enabled(device_type) else None
    with torch.enable_grad(), torch.autocast(device_type, enabled=False):
        yield unet_dtype


def autoencoder_dtype(unet_dtype: Optional[torch.dtype], prior, float32_autoencoder: bool = False) -> Optional[torch.dtype]:
    """The dtype the flow's autoencoder work runs in under mixed precision, or ``None`` for float32.

    Under ``bf16-mixed`` / ``16-mixed`` (``unet_dtype`` set) the decoder's forward and its
    vector-Jacobian product are most of an iteration's time and memory, so they follow the network
    into the low precision, unless ``float32_autoencoder`` (``--model.float32_autoencoder``) or the
    autoencoder cannot take it (:meth:`~dwgf.priors.LatentPrior.autoencoder_takes`: SDXL's VAE in
    float16). The latent gradient, the data term, the schedule and the optimiser stay in float32.
    """
    if unet_dtype is None or float32_autoencoder or not prior.autoencoder_takes(unet_dtype):
        return None
    return unet_dtype
