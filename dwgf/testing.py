"""Tiny random priors for tests and offline smoke runs (no download, a second to build).

``make_tiny_sd_prior(path)`` writes a Stable-Diffusion-layout diffusers folder (AutoencoderKL,
UNet2DConditionModel, CLIP text encoder and tokenizer, scheduler) and
``make_tiny_unconditional_prior(path)`` an unconditional latent diffusion folder (AutoencoderKL or
VQModel + UNet2DModel + scheduler); ``make_tiny_sd3_prior`` and ``make_tiny_flux_prior`` the
rectified-flow layouts (SD3Transformer2DModel / FluxTransformer2DModel, CLIP and T5 text encoders,
16-channel autoencoders), ``make_tiny_flow_decoder`` an AutoencoderTiny for ``flow_decoder``.
Weights are random: the numbers they produce mean nothing, but every code path, shape and file
layout is the real one.

    python -m dwgf.testing tiny-priors/        # sd15/, sd21-v/, sdxl/, sd3/, flux-dev/ (a second or two each)
    python -m dwgf.testing tiny-priors/ --layouts flux-schnell taesd taesd3
    python -m dwgf.testing sd /tmp/tiny-sd     # one SD 1.x folder
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import torch


def _byte_chars() -> list[str]:
    """The 256 printable characters that byte-level BPE (GPT-2, CLIP) uses for the 256 bytes."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    chars, extra = {}, 0
    for b in range(256):
        if b in keep:
            chars[b] = chr(b)
        else:
            chars[b] = chr(256 + extra)
            extra += 1
    return [chars[b] for b in range(256)]


def _clip_tokenizer(folder: Path):
    """A byte-level CLIP BPE tokenizer with a minimal vocabulary (the 256 bytes, no merges)."""
    import inspect

    from transformers import CLIPTokenizer

    folder.mkdir(parents=True, exist_ok=True)
    chars = _byte_chars()
    tokens = chars + [c + "</w>" for c in chars] + ["<|startoftext|>", "<|endoftext|>"]
    vocab = {t: i for i, t in enumerate(tokens)}
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    if "vocab_file" in inspect.signature(CLIPTokenizer.__init__).parameters:  # transformers < 5
        tok = CLIPTokenizer(vocab_file=str(folder / "vocab.json"), merges_file=str(folder / "merges.txt"), model_max_length=16)
    else:
        tok = CLIPTokenizer(vocab=vocab, merges=[], model_max_length=16)
    return tok, len(tokens)


def _scheduler(prediction_type: str = "epsilon"):
    from diffusers import DDIMScheduler

    return DDIMScheduler(
        num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
        clip_sample=False, set_alpha_to_one=False, steps_offset=1, prediction_type=prediction_type,
    )


def _vae(channels: int, latent_channels: int = 4, **extra):
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        in_channels=channels, out_channels=channels,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        block_out_channels=(8, 16), layers_per_block=1, latent_channels=latent_channels,
        norm_num_groups=4, sample_size=32, **extra,
    )


def _clip_text(vocab: int, hidden: int = 16, act: str = "quick_gelu", projection: Optional[int] = None, layers: int = 1):
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    extra = {"projection_dim": projection} if projection else {}
    cfg = CLIPTextConfig(
        vocab_size=vocab, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers, num_attention_heads=2,
        max_position_embeddings=16, bos_token_id=vocab - 2, eos_token_id=vocab - 1, pad_token_id=vocab - 1, hidden_act=act, **extra,
    )
    return CLIPTextModelWithProjection(cfg) if projection else CLIPTextModel(cfg)


def make_tiny_sd_prior(path: str | Path, image_size: int = 32, prediction_type: str = "epsilon", seed: int = 0,
                       version: str = "1") -> Path:
    """Writes a tiny random Stable-Diffusion-layout folder for ``image_size`` RGB images (latents 4 x s/2 x s/2).

    ``version`` ``"1"`` has SD 1.x's conventions (a UNet with convolutional attention projections,
    CLIP's quick-GELU text encoder); ``"2"`` SD 2.x's (linear projections, per-block head counts,
    GELU text encoder). ``prediction_type`` ``"v_prediction"`` is SD 2.1-768's. Images are accepted
    at multiples of 4 px (an autoencoder factor 2, one UNet halving).
    """
    from diffusers import StableDiffusionPipeline, UNet2DConditionModel

    path = Path(path)
    torch.manual_seed(seed)
    tokenizer, vocab = _clip_tokenizer(path / "_tokenizer_src")
    text_encoder = _clip_text(vocab, 16, "gelu" if version == "2" else "quick_gelu")
    unet = UNet2DConditionModel(
        sample_size=image_size // 2, in_channels=4, out_channels=4, layers_per_block=1,
        block_out_channels=(16, 32), down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=16,
        attention_head_dim=(2, 4) if version == "2" else 4, use_linear_projection=version == "2", norm_num_groups=8,
    )
    pipe = StableDiffusionPipeline(
        vae=_vae(3), text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=_scheduler(prediction_type),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )
    pipe.save_pretrained(path, safe_serialization=True)
    _remove_tree(path / "_tokenizer_src")
    return path


