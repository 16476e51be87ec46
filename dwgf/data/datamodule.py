"""MeasurementDataModule: image folders -> batches of measurements with per-item params and seeds."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
from lightning.pytorch import LightningDataModule
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from dwgf.data.images import item_names, list_images, load_image
from dwgf.errors import DWGFError
from dwgf.operators.base import ForwardOperator


def item_seeds(seed: int, index: int) -> tuple[int, int]:
    """Two independent 63-bit seeds for item ``index`` of a run seeded with ``seed``.

    The first drives the measurement (operator parameters, measurement noise), the second the
    solver (initial particles and every per-iteration draw). They depend on ``(seed, index)``
    only, never on batch composition, device count or order.
    """
    state = np.random.SeedSequence([int(seed) & 0xFFFFFFFF, int(index)]).generate_state(2, dtype=np.uint64)
    return int(state[0] >> np.uint64(1)), int(state[1] >> np.uint64(1))


class _Items(Dataset):
    def __init__(self, files: list[Path], operator: ForwardOperator, channels: int, size: int, seed: int):
        self.files, self.names = files, item_names(files)
        self.operator, self.channels, self.size, self.seed = operator, channels, size, seed

    def __len__(self) -> int:
        return len(self.files)

    def _item(self, index: int, **fields: Any) -> dict[str, Any]:
        _, flow_seed = item_seeds(self.seed, index)
        return {"name": self.names[index], "index": index, "seed": flow_seed, **fields}


class SimulatedMeasurements(_Items):
    """Ground-truth images, degraded on the fly with the item's own generator."""

    def __getitem__(self, index: int) -> dict[str, Any]:
        x = load_image(self.files[index], self.channels, (self.size, self.size))
        data_seed, _ = item_seeds(self.seed, index)
        gen = torch.Generator().manual_seed(data_seed)
        params = self.operator.sample_params(tuple(x.shape), gen)
        y = self.operator.simulate(x[None], {k: v[None] for k, v in params.items()}, gen)[0]
        return self._item(index, image=x, measurement=y, params=params)


class GivenMeasurements(_Items):
    """Measurements as images (what ``measurement.png`` holds), with optional mask files."""

    def __init__(self, files, operator, channels, size, seed, masks: Optional[Path]):
        super().__init__(files, operator, channels, size, seed)
        self.masks = masks
        self.shape = operator.measurement_shape((channels, size, size))

    def _mask(self, index: int) -> Optional[torch.Tensor]:
        if self.masks is None:
            return None
        stem = self.files[index].stem
        found = [self.masks / f"{stem}{s}" for s in (".png", ".jpg", ".jpeg")]
        found = [p for p in found if p.is_file()]
        if not found:
            raise DWGFError(f"--data.masks {str(self.masks)!r}: no mask for {self.files[index].name} (expected {stem}.png)")
        mask = load_image(found[0], 1, None)
        if tuple(mask.shape[1:]) != (self.size, self.size):
            raise DWGFError(f"{found[0]}: mask is {mask.shape[2]}x{mask.shape[1]}, expected {self.size}x{self.size} (the prior's resolution)")
        return (mask > 0).float()  # white (observed) -> 1, black (missing) -> 0

    def __getitem__(self, index: int) -> dict[str, Any]:
        img = load_image(self.files[index], self.channels, self.shape[1:], Image.BICUBIC)
        mask = self._mask(index)
        data_seed, _ = item_seeds(self.seed, index)
        if mask is not None:
            params = self.operator.params_from_mask(mask)
        else:
            params = self.operator.sample_params((self.channels, self.size, self.size), torch.Generator().manual_seed(data_seed))
        y = self.operator.from_image(img[None], {k: v[None] for k, v in params.items()})[0]
        return self._item(index, measurement=y, params=params)


