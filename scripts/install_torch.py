"""Installs the torch build that fits this machine into the active environment, before dwgf.

- torch already importable: left as it is.
- an NVIDIA GPU (``nvidia-smi -L`` lists one, or the driver's /proc entry exists): the default build
  from the package index (CUDA included).
- no NVIDIA GPU: the CPU build, never a CUDA one. First PyTorch's CPU wheel index; if that cannot be
  reached, the configured indexes, but only a resolution that pulls no CUDA package (``nvidia-*``,
  ``triton``, a ``+cu`` build): each candidate is resolved with ``pip install --dry-run`` first.
  ``DWGF_TORCH_VERSION`` (default 2.13.0, the version CI tests) is tried before the newest.

Run by scripts/setup_env.sh; ``python scripts/install_torch.py --dry-run`` says what it would do.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

CPU_INDEX = "https://download.pytorch.org/whl/cpu"
CUDA_PACKAGES = ("nvidia-", "triton", "cuda-")


def pip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pip", *args], check=check, text=True, capture_output=not check)


def has_nvidia_gpu() -> bool:
    smi = shutil.which("nvidia-smi")
    if smi:
        try:
            run = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=30)
            if run.returncode == 0 and "GPU" in run.stdout:
                return True
        except (OSError, subprocess.TimeoutExpired):
            pass
    gpus = Path("/proc/driver/nvidia/gpus")
    return gpus.is_dir() and any(gpus.iterdir())


def cuda_in_resolution(requirement: str, *index_args: str) -> tuple[bool, list[str]]:
    """Resolves ``requirement`` without installing; returns (pulls CUDA?, the packages it would install)."""
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.json"
        run = pip("install", "--dry-run", "--quiet", "--ignore-installed", "--report", str(report), requirement, *index_args, check=False)
        if run.returncode != 0 or not report.is_file():
            raise RuntimeError((run.stderr or run.stdout).strip().splitlines()[-1] if (run.stderr or run.stdout).strip() else "resolution failed")
        items = json.loads(report.read_text()).get("install", [])
    names = [f"{i['metadata']['name']}=={i['metadata']['version']}" for i in items]
    cuda = any(n.lower().startswith(CUDA_PACKAGES) for n in names) or any(n.lower().startswith("torch==") and "+cu" in n for n in names)
    return cuda, names


def main() -> None:
    dry = "--dry-run" in sys.argv
    if importlib.util.find_spec("torch") is not None:
        import torch

        print(f"install_torch: torch {torch.__version__} is already installed: left as it is")
        return
    if has_nvidia_gpu():
        print("install_torch: an NVIDIA GPU is present: installing the default torch build (with CUDA)")
        if not dry:
            pip("install", "--quiet", "torch")
        return
    print("install_torch: no NVIDIA GPU: installing a CPU build of torch (no CUDA package)")
    try:
        cuda, names = cuda_in_resolution("torch", "--index-url", CPU_INDEX, "--timeout", "20", "--retries", "1")
        if not cuda:
            print(f"install_torch: with {CPU_INDEX} as the index (and any configured extra indexes): {', '.join(names)}")
            if not dry:
                pip("install", "--quiet", "torch", "--index-url", CPU_INDEX, "--timeout", "20", "--retries", "1")
            return
    except RuntimeError as err:
        print(f"install_torch: {CPU_INDEX} is not reachable ({err}); trying the configured package indexes")
    version = os.environ.get("DWGF_TORCH_VERSION", "2.13.0")
    for requirement in (f"torch=={version}", "torch"):
        try:
            cuda, names = cuda_in_resolution(requirement)
        except RuntimeError as err:
            print(f"install_torch: {requirement}: {err}")
            continue
        if cuda:
            print(f"install_torch: {requirement} from the configured indexes would pull CUDA packages: not installed")
            continue
        print(f"install_torch: {requirement}: {', '.join(names)}")
        if not dry:
            pip("install", "--quiet", requirement)
        return
    raise SystemExit("install_torch: no CPU build of torch could be found; install one yourself "
                     f"(pip install torch --index-url {CPU_INDEX}) and run this again")


if __name__ == "__main__":
    main()