def make_tiny_sdxl_prior(path: str | Path, image_size: int = 32, seed: int = 0) -> Path:
    """Writes a tiny random SDXL-layout folder: ``vae/``, a ``text_time`` UNet, ``text_encoder/`` (CLIP)
    and ``text_encoder_2/`` (CLIP with projection) with their tokenizers, ``scheduler/``, and
    ``model_index.json`` with ``force_zeros_for_empty_prompt`` (as SDXL base 1.0)."""
    from diffusers import StableDiffusionXLPipeline, UNet2DConditionModel

    path = Path(path)
    torch.manual_seed(seed)
    tokenizer, vocab = _clip_tokenizer(path / "_tokenizer_src")
    tokenizer_2, _ = _clip_tokenizer(path / "_tokenizer_src_2")
    text_encoder = _clip_text(vocab, 16, layers=2)  # SDXL reads the penultimate hidden states
    text_encoder_2 = _clip_text(vocab, 16, "gelu", projection=12, layers=2)
    unet = UNet2DConditionModel(
        sample_size=image_size // 2, in_channels=4, out_channels=4, layers_per_block=1,
        block_out_channels=(16, 32), down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), attention_head_dim=(2, 4), use_linear_projection=True,
        addition_embed_type="text_time", addition_time_embed_dim=4, transformer_layers_per_block=(1, 2),
        projection_class_embeddings_input_dim=6 * 4 + 12, cross_attention_dim=32, norm_num_groups=8,
    )
    vae = _vae(3)
    vae.register_to_config(force_upcast=True, scaling_factor=0.13025)
    pipe = StableDiffusionXLPipeline(
        vae=vae, text_encoder=text_encoder, text_encoder_2=text_encoder_2, tokenizer=tokenizer, tokenizer_2=tokenizer_2,
        unet=unet, scheduler=_scheduler(), force_zeros_for_empty_prompt=True,
    )
    pipe.save_pretrained(path, safe_serialization=True)
    _remove_tree(path / "_tokenizer_src")
    _remove_tree(path / "_tokenizer_src_2")
    return path


def _t5_tokenizer(model_max_length: int = 512):
    """A T5 (unigram) tokenizer with a minimal vocabulary: the special tokens and printable ASCII."""
    from transformers import T5Tokenizer

    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("\u2581", -1.0)]
    pieces += [(chr(c), -2.0) for c in range(33, 127)] + [("\u2581" + chr(c), -1.5) for c in range(97, 123)]
    return T5Tokenizer(vocab=pieces, extra_ids=0, model_max_length=model_max_length), len(pieces)


def _t5_text(vocab: int, hidden: int = 32):
    from transformers import T5Config, T5EncoderModel

    cfg = T5Config(vocab_size=vocab, d_model=hidden, d_kv=8, d_ff=2 * hidden, num_layers=1, num_heads=2,
                   relative_attention_num_buckets=8, pad_token_id=0, eos_token_id=1, decoder_start_token_id=0)
    return T5EncoderModel(cfg)


def _flow_vae(scaling_factor: float, shift_factor: float, quant_conv: bool = True):
    """A 16-channel autoencoder with SD3's / FLUX's scale and shift (FLUX's has no quant convolutions)."""
    return _vae(3, latent_channels=16, scaling_factor=scaling_factor, shift_factor=shift_factor, use_quant_conv=quant_conv,
                use_post_quant_conv=quant_conv)


