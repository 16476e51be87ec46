"""The parts a latent diffusion prior is composed of (:class:`~dwgf.priors.DiffusersLatentPrior`).

- :class:`Autoencoder`: a diffusers AutoencoderKL or VQModel with its latent scaling (and shift), and
  an optional cheaper flow decoder (an ``AutoencoderTiny``);
- a noise schedule in the flow's time: :class:`DDPMSchedule` (a model's own ``abar_t``) or
  :class:`FlowMatchingSchedule` (a rectified-flow model's time map);
- a denoiser adapter that turns what the network predicts into the flow's ``eps_hat`` and
  ``z0_hat``: :class:`EpsilonAdapter`, :class:`VPredictionAdapter` or :class:`RectifiedFlowAdapter`.

The conditioner (prompt table and classifier-free guidance) is :mod:`dwgf.priors.conditioning`.
"""

from __future__ import annotations

import math
from typing import Any, Optional

import torch
from torch import nn


class Autoencoder(nn.Module):
    """A diffusers autoencoder as the prior sees it: scaled latents ``(latent - shift) * scaling``.

    Args:
        vae: an ``AutoencoderKL`` (its encoder is a Gaussian: :meth:`encode` samples it with the
            given noise) or a ``VQModel``.
        flow_vae: an ``AutoencoderTiny`` whose decoder the flow differentiates instead (``None``: the
            ``vae``'s own).
    """

    def __init__(self, vae: Any, flow_vae: Optional[Any] = None):
        super().__init__()
        self.vae = vae
        self.is_vq = type(vae).__name__ == "VQModel"
        self.scaling_factor = float(getattr(vae.config, "scaling_factor", None) or 1.0)
        # SD3 and FLUX autoencoders also shift: scaled latent = (latent - shift_factor) * scaling_factor
        self.shift_factor = float(getattr(vae.config, "shift_factor", None) or 0.0)
        self.set_flow_vae(flow_vae)

    def set_flow_vae(self, flow_vae: Optional[Any]) -> None:
        if flow_vae is None:
            self._modules.pop("flow_vae", None)
            return
        self.flow_vae = flow_vae
        self.flow_vae_scaling = float(getattr(flow_vae.config, "scaling_factor", None) or 1.0)
        self.flow_vae_shift = float(getattr(flow_vae.config, "shift_factor", None) or 0.0)

    @property
    def factor(self) -> int:
        """Image pixels per latent pixel along each side."""
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    @property
    def dtype(self) -> torch.dtype:
        return next(self.vae.parameters()).dtype

    def encode(self, x: torch.Tensor, noise: Optional[torch.Tensor]) -> torch.Tensor:
        if self.is_vq:
            return self.vae.encode(x).latents * self.scaling_factor
        dist = self.vae.encode(x).latent_dist
        z = dist.mean if noise is None else dist.mean + dist.std * noise
        if self.shift_factor:
            z = z - self.shift_factor
        return z * self.scaling_factor

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        latent = z / self.scaling_factor
        if self.shift_factor:
            latent = latent + self.shift_factor
        return self.vae.decode(latent).sample

    def flow_decode(self, z: torch.Tensor) -> Optional[torch.Tensor]:
        """The flow decoder's images, or ``None`` without one."""
        tiny = self._modules.get("flow_vae")
        if tiny is None:
            return None
        latent = z.to(next(tiny.parameters()).dtype) / self.flow_vae_scaling
        if self.flow_vae_shift:
            latent = latent + self.flow_vae_shift
        return tiny.decode(latent).sample


class DDPMSchedule:
    """A DDPM model's own noise schedule: ``abar_t`` for ``t = 0 .. T-1`` (float64)."""

    use_dynamic_shifting = False

    def __init__(self, alphas_cumprod: torch.Tensor):
        self.table = alphas_cumprod.detach().to(torch.float64)  # on the CPU: the prior keeps it as a buffer too

    @property
    def num_train_timesteps(self) -> int:
        return int(self.table.shape[0])

    def alphas_cumprod(self, image_seq_len: Optional[int] = None) -> torch.Tensor:
        return self.table

    def __repr__(self) -> str:
        return f"DDPMSchedule(T={self.num_train_timesteps})"


