"""Reading image folders into ``[-1, 1]`` tensors."""

from __future__ import annotations

import errno
import hashlib
import warnings
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch
from PIL import Image, ImageOps

from dwgf.errors import DWGFError, DWGFWarning, argument_error, argument_warning

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)  # ITU-R 601-2, as Pillow's convert("L")


def _describe(path: Path) -> Optional[str]:
    """Why a folder entry is not an item (``None``: it is one)."""
    if path.is_symlink() and not path.exists():
        try:
            path.resolve(strict=True)
        except RuntimeError:  # Python < 3.13 reports a loop so
            return "a symbolic link loop"
        except OSError as err:
            return "a symbolic link loop" if err.errno == errno.ELOOP else "a broken symbolic link"
        return "a broken symbolic link"
    if path.is_dir():
        return "a folder"
    if not path.is_file():
        return "not a regular file"
    return None


SHIPPED_DATA = "dwgf:"


def shipped_folders() -> list[str]:
    """Names of the image folders that ship inside the package (``dwgf:<name>``; the priors are not among them)."""
    from importlib.resources import files

    assets = files("dwgf") / "assets"
    if not assets.is_dir():
        return []
    return sorted(p.name for p in assets.iterdir() if p.is_dir() and not (p / "model_index.json").is_file())


def input_folder(value: str | Path) -> Path:
    """The folder a data option names: ``dwgf:<name>``, a folder of images that ships with the package
    (``dwgf:mnist-calibration``: 100 held-out MNIST digits for ``dwgf calibrate``), else the path, ``~`` expanded."""
    text = str(value)
    if text.startswith(SHIPPED_DATA):
        from importlib.resources import files

        return Path(str(files("dwgf") / "assets" / text[len(SHIPPED_DATA):]))
    return Path(text).expanduser()


def list_images(folder: str | Path, argument: str, suffixes: tuple[str, ...] = IMAGE_SUFFIXES, warn_skipped: bool = False,
                owner: str = "MeasurementDataModule") -> list[Path]:
    """The items of ``folder``: every visible file directly inside it, sorted by name.

    ``folder`` is the value of ``owner``'s argument ``argument`` (``images``): errors and warnings
    name it (:func:`dwgf.errors.argument_error`).

    Files whose suffix is not in ``suffixes`` are kept: they become failed items ("unsupported
    file type", see :func:`check_suffix`) so that a stray file is reported, not silently ignored.
    Hidden files (``.name``) are skipped. Subfolders (also one named ``x.png``), broken links and
    link loops are not items; with ``warn_skipped`` one warning line names them. A folder with no
    file of a supported type is an error.
    """
    def error(detail: str) -> DWGFError:
        return argument_error(owner, argument, f" {str(folder)!r}: {detail}")

    path = input_folder(folder)
    if str(folder).startswith(SHIPPED_DATA) and str(folder)[len(SHIPPED_DATA):] not in shipped_folders():
        raise error(f"no such shipped folder (shipped: {', '.join(SHIPPED_DATA + n for n in shipped_folders()) or 'none'})")
    if not path.exists():
        raise error("no such folder")
    if not path.is_dir():
        raise error("not a folder")
    try:
        entries = sorted(path.iterdir())
    except OSError as err:
        raise error(f"cannot list the folder ({err.strerror})") from None
    files, skipped = [], []
    for entry in entries:
        if entry.name.startswith("."):
            continue
        why = _describe(entry)
        if why is None:
            files.append(entry)
        else:
            skipped.append(f"{entry.name} ({why})")
    if skipped and warn_skipped:
        shown = ", ".join(skipped[:5]) + (f" and {len(skipped) - 5} more" if len(skipped) > 5 else "")
        warnings.warn(argument_warning(owner, argument, f" {str(folder)!r}: {len(skipped)} entr{'y is' if len(skipped) == 1 else 'ies are'} "
                                       f"not image files and were skipped: {shown}"), stacklevel=2)
    if not any(p.suffix.lower() in suffixes for p in files):
        found = f"{len(files)} file(s) of other types" if files else "it is empty"
        raise error(f"no images found ({found}; expected {', '.join(suffixes)} files)")
    return files


def check_suffix(path: Path, suffixes: tuple[str, ...] = IMAGE_SUFFIXES) -> None:
    """Raises :class:`DWGFError` naming ``path`` if its type is not one of ``suffixes``."""
    if path.suffix.lower() not in suffixes:
        raise DWGFError(f"{path}: unsupported file type {path.suffix or '(none)'!r} (expected {', '.join(suffixes)})")


