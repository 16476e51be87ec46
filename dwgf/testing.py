"""Tiny random priors for tests and offline smoke runs (no download, a second to build).

``make_tiny_sd_prior(path)`` writes a Stable-Diffusion-layout diffusers folder (AutoencoderKL,
UNet2DConditionModel, CLIP text encoder and tokenizer, scheduler) and
``make_tiny_unconditional_prior(path)`` an unconditional latent diffusion folder (AutoencoderKL or
VQModel + UNet2DModel + scheduler). Weights are random: the numbers they produce mean nothing,
but every code path, shape and file layout is the real one.

    python -m dwgf.testing sd /tmp/tiny-sd
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

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


def make_tiny_sd_prior(path: str | Path, image_size: int = 32, prediction_type: str = "epsilon", seed: int = 0) -> Path:
    """Writes a tiny random Stable-Diffusion-layout folder for ``image_size`` RGB images (latents 4 x s/2 x s/2)."""
    from diffusers import StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    path = Path(path)
    torch.manual_seed(seed)
    tokenizer, vocab = _clip_tokenizer(path / "_tokenizer_src")
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=vocab, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
        max_position_embeddings=16, bos_token_id=vocab - 2, eos_token_id=vocab - 1, pad_token_id=vocab - 1,
    ))
    unet = UNet2DConditionModel(
        sample_size=image_size // 2, in_channels=4, out_channels=4, layers_per_block=1,
        block_out_channels=(16, 32), down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=16,
        attention_head_dim=4, norm_num_groups=8,
    )
    pipe = StableDiffusionPipeline(
        vae=_vae(3), text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=_scheduler(prediction_type),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )
    pipe.save_pretrained(path, safe_serialization=True)
    for f in (path / "_tokenizer_src").iterdir():
        f.unlink()
    (path / "_tokenizer_src").rmdir()
    return path


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


if __name__ == "__main__":
    kind, out = sys.argv[1], sys.argv[2]
    if kind == "sd":
        make_tiny_sd_prior(out)
    elif kind in ("ldm", "unconditional"):
        make_tiny_unconditional_prior(out)
    else:
        raise SystemExit("usage: python -m dwgf.testing {sd|ldm} FOLDER")
    print(out)
