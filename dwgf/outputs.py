"""The output folder of ``dwgf predict``: which files dwgf owns, and how it writes, replaces and locks them.

dwgf deletes or overwrites only files it wrote itself, and knows which those are from its manifests:

- ``<output>/<item>/.dwgf-item.json`` lists the files of that item that dwgf wrote, the run
  configuration's fingerprint and the identity (file name and content hash) of the input they came
  from, and the item's state (``writing``, ``complete`` or ``failed``). It is written *before* the
  item's files (listing every file the write may leave behind) and again after them, so a killed
  write leaves a manifest that still names every file to clean up.
- ``<output>/.dwgf-run.json`` lists the run-level files dwgf wrote (``config.yaml``,
  ``metrics.csv``, ``failures.csv``, ``summary.png``).
- ``<output>/.dwgf.lock`` is locked (``flock``) while a run writes the folder; it names the holder.

Every file is written to a temporary name (``.<name>.dwgf-tmp<pid>``) and renamed. This module is
plain Python (no Lightning); :class:`dwgf.writers.PredictionWriter` uses it.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import socket
import sys
import time
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Optional, Sequence

from dwgf.errors import DWGFError, argument_error


def _output_error(folder: str, detail: str) -> DWGFError:
    """An error about the output folder, the writer's ``output`` (the command's ``--output``)."""
    return argument_error("PredictionWriter", "output", f" {folder!r}{detail}", also=("output", "overwrite"))

ITEM_MANIFEST = ".dwgf-item.json"
RUN_MANIFEST = ".dwgf-run.json"
LOCK_FILE = ".dwgf.lock"
TMP_TAG = ".dwgf-tmp"
RUN_FILES = ("config.yaml", "metrics.csv", "failures.csv", "summary.png", "calibration.json", "summary.csv", "reliability.png")
# names an item folder may not take: the run-level files and TensorBoard's folder
RESERVED = frozenset(n.casefold() for n in (*RUN_FILES, "tensorboard"))
# the file names dwgf writes in an item folder (whatever the number of particles)
ITEM_FILE = re.compile(r"^(particle_\d+\.png|mean\.png|std\.png|lower\.png|upper\.png|measurement\.png|ground_truth\.png|summary\.png|"
                       r"metrics\.json|failure\.json)$")
_TMP = re.compile(r"^\.(.+)" + re.escape(TMP_TAG) + r"\d+$")
_UNSAFE = re.compile(r'[\x00-\x1f\x7f<>:"/\\|?*]')  # path separators, control characters, and what Windows forbids
MAX_NAME_BYTES = 120


# -- item names ------------------------------------------------------------------------------------
def _short_hash(text: str) -> str:
    return hashlib.sha1(text.encode("utf-8", "surrogatepass")).hexdigest()[:8]


def _clean(stem: str) -> str:
    """``stem`` with unsafe characters replaced by ``_``; Unicode letters, spaces and punctuation kept."""
    name = _UNSAFE.sub("_", unicodedata.normalize("NFC", stem)).strip(" ").lstrip(".").rstrip(".")
    encoded = name.encode("utf-8", "surrogatepass")
    if len(encoded) > MAX_NAME_BYTES:
        name = encoded[:MAX_NAME_BYTES].decode("utf-8", "ignore")
    return name


def item_folder_names(file_names: Sequence[str]) -> list[str]:
    """One output folder name per input file name, unique by construction (also case-insensitively).

    The folder is the file's stem (``cat.png`` -> ``cat``, ``猫.png`` -> ``猫``). A stem that must be
    changed to be a safe folder name (a ``/``, a control character, a leading dot, ...) keeps its
    readable part plus ``-`` and 8 hex digits of a hash of the file name, so ``a:b.png`` becomes
    ``a_b-<hash>`` and never meets ``a_b.png``'s ``a_b``. Stems shared by several files (``x.png``,
    ``x.jpg``), or equal to a run-level name (``tensorboard``, ``metrics.csv``), get the extension
    (``x_png``, ``x_jpg``). Any clash left (``A.png`` and ``a.png`` on a case-insensitive disk) is
    settled in file-name order by the hash suffix. The name of a file depends only on its own name
    and on the files that share its stem.
    """
    names = []
    for file_name in file_names:
        stem, ext = os.path.splitext(file_name) if not file_name.startswith(".") else (file_name, "")
        clean = _clean(stem)
        if clean != unicodedata.normalize("NFC", stem) or not clean:
            clean = f"{clean or 'item'}-{_short_hash(file_name)}"
        names.append([clean, ext.lstrip(".").lower()])
    counts: dict[str, int] = {}
    for clean, _ in names:
        counts[clean.casefold()] = counts.get(clean.casefold(), 0) + 1
    for entry in names:
        if (counts[entry[0].casefold()] > 1 or entry[0].casefold() in RESERVED) and entry[1]:
            entry[0] = f"{entry[0]}_{_clean(entry[1])}"
    result: list[str] = [""] * len(names)
    used: set[str] = set()
    for i in sorted(range(len(names)), key=lambda i: file_names[i]):
        name = names[i][0]
        if name.casefold() in used or name.casefold() in RESERVED:
            name = f"{name}-{_short_hash(file_names[i])}"
            k = 2
            while name.casefold() in used:
                name = f"{names[i][0]}-{_short_hash(file_names[i])}-{k}"
                k += 1
        used.add(name.casefold())
        result[i] = name
    return result


# -- writing ---------------------------------------------------------------------------------------
def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Writes ``data`` to a temporary name beside ``path`` and renames it: never half a file.

    A failed write (a full disk, a quota) removes its temporary file and raises :class:`DWGFError`
    naming ``path``.
    """
    tmp = path.with_name(f".{path.name}{TMP_TAG}{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as err:
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass
        raise DWGFError(f"{path}: cannot write ({err.strerror or type(err).__name__})") from None


def _read_json(path: Path) -> Optional[dict[str, Any]]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _json_bytes(data: dict[str, Any]) -> bytes:
    return json.dumps(data, sort_keys=True, ensure_ascii=False, indent=1).encode("utf-8")


@dataclass
class ItemRecord:
    """What an item's manifest says: its state, the files dwgf wrote, and what produced them."""

    state: str
    config: str
    input: str
    files: list[str] = field(default_factory=list)

    @classmethod
    def read(cls, folder: Path) -> Optional["ItemRecord"]:
        data = _read_json(folder / ITEM_MANIFEST)
        if data is None or data.get("format") != 1:
            return None
        files = [f for f in data.get("files", []) if isinstance(f, str) and "/" not in f and "\\" not in f and f not in ("", ".", "..")]
        return cls(str(data.get("state", "")), str(data.get("config", "")), str(data.get("input", "")), files)

    def write(self, folder: Path) -> None:
        record = {"format": 1, "state": self.state, "config": self.config, "input": self.input, "files": sorted(set(self.files))}
        atomic_write_bytes(folder / ITEM_MANIFEST, _json_bytes(record))


def remove_owned(folder: Path, files: Iterable[str]) -> None:
    """Removes the listed files of ``folder`` (only regular files and links, never through a link)."""
    for name in files:
        path = folder / name
        if path.is_symlink() or path.is_file():
            path.unlink(missing_ok=True)


def clean_temporary_files(folder: Path) -> list[Path]:
    """Removes the temporary files of interrupted dwgf writes in ``folder`` (``.<name>.dwgf-tmp<pid>``)."""
    removed = []
    try:
        entries = list(folder.iterdir())
    except OSError:
        return removed
    for path in entries:
        if _TMP.match(path.name) and (path.is_file() or path.is_symlink()):
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


# -- the lock --------------------------------------------------------------------------------------
class OutputLock:
    """An exclusive lock on an output folder, held while a run writes it (``<output>/.dwgf.lock``).

    The lock is an ``flock`` on the file, so the operating system releases it when the process
    ends, even on ``kill -9``: a stale lock file never blocks a later run. A second run into the
    same folder stops at once with a line naming the holder (pid, host, start time, command).
    """

    def __init__(self, folder: Path):
        self.path = Path(folder) / LOCK_FILE
        self._fd: Optional[int] = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> None:
        if self._fd is not None:
            return
        import fcntl

        while True:
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as err:
                raise _output_error(str(self.path.parent), f": cannot create the lock file {LOCK_FILE} ({err.strerror})") from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                holder = _read_json(self.path) or {}
                os.close(fd)
                who = ", ".join(f"{k} {holder[k]}" for k in ("pid", "host", "started") if holder.get(k) is not None) or "unknown holder"
                command = f"; its command: {holder['command']}" if holder.get("command") else ""
                raise _output_error(str(self.path.parent), f" is in use by another dwgf run ({who}{command}); "
                                "wait for it to end or choose another <output>") from None
            try:  # the file may have been replaced between open and lock: lock the one the path names
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except OSError:
                same = False
            if same:
                break
            os.close(fd)
        info = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%d %H:%M:%S"),
                "command": " ".join(sys.argv)[:500]}
        os.ftruncate(fd, 0)
        os.pwrite(fd, _json_bytes(info), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor releases the flock
            self._fd = None


# -- the resume key --------------------------------------------------------------------------------
_SAME_AS_BEFORE = {"generator": "cpu", "float32_autoencoder": False, "torch_dtype": "float32", "calibration": None}


# options that some solvers gained later (the others had them all along, so their keys keep them): at None they give what
# those solvers' folders hold
_ADDED_LATER_TO = {"likelihood": ("LatentDPS", "PSLD", "DecoderInversion")}


def _same_as_before(key: str, value: Any, solver: str = "") -> bool:
    if key in _ADDED_LATER_TO and value is None and solver.rsplit(".", 1)[-1] in _ADDED_LATER_TO[key]:
        return True
    return key in _SAME_AS_BEFORE and value == _SAME_AS_BEFORE[key] and type(value) is type(_SAME_AS_BEFORE[key])


def fingerprint(full: dict) -> str:
    """A hash of the settings that determine an item's result (not devices, workers, folders): with the
    item's identity (its file name and content), the resume key. ``full`` is the resolved config as
    config.yaml holds it (the same dump, so the two never disagree)."""
    data = dict(full.get("data") or {})
    init = dict(data.get("init_args") or {})
    init.pop("num_workers", None)
    model = dict(full.get("model") or {})
    # not results: logging, and how the work is laid out in memory (decoder_chunk, tf32: float rounding only); and options
    # added later, at the default that gives what folders of earlier versions hold, so that those folders still resume
    model["init_args"] = {k: v for k, v in dict(model.get("init_args") or {}).items()
                          if k not in ("log_images_every", "decoder_chunk", "tf32")
                          and not _same_as_before(k, v, str(model.get("class_path") or ""))}
    prior = model["init_args"].get("prior")
    if isinstance(prior, dict) and isinstance(prior.get("init_args"), dict):
        prior = dict(prior, init_args={k: v for k, v in prior["init_args"].items() if not _same_as_before(k, v)})
        model["init_args"]["prior"] = prior
    for key in ("images", "measurements", "masks"):  # where the inputs are does not matter: their names and contents do
        if init.get(key):
            init[key] = "given"
    data["init_args"] = init
    key = {"model": model, "data": data, "seed": full.get("seed_everything"),
           "precision": (full.get("trainer") or {}).get("precision")}
    return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:16]


