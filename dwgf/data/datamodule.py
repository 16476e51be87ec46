"""MeasurementDataModule: image folders -> batches of measurements with per-item params and seeds."""

from __future__ import annotations

import hashlib
import warnings
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
from lightning.pytorch import LightningDataModule
from PIL import Image
from torch.utils.data import DataLoader, Dataset, Sampler, default_collate

from dwgf.data.images import IMAGE_SUFFIXES, check_suffix, file_identity, list_images, load_image
from dwgf.errors import DWGFError, DWGFWarning, argument_error, argument_warning
from dwgf.operators.base import ForwardOperator
from dwgf.outputs import Resume, item_folder_names


# ShardedBatches returns every item exactly once (no drop_last); Lightning cannot know that and warns.
warnings.filterwarnings("ignore", message=r"You are using a custom batch sampler `ShardedBatches`")


def item_seeds(seed: int, identity: str) -> tuple[int, int]:
    """Two independent 63-bit seeds for the item ``identity`` of a run seeded with ``seed``.

    ``identity`` is what identifies the item (:func:`dwgf.data.images.file_identity`: its file name
    and content). The first seed drives the measurement (operator parameters, measurement noise),
    the second the solver (initial particles and every per-iteration draw). They depend on
    ``(seed, identity)`` only, never on the item's place in the folder, batch composition, device
    count or order.
    """
    digest = hashlib.sha256(str(identity).encode("utf-8", "surrogatepass")).digest()
    words = [int.from_bytes(digest[i : i + 4], "little") for i in range(0, 16, 4)]
    state = np.random.SeedSequence([int(seed) & 0xFFFFFFFF, *words]).generate_state(2, dtype=np.uint64)
    return int(state[0] >> np.uint64(1)), int(state[1] >> np.uint64(1))


def takes_mask(operator: ForwardOperator) -> bool:
    """Whether ``operator`` reads its parameters from a mask (the inpainting operators)."""
    return type(operator).params_from_mask is not ForwardOperator.params_from_mask


def check_masks(operator: ForwardOperator, measurements: Optional[str], masks: Optional[str]) -> None:
    """Masks go with measurements and an inpainting operator, and measured inpainting needs them."""
    if masks is not None and not takes_mask(operator):
        raise argument_error("MeasurementDataModule", "masks", f": {type(operator).__name__} takes no mask; give no masks or an inpainting operator")
    if measurements is not None and masks is None and takes_mask(operator):
        raise argument_error("MeasurementDataModule", "measurements", f" with {type(operator).__name__} need masks (a folder: one mask per "
                             "measurement, same file name, white = observed, black = missing): without them the missing region is unknown")