class FlowMatchingSchedule:
    """The time map of a rectified-flow model: flow time ``t`` (``0 .. T-1``) to the model's ``s``.

    The arguments are those of diffusers' ``FlowMatchEulerDiscreteScheduler`` that describe the
    model (its ``scheduler/scheduler_config.json``); options that only change how a pipeline
    spaces its inference steps (Karras, exponential or beta sigmas, ``shift_terminal``) do not
    change the model and are not read.

    Args:
        num_train_timesteps: ``T``. shift: the static shift (SD3: 3.0; FLUX.1-schnell: 1.0).
        use_dynamic_shifting: the resolution-dependent shift (FLUX.1-dev), with ``mu`` linear in the
            number of image tokens between ``(base_image_seq_len, base_shift)`` and
            ``(max_image_seq_len, max_shift)``.
        time_shift_type: ``"exponential"`` (``exp(mu) / (exp(mu) + 1/u - 1)``) or ``"linear"``
            (``mu / (mu + 1/u - 1)``).
    """

    def __init__(self, num_train_timesteps: int = 1000, shift: float = 1.0, use_dynamic_shifting: bool = False,
                 base_shift: float = 0.5, max_shift: float = 1.15, base_image_seq_len: int = 256, max_image_seq_len: int = 4096,
                 time_shift_type: str = "exponential"):
        if time_shift_type not in ("exponential", "linear"):
            raise ValueError(f"time_shift_type must be 'exponential' or 'linear', got {time_shift_type!r}")
        if not num_train_timesteps >= 2 or not shift > 0:
            raise ValueError(f"need num_train_timesteps >= 2 and shift > 0, got {num_train_timesteps} and {shift}")
        self.num_train_timesteps = int(num_train_timesteps)
        self.shift, self.use_dynamic_shifting = float(shift), bool(use_dynamic_shifting)
        self.base_shift, self.max_shift = float(base_shift), float(max_shift)
        self.base_image_seq_len, self.max_image_seq_len = int(base_image_seq_len), int(max_image_seq_len)
        self.time_shift_type = time_shift_type
        self._cache: dict[Optional[int], torch.Tensor] = {}

    KEYS = ("num_train_timesteps", "shift", "use_dynamic_shifting", "base_shift", "max_shift", "base_image_seq_len",
            "max_image_seq_len", "time_shift_type")

    @classmethod
    def from_config(cls, cfg: dict[str, Any]) -> "FlowMatchingSchedule":
        """From a ``FlowMatchEulerDiscreteScheduler`` config dict (missing keys: the scheduler's defaults)."""
        return cls(**{k: cfg[k] for k in cls.KEYS if cfg.get(k) is not None})

    def mu(self, image_seq_len: int) -> float:
        """``mu`` of the dynamic shift for ``image_seq_len`` image tokens (diffusers' ``calculate_shift``)."""
        m = (self.max_shift - self.base_shift) / (self.max_image_seq_len - self.base_image_seq_len)
        return image_seq_len * m + (self.base_shift - m * self.base_image_seq_len)

    def sigmas(self, image_seq_len: Optional[int] = None) -> torch.Tensor:
        """The model's ``s`` for ``t = 0 .. T-1`` (float64; ``image_seq_len`` only read with dynamic shifting)."""
        key = int(image_seq_len) if self.use_dynamic_shifting else None
        if key not in self._cache:
            # on the CPU: the schedule is a float64 table, indexed where it is used
            u = torch.arange(self.num_train_timesteps, dtype=torch.float64) / self.num_train_timesteps
            if self.use_dynamic_shifting:
                if key is None:
                    raise ValueError("a resolution-dependent schedule needs the number of image tokens")
                mu = self.mu(key)
                scale = math.exp(mu) if self.time_shift_type == "exponential" else mu
                s = scale / (scale + (1 / u - 1))
            else:
                s = self.shift * u / (1 + (self.shift - 1) * u)
            self._cache[key] = s
        return self._cache[key]

    def alphas_cumprod(self, image_seq_len: Optional[int] = None) -> torch.Tensor:
        """The variance-preserving ``abar_t = (1 - s)^2 / ((1 - s)^2 + s^2)`` of the same times (float64)."""
        s = self.sigmas(image_seq_len)
        return (1 - s) ** 2 / ((1 - s) ** 2 + s**2)

    def __repr__(self) -> str:
        shift = (f"dynamic {self.time_shift_type} shift (mu {self.base_shift:g}..{self.max_shift:g} over "
                 f"{self.base_image_seq_len}..{self.max_image_seq_len} tokens)" if self.use_dynamic_shifting else f"shift={self.shift:g}")
        return f"FlowMatchingSchedule(T={self.num_train_timesteps}, {shift})"


