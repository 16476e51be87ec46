"""Copies a trained prior folder into the package, checked: ``python -m dwgf.training.export SRC DST``.

Only the configs and safetensors weights are copied (``model_index.json``, ``vae/``, ``unet/``,
``scheduler/``); the result must load with :class:`dwgf.priors.UnconditionalLatentPrior` and weigh
at most ``--max-mb`` (25) megabytes.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

KEEP = ("model_index.json", "vae/config.json", "vae/diffusion_pytorch_model.safetensors", "unet/config.json",
        "unet/diffusion_pytorch_model.safetensors", "scheduler/scheduler_config.json")


def export(src: str | Path, dst: str | Path, max_mb: float = 25.0) -> float:
    """Copies the prior from ``src`` to ``dst`` and returns its size in MB (10^6 bytes)."""
    from dwgf.priors import UnconditionalLatentPrior

    src, dst = Path(src), Path(dst)
    missing = [k for k in KEEP if not (src / k).is_file()]
    if missing:
        raise SystemExit(f"export: {src} lacks {', '.join(missing)}")
    size = sum((src / k).stat().st_size for k in KEEP) / 1e6
    if size > max_mb:
        raise SystemExit(f"export: {src} weighs {size:.1f} MB, over the {max_mb} MB limit")
    if dst.exists():
        shutil.rmtree(dst)
    for k in KEEP:
        (dst / k).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src / k, dst / k)
    prior = UnconditionalLatentPrior(str(dst))
    params = sum(p.numel() for p in prior.parameters())
    print(f"exported {dst}: {size:.2f} MB, {params / 1e6:.2f}M parameters, images "
        f"{prior.image_channels}x{prior.image_size}x{prior.image_size}, latents {prior.latent_shape}")
    return size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("src", help="the trained prior folder (e.g. outputs/train/mnist_ldm/prior)")
    parser.add_argument("dst", help="where it goes in the package (e.g. dwgf/assets/mnist-ldm)")
    parser.add_argument("--max-mb", type=float, default=25.0)
    args = parser.parse_args()
    export(args.src, args.dst, args.max_mb)


if __name__ == "__main__":
    main()