def make_tiny_sd3_prior(path: str | Path, image_size: int = 32, seed: int = 0, t5: bool = True) -> Path:
    """Writes a tiny random Stable-Diffusion-3-layout folder: a 16-channel ``vae/`` with ``shift_factor``,
    ``transformer/`` (SD3Transformer2DModel, patch 2), CLIP-L and bigG stand-ins with projection,
    T5 (``t5=False``: none, as SD3 loaded without T5) and a shift-3 flow-matching ``scheduler/``."""
    from diffusers import FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel, StableDiffusion3Pipeline

    path = Path(path)
    torch.manual_seed(seed)
    tokenizer, vocab = _clip_tokenizer(path / "_tokenizer_src")
    tokenizer_2, _ = _clip_tokenizer(path / "_tokenizer_src_2")
    tokenizer_3, vocab_3 = _t5_tokenizer(64)
    transformer = SD3Transformer2DModel(
        sample_size=image_size // 2, patch_size=2, in_channels=16, num_layers=2, attention_head_dim=8, num_attention_heads=2,
        joint_attention_dim=32, caption_projection_dim=16, pooled_projection_dim=32, out_channels=16, pos_embed_max_size=32,
    )
    pipe = StableDiffusion3Pipeline(
        transformer=transformer, scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0), vae=_flow_vae(1.5305, 0.0609),
        text_encoder=_clip_text(vocab, 16, projection=16, layers=2), tokenizer=tokenizer,
        text_encoder_2=_clip_text(vocab, 16, "gelu", projection=16, layers=2), tokenizer_2=tokenizer_2,
        text_encoder_3=_t5_text(vocab_3) if t5 else None, tokenizer_3=tokenizer_3 if t5 else None,
    )
    pipe.save_pretrained(path, safe_serialization=True)
    _remove_tree(path / "_tokenizer_src")
    _remove_tree(path / "_tokenizer_src_2")
    return path


def make_tiny_flux_prior(path: str | Path, seed: int = 0, guidance: bool = True) -> Path:
    """Writes a tiny random FLUX.1-layout folder: a 16-channel ``vae/`` without quant convolutions,
    ``transformer/`` (FluxTransformer2DModel over packed 2x2 patches; ``guidance=True``: dev's guidance
    embedding and resolution-dependent shift, ``False``: schnell's, shift 1), CLIP-L and T5."""
    from diffusers import FluxPipeline, FluxTransformer2DModel, FlowMatchEulerDiscreteScheduler

    path = Path(path)
    torch.manual_seed(seed)
    tokenizer, vocab = _clip_tokenizer(path / "_tokenizer_src")
    tokenizer_2, vocab_2 = _t5_tokenizer(64)
    transformer = FluxTransformer2DModel(
        patch_size=1, in_channels=64, num_layers=1, num_single_layers=1, attention_head_dim=16, num_attention_heads=2,
        joint_attention_dim=32, pooled_projection_dim=16, guidance_embeds=guidance, axes_dims_rope=(4, 4, 8),
    )
    if guidance:
        scheduler = FlowMatchEulerDiscreteScheduler(shift=3.0, use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15,
                                                    base_image_seq_len=256, max_image_seq_len=4096)
    else:
        scheduler = FlowMatchEulerDiscreteScheduler(shift=1.0)
    pipe = FluxPipeline(
        transformer=transformer, scheduler=scheduler, vae=_flow_vae(0.3611, 0.1159, quant_conv=False),
        text_encoder=_clip_text(vocab, 16, layers=2), tokenizer=tokenizer, text_encoder_2=_t5_text(vocab_2), tokenizer_2=tokenizer_2,
    )
    pipe.save_pretrained(path, safe_serialization=True)
    _remove_tree(path / "_tokenizer_src")
    return path


def make_tiny_flow_decoder(path: str | Path, latent_channels: int = 4, seed: int = 0, scaling_factor: float = 1.0,
                           shift_factor: float = 0.0) -> Path:
    """Writes a tiny random ``AutoencoderTiny`` (TAESD layout, 2x) folder for the tiny priors' latents
    (``latent_channels`` 4 for SD/SDXL, 16 for SD3/FLUX), usable as ``flow_decoder``."""
    from diffusers import AutoencoderTiny

    path = Path(path)
    torch.manual_seed(seed)
    tiny = AutoencoderTiny(
        in_channels=3, out_channels=3, encoder_block_out_channels=(8, 8), decoder_block_out_channels=(8, 8),
        num_encoder_blocks=(1, 1), num_decoder_blocks=(1, 1), latent_channels=latent_channels, upsampling_scaling_factor=2,
        scaling_factor=scaling_factor, shift_factor=shift_factor,
    )
    tiny.save_pretrained(path, safe_serialization=True)
    return path


def _remove_tree(folder: Path) -> None:
    for f in folder.iterdir():
        f.unlink()
    folder.rmdir()


