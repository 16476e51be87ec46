#!/usr/bin/env bash
# Creates (or reuses) the virtual environment .venv (or $DWGF_VENV) and installs dwgf into it with its
# test and docs tools, after the torch build that fits this machine (scripts/install_torch.py: the CPU build
# when there is no NVIDIA GPU, so that no CUDA package is downloaded). Everything but torch is installed at the
# versions in constraints.txt (tested together; bash scripts/update_constraints.sh moves them forward), so a
# fresh machine gets today what CI tested. Used by scripts/quickstart.sh and by .ci/run. Afterwards:
# source .venv/bin/activate. DWGF_CONSTRAINTS=none installs the newest versions instead (what update_constraints.sh does).
set -euo pipefail
cd "$(dirname "$0")/.."

VENV="${DWGF_VENV:-.venv}"
python3 -m venv "$VENV"
# shellcheck disable=SC1091
source "$VENV/bin/activate"
python -m pip install --quiet --upgrade pip
python scripts/install_torch.py
constraints=(--constraint constraints.txt)
[ "${DWGF_CONSTRAINTS:-}" = none ] && constraints=()
python -m pip install --quiet "${constraints[@]}" -e '.[test,docs]'
python -c "import torch, lightning, diffusers, transformers, jsonargparse; print('setup_env: torch', torch.__version__, '| lightning', lightning.__version__, '| diffusers', diffusers.__version__, '| transformers', transformers.__version__)"