def _view(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return v.view(-1, *([1] * (like.dim() - 1)))


class DenoiserAdapter:
    """What the network predicts, in the flow's coordinates (see :class:`~dwgf.priors.LatentPrior`).

    :meth:`network_input` gives the network's latent and timestep for flow-coordinate latents ``z_t``
    at flow times ``t``; :meth:`eps` and :meth:`predict` turn the network's (float32, guided) output
    ``out`` at that ``latent`` into ``eps_hat`` and ``(eps_hat, z0_hat)``. ``prior`` supplies ``abar``
    and the schedule.
    """

    prediction_type = "epsilon"

    def network_input(self, prior, z_t: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return z_t, t

    def eps(self, prior, z_t: torch.Tensor, t: torch.Tensor, latent: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def predict(self, prior, z_t: torch.Tensor, t: torch.Tensor, latent: torch.Tensor,
                out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        eps = self.eps(prior, z_t, t, latent, out)
        abar = _view(prior.abar(t, z_t), z_t)
        return eps, (z_t - (1 - abar).sqrt() * eps) / abar.sqrt()

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class EpsilonAdapter(DenoiserAdapter):
    """A DDPM network that predicts the noise: its output is ``eps_hat``."""

    def eps(self, prior, z_t, t, latent, out):
        return out


class VPredictionAdapter(DenoiserAdapter):
    """A DDPM network that predicts ``v``: ``eps = sqrt(abar) v + sqrt(1 - abar) z_t``."""

    prediction_type = "v_prediction"

    def eps(self, prior, z_t, t, latent, out):
        abar = _view(prior.abar(t), z_t)
        return abar.sqrt() * out + (1 - abar).sqrt() * z_t.float()


class RectifiedFlowAdapter(DenoiserAdapter):
    """A rectified-flow network that predicts the velocity ``v = eps - z`` of ``z_s = (1 - s) z + s eps``.

    The network sees ``z_s = c_s z_t`` (``c_s = sqrt((1 - s)^2 + s^2)``) at timestep ``1000 s``, as the
    pipelines give it; ``eps_hat = z_s + (1 - s) v_hat`` and ``z0_hat = z_s - s v_hat`` (no division).
    """

    prediction_type = "flow"

    def network_input(self, prior, z_t, t):
        s = _view(prior.sigma(t, z_t), z_t)
        z_s = ((1 - s) ** 2 + s**2).sqrt() * z_t.float()
        return z_s, prior.sigma(t, z_t) * prior.schedule.num_train_timesteps

    def predict(self, prior, z_t, t, latent, out):
        s = _view(prior.sigma(t, z_t), z_t)
        return latent + (1 - s) * out, latent - s * out

    def eps(self, prior, z_t, t, latent, out):
        s = _view(prior.sigma(t, z_t), z_t)
        return latent + (1 - s) * out


ADAPTERS = {"epsilon": EpsilonAdapter, "v_prediction": VPredictionAdapter, "flow": RectifiedFlowAdapter}