def far_from_prior(files: list[Path], channels: int, size: int) -> Optional[str]:
    """How many inputs are far from what the prior models, and what is done to them (the end of a line
    that names the folder).

    Colour images given to a grayscale prior (converted by luminance) and images 4 times or more the
    prior's resolution on their short side (shrunk to it). ``None`` if there are none.
    """
    colour, large, total, flagged = 0, 0, 0, 0
    for path in files:
        if path.suffix.lower() not in IMAGE_SUFFIXES:
            continue
        try:
            with Image.open(path) as img:
                total += 1
                is_large = min(img.size) >= 4 * size
                is_colour = False
                if channels == 1 and img.mode not in ("1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
                    arr = np.asarray(img.convert("RGB"), dtype=np.int16)
                    is_colour = bool((arr[..., 0] != arr[..., 1]).any() or (arr[..., 1] != arr[..., 2]).any())
                large, colour, flagged = large + is_large, colour + is_colour, flagged + (is_large or is_colour)
        except Exception:  # noqa: BLE001 - an unreadable file becomes a failed item later, with its reason
            continue
    if not colour and not large:
        return None
    what = []
    if colour:
        what.append(f"{colour} colour image{'s' if colour > 1 else ''} converted to grayscale for the grayscale prior")
    if large:
        what.append(f"{large} image{'s' if large > 1 else ''} at least 4x the prior's {size}x{size} resolution shrunk to it")
    return f"{flagged} of {total} images are far from what the prior models: {'; '.join(what)}; expect poor results (is this the right prior?)"


class _Items(Dataset):
    """The items of a run: one per input file, with a unique output name and an identity."""

    def __init__(self, files: list[Path], operator: ForwardOperator, channels: int, size: int, seed: int):
        self.files, self.names = files, item_folder_names([f.name for f in files])
        self.operator, self.channels, self.size, self.seed = operator, channels, size, seed
        self._identities: list[Optional[str]] = [None] * len(files)

    def __len__(self) -> int:
        return len(self.files)

    def identity_files(self, index: int) -> list[Path]:
        """The files whose names and contents determine item ``index`` (the input, and its mask)."""
        return [self.files[index]]

    def identity(self, index: int) -> str:
        """The item's identity (:func:`~dwgf.data.images.file_identity`), computed once."""
        if self._identities[index] is None:
            first, *extra = self.identity_files(index)
            self._identities[index] = file_identity(first, extra)
        return self._identities[index]

    def identities(self) -> list[str]:
        return [self.identity(i) for i in range(len(self))]

    def set_identities(self, identities: list[str]) -> None:
        """Takes identities computed elsewhere (by the first process, so that every process agrees)."""
        if len(identities) != len(self):
            raise ValueError(f"{len(identities)} identities for {len(self)} items")
        self._identities = list(identities)

    def _item(self, index: int, **fields: Any) -> dict[str, Any]:
        _, flow_seed = item_seeds(self.seed, self.identity(index))
        return {"name": self.names[index], "index": index, "file": str(self.files[index]), "seed": flow_seed, **fields}

    def __getitem__(self, index: int) -> dict[str, Any]:
        try:
            return self._load(index)
        except DWGFError as err:  # a bad item is skipped and reported, the others go on
            return {"name": self.names[index], "index": index, "file": str(self.files[index]), "error": str(err)}

    def _load(self, index: int) -> dict[str, Any]:
        raise NotImplementedError


class SimulatedMeasurements(_Items):
    """Ground-truth images, degraded on the fly with the item's own generator."""

    def _load(self, index: int) -> dict[str, Any]:
        x = load_image(self.files[index], self.channels, (self.size, self.size))
        data_seed, _ = item_seeds(self.seed, self.identity(index))
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

    def _mask_file(self, index: int) -> Optional[Path]:
        stem = self.files[index].stem
        found = [self.masks / f"{stem}{s}" for s in (".png", ".jpg", ".jpeg")]
        found = [p for p in found if p.is_file()]
        return found[0] if found else None

    def identity_files(self, index: int) -> list[Path]:
        mask = self._mask_file(index) if self.masks is not None else None
        return [self.files[index]] + ([mask] if mask is not None else [])

    def _mask(self, index: int) -> Optional[torch.Tensor]:
        if self.masks is None:
            return None
        path = self._mask_file(index)
        if path is None:
            stem = self.files[index].stem
            raise argument_error("MeasurementDataModule", "masks",
                                 f" {str(self.masks)!r}: no mask for {self.files[index].name} (expected {stem}.png)")
        mask = load_image(path, 1, None)
        if tuple(mask.shape[1:]) != (self.size, self.size):
            raise DWGFError(f"{path}: mask is {mask.shape[2]}x{mask.shape[1]}, expected {self.size}x{self.size} (the prior's resolution)")
        if not bool(((mask == -1) | (mask == 1)).all()):
            warnings.warn(f"{path}: the mask is not black and white; pixels brighter than mid-gray are taken as observed, "
                          "the others as missing", DWGFWarning, stacklevel=2)
        return (mask > 0).float()  # white (observed) -> 1, black (missing) -> 0

    def _measurement_image(self, index: int) -> torch.Tensor:
        path = self.files[index]
        check_suffix(path, (*IMAGE_SUFFIXES, ".npy"))
        if path.suffix.lower() != ".npy":
            return load_image(path, self.channels, self.shape[1:], Image.BICUBIC)
        try:
            arr = np.load(path, allow_pickle=False)
        except Exception as err:  # noqa: BLE001 - numpy raises many types for bad files
            raise DWGFError(f"{path}: cannot read the array ({type(err).__name__})") from None
        if not isinstance(arr, np.ndarray) or arr.dtype.kind not in "biuf":
            kind = arr.dtype if isinstance(arr, np.ndarray) else type(arr).__name__
            raise DWGFError(f"{path}: the array holds {kind} values; expected numbers (float32, C x H x W, in [-1, 1])")
        x = torch.from_numpy(np.asarray(arr, dtype=np.float32))
        x = x[None] if x.dim() == 2 else x
        if tuple(x.shape) != tuple(self.shape):
            raise DWGFError(f"{path}: measurement has shape {tuple(x.shape)}, expected {tuple(self.shape)} (C x H x W, values in [-1, 1])")
        return x

    def _load(self, index: int) -> dict[str, Any]:
        img = self._measurement_image(index)
        if not torch.isfinite(img).all():
            raise DWGFError(f"{self.files[index]}: measurement contains NaN or Inf")
        mask = self._mask(index)
        data_seed, _ = item_seeds(self.seed, self.identity(index))
        if mask is not None:
            params = self.operator.params_from_mask(mask)
        else:
            params = self.operator.sample_params((self.channels, self.size, self.size), torch.Generator().manual_seed(data_seed))
        y = self.operator.from_image(img[None], {k: v[None] for k, v in params.items()})[0]
        return self._item(index, measurement=y, params=params)


class ShardedBatches(Sampler[list[int]]):
    """The run's fixed batches (items ``j*B .. j*B+B-1``), batch ``j`` on rank ``j % world_size``.

    Every item is processed exactly once over all ranks (no padding, no duplicates), and each batch
    holds the same items whatever the number of processes, so results are identical to a
    one-process run. Batches whose items are all in ``skip`` (complete from an earlier run) are left
    out; a batch with some complete items is recomputed whole (its complete items are not rewritten),
    so that the others see the same batch as in an uninterrupted run.

    A rank left with nothing to do (more processes than batches, or everything already complete)
    gets one empty batch, so that every process runs the same hooks: it waits for the others and
    the end-of-run files are assembled.
    """

    def __init__(self, num_items: int, batch_size: int, rank: int = 0, world_size: int = 1, skip: frozenset[int] = frozenset()):
        self.batches = [list(range(i, min(num_items, i + batch_size))) for i in range(0, num_items, batch_size)]
        self.mine = [b for j, b in enumerate(self.batches) if j % world_size == rank and not set(b) <= skip] or [[]]

    def __iter__(self):
        return iter(self.mine)

    def __len__(self) -> int:
        return len(self.mine)

    @property
    def num_items(self) -> int:
        """Items this rank computes (0 for the empty batch of an idle rank)."""
        return sum(len(b) for b in self.mine)


def collate_items(items: list[dict[str, Any]]) -> dict[str, Any]:
    """Collates the good items of a batch; failed ones go to ``batch["failed"]`` as dicts."""
    good = [it for it in items if "error" not in it]
    batch = default_collate(good) if good else {"name": [], "index": torch.zeros(0, dtype=torch.long)}
    batch["failed"] = [it for it in items if "error" in it]
    return batch


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

    Each item gets its seeds from ``(seed, identity)``, where the identity is a hash of the file's
    name and content (and of its mask's): see :func:`item_seeds`. Entries of the folder that are
    not files (subfolders, broken links) are skipped with one warning line naming them.

    Args:
        operator: the forward operator ``A``, shared with the solver.
        images: folder of ground-truth png/jpg images.
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
            raise argument_error(self, "images", " (ground truth to degrade) and <measurements> (degraded images) are both given; give one of them",
                                 also=("measurements",))
        if masks is not None and measurements is None:
            raise argument_error(self, "masks", " go with measurements (with images the operator draws the mask)")
        check_masks(operator, measurements, masks)
        if batch_size < 1:
            raise argument_error(self, "batch_size", f" must be >= 1, got {batch_size}")
        if num_workers < 0:
            raise argument_error(self, "num_workers", f" must be >= 0, got {num_workers}")
        self.operator = operator
        self.images, self.measurements, self.masks = images, measurements, masks
        self.image_size, self.channels = image_size, channels
        self.batch_size, self.num_workers = int(batch_size), int(num_workers)
        self.seed = 0 if seed is None else int(seed)
        self.dataset: Optional[Dataset] = None
        self.resume = Resume()  # the items to leave out; the CLI shares one with the writer, which fills it in
        self._prior_shape: Optional[tuple[int, int]] = None

    @property
    def has_ground_truth(self) -> bool:
        return self.measurements is None

    def use_prior(self, prior: Any) -> "MeasurementDataModule":
        """Takes the image size and channels the data module was not given from ``prior`` (its
        ``image_size`` and ``image_channels``). The CLI calls it when it assembles a run."""
        self._prior_shape = (int(prior.image_size), int(prior.image_channels))
        return self

    def _resolve_shape(self) -> tuple[int, int]:
        size, channels = self.image_size, self.channels
        if self._prior_shape is not None:
            size = self._prior_shape[0] if size is None else size
            channels = self._prior_shape[1] if channels is None else channels
        if size is None or channels is None:
            raise DWGFError("MeasurementDataModule: give image_size and channels, or call use_prior(prior) to take the prior's")
        return int(size), int(channels)

    @property
    def _is_first_process(self) -> bool:
        return self.trainer is None or self.trainer.is_global_zero

    def setup(self, stage: str) -> None:
        if self.dataset is not None:
            return
        size, channels = self._resolve_shape()
        if self.images is None and self.measurements is None:
            raise argument_error(self, "images", " or <measurements> must be given: a folder of ground-truth images to degrade, or of "
                                 "degraded images", also=("measurements",))
        if self.measurements is not None:
            files = list_images(self.measurements, "measurements", (*IMAGE_SUFFIXES, ".npy"), warn_skipped=self._is_first_process)
            masks = None
            if self.masks is not None:
                masks = Path(self.masks).expanduser()
                if not masks.is_dir():
                    raise argument_error(self, "masks", f" {self.masks!r}: no such folder")
            self.dataset = GivenMeasurements(files, self.operator, channels, size, self.seed, masks)
        else:
            files = list_images(self.images, "images", warn_skipped=self._is_first_process)
            self.operator.measurement_shape((channels, size, size))  # fails early on a bad factor
            self.dataset = SimulatedMeasurements(files, self.operator, channels, size, self.seed)
        if self._is_first_process:
            argument, folder = ("images", self.images) if self.images is not None else ("measurements", self.measurements)
            line = far_from_prior(files, channels, size)
            if line:
                warnings.warn(argument_warning(self, argument, f" {folder!r}: {line}"), stacklevel=2)
        # a configuration that cannot work on any item (a box larger than the image) fails here, once
        self.operator.sample_params((channels, size, size), torch.Generator().manual_seed(0))

    def predict_dataloader(self) -> DataLoader:
        rank, world = (self.trainer.global_rank, self.trainer.world_size) if self.trainer is not None else (0, 1)
        sampler = ShardedBatches(len(self.dataset), self.batch_size, rank, world, self.resume.complete)
        return DataLoader(self.dataset, batch_sampler=sampler, num_workers=self.num_workers, collate_fn=collate_items)
