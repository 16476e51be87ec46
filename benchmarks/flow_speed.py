"""How close one DWGF iteration is to the cost of its network calls, and how batches scale.

    python benchmarks/flow_speed.py --sd 512:1 256:1,4   # shipped prior + SD-2.1-base layout, CPU (24 GB)
    python benchmarks/flow_speed.py --skip-sd            # shipped prior only
    python benchmarks/flow_speed.py --sd 512:4,8,16,32 --precision bf16 --output benchmarks/results/flow_speed_gpu_bf16.md
                                                         # on a GPU (the default device when there is one)

For each prior and each B x N (B measurements, N particles each; N = min(4, B x N)) it measures,
in this one process and on the same tensors:

(a) the wall time of one flow iteration (``dwgf.flow.dwgf_flow``, median over the timed
    iterations after warm-up);
(b) the floor: the network calls an iteration cannot avoid, timed alone on that iteration's own
    tensors -- one UNet forward on the B x N diffused particles without gradient, one decoder
    forward with a graph and one vector-Jacobian product (plus, with the encoder term, one encoder
    and one decoder forward);
(c) the ratio (a) / (b), of the medians, and the quartiles of the per-iteration ratios;
(d) images per minute at the prior's usual iteration count (200 for the shipped prior, 998 for
    Stable Diffusion);
(e) peak memory during one iteration, above the level before it and in all (CPU: the process's
    resident set size sampled every 2 ms; GPU: ``torch.cuda.max_memory_allocated``).

Each iteration is paired with its floor: the floor's calls run between two iterations (from the
flow's callback, outside both iterations' timed intervals), on the tensors the iteration just used.
On a shared machine the time of the same call drifts by tens of percent over seconds; pairing makes
the drift hit both sides of the ratio alike. (Timing the floor and the flow in separate rounds of
ten iterations read ratios of 1.10 to 1.35 at B x N 16 on the same code within one process.)

A reference-faithful comparator computes the same iteration the way the authors' code does
(``isomorphicdude/DWGF``): autoencoder weights requiring gradients (so the backward pass also
computes their gradients), the particles' kernel score through autograd of the log mixture
density, ``loss.backward()`` through the whole graph, and one measurement per call. It is timed on
the same prior at equal particles, and a few iterations from the same state are checked to give
the same particles as ``dwgf_flow`` (to float tolerance). Its iteration includes the
encoder-consistency term, so dwgf is timed with the same term for the comparison.

The Stable-Diffusion-2.1-base layout (``UNet2DConditionModel`` and ``AutoencoderKL`` with the
published configuration, random weights: a random network costs the same time as a trained one)
is built in memory; on CPU it is timed for a few iterations only. ``--sd RES:BN,BN`` picks image
sizes and B x N for it. On CPU, at 512 px one particle's iteration needed 5.4 GB above the 4 GB of
weights (the decoder's graph), so on a 24 GB machine B x N 4 runs at 256 px (``--sd 512:1 256:1,4``).

Prints a Markdown table and writes it to ``benchmarks/results/flow_speed.md`` (``--output``).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import datetime
import math
import os
import platform
import statistics
import sys
import textwrap
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import torch

from dwgf.flow import FlowConfig, ItemDraws, Problem, dwgf_flow, item_generators
from dwgf.operators import BoxInpainting
from dwgf.priors import StableDiffusionPrior, StableDiffusionXLPrior, UnconditionalLatentPrior
from dwgf.priors.base import LatentPrior
from dwgf.regularizers import EncoderConsistency, KLPrior
from dwgf.schedules import ConstantStepSize, DescendingTimesteps
from dwgf.likelihoods import MeanSquaredError

MSE = MeanSquaredError()  # the paper's data term: the data fit lives in the data terms


# -- memory ------------------------------------------------------------------------------------

UNET_PRECISION_NAMES = {"32": "float32", "bf16": "bfloat16 (autocast)", "16": "float16 (autocast)"}

def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class PeakMemory:
    """Peak memory of the block in MiB: above the level at its start (``peak_mib``) and in all (``total_mib``).

    CPU: the process's resident set size (which also holds the Python runtime, torch and every
    model loaded so far); GPU: memory allocated by torch.
    """

    def __init__(self, device: torch.device):
        self.device = device
        self.peak_mib = self.total_mib = float("nan")

    def __enter__(self) -> "PeakMemory":
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self._base = torch.cuda.memory_allocated()
        else:
            self._base = _rss_bytes()
            self._peak = self._base
            self._stop = threading.Event()
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.is_set():
            self._peak = max(self._peak, _rss_bytes())
            time.sleep(0.002)

    def __exit__(self, *exc) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            self.total_mib = torch.cuda.max_memory_allocated() / 2**20
            self.peak_mib = self.total_mib - self._base / 2**20
        else:
            self._stop.set()
            self._thread.join()
            self.total_mib = max(self._peak, _rss_bytes()) / 2**20
            self.peak_mib = self.total_mib - self._base / 2**20


# -- priors ------------------------------------------------------------------------------------
def sd_autoencoder(image_size: int, scaling_factor: float):
    """Stable Diffusion's AutoencoderKL layout (the same for SD 1.x, 2.x and SDXL; 83 M parameters), random weights."""
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2, norm_num_groups=32,
        block_out_channels=(128, 256, 512, 512), down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4, sample_size=image_size, scaling_factor=scaling_factor,
    )