def file_identity(path: Path, extra: Sequence[Path] = ()) -> str:
    """What identifies an input: a SHA-256 of its file name and content (and of ``extra`` files').

    Seeds and resume keys derive from it, so an item's result depends on what it is, not on where
    it stands in the folder listing, and a replaced file with the same name is recomputed. A file
    that cannot be read gets an identity from its name alone (it becomes a failed item when loaded).
    """
    h = hashlib.sha256()
    for p in (path, *extra):
        h.update(p.name.encode("utf-8", "surrogatepass") + b"\0")
        try:
            with open(p, "rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    h.update(chunk)
        except OSError:
            h.update(b"\0unreadable")
        h.update(b"\0")
    return h.hexdigest()


def _unit_array(img: Image.Image, path: Path) -> np.ndarray:
    """The image as ``H x W x C`` float32 in ``[0, 1]``, rescaled from its own range.

    8-bit modes (and palettes, bilevel, CMYK, ...) go through Pillow to L or RGB(A) and are divided
    by 255; 16-bit images by 65535; 32-bit integer images by 65535 when their values fit 16 bits
    (Pillow reads some 16-bit files so), else by 2^32 - 1; float images (TIFF) are taken as they are
    when they lie in ``[0, 1]`` and otherwise rescaled from their minimum and maximum, with a warning.
    """
    mode = img.mode
    if mode.startswith("I;16"):
        return (np.asarray(img, dtype=np.float32) / 65535.0)[..., None]
    if mode == "I":
        arr = np.asarray(img, dtype=np.int64)
        if arr.size and arr.min() >= 0 and arr.max() <= 65535:
            return (arr.astype(np.float32) / 65535.0)[..., None]
        return ((arr - np.iinfo(np.int32).min).astype(np.float64) / (2.0**32 - 1)).astype(np.float32)[..., None]
    if mode == "F":
        arr = np.asarray(img, dtype=np.float32)
        if not np.isfinite(arr).all():
            raise DWGFError(f"{path}: the image contains NaN or Inf")
        lo, hi = (float(arr.min()), float(arr.max())) if arr.size else (0.0, 1.0)
        if lo < 0 or hi > 1:
            warnings.warn(f"{path}: float image with values in [{lo:.4g}, {hi:.4g}]; rescaled from that range to [0, 1]", DWGFWarning, stacklevel=3)
            arr = (arr - lo) / (hi - lo) if hi > lo else np.zeros_like(arr)
        return arr[..., None]
    if mode in ("L", "RGB"):
        rgb = img
    elif mode in ("1", "P", "PA", "LA", "La", "RGBA", "RGBa", "RGBX", "CMYK", "YCbCr", "LAB", "HSV"):
        transparent = mode in ("PA", "LA", "La", "RGBa") or (mode == "P" and "transparency" in img.info)
        rgb = img.convert("RGBA" if transparent else ("L" if mode == "1" else "RGB"))
        if rgb.mode == "RGBA":  # transparent pixels show the background as white, as viewers do
            background = Image.new("RGBA", rgb.size, (255, 255, 255, 255))
            rgb = Image.alpha_composite(background, rgb).convert("RGB")
    else:
        raise DWGFError(f"{path}: unsupported image mode {mode!r}")
    arr = np.asarray(rgb, dtype=np.float32) / 255.0
    return arr[..., None] if arr.ndim == 2 else arr


def load_image(path: str | Path, channels: int, size: Optional[tuple[int, int]] = None, resample: int = Image.BICUBIC) -> torch.Tensor:
    """An image file as a ``C x H x W`` float32 tensor in ``[-1, 1]``.

    Any bit depth: 8- and 16-bit integer images and float TIFFs are rescaled from their own range
    (see :func:`_unit_array`), never clipped. The image is converted to ``channels`` (1: grayscale by
    luminance, 0.299 R + 0.587 G + 0.114 B; 3: RGB, gray replicated), and, if ``size = (H, W)`` is
    given and differs, resized in floating point so that it covers ``H x W`` (aspect ratio kept,
    antialiased) and center-cropped. An image smaller than ``size`` is upscaled the same way, with a
    warning naming the file (the result is blurrier than a native-resolution image).
    """
    path = Path(path)
    check_suffix(path)
    try:
        with Image.open(path) as img:
            img = ImageOps.exif_transpose(img)
            img.load()
    except Exception as err:  # noqa: BLE001 - PIL raises many types for bad files
        raise DWGFError(f"{path}: cannot read the image ({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''})") from None
    arr = _unit_array(img, path)
    if channels == 1 and arr.shape[-1] == 3:
        arr = (arr @ _LUMA)[..., None]
    elif channels == 3 and arr.shape[-1] == 1:
        arr = np.repeat(arr, 3, axis=-1)
    elif arr.shape[-1] != channels:
        raise DWGFError(f"{path}: cannot convert a {arr.shape[-1]}-channel image to {channels} channels")
    height, width = arr.shape[:2]
    if size is not None and (height, width) != tuple(size):
        h, w = size
        if height < h or width < w:
            warnings.warn(f"{path}: {width}x{height} is smaller than {w}x{h}; upscaled (bicubic)", DWGFWarning, stacklevel=2)
        scale = max(h / height, w / width)
        new = (max(w, round(width * scale)), max(h, round(height * scale)))
        left, top = (new[0] - w) // 2, (new[1] - h) // 2
        planes = [np.asarray(Image.fromarray(np.ascontiguousarray(arr[..., c]), "F").resize(new, resample).crop((left, top, left + w, top + h)))
                  for c in range(arr.shape[-1])]
        arr = np.stack(planes, axis=-1)
    arr = np.clip(arr, 0.0, 1.0) * 2.0 - 1.0
    return torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1), dtype=np.float32))


_TRANSPOSED = {5, 6, 7, 8}  # EXIF orientations that swap width and height


def image_size_of(path: str | Path) -> Optional[tuple[int, int]]:
    """``(height, width)`` of an image file as :func:`load_image` reads it (EXIF orientation applied),
    from its header; ``None`` if it cannot be read (it becomes a failed item when loaded)."""
    try:
        with Image.open(path) as img:
            width, height = img.size
            if img.getexif().get(0x0112) in _TRANSPOSED:
                width, height = height, width
            return int(height), int(width)
    except Exception:  # noqa: BLE001 - the reason is reported when the item is loaded
        return None


def pad_to(x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """``x`` (``C x h x w``) padded at the bottom and right to ``size = (H, W)`` by reflection (by
    repeating the edge where the image is too small to reflect)."""
    h, w = x.shape[-2:]
    H, W = (int(v) for v in size)
    if (H, W) == (h, w):
        return x
    mode = "reflect" if H - h < h and W - w < w else "replicate"
    return torch.nn.functional.pad(x[None], (0, W - w, 0, H - h), mode=mode)[0]
