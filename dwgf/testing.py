"""Tiny random priors for tests and offline smoke runs (no download, a second to build).

``make_tiny_sd_prior(path)`` writes a Stable-Diffusion-layout diffusers folder (AutoencoderKL,
UNet2DConditionModel, CLIP text encoder and tokenizer, scheduler) and
``make_tiny_unconditional_prior(path)`` an unconditional latent diffusion folder (AutoencoderKL or
VQModel + UNet2DModel + scheduler). Weights are random: the numbers they produce mean nothing,
but every code path, shape and file layout is the real one.

    python -m dwgf.testing tiny-priors/        # sd15/, sd21-v/, sdxl/ (a second or two each)
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


def _vae(channels: int, latent_channels: int = 4):
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        in_channels=channels, out_channels=channels,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        block_out_channels=(8, 16), layers_per_block=1, latent_channels=latent_channels,
        norm_num_groups=4, sample_size=32,
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
}


def main(argv: Optional[list[str]] = None) -> int:
    """``python -m dwgf.testing [FOLDER] [--layouts ...]``: a tiny random folder of each layout under FOLDER."""
    import argparse
    import time

    parser = argparse.ArgumentParser(prog="python -m dwgf.testing", description="Writes tiny random diffusers folders of each "
                                     "layout dwgf loads (random weights: for tests and offline smoke runs, not for results).")
    parser.add_argument("folder", nargs="?", default="tiny-priors", help="where to write them (default: tiny-priors/)")
    parser.add_argument("--layouts", nargs="+", choices=sorted(LAYOUTS), default=["sd15", "sd21-v", "sdxl"],
                        help="which layouts (default: sd15 sd21-v sdxl)")
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