def sd_layout_prior(image_size: int = 512, seed: int = 0) -> StableDiffusionPrior:
    """Stable Diffusion 2.1-base's UNet and autoencoder with random weights, as dwgf's own
    :class:`~dwgf.priors.StableDiffusionPrior` (built with ``from_modules``: no 5 GB folder to write).

    The prompt embedding is a fixed random 77 x 1024 tensor (the text encoder does not run in the
    flow). ``image_size`` sets the resolution (512 for the real model; smaller is cheaper on CPU).
    """
    from diffusers import DDPMScheduler, UNet2DConditionModel

    torch.manual_seed(seed)
    vae = sd_autoencoder(image_size, 0.18215)
    unet = UNet2DConditionModel(
        sample_size=image_size // 8, in_channels=4, out_channels=4, layers_per_block=2,
        block_out_channels=(320, 640, 1280, 1280), attention_head_dim=(5, 10, 20, 20),
        cross_attention_dim=1024, use_linear_projection=True,
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    )
    sched = DDPMScheduler(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear")
    return StableDiffusionPrior.from_modules(vae, unet, sched.alphas_cumprod, prompt_embeds=torch.randn(1, 77, 1024))


def sd15_layout_prior(image_size: int = 512, guidance_scale: float = 1.0, seed: int = 0) -> StableDiffusionPrior:
    """Stable Diffusion 1.5's UNet (cross-attention 768, 8 heads) and autoencoder with random weights,
    as :class:`~dwgf.priors.StableDiffusionPrior` (``from_modules``); random 77 x 768 prompt and
    negative-prompt embeddings (the text encoder does not run in the flow)."""
    from diffusers import DDPMScheduler, UNet2DConditionModel

    torch.manual_seed(seed)
    vae = sd_autoencoder(image_size, 0.18215)
    unet = UNet2DConditionModel(
        sample_size=image_size // 8, in_channels=4, out_channels=4, layers_per_block=2,
        block_out_channels=(320, 640, 1280, 1280), attention_head_dim=8, cross_attention_dim=768,
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    )
    sched = DDPMScheduler(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear")
    return StableDiffusionPrior.from_modules(vae, unet, sched.alphas_cumprod, guidance_scale=guidance_scale,
                                             prompt_embeds=torch.randn(1, 77, 768), negative_embeds=torch.randn(1, 77, 768))


def sdxl_layout_prior(image_size: int = 1024, guidance_scale: float = 1.0, seed: int = 0) -> StableDiffusionXLPrior:
    """SDXL base 1.0's UNet (2.6 B parameters: text_time embeddings, 10-layer transformers at the lowest
    resolution, cross-attention 2048) and autoencoder with random weights, as
    :class:`~dwgf.priors.StableDiffusionXLPrior`; random prompt (77 x 2048, pooled 1280) and zero
    negative embeddings (SDXL's ``force_zeros_for_empty_prompt``)."""
    from diffusers import DDPMScheduler, UNet2DConditionModel

    torch.manual_seed(seed)
    vae = sd_autoencoder(image_size, 0.13025)
    unet = UNet2DConditionModel(
        sample_size=image_size // 8, in_channels=4, out_channels=4, layers_per_block=2,
        block_out_channels=(320, 640, 1280), attention_head_dim=(5, 10, 20), cross_attention_dim=2048,
        transformer_layers_per_block=(1, 2, 10), use_linear_projection=True, addition_embed_type="text_time",
        addition_time_embed_dim=256, projection_class_embeddings_input_dim=2816,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    )
    sched = DDPMScheduler(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear")
    return StableDiffusionXLPrior.from_modules(
        vae, unet, sched.alphas_cumprod, guidance_scale=guidance_scale, prompt_embeds=torch.randn(1, 77, 2048),
        prompt_pooled=torch.randn(1, 1280), negative_embeds=torch.zeros(1, 77, 2048), negative_pooled=torch.zeros(1, 1280))


def rf_autoencoder(image_size: int, scaling_factor: float, shift_factor: float):
    """SD3's / FLUX's AutoencoderKL layout: SD's with 16 latent channels, no quant convolutions, and a shift."""
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=16, layers_per_block=2, norm_num_groups=32,
        block_out_channels=(128, 256, 512, 512), down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4, sample_size=image_size, scaling_factor=scaling_factor, shift_factor=shift_factor,
        use_quant_conv=False, use_post_quant_conv=False,
    )


def sd3_layout_prior(image_size: int = 512, guidance_scale: float = 1.0, seed: int = 0):
    """Stable Diffusion 3.5 medium's MMDiT (2.5 B parameters: 24 blocks of 24 heads x 64, dual attention in the
    first 13, RMS q/k norm, patch 2) and 16-channel autoencoder with random weights, as
    :class:`~dwgf.priors.StableDiffusion3Prior`; random prompt embeddings (77 CLIP + 256 T5 tokens x 4096,
    pooled 2048) and negative ones; the shift-3 time map."""
    from diffusers import SD3Transformer2DModel

    from dwgf.priors import FlowMatchingSchedule, StableDiffusion3Prior

    torch.manual_seed(seed)
    transformer = SD3Transformer2DModel(
        sample_size=image_size // 8, patch_size=2, in_channels=16, num_layers=24, attention_head_dim=64, num_attention_heads=24,
        joint_attention_dim=4096, caption_projection_dim=1536, pooled_projection_dim=2048, out_channels=16, pos_embed_max_size=384,
        dual_attention_layers=tuple(range(13)), qk_norm="rms_norm",
    )
    return StableDiffusion3Prior.from_modules(
        rf_autoencoder(image_size, 1.5305, 0.0609), transformer, FlowMatchingSchedule(shift=3.0), guidance_scale=guidance_scale,
        prompt_embeds=torch.randn(1, 333, 4096), prompt_pooled=torch.randn(1, 2048), negative_embeds=torch.randn(1, 333, 4096),
        negative_pooled=torch.randn(1, 2048))


FLUX_DEPTH = (2, 4)  # double-stream and single-stream blocks of the reduced FLUX layout (FLUX.1: 19 and 38)


def flux_layout_prior(image_size: int = 512, guidance_scale: float = 1.0, seed: int = 0):
    """FLUX.1-dev's transformer at its full width (24 heads x 128, T5 width 4096, guidance embedding, RoPE
    axes 16/56/56) but only :data:`FLUX_DEPTH` blocks (the full 12 B parameters are 48 GB in float32, more than
    this CPU's memory), and its 16-channel autoencoder, random weights, as :class:`~dwgf.priors.FluxPrior`;
    random prompt embeddings (512 T5 tokens, pooled 768); the resolution-dependent time map. Fewer blocks make
    the floor smaller, so the ratio to it is an upper bound of the full model's. ``guidance_scale`` is the
    classifier-free (true CFG) scale; the embedded guidance is 3.5."""
    from diffusers import FluxTransformer2DModel

    from dwgf.priors import FlowMatchingSchedule, FluxPrior

    torch.manual_seed(seed)
    transformer = FluxTransformer2DModel(
        patch_size=1, in_channels=64, num_layers=FLUX_DEPTH[0], num_single_layers=FLUX_DEPTH[1], attention_head_dim=128,
        num_attention_heads=24, joint_attention_dim=4096, pooled_projection_dim=768, guidance_embeds=True, axes_dims_rope=(16, 56, 56),
    )
    schedule = FlowMatchingSchedule(shift=3.0, use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15)
    return FluxPrior.from_modules(
        rf_autoencoder(image_size, 0.3611, 0.1159), transformer, schedule, guidance_scale=3.5, true_cfg_scale=guidance_scale,
        image_size=image_size, prompt_embeds=torch.randn(1, 512, 4096), prompt_pooled=torch.randn(1, 768),
        negative_embeds=torch.randn(1, 512, 4096), negative_pooled=torch.randn(1, 768))


def taesd_layout(latent_channels: int):
    """TAESD's AutoencoderTiny layout (64-channel blocks, 8x; the SD/SDXL one for 4 latent channels, taesd3 /
    taef1 for 16), random weights: the flow decoder of ``--flow-decoder``."""
    from diffusers import AutoencoderTiny

    return AutoencoderTiny(in_channels=3, out_channels=3, latent_channels=latent_channels)


FAMILY = {"sd15": ("SD 1.5 layout", sd15_layout_prior), "sdxl": ("SDXL layout", sdxl_layout_prior),
          "sd3": ("SD 3.5 medium layout", sd3_layout_prior),
          "flux": (f"FLUX.1-dev layout ({FLUX_DEPTH[0]}+{FLUX_DEPTH[1]} of 19+38 blocks)", flux_layout_prior)}


def family_spec(text: str) -> tuple[str, int, list[int]]:
    """``"sdxl:1024:1"`` -> ``("sdxl", 1024, [1])``."""
    try:
        name, rest = text.split(":", 1)
        res, sizes = sd_spec(rest)
    except (ValueError, argparse.ArgumentTypeError):
        raise argparse.ArgumentTypeError(f"expected FAMILY:RES:BN[,BN...] such as sdxl:1024:1, got {text!r}") from None
    if name not in FAMILY:
        raise argparse.ArgumentTypeError(f"unknown family {name!r} (one of {', '.join(FAMILY)})")
    return name, res, sizes


# -- problem -----------------------------------------------------------------------------------
def problem(prior: LatentPrior, batch: int, device: torch.device, seed: int = 0):
    """Box-inpainting measurements of random smooth images, with per-item generators."""
    op = BoxInpainting(size=[prior.image_size * 3 // 8] * 2, sigma_y=0.01)
    shape = (prior.image_channels, prior.image_size, prior.image_size)
    gens = item_generators(range(seed, seed + batch), "cpu")
    items = [op.sample_params(shape, g) for g in gens]
    params = {k: torch.stack([p[k] for p in items]).to(device) for k in items[0]}
    x = torch.rand(batch, *shape, generator=torch.Generator().manual_seed(seed), device="cpu").to(device) * 2 - 1
    return op, op(x, params), params


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def regularizers(encoder: bool) -> list:
    return [KLPrior(0.25), *([EncoderConsistency(0.1)] if encoder else [])]


def time_flow(prior, op, y, params, n, iters, warmup, encoder, seed=0, unet_dtype=None, floor=False, regs=None, flow=None, generator="cpu"):
    """Per-iteration wall times of dwgf_flow (after ``warmup`` iterations) and its peak memory.

    With ``unet_dtype`` the flow runs under autocast to it, as under ``--trainer.precision
    bf16-mixed`` / ``16-mixed``: the UNet in that precision, the autoencoder and schedule in float32.

    With ``floor``, after every iteration (outside its timed interval) the floor's network calls
    run on that iteration's own tensors (:func:`time_floor_calls`), so each iteration is paired
    with a floor measured seconds apart; returns ``(times, floors, memory)`` with ``floors`` a list
    of per-iteration ``{part: seconds}``. Without it, ``(times, memory)``. ``regs``: the flow's
    regularizers (default :func:`regularizers` of ``encoder``); ``flow``: further :func:`dwgf_flow`
    arguments (an optimiser, a data term, ``query_noise``, ``decoder_chunk``); ``generator``: where the items'
    generators live (``"cpu"``, ``dwgf predict``'s default: drawn ahead and copied on a GPU; ``"device"``).
    """
    device = y.device
    stamps: list[float] = []
    floors: list[dict[str, float]] = []

    def callback(state) -> None:
        sync(device)
        stamps.append(time.perf_counter())  # the iteration ends
        if floor:
            if state.iteration >= warmup:
                floors.append(time_floor_calls(prior, state, encoder, unet_dtype))
            sync(device)
            stamps.append(time.perf_counter())  # the next iteration starts

    draw = ItemDraws(item_generators(range(seed, seed + y.shape[0]), "cpu" if generator == "cpu" else device), device)
    with PeakMemory(device) as mem, (torch.autocast(device.type, dtype=unet_dtype) if unet_dtype else contextlib.nullcontext()):
        sync(device)
        stamps.append(time.perf_counter())
        config = FlowConfig(num_steps=warmup + iters, regularizers=regs if regs is not None else regularizers(encoder),
                            step_size=ConstantStepSize(0.3), timesteps=DescendingTimesteps(),
                            **{k: v for k, v in (flow or {}).items() if k in FlowConfig.__dataclass_fields__})
        dwgf_flow(prior, Problem(op, y, params, num_particles=n, **{k: v for k, v in (flow or {}).items() if k == "likelihood"}), config, draw,
                  callback)
    if floor:
        times = [b - a for a, b in zip(stamps[0::2], stamps[1::2])]
        return times[warmup:], floors, mem
    times = [b - a for a, b in zip(stamps[:-1], stamps[1:])]
    return times[warmup:], mem


def network_calls(prior, z, z_t, t, cotangent=None, unet_dtype=None):
    """The two calls every iteration must make, as closures: the UNet forward without gradient on
    ``z_t`` at ``t``, and the decoder forward with a graph on ``z`` and one vector-Jacobian product
    (``cotangent``: any image-shaped tensor costs the same; ``None``: ones)."""
    device = z.device

    def unet():
        with torch.no_grad(), (torch.autocast(device.type, dtype=unet_dtype) if unet_dtype else contextlib.nullcontext()):
            prior.eps(z_t, t)

    def decode_vjp():
        leaf = z.detach().requires_grad_(True)
        x = prior.flow_decode(leaf)  # the flow's decoder (the prior's own unless it has a flow decoder)
        torch.autograd.grad(x, leaf, grad_outputs=torch.ones_like(x) if cotangent is None else cotangent)

    return unet, decode_vjp


def time_floor_calls(prior, state, encoder, unet_dtype=None) -> dict[str, float]:
    """Times each unavoidable network call once on one iteration's tensors (a ``FlowState``).

    The UNet forward without gradient on the diffused particles ``z_t`` at the iteration's times;
    the decoder forward with a graph on the particles and one vector-Jacobian product (the
    cotangent is the decoded image: any image-shaped tensor costs the same); with the encoder term,
    one encoder and one decoder forward without gradient on the decoded image.
    """
    device = state.z.device
    z_t, t = state.z_t.flatten(0, 1), state.t.repeat_interleave(state.z.shape[1])
    cot = state.x.flatten(0, 1)
    enc_noise = state.eps.flatten(0, 1)
    unet, decode_vjp = network_calls(prior, state.z.flatten(0, 1), z_t, t, cot, unet_dtype)

    def encode_decode():
        with torch.no_grad():
            prior.flow_decode(prior.encode(cot, enc_noise))

    calls = {"unet": unet, "decode+vjp": decode_vjp, **({"encode+decode": encode_decode} if encoder else {})}
    out = {}
    for name, fn in calls.items():  # in the flow's order
        sync(device)
        s = time.perf_counter()
        fn()
        sync(device)
        out[name] = time.perf_counter() - s
    return out


# -- the reference-faithful iteration --------------------------------------------------------------
def reference_flow(prior, op, y, params, n, num_steps, weight=0.25, beta=0.1, lr=0.3, seed=0, callback=None) -> torch.Tensor:
    """DWGF computed as the authors' code computes it, one measurement per call.

    Autoencoder weights require gradients; the kernel score is the autograd gradient of the log
    density of the particles' diffused mixture; the loss (data + prior + encoder terms, each as a
    scalar whose gradient is the DWGF force) goes through ``loss.backward()``. Random numbers come
    from the same per-item generators in the same order as :func:`dwgf.flow.dwgf_flow`, so the
    particles agree with it to float tolerance. Returns the final latents, ``B x N x c x h x w``.
    """
    device = y.device
    vae_flags = [p.requires_grad for p in prior.vae.parameters()]
    prior.vae.requires_grad_(True)
    out = []
    try:
        for b in range(y.shape[0]):  # one image per call
            draw = ItemDraws(item_generators([seed + b], device), device)
            yb = y[b : b + 1].repeat_interleave(n, 0)
            pb = {k: v[b : b + 1].repeat_interleave(n, 0) for k, v in params.items()}
            latents = draw((n, *prior.latent_shape))[0].clone().requires_grad_(True)
            opt = torch.optim.Adam([latents], lr=lr, betas=(0.9, 0.999))
            ts = DescendingTimesteps()(num_steps, prior.num_train_timesteps, draw.generators, device=device)[0]
            d = latents[0].numel()
            for k in range(num_steps):
                t = ts[k : k + 1].expand(n)
                abar = prior.abar(ts[k : k + 1])[0]
                eps = draw(latents.shape)[0]
                x_noise = draw((n, prior.image_channels, prior.image_size, prior.image_size))[0] * 0.01
                z_t = abar.sqrt() * latents + (1 - abar).sqrt() * eps
                with torch.no_grad():
                    score = -prior.eps(z_t, t) / (1 - abar).sqrt()
                z_t_leaf = z_t.detach().requires_grad_(True)
                means = (abar.sqrt() * latents).detach()
                sq = (z_t_leaf.flatten(1).unsqueeze(1) - means.flatten(1).unsqueeze(0)).square().sum(-1)
                log_mix = torch.logsumexp(-sq / (2 * (1 - abar)), dim=1) - math.log(n)
                (kernel_score,) = torch.autograd.grad(log_mix.sum(), z_t_leaf)
                lam = weight * (1 - abar) / abar.sqrt()
                prior_loss = (lam * (kernel_score - score).detach() * latents).sum() / d
                x = prior.decode(latents)
                data_loss = MSE.loss(op, x + x_noise, yb, pb).sum()
                enc_noise = draw((n, *prior.latent_shape))[0]
                with torch.no_grad():
                    rec = prior.decode(prior.encode(x + x_noise, enc_noise))
                enc_loss = beta * ((x - rec).detach() * x).sum() / x[0].numel()
                opt.zero_grad()
                (data_loss + prior_loss + enc_loss).backward()
                opt.step()
                if callback is not None:
                    callback()
            out.append(latents.detach())
    finally:
        for p, flag in zip(prior.vae.parameters(), vae_flags):
            p.requires_grad_(flag)
            p.grad = None
    return torch.stack(out)


def check_reference(prior, device, iters=3, dtype=torch.float64) -> float:
    """Largest absolute latent difference after ``iters`` iterations from the same state, dwgf vs reference.

    Run in float64 by default: in float32 the two differ by rounding (summation order), which
    Adam's normalised first steps amplify to about 1e-4; in float64 they agree to about 1e-13.
    """
    import copy

    prior = copy.deepcopy(prior).to(dtype)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        op, y, params = problem(prior, 2, device)
        draw = ItemDraws(item_generators([0, 1], device), device)
        _, ours, _ = dwgf_flow(prior, Problem(op, y, params, num_particles=4), FlowConfig(
            num_steps=iters, regularizers=regularizers(True), step_size=ConstantStepSize(0.3), timesteps=DescendingTimesteps()), draw)
        ref = reference_flow(prior, op, y, params, 4, iters)
    finally:
        torch.set_default_dtype(previous)
    return float((ours - ref).abs().max())


def time_reference(prior, op, y, params, n, iters, warmup) -> list[float]:
    device = y.device
    stamps: list[float] = []

    def callback():
        sync(device)
        stamps.append(time.perf_counter())

    # each measurement runs warmup + iters iterations; the warm-up intervals of every item are dropped
    times = []
    for b in range(y.shape[0]):
        stamps.clear()
        sync(device)
        stamps.append(time.perf_counter())
        reference_flow(prior, op, y[b : b + 1], {k: v[b : b + 1] for k, v in params.items()}, n, warmup + iters, seed=b, callback=callback)
        times.append([s1 - s0 for s0, s1 in zip(stamps[:-1], stamps[1:])][warmup:])
    # one iteration of the batch = the sum over its measurements of one iteration each
    return [sum(col) for col in zip(*times)]


# -- driver ------------------------------------------------------------------------------------
def layout(bn: int) -> tuple[int, int]:
    n = min(4, bn)
    return bn // n, n


def measure(name, prior, sizes, iters, warmup, rounds, encoder, device, usual_k, rows, unet_dtype=None) -> None:
    """One row per B x N: ``rounds`` flows of ``warmup + iters`` iterations, each iteration paired with its floor.

    Peak memory comes from a separate short flow without the floor calls (they would add theirs).
    A B x N that runs out of memory gets a row saying so, and the next one is tried.
    """
    for bn in sizes:
        b, n = layout(bn)
        op, y, params = problem(prior, b, device)
        flow_t, floor_t = [], []
        try:
            for r in range(rounds):
                times, floors, _ = time_flow(prior, op, y, params, n, iters, warmup, encoder, seed=r, unet_dtype=unet_dtype, floor=True)
                flow_t += times
                floor_t += floors
            _, mem = time_flow(prior, op, y, params, n, 1, 0, encoder, unet_dtype=unet_dtype)
        except (torch.OutOfMemoryError, MemoryError, RuntimeError) as err:  # CPU: "DefaultCPUAllocator: not enough memory"
            if isinstance(err, RuntimeError) and "memory" not in str(err):
                raise
            del err
            gc.collect()
            rows.append(dict(prior=name, bn=bn, b=b, n=n, encoder=encoder, oom=True, alone=parts_alone(prior, b * n, device, unet_dtype)))
            print(_row(rows[-1]), flush=True)
            if device.type == "cuda":
                torch.cuda.empty_cache()
            continue
        totals = [sum(f.values()) for f in floor_t]
        ratios = sorted(a / b_ for a, b_ in zip(flow_t, totals))
        it, total = statistics.median(flow_t), statistics.median(totals)
        rows.append(dict(
            prior=name, bn=bn, b=b, n=n, encoder=encoder, iteration=it, floor=total,
            parts={k: statistics.median(f[k] for f in floor_t) for k in floor_t[0]}, ratio=it / total,
            quartiles=(_quantile(ratios, 0.25), _quantile(ratios, 0.75)), pairs=len(ratios),
            images_per_min=b * 60 / (usual_k * it), usual_k=usual_k, peak=mem.peak_mib, peak_total=mem.total_mib,
        ))
        print(_row(rows[-1]), flush=True)


def parts_alone(prior, rows: int, device, unet_dtype=None) -> dict[str, str]:
    """Where a whole iteration does not fit: each unavoidable call alone (after one warm-up call),
    its seconds, or "out of memory" (the UNet forward without gradient; the decoder forward with
    its vector-Jacobian product)."""
    z = torch.randn(rows, *prior.latent_shape, device=device)
    unet, decode_vjp = network_calls(prior, z, z, torch.full((rows,), 500, device=device), None, unet_dtype)
    out = {}
    for name, fn in {"unet": unet, "decode+vjp": decode_vjp}.items():
        try:
            fn()
            sync(device)
            start = time.perf_counter()
            fn()
            sync(device)
            out[name] = f"{(time.perf_counter() - start) * 1e3:.0f} ms"
        except (torch.OutOfMemoryError, MemoryError, RuntimeError) as err:
            if isinstance(err, RuntimeError) and "memory" not in str(err):
                raise
            out[name] = "out of memory"
        gc.collect()
    return out


def _quantile(sorted_values: list[float], q: float) -> float:
    """Linear-interpolated quantile of a sorted list."""
    pos = q * (len(sorted_values) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


# -- optional changes: each measured against the iteration without it ------------------------------
@dataclass(frozen=True)
class Change:
    """An optional change, timed against the iteration without it.

    ``doc`` describes it in the output; ``base_kwargs`` build the baseline prior; ``apply`` alters the
    changed prior in place; ``unet_dtype`` is the changed flow's UNet autocast dtype (``None``: as the
    baseline's); ``warmup`` the changed flow's warm-up iterations before timing (``None``: ``--warmup``);
    ``regularizers`` the changed flow's regularizers (``None``: the baseline's, ``KLPrior(0.25)``);
    ``flow`` builds further :func:`dwgf_flow` arguments for the changed flow (a fresh optimiser each run).
    """

    doc: str
    base_kwargs: dict = field(default_factory=dict)
    apply: Optional[Callable[[LatentPrior], object]] = None
    unet_dtype: Optional[torch.dtype] = None
    warmup: Optional[int] = None
    regularizers: Optional[Callable[[], list]] = None
    flow: Optional[Callable[[], dict]] = None


def _optimizer(name: str, sampler: bool = False) -> Callable[[], dict]:
    """The flow's optimiser (``dwgf.optimizers``) by name, and with ``sampler`` the sampler configs' data term and query."""
    from dwgf.likelihoods import GaussianLikelihood
    from dwgf.optimizers import Adam, GradientDescent, Langevin, LangevinNoise

    def build() -> dict:
        out = {"optimizer": {"gd": GradientDescent, "langevin": Langevin, "noise": lambda: Adam(noise=LangevinNoise(0.1))}[name]()}
        if sampler:
            out.update(likelihood=GaussianLikelihood(anneal=10.0), query_noise=0.0)
        return out

    return build


def _sampler_regularizers() -> list:
    from dwgf.regularizers import ScoreWeighting

    return [KLPrior(1.0, weighting=ScoreWeighting(), particle_term=False, per_element=False)]


def _diverse(*extra: str, kde: bool = False) -> Callable[[], list]:
    """The baseline's regularizers with the interacting ones (``dwgf.regularizers``) of ``benchmarks/diverse.py``."""
    from dwgf import regularizers as regs

    def build() -> list:
        made = {"repulsion": lambda: regs.KernelRepulsion(0.01), "repulsion_latent": lambda: regs.KernelRepulsion(0.01, space="latent"),
                "repulsion_encoder": lambda: regs.KernelRepulsion(0.01, features=regs.EncoderFeatures())}
        return [regs.KDEKLPrior(0.25, entropy_weight=1.0) if kde else KLPrior(0.25), *(made[e]() for e in extra)]

    return build


CHANGES = {
    # the default since it paid (see the prior's docstring): the baseline turns it off
    "vae_channels_last": Change("the autoencoder's weights channels-last (the prior's default, `channels_last: true`)",
                                base_kwargs={"channels_last": False}),
    "unet_channels_last": Change("the UNet's weights channels-last (not the default)",
                                 apply=lambda p: p.unet.to(memory_format=torch.channels_last)),
    # the first calls of a compiled network compile: a long warm-up before timing
    "compile": Change("`torch.compile` of the UNet and the decoder (`--model.compile true`), timed after its compiling warm-up",
                      apply=lambda p: p.compile_networks(), warmup=5),
    "bf16_unet": Change("the UNet under bfloat16 autocast, the autoencoder in float32 (`--trainer.precision bf16-mixed`)",
                        unet_dtype=torch.bfloat16),
    # the interacting regularizers (issue 18): what each adds to an iteration
    "kde_kl_prior": Change("`KDEKLPrior` (adaptive-bandwidth particle term) in place of `KLPrior`", regularizers=_diverse(kde=True)),
    "repulsion_pixels": Change("`KernelRepulsion` in pixels added", regularizers=_diverse("repulsion")),
    "repulsion_latent": Change("`KernelRepulsion` in the latent added", regularizers=_diverse("repulsion_latent")),
    "repulsion_encoder": Change("`KernelRepulsion` on encoder features added (one encoder forward and backward)",
                                regularizers=_diverse("repulsion_encoder")),
    "langevin": Change("`LangevinNoise` added (Adam's noise)", regularizers=_diverse(), flow=_optimizer("noise")),
    # the flow optimisers and the sampler (issue 25), against Adam; the curvature's power iteration at the start
    # (11 decoder forwards and vector-Jacobian products, once per batch) falls in the warm-up, outside the timing
    "optimizer_gd": Change("`GradientDescent` in place of Adam", flow=_optimizer("gd")),
    "optimizer_langevin": Change("`Langevin` (curvature-bounded step) in place of Adam", flow=_optimizer("langevin")),
    "sampler": Change("the sampler configs' parts: `Langevin`, `GaussianLikelihood(anneal 10)`, `KLPrior(ScoreWeighting, "
                      "per_element false)`, `query_noise 0`", regularizers=_sampler_regularizers, flow=_optimizer("langevin", sampler=True)),
}


def measure_changes(changes, sizes, iters, warmup, rounds, device, unet_dtype=None) -> list[dict]:
    """Flow iteration time with and without each change, in alternating rounds."""
    out = []
    for change in changes:
        spec = CHANGES[change]
        dtype = spec.unet_dtype or unet_dtype
        base = UnconditionalLatentPrior("dwgf:mnist-ldm", **spec.base_kwargs).to(device)
        changed = UnconditionalLatentPrior("dwgf:mnist-ldm").to(device)
        if spec.apply is not None:
            spec.apply(changed)
        for bn in sizes:
            b, n = layout(bn)
            op, y, params = problem(base, b, device)
            regs = spec.regularizers() if spec.regularizers is not None else None
            flow = spec.flow or dict
            time_flow(changed, op, y, params, n, 1, warmup if spec.warmup is None else spec.warmup, False, unet_dtype=dtype, regs=regs,
                      flow=flow())
            t_base, t_changed, per_round = [], [], []
            for _ in range(rounds):
                tb = time_flow(base, op, y, params, n, iters, warmup, False, unet_dtype=unet_dtype)[0]
                tc = time_flow(changed, op, y, params, n, iters, warmup, False, unet_dtype=dtype, regs=regs, flow=flow())[0]
                t_base, t_changed = t_base + tb, t_changed + tc
                per_round.append(statistics.median(tb) / statistics.median(tc))
            row = dict(change=change, bn=bn, b=b, n=n, plain=statistics.median(t_base), changed=statistics.median(t_changed),
                       rounds=(min(per_round), max(per_round)))
            out.append(row)
            print(f"change {change} B x N {bn}: without {row['plain'] * 1e3:.1f} ms, with {row['changed'] * 1e3:.1f} ms: "
                  f"{row['plain'] / row['changed']:.2f}x", flush=True)
    return out


HEADER = ("| prior | B x N (items x particles) | encoder term | iteration ms | floor ms (parts) | ratio | "
          "per-iteration ratio, quartiles (pairs) | images/min | peak MiB (above start / in all) |")


def _row(r) -> str:
    if r.get("oom"):
        alone = "; alone: " + ", ".join(f"{k} {v}" for k, v in r["alone"].items()) if r.get("alone") else ""
        return f"| {r['prior']} | {r['bn']} ({r['b']}x{r['n']}) | {'yes' if r['encoder'] else 'no'} | out of memory{alone} | - | - | - | - | - |"
    parts = ", ".join(f"{k} {v * 1e3:.1f}" for k, v in r["parts"].items())
    return (f"| {r['prior']} | {r['bn']} ({r['b']}x{r['n']}) | {'yes' if r['encoder'] else 'no'} | {r['iteration'] * 1e3:.1f} | "
            f"{r['floor'] * 1e3:.1f} ({parts}) | **{r['ratio']:.3f}** | {r['quartiles'][0]:.3f}-{r['quartiles'][1]:.3f} ({r['pairs']}) | "
            f"{r['images_per_min']:.3g} (K {r['usual_k']}) | {r['peak']:.0f} / {r['peak_total']:.0f} |")


def sd_spec(text: str) -> tuple[int, list[int]]:
    """``"512:1,4"`` -> ``(512, [1, 4])``."""
    try:
        res, sizes = text.split(":")
        out = int(res), [int(v) for v in sizes.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected RES:BN[,BN...] such as 512:1,4, got {text!r}") from None
    if out[0] % 8 or out[0] <= 0 or not out[1] or min(out[1]) < 1:
        raise argparse.ArgumentTypeError(f"the image size must be a positive multiple of 8 and B x N positive, got {text!r}")
    return out


# -- the grid: what a user needs to choose a GPU ------------------------------------------------------
GRID_FAMILIES = {  # name: (label, builder, config whose num_steps is the iterations per image)
    "sd15": ("SD 1.5", lambda res: sd15_layout_prior(res), "configs/sd15/box_inpaint.yaml"),
    "sd21": ("SD 2.1-base", lambda res: sd_layout_prior(res), "configs/sd21/ffhq_box_inpaint.yaml"),
    "sd21_768": ("SD 2.1-768", lambda res: sd_layout_prior(res), "configs/sd21_768/box_inpaint.yaml"),
    "sdxl": ("SDXL", lambda res: sdxl_layout_prior(res), "configs/sdxl/box_inpaint.yaml"),
    "sd3": ("SD 3.5 medium", lambda res: sd3_layout_prior(res), "configs/sd3/box_inpaint.yaml"),
    "flux": (f"FLUX.1-dev ({FLUX_DEPTH[0]}+{FLUX_DEPTH[1]} blocks)", lambda res: flux_layout_prior(res), "configs/flux/box_inpaint.yaml"),
}


def grid_spec(text: str) -> tuple[str, int]:
    """``"sdxl:1024"`` -> ``("sdxl", 1024)``."""
    name, _, res = text.partition(":")
    if name not in GRID_FAMILIES or not res.isdigit() or int(res) % 64:
        raise argparse.ArgumentTypeError(f"expected FAMILY:RES with FAMILY one of {', '.join(GRID_FAMILIES)} and RES a multiple of 64, got {text!r}")
    return name, int(res)


def config_iterations(config: str) -> int:
    import yaml

    return int(yaml.safe_load((Path(__file__).resolve().parents[1] / config).read_text())["model"]["init_args"]["num_steps"])


def measure_grid(specs, particles, flow_decoder, device, unet_dtype, weights_dtype, iters, warmup, chunk, generator) -> list[dict]:
    """One row per family x resolution x N x (flow decoder or not): one image, the config's regularizers (KL +
    encoder term), ``warmup + iters`` iterations; the median iteration, seconds per image at the config's
    iterations, and the peak memory above the weights. A setting that runs out of memory gets a row saying so."""
    rows = []
    for name, res in specs:
        label, build, config = GRID_FAMILIES[name]
        k = config_iterations(config)
        prior = build(res).to(device)
        for network in ("vae", "unet", "transformer"):  # the weights only, as torch_dtype loads them: the schedule stays float64
            if network in prior._modules:
                prior._modules[network].to(weights_dtype)
        weights = sum(p.numel() * p.element_size() for p in prior.parameters()) / 2**30
        tiny = taesd_layout(prior.latent_shape[0]).to(device=device, dtype=weights_dtype) if flow_decoder else None
        for with_tiny in (False, True) if tiny is not None else (False,):
            prior.set_flow_decoder(tiny if with_tiny else None)
            for n in particles:
                row = dict(family=label, res=res, n=n, tiny=with_tiny, k=k, weights=weights)
                try:
                    op, y, params = problem(prior, 1, device)
                    times, mem = time_flow(prior, op, y, params, n, iters, warmup, True, unet_dtype=unet_dtype,
                                           flow={"decoder_chunk": chunk}, generator=generator)
                    it = statistics.median(times)
                    row.update(iteration=it, per_image=it * k, peak=mem.peak_mib / 1024)
                except torch.OutOfMemoryError:
                    row.update(oom=True)
                    gc.collect()
                    if device.type == "cuda":
                        torch.cuda.empty_cache()
                rows.append(row)
                print(_grid_row(row), flush=True)
        del prior, tiny
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return rows


GRID_HEADER = ("| family | resolution | N | flow decoder | ms / iteration | s / image (iterations) | peak GiB above the weights | weights GiB |\n"
               "|---|---|---|---|---|---|---|---|")


def _grid_row(r) -> str:
    head = f"| {r['family']} | {r['res']} | {r['n']} | {'TAESD' if r['tiny'] else '-'} |"
    if r.get("oom"):
        return head + f" out of memory | - | - | {r['weights']:.1f} |"
    return head + f" {r['iteration'] * 1e3:.0f} | {r['per_image']:.0f} ({r['k']}) | {r['peak']:.1f} | {r['weights']:.1f} |"


def grid_plot(rows, path: Path, title: str) -> None:
    """Seconds per image against peak memory, one labelled point per setting (PIL; no plotting library)."""
    from PIL import Image, ImageDraw

    pts = [r for r in rows if not r.get("oom")]
    if not pts:
        return
    w, h, left, bottom, top, right = 900, 600, 70, 50, 40, 20
    img = Image.new("RGB", (w, h), "white")
    d = ImageDraw.Draw(img)
    xmax = max(r["peak"] for r in pts) * 1.1 or 1
    ymin, ymax = math.log10(min(r["per_image"] for r in pts) / 1.5), math.log10(max(r["per_image"] for r in pts) * 1.5)

    def at(r):
        x = left + (w - left - right) * r["peak"] / xmax
        y = h - bottom - (h - bottom - top) * (math.log10(r["per_image"]) - ymin) / max(ymax - ymin, 1e-9)
        return x, y

    d.line([(left, top), (left, h - bottom), (w - right, h - bottom)], fill="black")
    for i in range(6):
        gib = xmax * i / 5
        x = left + (w - left - right) * i / 5
        d.line([(x, h - bottom), (x, h - bottom + 4)], fill="black")
        d.text((x - 10, h - bottom + 8), f"{gib:.0f}", fill="black")
    for e in range(math.floor(ymin), math.ceil(ymax) + 1):
        for m in (1, 2, 5):
            v = math.log10(m) + e
            if ymin <= v <= ymax:
                y = h - bottom - (h - bottom - top) * (v - ymin) / (ymax - ymin)
                d.line([(left - 4, y), (left, y)], fill="black")
                d.text((5, y - 6), f"{m * 10.0 ** e:g} s", fill="black")
    d.text((w // 2 - 120, h - 20), "peak GPU memory above the weights (GiB)", fill="black")
    d.text((left, 10), title, fill="black")
    colours = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b"]
    families = list(dict.fromkeys(r["family"] for r in pts))
    for r in pts:
        x, y = at(r)
        c = colours[families.index(r["family"]) % len(colours)]
        shape = [(x - 4, y - 4), (x + 4, y + 4)]
        d.rectangle(shape, outline=c, width=2) if r["tiny"] else d.ellipse(shape, fill=c)
        d.text((x + 6, y - 6), f"{r['res']} N{r['n']}", fill=c)
    for i, fam in enumerate(families):
        d.ellipse([(w - 220, top + 16 * i), (w - 212, top + 16 * i + 8)], fill=colours[i % len(colours)])
        d.text((w - 205, top + 16 * i - 2), fam, fill="black")
    d.text((w - 220, top + 16 * len(families) + 4), "square: TAESD flow decoder", fill="black")
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)


def write_grid(args, device, rows) -> None:
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({os.cpu_count()} cores, {torch.get_num_threads()} threads)"
    precision = UNET_PRECISION_NAMES[args.precision] + ("" if args.precision == "32" else ", the decoder pass too")
    lines = ["# Seconds per image and peak memory, by family", "",
             f"`python benchmarks/flow_speed.py {' '.join(sys.argv[1:])}` on {where}, torch {torch.__version__}, {datetime.date.today()}.", "",
             f"Published layouts with random weights (a random network costs what a trained one costs), weights in {args.torch_dtype}, "
             f"networks in {precision}; one image, box inpainting, the config's regularizers (KL prior and encoder term), "
             f"`decoder_chunk` {args.decoder_chunk or 'automatic'}, item noise from {args.generator} generators. "
             "s / image: the median iteration times the config's iterations. Peak memory: allocated by torch during the flow, "
             "above the weights.", "", GRID_HEADER, *[_grid_row(r) for r in rows], ""]
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text("\n".join(lines))
    print(f"wrote {args.output}")
    if args.plot:
        grid_plot(rows, Path(args.plot), f"DWGF on {where}: seconds per image vs peak memory ({args.torch_dtype} weights)")
        print(f"wrote {args.plot}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--sizes", type=int, nargs="*", default=[1, 4, 16, 32], help="B x N for the shipped prior (none: skip)")
    parser.add_argument("--iters", type=int, default=10, help="timed iterations per round")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--sd", type=sd_spec, nargs="*", default=[sd_spec("512:1,4")], metavar="RES:BN[,BN...]",
                        help="SD-2.1-base layout runs: image size in pixels and the B x N to time at it (default 512:1,4)")
    parser.add_argument("--sd-iters", type=int, default=2)
    parser.add_argument("--skip-sd", action="store_true")
    parser.add_argument("--family", type=family_spec, nargs="*", default=[], metavar="FAMILY:RES:BN[,BN...]",
                        help="layout runs (sd15, sdxl, sd3, flux), each with every --guidance: e.g. sd15:512:1 sdxl:1024:1 sd3:512:1")
    parser.add_argument("--flow-decoder", action="store_true",
                        help="time each --family layout also with a TAESD-layout AutoencoderTiny as its flow decoder (same weights otherwise)")
    parser.add_argument("--guidance", type=float, nargs="+", default=[1.0, 3.0],
                        help="guidance scales for --family (1: one network row per particle; else two)")
    parser.add_argument("--compare-sizes", type=int, nargs="*", default=[4, 16], help="B x N for the reference comparator")
    parser.add_argument("--precision", choices=["32", "bf16", "16"], default="32", help="the UNet's precision (autocast)")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--changes", nargs="*", default=["vae_channels_last", "unet_channels_last", "compile"], choices=list(CHANGES),
                        help="optional changes timed against the iteration without them on the shipped prior "
                             "(default: all but bf16_unet; none: skip)")
    parser.add_argument("--change-sizes", type=int, nargs="*", default=[16, 32], help="B x N for the changes")
    parser.add_argument("--output", default=str(Path(__file__).resolve().parent / "results" / "flow_speed.md"),
                        help="the Markdown table (default: benchmarks/results/flow_speed.md)")
    parser.add_argument("--grid", type=grid_spec, nargs="+", default=None, metavar="FAMILY:RES",
                        help=f"only the table of seconds per image and peak memory for these layouts ({', '.join(GRID_FAMILIES)}), "
                             "each with every --grid-particles, and with a TAESD flow decoder with --flow-decoder")
    parser.add_argument("--grid-particles", type=int, nargs="+", default=[1, 4, 8])
    parser.add_argument("--plot", default=None, help="with --grid: a PNG of seconds per image against peak memory")
    parser.add_argument("--torch-dtype", choices=["float32", "bfloat16", "float16"], default="float32", help="with --grid: the weights' dtype")
    parser.add_argument("--decoder-chunk", type=int, default=None, help="with --grid: the flow's decoder_chunk (default: automatic)")
    parser.add_argument("--generator", choices=["cpu", "device"], default="cpu", help="with --grid: where the items' generators live")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    unet_dtype = {"32": None, "bf16": torch.bfloat16, "16": torch.float16}[args.precision]
    if args.grid:
        rows = measure_grid(args.grid, args.grid_particles, args.flow_decoder, device, unet_dtype, getattr(torch, args.torch_dtype),
                            args.sd_iters, 1, args.decoder_chunk, args.generator)
        write_grid(args, device, rows)
        return

    header = [HEADER, "|---|---|---|---|---|---|---|---|---|"]
    if args.sizes or args.compare_sizes or not args.skip_sd:
        print("\n".join(header), flush=True)
    rows: list[dict] = []
    shipped = UnconditionalLatentPrior("dwgf:mnist-ldm").to(device) if args.sizes or args.compare_sizes else None
    measure("dwgf:mnist-ldm", shipped, args.sizes, args.iters, args.warmup, args.rounds, False, device, 200, rows, unet_dtype)

    # the comparator (its iteration has the encoder term): dwgf with the same term, then the reference
    diff, compare = float("nan"), []
    if args.compare_sizes:
        diff = check_reference(shipped, device)
        if not diff < 1e-9:
            raise SystemExit(f"flow_speed.py: the reference-faithful iteration and dwgf_flow disagree (largest latent difference "
                f"{diff:.2e}); fix before timing")
        print(f"reference vs dwgf: largest latent difference after 3 iterations {diff:.2e}", flush=True)
    for bn in args.compare_sizes:
        before = len(rows)
        measure("dwgf:mnist-ldm", shipped, [bn], args.iters, args.warmup, 1, True, device, 200, rows)
        b, n = layout(bn)
        op, y, params = problem(shipped, b, device)
        ref = statistics.median(time_reference(shipped, op, y, params, n, args.iters, args.warmup))
        compare.append(dict(bn=bn, b=b, n=n, ours=rows[before]["iteration"], ref=ref))
        print(f"reference-faithful B x N {bn}: {ref * 1e3:.1f} ms/iteration, dwgf {rows[before]['iteration'] * 1e3:.1f} ms: "
              f"{ref / rows[before]['iteration']:.2f}x", flush=True)

    changes = measure_changes(args.changes, args.change_sizes, args.iters, args.warmup, args.rounds, device, unet_dtype)

    for res, sizes in [] if args.skip_sd else args.sd:
        sd = sd_layout_prior(res).to(device)
        measure(f"SD-2.1-base layout {res}px", sd, sizes, args.sd_iters, 1, 1, False, device, 998, rows, unet_dtype)
        del sd

    family_rows: list[dict] = []
    for name, res, sizes in args.family:
        label, build = FAMILY[name]
        prior = build(res, guidance_scale=args.guidance[0]).to(device)
        tiny = taesd_layout(prior.latent_shape[0]).to(device) if args.flow_decoder else None
        for g in args.guidance:
            prior.guidance_scale = float(g)  # the same weights with and without guidance
            for with_tiny in (False, True) if tiny is not None else (False,):
                prior.set_flow_decoder(tiny if with_tiny else None)
                what = f"{label} {res}px, guidance {g:g}" + (", flow decoder TAESD" if with_tiny else "")
                measure(what, prior, sizes, args.sd_iters, 1, 1, False, device, 998, family_rows, unet_dtype)
        del prior, tiny
        gc.collect()

    if family_rows and not rows and not compare and not changes:  # a family-only run: its section of the file
        write_family_section(args, device, family_rows)
        return
    write(args, device, rows + family_rows, compare, diff, changes)


FAMILY_TITLE = "## Layouts: guidance, SDXL, SD3, FLUX and the flow decoder"
OLD_FAMILY_TITLES = ("## Stable Diffusion family: guidance and SDXL",)


def write_family_section(args, device, rows) -> None:
    """Replaces (or adds) the family section of ``--output``, keeping the rest of the file."""
    cpu = platform.processor() or platform.machine()
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({os.cpu_count()} cores, {torch.get_num_threads()} threads, {cpu})"
    section = [
        FAMILY_TITLE,
        "",
        f"`python benchmarks/flow_speed.py {' '.join(sys.argv[1:])}` on {where}, torch {torch.__version__}, {datetime.date.today()}.",
        "",
        "Published layouts with random weights (SD 1.5: 860 M-parameter UNet; SDXL base: 2.6 B; SD 3.5 medium: 2.5 B MMDiT;",
        f"FLUX.1-dev at full width but {FLUX_DEPTH[0]}+{FLUX_DEPTH[1]} of its 19+38 blocks, which makes its ratio an upper bound),",
        "one DWGF iteration",
        "against its floor, as above. With guidance g != 1 the floor's UNet call is the guided one (two rows per",
        "particle in one call), as it must be made: the ratio says what the flow adds, the UNet part what guidance",
        "costs. The same weights are timed with each guidance scale. Where a whole iteration does not fit, each call",
        "is timed alone (\"alone\"). On a CPU \"out of memory\" is a failed allocation: these runs were made under",
        "`ulimit -v 23500000` (22.4 GiB of the machine's 24), which turns the system's OOM killer into an error.",
        "Rows \"flow decoder TAESD\" (`--flow-decoder`) are the same prior with a TAESD-layout AutoencoderTiny (random",
        "weights) as the flow's decoder: the decode and its vector-Jacobian product of every iteration (and the floor's)",
        "are the tiny decoder's. What it does to quality is not measured here (no trained weights).",
        "",
        HEADER,
        "|---|---|---|---|---|---|---|---|---|",
        *[_row(r) for r in rows],
        "",
    ]
    path = Path(args.output)
    text = path.read_text() if path.is_file() else ""
    for old_title in OLD_FAMILY_TITLES:
        text = text.replace(old_title + "\n", FAMILY_TITLE + "\n")
    if FAMILY_TITLE in text:
        start = text.index(FAMILY_TITLE)
        nxt = text.find("\n## ", start + len(FAMILY_TITLE))
        old = text[start : None if nxt < 0 else nxt].splitlines()
        # rows of other layouts and sizes from earlier runs stay, with their commands
        labels = {r["prior"] for r in rows}
        kept = [line for line in old if line.startswith("| ") and not line.startswith("| prior ")
                and line.split(" | ")[0][2:] not in labels]
        commands = [line for line in old if line.startswith("`python benchmarks/flow_speed.py")]
        first_row = section.index("|---|---|---|---|---|---|---|---|---|") + 1
        section[first_row:first_row] = kept
        runs = [c for c in commands if c != section[2]] + [section[2]]
        section[2:3] = sum(([c, ""] for c in runs), [])[:-1]
        text = text[:start] + "\n".join(section) + ("" if nxt < 0 else text[nxt:])
    else:
        text = text.rstrip("\n") + ("\n\n" if text else "") + "\n".join(section)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text if text.endswith("\n") else text + "\n")
    print(f"wrote the family section of {args.output}")


def write(args, device, rows, compare, diff, changes=()) -> None:
    cpu = platform.processor() or platform.machine()
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({os.cpu_count()} cores, {torch.get_num_threads()} threads, {cpu})"
    lines = [
        "# DWGF flow speed",
        "",
        f"`python benchmarks/flow_speed.py {' '.join(sys.argv[1:])}` on {where}, torch {torch.__version__}, "
        f"{datetime.date.today()}.",
        "",
    ]
    if rows:
        lines += [
            "One flow iteration against its floor: the network calls an iteration cannot avoid (UNet forward without",
            "gradient + decoder forward and one vector-Jacobian product [+ encoder and decoder forward with the encoder",
            "term]), timed alone right after each iteration on that iteration's tensors. iteration and floor: medians",
            "over the timed iterations; ratio: of the medians; quartiles: of the per-iteration ratios. Box inpainting,",
            f"KL prior weight 0.25, UNet in {UNET_PRECISION_NAMES[args.precision]}. images/min at K iterations per image. Peak memory",
            "during one iteration, from a run without the floor calls: above the level before the run, and in all (CPU: the",
            "process's resident set size, which includes the runtime and every model loaded so far; GPU: allocated by torch).",
            "",
            HEADER,
            "|---|---|---|---|---|---|---|---|---|",
            *[_row(r) for r in rows],
            "",
        ]
    if compare:
        lines += [
            "## Against the reference-faithful iteration",
            "",
            "The same iteration computed as the authors' code does (autoencoder weights requiring gradients,",
            "kernel score through autograd, `loss.backward()`, one measurement per call), with the encoder term, at",
            "equal particles. The two give the same particles: largest latent difference after 3 iterations from",
            f"the same state and random numbers, {diff:.1e} (in float64; in float32 rounding differences, amplified by",
            "Adam's normalised first steps, reach about 1e-4).",
            "",
            "| B x N (items x particles) | dwgf ms/iteration | reference ms/iteration | speedup |",
            "|---|---|---|---|",
            *[f"| {c['bn']} ({c['b']}x{c['n']}) | {c['ours'] * 1e3:.1f} | {c['ref'] * 1e3:.1f} | **{c['ref'] / c['ours']:.2f}x** |" for c in compare],
            "",
        ]
    if changes:
        lines += [
            "## Optional changes",
            "",
            "Flow iteration time on the shipped prior with and without one change, in alternating rounds:",
            *textwrap.wrap("; ".join(f"{name}: {CHANGES[name].doc}" for name in dict.fromkeys(c["change"] for c in changes)) + ".", 104),
            "",
            "| change | B x N (items x particles) | without ms/iteration | with ms/iteration | speedup | per-round speedups, min-max |",
            "|---|---|---|---|---|---|",
            *[f"| {c['change']} | {c['bn']} ({c['b']}x{c['n']}) | {c['plain'] * 1e3:.1f} | {c['changed'] * 1e3:.1f} | "
              f"**{c['plain'] / c['changed']:.2f}x** | {c['rounds'][0]:.2f}-{c['rounds'][1]:.2f} |" for c in changes],
            "",
        ]
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text("\n".join(lines))
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