class MeasurementDataModule(LightningDataModule):
    """Batches of measurements for prediction, simulated from images or given directly.

    Simulated mode (``images``): each ground-truth image is read, converted to the prior's channel
    count (RGB <-> grayscale), resized to cover the prior's resolution and center-cropped, then
    degraded by ``operator`` with parameters and noise from the item's own generator. Metrics are
    computed against it.

    Measurement-only mode (``measurements``): each file is a degraded image as
    ``measurement.png`` shows it (for super-resolution the low-resolution image); with ``masks``,
    a mask image of the same name (white = observed) gives an inpainting operator's mask,
    otherwise the operator draws its parameters as in simulated mode. No metrics are computed.

    Each item gets a seed from ``(seed, index)`` (see :func:`item_seeds`).

    Args:
        operator: the forward operator ``A``, shared with the solver.
        images: folder of ground-truth png/jpg images (``--data.images``).
        measurements: folder of measurement images (instead of ``images``).
        masks: folder of mask images for ``measurements`` (inpainting).
        image_size: side of the images; ``None`` (default): the prior's resolution.
        channels: image channels; ``None`` (default): the prior's.
        batch_size: items per batch. Default 1.
        num_workers: data loader workers. Default 0.
        seed: run seed; ``None``: ``--seed_everything`` (the CLI fills it in), else 0.
    """

    def __init__(
        self,
        operator: ForwardOperator,
        images: Optional[str] = None,
        measurements: Optional[str] = None,
        masks: Optional[str] = None,
        image_size: Optional[int] = None,
        channels: Optional[int] = None,
        batch_size: int = 1,
        num_workers: int = 0,
        seed: Optional[int] = None,
    ):
        super().__init__()
        if images is not None and measurements is not None:
            raise DWGFError("give either --data.images (ground truth to degrade) or --data.measurements (degraded images), not both")
        if masks is not None and measurements is None:
            raise DWGFError("--data.masks goes with --data.measurements (with --data.images the operator draws the mask)")
        if batch_size < 1:
            raise DWGFError(f"--data.batch_size must be >= 1, got {batch_size}")
        if num_workers < 0:
            raise DWGFError(f"--data.num_workers must be >= 0, got {num_workers}")
        self.operator = operator
        self.images, self.measurements, self.masks = images, measurements, masks
        self.image_size, self.channels = image_size, channels
        self.batch_size, self.num_workers = int(batch_size), int(num_workers)
        self.seed = 0 if seed is None else int(seed)
        self.dataset: Optional[Dataset] = None

    @property
    def has_ground_truth(self) -> bool:
        return self.measurements is None

    def _resolve_shape(self) -> tuple[int, int]:
        size, channels = self.image_size, self.channels
        module = self.trainer.lightning_module if self.trainer is not None else None
        prior = getattr(module, "prior", None)
        if prior is not None:
            size = prior.image_size if size is None else size
            channels = prior.image_channels if channels is None else channels
        if size is None or channels is None:
            raise DWGFError("MeasurementDataModule: image_size and channels are needed when no prior is attached")
        return int(size), int(channels)

    def setup(self, stage: str) -> None:
        if self.dataset is not None:
            return
        size, channels = self._resolve_shape()
        if self.images is None and self.measurements is None:
            raise DWGFError("no input: give --data.images DIR (ground-truth images) or --data.measurements DIR")
        if self.measurements is not None:
            files = list_images(self.measurements, "--data.measurements")
            masks = None
            if self.masks is not None:
                masks = Path(self.masks).expanduser()
                if not masks.is_dir():
                    raise DWGFError(f"--data.masks {self.masks!r}: no such folder")
            self.dataset = GivenMeasurements(files, self.operator, channels, size, self.seed, masks)
        else:
            files = list_images(self.images, "--data.images")
            self.operator.measurement_shape((channels, size, size))  # fails early on a bad factor
            self.dataset = SimulatedMeasurements(files, self.operator, channels, size, self.seed)

    def predict_dataloader(self) -> DataLoader:
        return DataLoader(self.dataset, batch_size=self.batch_size, shuffle=False, num_workers=self.num_workers)