def make_tiny_unconditional_prior(path: str | Path, image_size: int = 32, channels: int = 1, vq: bool = False, seed: int = 0) -> Path:
    """Writes a tiny random unconditional latent diffusion folder (``vae/`` or ``vqvae/`` + ``unet/``)."""
    from diffusers import UNet2DModel, VQModel

    path = Path(path)
    torch.manual_seed(seed)
    if vq:
        ae = VQModel(
            in_channels=channels, out_channels=channels, down_block_types=("DownEncoderBlock2D",) * 2,
            up_block_types=("UpDecoderBlock2D",) * 2, block_out_channels=(8, 16), layers_per_block=1,
            latent_channels=4, num_vq_embeddings=64, norm_num_groups=4, sample_size=image_size,
        )
        ae.save_pretrained(path / "vqvae", safe_serialization=True)
    else:
        ae = _vae(channels)
        ae.register_to_config(scaling_factor=1.0)
        ae.save_pretrained(path / "vae", safe_serialization=True)
    unet = UNet2DModel(
        sample_size=image_size // 2, in_channels=4, out_channels=4, layers_per_block=1,
        block_out_channels=(16, 32), down_block_types=("DownBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "UpBlock2D"), norm_num_groups=8, attention_head_dim=4,
    )
    unet.save_pretrained(path / "unet", safe_serialization=True)
    _scheduler().save_pretrained(path / "scheduler")
    components = {"unet": ["diffusers", "UNet2DModel"], "scheduler": ["diffusers", "DDIMScheduler"]}
    components["vqvae" if vq else "vae"] = ["diffusers", "VQModel" if vq else "AutoencoderKL"]
    (path / "model_index.json").write_text(json.dumps({"_class_name": "LDMPipeline", **components}, indent=2))
    return path


def make_images(
    folder: str | Path, count: int = 3, sizes: tuple[tuple[int, int], ...] = ((40, 48), (32, 32), (64, 50)), mode: str = "RGB", seed: int = 0
) -> Path:
    """Writes ``count`` smooth random PNG images of various sizes (``(height, width)``) to ``folder``."""
    import numpy as np
    from PIL import Image

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(count):
        h, w = sizes[i % len(sizes)]
        yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
        chans = [np.sin(6 * (a * xx + b * yy) + c) for a, b, c in rng.uniform(-1, 1, (3, 3))]
        arr = ((np.stack(chans, -1) + 1) * 127.5).astype(np.uint8)
        img = Image.fromarray(arr, "RGB")
        (img.convert(mode) if mode != "RGB" else img).save(folder / f"img{i}.png")
    return folder


LAYOUTS = {
    "sd15": ("SD 1.x (epsilon)", lambda out: make_tiny_sd_prior(out)),
    "sd21-v": ("SD 2.x v-prediction (as SD 2.1-768)", lambda out: make_tiny_sd_prior(out, prediction_type="v_prediction", version="2")),
    "sdxl": ("SDXL (two text encoders)", lambda out: make_tiny_sdxl_prior(out)),
    "ldm": ("unconditional latent diffusion", lambda out: make_tiny_unconditional_prior(out)),
    "sd3": ("Stable Diffusion 3 (rectified flow, three text encoders)", lambda out: make_tiny_sd3_prior(out)),
    "flux-dev": ("FLUX.1-dev (packed latents, guidance embedding)", lambda out: make_tiny_flux_prior(out)),
    "flux-schnell": ("FLUX.1-schnell (no guidance embedding)", lambda out: make_tiny_flux_prior(out, guidance=False)),
    "taesd": ("an AutoencoderTiny flow decoder for 4-channel latents", lambda out: make_tiny_flow_decoder(out)),
    "taesd3": ("an AutoencoderTiny flow decoder for 16-channel latents", lambda out: make_tiny_flow_decoder(out, 16, scaling_factor=1.5305,
                                                                                                          shift_factor=0.0609)),
}


def main(argv: Optional[list[str]] = None) -> int:
    """``python -m dwgf.testing [FOLDER] [--layouts ...]``: a tiny random folder of each layout under FOLDER."""
    import argparse
    import time

    parser = argparse.ArgumentParser(prog="python -m dwgf.testing", description="Writes tiny random diffusers folders of each "
                                     "layout dwgf loads (random weights: for tests and offline smoke runs, not for results).")
    parser.add_argument("folder", nargs="?", default="tiny-priors", help="where to write them (default: tiny-priors/)")
    parser.add_argument("--layouts", nargs="+", choices=sorted(LAYOUTS), default=["sd15", "sd21-v", "sdxl", "sd3", "flux-dev"],
                        help="which layouts (default: sd15 sd21-v sdxl sd3 flux-dev)")
    args = parser.parse_args(argv)
    for name in args.layouts:
        what, build = LAYOUTS[name]
        out = Path(args.folder) / name
        if out.exists() and (not out.is_dir() or any(out.iterdir())):  # never written over
            print(f"{out}: exists and is not an empty folder; left as it is", file=sys.stderr)
            continue
        start = time.perf_counter()
        build(out)
        print(f"{out}  ({what}, {time.perf_counter() - start:.1f} s)")
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] in ("sd", "ldm", "unconditional"):  # the older form: KIND FOLDER
        (make_tiny_sd_prior if sys.argv[1] == "sd" else make_tiny_unconditional_prior)(sys.argv[2])
        print(sys.argv[2])
    else:
        raise SystemExit(main())