# -- a refused run -----------------------------------------------------------------------------------
TENSORBOARD = "tensorboard"


class OutputGuard:
    """What a run made in its output folder before it wrote any result, taken back when the run is refused.

    Made before the folder is created and locked; :meth:`undo` (called when the run ends in an error) removes what
    appeared since (the lock file, TensorBoard's new version folders and its ``tensorboard`` folder, the output
    folder itself and the parents it needed) as long as the run wrote nothing else: a refused run leaves the folder
    as it was (absent stays absent). A run that wrote an item or a run file keeps everything.
    """

    def __init__(self, output: Path):
        self.output = Path(output).expanduser()
        self.created = [a for a in (self.output, *self.output.parents) if not os.path.lexists(a)]  # deepest first
        self.before = self._names(self.output)
        self.tensorboard_before = self._names(self.output / TENSORBOARD)

    @staticmethod
    def _names(folder: Path) -> set[str]:
        try:
            return set(os.listdir(folder)) if folder.is_dir() and not folder.is_symlink() else set()
        except OSError:
            return set()

    def undo(self) -> None:
        new = self._names(self.output) - self.before
        if new - {LOCK_FILE, TENSORBOARD}:
            return  # the run wrote: not a refusal
        try:
            board = self.output / TENSORBOARD
            for version in sorted(self._names(board) - self.tensorboard_before):
                folder = board / version
                if folder.is_dir() and not folder.is_symlink() and all(
                        f.is_file() and f.name.startswith(("events.out.tfevents.", "hparams.yaml")) for f in folder.iterdir()):
                    for f in folder.iterdir():
                        f.unlink()
                    folder.rmdir()
            if TENSORBOARD in new and board.is_dir() and not board.is_symlink() and not any(board.iterdir()):
                board.rmdir()
            if LOCK_FILE in new:
                (self.output / LOCK_FILE).unlink(missing_ok=True)
            for folder in self.created:  # the output folder, then the parents made for it, while empty
                if folder.is_dir() and not folder.is_symlink() and not any(folder.iterdir()):
                    folder.rmdir()
        except OSError:
            pass  # best effort: a folder that cannot be cleaned keeps what it has


