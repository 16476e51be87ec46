"""MeasurementDataModule: image folders -> batches of measurements with per-item params and seeds."""

from __future__ import annotations

import hashlib
import warnings
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import torch
from lightning.pytorch import LightningDataModule
from PIL import Image
from torch.utils.data import DataLoader, Dataset, Sampler, default_collate

from dwgf.data.images import IMAGE_SUFFIXES, check_suffix, file_identity, image_size_of, input_folder, list_images, load_image, pad_to
from dwgf.data.prompts import read_prompts
from dwgf.priors.base import unsupported_size
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
    """Masks go with an inpainting operator, and measured inpainting needs them."""
    if masks is not None and not takes_mask(operator):
        raise argument_error("MeasurementDataModule", "masks", f": {type(operator).__name__} takes no mask; give no masks or an inpainting operator")
    if measurements is not None and masks is None and takes_mask(operator):
        raise argument_error("MeasurementDataModule", "measurements", f" with {type(operator).__name__} need masks (a folder: one mask per "
                             "measurement, same file name, white = observed, black = missing): without them the missing region is unknown")


def far_from_prior(files: list[Path], channels: int, size: int, keep: bool = False) -> Optional[str]:
    """How many inputs are far from what the prior models, and what is done to them (the end of a line
    that names the folder).

    Colour images given to a grayscale prior (converted by luminance) and images 4 times or more the
    prior's resolution (``size``) on their short side (shrunk to it; with ``keep``, kept at that
    size: slow, as the cost grows with the area). ``None`` if there are none.
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
    if large and keep:
        what.append(f"{large} image{'s' if large > 1 else ''} at least 4x the prior's {size}x{size} resolution kept at that size "
                    "(fit: keep; the cost grows with the area)")
    elif large:
        what.append(f"{large} image{'s' if large > 1 else ''} at least 4x the prior's {size}x{size} resolution shrunk to it")
    return f"{flagged} of {total} images are far from what the prior models: {'; '.join(what)}; expect poor results (is this the right prior?)"


class _Items(Dataset):
    """The items of a run: one per input file, with a unique output name and an identity.

    ``size`` is ``(H, W)``, the size every item is brought to (cover and crop); with ``sizes`` (one
    per file, ``fit: keep``) each item keeps its own size ``(h, w)`` and is padded up to ``sizes[i]``.
    ``prompts`` maps a file name to its own prompt.
    """

    def __init__(self, files: list[Path], operator: ForwardOperator, channels: int, size: tuple[int, int], seed: int,
                 sizes: Optional[list[Optional[tuple[tuple[int, int], tuple[int, int]]]]] = None, prompts: Optional[dict[str, str]] = None,
                 masks: Optional[Path] = None):
        self.files, self.names = files, item_folder_names([f.name for f in files])
        self.operator, self.channels, self.size, self.seed = operator, channels, tuple(size), seed
        self.sizes, self.prompt_of, self.masks = sizes, dict(prompts or {}), masks
        self._identities: list[Optional[str]] = [None] * len(files)

    def working_size(self, index: int) -> tuple[int, int]:
        """``(H, W)`` the item is solved at (its padded size with ``fit: keep``)."""
        if self.sizes is None or self.sizes[index] is None:
            return self.size
        return self.sizes[index][1]

    def own_size(self, index: int) -> tuple[int, int]:
        """``(h, w)`` its outputs are written at (the input's own size with ``fit: keep``)."""
        if self.sizes is None or self.sizes[index] is None:
            return self.size
        return self.sizes[index][0]

    def group(self, index: int) -> tuple[int, int]:
        """Items batch together only with items of the same working size."""
        return self.working_size(index)

    def prompt(self, index: int) -> Optional[str]:
        return self.prompt_of.get(self.files[index].name)

    def __len__(self) -> int:
        return len(self.files)

    def identity_files(self, index: int) -> list[Path]:
        """The files whose names and contents determine item ``index`` (the input, and its mask)."""
        mask = self._mask_file(index) if self.masks is not None else None
        return [self.files[index]] + ([mask] if mask is not None else [])

    def _mask_file(self, index: int) -> Optional[Path]:
        stem = self.files[index].stem
        found = [self.masks / f"{stem}{s}" for s in (".png", ".jpg", ".jpeg")]
        found = [p for p in found if p.is_file()]
        return found[0] if found else None

    def _mask(self, index: int, exact: bool = False) -> Optional[torch.Tensor]:
        """Item ``index``'s mask from ``masks`` (white = observed: 1, black = missing: 0) at the item's working size, brought
        there by the rule its image or measurement follows (cover and crop, or its own size padded by reflection with
        ``fit: keep``; ``exact``: none, the mask must have that size), with nearest-neighbour resampling so that it stays
        black and white; ``None`` without ``masks``."""
        if self.masks is None:
            return None
        path = self._mask_file(index)
        if path is None:
            stem = self.files[index].stem
            raise argument_error("MeasurementDataModule", "masks",
                                 f" {str(self.masks)!r}: no mask for {self.files[index].name} (expected {stem}.png)")
        if exact:
            mask = load_image(path, 1)
            if tuple(mask.shape[1:]) != tuple(self.size):
                raise DWGFError(f"{path}: mask is {mask.shape[2]}x{mask.shape[1]} (width x height), expected {self.size[1]}x{self.size[0]} "
                                "(the images' size)")
        elif self.sizes is None or self.sizes[index] is None:
            mask = load_image(path, 1, self.size, Image.NEAREST)
        else:
            own, full = self.sizes[index]
            mask = load_image(path, 1)
            if tuple(mask.shape[1:]) != tuple(own):
                raise DWGFError(f"{path}: mask is {mask.shape[2]}x{mask.shape[1]} (width x height), expected {own[1]}x{own[0]} "
                                f"(the size of {self.files[index].name}, fit: keep)")
            mask = pad_to(mask, full)
        if not bool(((mask == -1) | (mask == 1)).all()):
            warnings.warn(f"{path}: the mask is not black and white; pixels brighter than mid-gray are taken as observed, "
                          "the others as missing", DWGFWarning, stacklevel=2)
        return (mask > 0).float()  # white (observed) -> 1, black (missing) -> 0

    def identity(self, index: int) -> str:
        """The item's identity (:func:`~dwgf.data.images.file_identity`), computed once."""
        if self._identities[index] is None:
            first, *extra = self.identity_files(index)
            identity = file_identity(first, extra)
            prompt = self.prompt(index)
            if prompt is not None:  # the same image with another prompt is another item
                identity = hashlib.sha256(f"{identity}\0prompt\0{prompt}".encode("utf-8", "surrogatepass")).hexdigest()
            self._identities[index] = identity
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
        item = {"name": self.names[index], "index": index, "file": str(self.files[index]), "seed": flow_seed,
                # on the CPU: items are made in the data loader; Lightning moves the batch to the device
                "size": torch.tensor(self.working_size(index)), "crop": torch.tensor(self.own_size(index)), **fields}
        if self.prompt_of:
            item["prompt"] = self.prompt(index)
        return item

    def __getitem__(self, index: int) -> dict[str, Any]:
        try:
            return self._load(index)
        except DWGFError as err:  # a bad item is skipped and reported, the others go on
            return {"name": self.names[index], "index": index, "file": str(self.files[index]), "error": str(err)}

    def _load(self, index: int) -> dict[str, Any]:
        raise NotImplementedError


class SimulatedMeasurements(_Items):
    """Ground-truth images, degraded on the fly with the item's own generator (with ``masks``, an inpainting
    operator's mask is the item's mask file instead of one the operator draws)."""

    def _load(self, index: int) -> dict[str, Any]:
        if self.sizes is None:
            x = load_image(self.files[index], self.channels, self.size)
        else:
            if self.sizes[index] is None:  # its size could not be read at start-up
                load_image(self.files[index], self.channels)  # raises the reason
                raise DWGFError(f"{self.files[index]}: cannot read the image size")
            own, full = self.sizes[index]
            self.operator.measurement_shape((self.channels, *own))  # e.g. a factor that does not divide the image
            x = load_image(self.files[index], self.channels)
            if tuple(x.shape[1:]) != tuple(own):
                raise DWGFError(f"{self.files[index]}: the image changed size since the run started")
            x = pad_to(x, full)
        data_seed, _ = item_seeds(self.seed, self.identity(index))
        # on the CPU: measurements are simulated in the data loader, so they are the same on every machine
        gen = torch.Generator().manual_seed(data_seed)
        mask = self._mask(index)
        params = self.operator.params_from_mask(mask) if mask is not None else self.operator.sample_params(tuple(x.shape), gen)
        y = self.operator.simulate(x[None], {k: v[None] for k, v in params.items()}, gen)[0]
        return self._item(index, image=x, measurement=y, params=params)


class GivenMeasurements(_Items):
    """Measurements as images (what ``measurement.png`` holds), with optional mask files."""

    def __init__(self, files, operator, channels, size, seed, masks: Optional[Path], prompts: Optional[dict[str, str]] = None):
        super().__init__(files, operator, channels, size, seed, prompts=prompts, masks=masks)
        self.shape = operator.measurement_shape((channels, *self.size))

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
        mask = self._mask(index, exact=self.files[index].suffix.lower() == ".npy")  # an array is read as it is, never resized
        data_seed, _ = item_seeds(self.seed, self.identity(index))
        if mask is not None:
            params = self.operator.params_from_mask(mask)
        else:
            # on the CPU, as simulated measurements (above)
            params = self.operator.sample_params((self.channels, *self.size), torch.Generator().manual_seed(data_seed))
        y = self.operator.from_image(img[None], {k: v[None] for k, v in params.items()})[0]
        return self._item(index, measurement=y, params=params)


def batches_by_group(num_items: int, batch_size: int, groups: Optional[Sequence[Any]] = None) -> list[list[int]]:
    """The run's batches: items in input order, ``batch_size`` at a time, a batch holding items of one
    group only (one image size). Groups are taken in the order of their first item; without
    ``groups`` the batches are items ``j*B .. j*B+B-1``."""
    if groups is None:
        return [list(range(i, min(num_items, i + batch_size))) for i in range(0, num_items, batch_size)]
    members: dict[Any, list[int]] = {}
    for i in range(num_items):
        members.setdefault(groups[i], []).append(i)
    return [items[j : j + batch_size] for items in members.values() for j in range(0, len(items), batch_size)]


class ShardedBatches(Sampler[list[int]]):
    """The run's fixed batches (:func:`batches_by_group`: one image size per batch), batch ``j`` on
    rank ``j % world_size``.

    Every item is processed exactly once over all ranks (no padding, no duplicates), and each batch
    holds the same items whatever the number of processes, so results are identical to a
    one-process run. Batches whose items are all in ``skip`` (complete from an earlier run) are left
    out; a batch with some complete items is recomputed whole (its complete items are not rewritten),
    so that the others see the same batch as in an uninterrupted run.

    A rank left with nothing to do (more processes than batches, or everything already complete)
    gets one empty batch, so that every process runs the same hooks: it waits for the others and
    the end-of-run files are assembled.
    """

    def __init__(self, num_items: int, batch_size: int, rank: int = 0, world_size: int = 1, skip: frozenset[int] = frozenset(),
                 groups: Optional[Sequence[Any]] = None):
        self.batches = batches_by_group(num_items, batch_size, groups)
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
    prompts = [it.pop("prompt", None) for it in good]
    # on the CPU: a batch is collated in the data loader
    batch = default_collate(good) if good else {"name": [], "index": torch.zeros(0, dtype=torch.long)}
    if any(p is not None for p in prompts):
        batch["prompt"] = prompts  # None: the prior's own prompt
    batch["failed"] = [it for it in items if "error" in it]
    return batch


FITS = ("cover", "keep")


class MeasurementDataModule(LightningDataModule):
    """Batches of measurements for prediction, simulated from images or given directly.

    Simulated mode (``images``): each ground-truth image is read, converted to the prior's channel
    count (RGB <-> grayscale), brought to the run's image size (``fit``), then degraded by
    ``operator`` with parameters and noise from the item's own generator. Metrics are computed
    against it.

    Image size (``fit``):

    - ``"cover"`` (default): every image is resized to cover ``size`` (``H x W``; default the
      prior's native square resolution), aspect ratio kept, and center-cropped to it.
    - ``"keep"``: every image keeps its own size. A side that is not a multiple of what the prior
      takes (:attr:`~dwgf.priors.LatentPrior.size_multiple`: 64 px for SD 1/2, 32 for SDXL) is
      padded at the bottom / right by reflection up to the next multiple; the operator and the flow
      see the padded image, and every output (particles, mean, std, measurement, ground truth,
      metrics) is cropped back to the input's own size. Items of different sizes are never in one
      batch: batches hold one size each, in input order. Needs ``images``.

    Measurement-only mode (``measurements``): each file is a degraded image as
    ``measurement.png`` shows it (for super-resolution the low-resolution image), otherwise the operator draws its
    parameters as in simulated mode. No metrics are computed.

    Own masks (``masks``, an inpainting operator): a mask image of the same stem as each image or measurement
    (``cat.png`` for ``cat.jpg``; white = observed, black = missing) is the item's mask instead of one the operator
    draws. It is brought to the working size by the rule its image or measurement follows (cover and crop to ``size``,
    nearest-neighbour so that it stays black and white; with ``fit: keep`` it must have the image's own size and is
    padded with it). With ``images`` the metrics are against the images, as in simulated mode.

    Per-item prompts (text-conditioned priors): a ``prompts.csv`` in the input folder (a header line
    ``name,prompt``, then one line per image: its file name, with or without the extension, and its
    prompt; CSV quoting for commas) or a ``<name>.txt`` beside ``<name>.png`` (the whole file is the
    prompt). Items without one use the prior's ``prompt``. Those files are not items.

    Each item gets its seeds from ``(seed, identity)``, where the identity is a hash of the file's
    name and content (and of its mask's, and its prompt): see :func:`item_seeds`. Entries of the
    folder that are not files (subfolders, broken links) are skipped with one warning line naming them.

    Args:
        operator: the forward operator ``A``, shared with the solver.
        images: folder of ground-truth png/jpg images.
        measurements: folder of measurement images (instead of ``images``).
        masks: folder of mask images, one per image or measurement, matched by stem (inpainting operators).
        size: ``[H, W]`` (``--data.size H W``), the image size with ``fit: cover``; ``None``
            (default): the prior's native resolution.
        fit: ``"cover"`` (default): each image resized to cover ``size`` and center-cropped;
            ``"keep"``: each image at its own size, padded at the bottom and right (by reflection)
            to a multiple the prior takes, outputs cropped back to the input's size.
        image_size: a square ``size`` (``image_size: 64`` is ``size: [64, 64]``); kept for older configs.
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
        size: Optional[list[int]] = None,
        fit: str = "cover",
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
        check_masks(operator, measurements, masks)
        if batch_size < 1:
            raise argument_error(self, "batch_size", f" must be >= 1, got {batch_size}")
        if num_workers < 0:
            raise argument_error(self, "num_workers", f" must be >= 0, got {num_workers}")
        if fit not in FITS:
            raise argument_error(self, "fit", f" must be one of {', '.join(FITS)}, got {fit!r}")
        if size is not None:
            if isinstance(size, (int, str)) or len(size) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in size):
                raise argument_error(self, "size", f" must be two positive whole numbers, height and width (--data.size 512 768), got {size!r}")
            if image_size is not None:
                raise argument_error(self, "size", " and <image_size> are both given; give size (H W) only", also=("image_size",))
        if image_size is not None and (isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1):
            raise argument_error(self, "image_size", f" must be a positive whole number, got {image_size!r}")
        if fit == "keep" and (size is not None or image_size is not None):
            raise argument_error(self, "fit", " keep keeps each image's own size; it takes no <size> (use fit: cover with a size)", also=("size",))
        if fit == "keep" and measurements is not None:
            raise argument_error(self, "fit", " keep needs <images> (ground truth); measurements are read at one size: give <size> H W "
                                 "or leave the prior's", also=("images", "size"))
        self.operator = operator
        self.images, self.measurements, self.masks = images, measurements, masks
        self.size = None if size is None else (int(size[0]), int(size[1]))
        if image_size is not None:
            self.size = (int(image_size), int(image_size))
        self.fit, self.image_size, self.channels = fit, image_size, channels
        self.batch_size, self.num_workers = int(batch_size), int(num_workers)
        self.seed = 0 if seed is None else int(seed)
        self.dataset: Optional[_Items] = None
        self.resume = Resume()  # the items to leave out; the CLI shares one with the writer, which fills it in
        self._prior: Optional[tuple[int, int, Optional[int], str]] = None

    @property
    def has_ground_truth(self) -> bool:
        return self.measurements is None

    def use_prior(self, prior: Any) -> "MeasurementDataModule":
        """Takes what the data module was not given from ``prior``: its native size and channels,
        and the sizes it accepts (``size_multiple``). The CLI calls it when it assembles a run."""
        self._prior = (int(prior.image_size), int(prior.image_channels), getattr(prior, "size_multiple", None), type(prior).__name__)
        return self

    def _resolve_shape(self) -> tuple[tuple[int, int], int]:
        size, channels = self.size, self.channels
        if self._prior is not None:
            native, prior_channels, multiple, name = self._prior
            channels = prior_channels if channels is None else channels
            if size is None:
                size = (native, native)
            else:
                reason = unsupported_size(name, native, multiple, *size)
                if reason is not None:
                    keep = ", or fit: keep to pad each image" if multiple is not None else ""
                    raise argument_error(self, "size", f" {size[0]} {size[1]}: {reason}{keep}")
        if size is None or channels is None:
            raise DWGFError("MeasurementDataModule: give size and channels, or call use_prior(prior) to take the prior's")
        return size, int(channels)

    def _multiple(self) -> int:
        if self._prior is None:
            raise DWGFError("MeasurementDataModule: fit keep needs the prior's size multiple: call use_prior(prior)")
        native, _, multiple, name = self._prior
        if multiple is None:
            raise argument_error(self, "fit", f" keep: {name} models {native}x{native} images only; use fit: cover")
        return int(multiple)

    def prompts(self) -> list[str]:
        """The distinct per-item prompts of the run (after :meth:`setup`), in input order."""
        if self.dataset is None:
            return []
        return list(dict.fromkeys(p for p in (self.dataset.prompt(i) for i in range(len(self.dataset))) if p is not None))

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
        argument, folder = ("images", self.images) if self.images is not None else ("measurements", self.measurements)
        suffixes = (*IMAGE_SUFFIXES, ".npy") if self.measurements is not None else IMAGE_SUFFIXES
        files = list_images(folder, argument, suffixes, warn_skipped=self._is_first_process)
        files, prompts = read_prompts(input_folder(folder), files, argument, warn=self._is_first_process)
        masks = None
        if self.masks is not None:
            masks = input_folder(self.masks)
            if not masks.is_dir():
                raise argument_error(self, "masks", f" {self.masks!r}: no such folder")
        if self.measurements is not None:
            self.dataset = GivenMeasurements(files, self.operator, channels, size, self.seed, masks, prompts)
        else:
            sizes = None
            if self.fit == "keep":
                multiple = self._multiple()
                sizes = []
                for f in files:
                    own = image_size_of(f)
                    sizes.append(None if own is None else (own, tuple(-(-v // multiple) * multiple for v in own)))
            else:
                self.operator.measurement_shape((channels, *size))  # fails early on a bad factor
            self.dataset = SimulatedMeasurements(files, self.operator, channels, size, self.seed, sizes, prompts, masks)
        if self._is_first_process:
            line = far_from_prior(files, channels, size[0] if self._prior is None else self._prior[0], keep=self.fit == "keep")
            if line:
                warnings.warn(argument_warning(self, argument, f" {folder!r}: {line}"), stacklevel=2)
        # a configuration that cannot work on any item (a box larger than the image) fails here, once; own masks draw nothing
        if self.fit == "cover" and self.masks is None:
            # on the CPU: a dry run of the operator's parameters at start-up
            self.operator.sample_params((channels, *size), torch.Generator().manual_seed(0))

    def predict_dataloader(self) -> DataLoader:
        rank, world = (self.trainer.global_rank, self.trainer.world_size) if self.trainer is not None else (0, 1)
        groups = [self.dataset.group(i) for i in range(len(self.dataset))] if self.fit == "keep" else None
        sampler = ShardedBatches(len(self.dataset), self.batch_size, rank, world, self.resume.complete, groups)
        return DataLoader(self.dataset, batch_sampler=sampler, num_workers=self.num_workers, collate_fn=collate_items)
