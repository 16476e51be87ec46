"""Reading image folders into ``[-1, 1]`` tensors."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from PIL import Image, ImageOps

from dwgf.errors import DWGFError, DWGFWarning

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


def list_images(folder: str | Path, option: str, suffixes: tuple[str, ...] = IMAGE_SUFFIXES) -> list[Path]:
    """The items of ``folder``: every visible file directly inside it, sorted by name.

    Files whose suffix is not in ``suffixes`` are kept: they become failed items ("unsupported
    file type", see :func:`check_suffix`) so that a stray file is reported, not silently ignored.
    Hidden files (``.name``) are skipped. A folder with no file of a supported type is an error.
    """
    path = Path(folder).expanduser()
    if not path.exists():
        raise DWGFError(f"{option} {str(folder)!r}: no such folder")
    if not path.is_dir():
        raise DWGFError(f"{option} {str(folder)!r}: not a folder")
    files = sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith("."))
    if not any(p.suffix.lower() in suffixes for p in files):
        found = f"{len(files)} file(s) of other types" if files else "it is empty"
        raise DWGFError(f"{option} {str(folder)!r}: no images found ({found}; expected {', '.join(suffixes)} files)")
    return files


def check_suffix(path: Path, suffixes: tuple[str, ...] = IMAGE_SUFFIXES) -> None:
    """Raises :class:`DWGFError` naming ``path`` if its type is not one of ``suffixes``."""
    if path.suffix.lower() not in suffixes:
        raise DWGFError(f"{path}: unsupported file type {path.suffix or '(none)'!r} (expected {', '.join(suffixes)})")


def item_names(files: list[Path]) -> list[str]:
    """One output name per file: the stem, or ``stem_ext`` where two files share a stem."""
    stems = [f.stem for f in files]
    return [f"{f.stem}_{f.suffix.lstrip('.').lower()}" if stems.count(f.stem) > 1 else f.stem for f in files]


def load_image(path: str | Path, channels: int, size: Optional[tuple[int, int]] = None, resample: int = Image.BICUBIC) -> torch.Tensor:
    """An image file as a ``C x H x W`` float32 tensor in ``[-1, 1]``.

    The image is converted to ``channels`` (1: grayscale by luminance, 3: RGB, gray replicated), and,
    if ``size = (H, W)`` is given and differs, resized so that it covers ``H x W`` (aspect ratio
    kept, antialiased) and center-cropped. An image smaller than ``size`` is upscaled the same way,
    with a warning naming the file (the result is blurrier than a native-resolution image).
    """
    check_suffix(Path(path))
    try:
        with Image.open(path) as img:
            img = ImageOps.exif_transpose(img)
            img = img.convert("L" if channels == 1 else "RGB")
    except Exception as err:  # noqa: BLE001 - PIL raises many types for bad files
        raise DWGFError(f"{path}: cannot read the image ({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''})") from None
    if size is not None and (img.height, img.width) != tuple(size):
        h, w = size
        if img.height < h or img.width < w:
            warnings.warn(f"{path}: {img.width}x{img.height} is smaller than {w}x{h}; upscaled (bicubic)", DWGFWarning, stacklevel=2)
        scale = max(h / img.height, w / img.width)
        new = (max(w, round(img.width * scale)), max(h, round(img.height * scale)))
        img = img.resize(new, resample)
        left, top = (img.width - w) // 2, (img.height - h) // 2
        img = img.crop((left, top, left + w, top + h))
    arr = np.asarray(img, dtype=np.float32) / 127.5 - 1.0
    if arr.ndim == 2:
        arr = arr[None]
    else:
        arr = arr.transpose(2, 0, 1)
    return torch.from_numpy(np.ascontiguousarray(arr))