# -- the run ---------------------------------------------------------------------------------------
@dataclass
class Resume:
    """What a run takes over from the previous runs into its output folder: the indices of the items
    already complete (same configuration, same input). The writer fills it in when it has read the
    folder; the data module leaves those items' batches out. The CLI gives both the same object."""

    complete: frozenset[int] = frozenset()


class OutputFolder:
    """The files dwgf owns in ``--output``: item folders, run-level files, manifests, the lock.

    Args:
        root: the output folder.
        config: the run configuration's fingerprint (what must match for a complete item to count).
    """

    def __init__(self, root: str | os.PathLike, config: str = ""):
        self.root = Path(root)
        self.config = config
        self.lock = OutputLock(self.root)

    # -- checks and preparation (rank 0, before anything is written) --------------------------------
    def prepare(self, items: Sequence[str], identities: Sequence[str], overwrite: bool, inputs: Sequence[Path] = ()) -> frozenset[int]:
        """Locks the folder, checks that dwgf may write every file it will write, cleans up after
        interrupted runs, and (``overwrite``) removes the previous run's files.

        Returns the indices of ``items`` that are complete for this configuration and input (resume).
        Raises :class:`DWGFError` before anything is written if an item folder is a link or a file,
        if a file dwgf would write exists but was not written by dwgf, if the folder is an input
        folder, or if it holds complete items of a different configuration (without ``overwrite``).
        """
        root = self.root
        for folder in inputs:
            if folder.resolve() == root.resolve():
                raise _output_error(str(root), " is also an input folder; choose another <output>")
        self.lock.acquire()
        self._adopt_earlier_version(overwrite)
        run = self._run_files()
        for name in RUN_FILES:
            path = root / name
            if (path.exists() or path.is_symlink()) and name not in run:
                raise _output_error(str(root), f": {name} exists and was not written by dwgf; move it or choose another <output>")
        clean_temporary_files(root)
        if overwrite:
            self._remove_previous_run()
        complete = set()
        for index, (name, identity) in enumerate(zip(items, identities)):
            folder = root / name
            if folder.is_symlink() or (folder.exists() and not folder.is_dir()):
                kind = "a link" if folder.is_symlink() else "a file"
                raise _output_error(str(root), f": {name} is {kind}, not a folder dwgf made; move it or choose another <output>")
            if not folder.is_dir():
                continue
            clean_temporary_files(folder)
            record = ItemRecord.read(folder)
            owned = set(record.files) if record else set()
            for path in sorted(folder.iterdir()):
                if ITEM_FILE.match(path.name) and path.name not in owned:
                    raise _output_error(str(root), f": {name}/{path.name} exists and was not written by dwgf; "
                                    "move it or choose another <output>")
            if record is None or record.state != "complete":
                continue
            if record.config != self.config:
                raise _output_error(str(root), f" holds results of a different configuration ({name}); "
                                "use <overwrite> true to replace them or choose another <output>")
            if record.input == identity:
                complete.add(index)
        return frozenset(complete)

    def _adopt_earlier_version(self, overwrite: bool) -> None:
        """Outputs of dwgf before manifests (items marked by ``.complete`` or ``failure.json``): refused,
        or with ``overwrite`` given manifests of their dwgf-named files so that they are removed."""
        if (self.root / RUN_MANIFEST).is_file():
            return
        legacy = [f for f in sorted(self.root.iterdir()) if f.is_dir() and not f.is_symlink() and not (f / ITEM_MANIFEST).exists()
                  and ((f / ".complete").is_file() or (f / "failure.json").is_file())]
        if not legacy:
            return
        if not overwrite:
            raise _output_error(str(self.root), f" holds results of an earlier dwgf version ({legacy[0].name}); "
                            "use <overwrite> true to replace them or choose another <output>")
        for folder in legacy:
            files = [p.name for p in folder.iterdir() if p.is_file() and (ITEM_FILE.match(p.name) or p.name == ".complete")]
            ItemRecord("earlier-version", "", "", files).write(folder)
        run_files = [n for n in RUN_FILES if (self.root / n).is_file()]
        atomic_write_bytes(self.root / RUN_MANIFEST, _json_bytes({"format": 1, "files": run_files}))

    def _run_files(self) -> set[str]:
        data = _read_json(self.root / RUN_MANIFEST) or {}
        return {f for f in data.get("files", []) if f in RUN_FILES}

    def _remove_previous_run(self) -> None:
        """``--overwrite``: removes every file the previous run(s) wrote, as their manifests list them."""
        remove_owned(self.root, self._run_files())
        for folder in sorted(self.root.iterdir()):
            if folder.is_symlink() or not folder.is_dir():
                continue
            record = ItemRecord.read(folder)
            if record is None:
                continue
            remove_owned(folder, record.files)
            (folder / ITEM_MANIFEST).unlink(missing_ok=True)
            try:
                folder.rmdir()  # only if nothing of the user's is left in it
            except OSError:
                pass
        (self.root / RUN_MANIFEST).unlink(missing_ok=True)

    # -- run-level files --------------------------------------------------------------------------
    def write_run_file(self, name: str, data: bytes) -> None:
        """Writes a run-level file (one of ``RUN_FILES``), recording it in the run manifest first."""
        files = self._run_files()
        if name not in files:
            atomic_write_bytes(self.root / RUN_MANIFEST, _json_bytes({"format": 1, "files": sorted(files | {name})}))
        atomic_write_bytes(self.root / name, data)

    def remove_run_file(self, name: str) -> None:
        if name in self._run_files():
            (self.root / name).unlink(missing_ok=True)

    # -- items ------------------------------------------------------------------------------------
    def item_folder(self, name: str) -> Path:
        folder = self.root / name
        if folder.is_symlink():
            raise _output_error(str(self.root), f": {name} is a link, not a folder dwgf made; move it or choose another <output>")
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    def write_item(self, name: str, identity: str, files: dict[str, bytes], state: str = "complete") -> None:
        """Replaces the item's previous files (those its manifest lists) with ``files``, crash-safely.

        The manifest first lists old and new files (state ``writing``), then the new files are
        written, the old ones that are not rewritten removed, and the manifest lists the new ones
        with ``state``.
        """
        folder = self.item_folder(name)
        old = ItemRecord.read(folder)
        old_files = set(old.files) if old else set()
        ItemRecord("writing", self.config, identity, sorted(old_files | set(files))).write(folder)
        for file_name, data in files.items():
            atomic_write_bytes(folder / file_name, data)
        remove_owned(folder, old_files - set(files))
        ItemRecord(state, self.config, identity, sorted(files)).write(folder)

    def item_record(self, name: str) -> Optional[ItemRecord]:
        folder = self.root / name
        return None if folder.is_symlink() or not folder.is_dir() else ItemRecord.read(folder)
