"""Figures of the shipped MNIST prior: autoencoder reconstruction PSNR and unconditional samples.

    python benchmarks/mnist_prior.py [--prior dwgf:mnist-ldm] [--grid dwgf/assets/mnist-ldm/samples.png]

Prints the reconstruction PSNR (encoder mean -> decoder, on [0, 1] images) on the 250 report digits
(and the 250 tune digits), and writes an 8x8 grid of DDIM samples (50 steps, eta 0, seed 0).
"""

from __future__ import annotations

import argparse
import time

import torch
from torchmetrics.functional.image import peak_signal_noise_ratio

from dwgf.priors import UnconditionalLatentPrior
from dwgf.sampling import ddim_sample
from dwgf.training.mnist import mnist_split
from dwgf.outputs import atomic_write_bytes
from dwgf.rendering import png_bytes


def grid(images: torch.Tensor, rows: int) -> torch.Tensor:
    """``N x C x H x W`` images tiled into one ``C x rows*H x cols*W`` image (1-pixel gaps)."""
    n, c, h, w = images.shape
    cols = (n + rows - 1) // rows
    out = torch.zeros(c, rows * (h + 1) - 1, cols * (w + 1) - 1)
    for i, img in enumerate(images):
        r, k = divmod(i, cols)
        out[:, r * (h + 1) : r * (h + 1) + h, k * (w + 1) : k * (w + 1) + w] = img
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prior", default="dwgf:mnist-ldm")
    parser.add_argument("--grid", default=None, help="PNG path for the 8x8 DDIM sample grid")
    parser.add_argument("--steps", type=int, default=50)
    args = parser.parse_args()
    prior = UnconditionalLatentPrior(args.prior)
    for split in ("report", "tune"):
        x, _, _ = mnist_split(split)
        with torch.no_grad():
            rec = prior.decode(prior.encode(x))
        p = peak_signal_noise_ratio((rec.clamp(-1, 1) + 1) / 2, (x + 1) / 2, data_range=1.0, reduction="none", dim=(1, 2, 3))
        print(f"autoencoder reconstruction PSNR on the {len(x)} {split} digits: {p.mean():.2f} dB (min {p.min():.2f})")
    if args.grid:
        start = time.perf_counter()
        samples = ddim_sample(prior, 64, args.steps, generator=torch.Generator().manual_seed(0))
        print(f"64 DDIM samples ({args.steps} steps) in {time.perf_counter() - start:.1f} s")
        atomic_write_bytes(__import__("pathlib").Path(args.grid), png_bytes(grid((samples.clamp(-1, 1) + 1) / 2, 8)))
        print(f"wrote {args.grid}")


if __name__ == "__main__":
    main()
