"""Per-item prompts beside the images: ``prompts.csv`` (``name,prompt``) or ``<name>.txt``."""

from __future__ import annotations

import csv
import io
import warnings
from pathlib import Path

from dwgf.errors import DWGFError, argument_warning

PROMPTS_CSV = "prompts.csv"


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as err:
        raise DWGFError(f"{path}: not UTF-8 text (byte {err.start}); prompts are read as UTF-8") from None
    except OSError as err:
        raise DWGFError(f"{path}: cannot read it ({err.strerror})") from None


def read_prompts(folder: Path, files: list[Path], argument: str = "images", warn: bool = True,
                 owner: str = "MeasurementDataModule") -> tuple[list[Path], dict[str, str]]:
    """The item files of ``folder`` without its prompt files, and each item's prompt by file name.

    A ``prompts.csv`` has the header ``name,prompt`` and one row per image: its file name (with or
    without the extension) and its prompt. A ``<stem>.txt`` next to an image of that stem holds that
    image's prompt (the whole file, surrounding whitespace removed). Both files are not items. An
    image given a prompt twice (two rows, or a row and a ``.txt``) is an error; a row naming no
    image is a warning. A ``.txt`` that names no image stays an item (reported as an unsupported file).
    """
    images = [f for f in files if f.name != PROMPTS_CSV and f.suffix.lower() != ".txt"]
    by_name = {f.name: f for f in images}
    by_stem: dict[str, list[Path]] = {}
    for f in images:
        by_stem.setdefault(f.stem, []).append(f)
    prompts: dict[str, str] = {}
    where: dict[str, str] = {}
    kept = list(files)
    csv_path = folder / PROMPTS_CSV
    if any(f.name == PROMPTS_CSV for f in files):
        kept = [f for f in kept if f.name != PROMPTS_CSV]
        rows = list(csv.reader(io.StringIO(_read_text(csv_path), newline="")))
        header = [c.strip().lower() for c in rows[0]] if rows else []
        if header[:2] != ["name", "prompt"]:
            raise DWGFError(f"{csv_path}: the first line must be the header 'name,prompt', got {','.join(rows[0]) if rows else 'an empty file'!r}")
        unknown = []
        for line, row in enumerate(rows[1:], start=2):
            if not row or all(not c.strip() for c in row):
                continue
            if len(row) != 2:
                raise DWGFError(f"{csv_path}: line {line} has {len(row)} fields; expected 2 (name,prompt; quote a prompt that "
                                "holds commas)")
            name, prompt = row[0].strip(), row[1].strip()
            matches = [by_name[name]] if name in by_name else by_stem.get(name, [])
            if len(matches) > 1:
                raise DWGFError(f"{csv_path}: line {line}: {name!r} names {len(matches)} images "
                                f"({', '.join(m.name for m in matches)}); give the file name with its extension")
            if not matches:
                unknown.append(name)
                continue
            key = matches[0].name
            if key in prompts:
                raise DWGFError(f"{csv_path}: line {line}: {key} already has a prompt ({where[key]})")
            prompts[key], where[key] = prompt, f"{PROMPTS_CSV} line {line}"
        if unknown and warn:
            shown = ", ".join(repr(u) for u in unknown[:5]) + (f" and {len(unknown) - 5} more" if len(unknown) > 5 else "")
            warnings.warn(argument_warning(owner, argument, f" {str(folder)!r}: {PROMPTS_CSV} names {len(unknown)} file(s) that are not "
                                           f"images of the folder: {shown}; their prompts are not used"), stacklevel=3)
    for f in files:
        if f.suffix.lower() != ".txt" or f.stem not in by_stem:
            continue
        matches = by_stem[f.stem]
        if len(matches) > 1:
            raise DWGFError(f"{f}: {len(matches)} images share its name ({', '.join(m.name for m in matches)}); use {PROMPTS_CSV} "
                            "with file names to give them prompts")
        key = matches[0].name
        if key in prompts:
            raise DWGFError(f"{f}: {key} already has a prompt ({where[key]}); give one per image")
        prompts[key], where[key] = _read_text(f).strip(), f.name
        kept.remove(f)
    return kept, prompts
