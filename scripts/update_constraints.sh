#!/usr/bin/env bash
# Moves constraints.txt forward: installs the newest versions of everything scripts/setup_env.sh installs (torch
# excepted: scripts/install_torch.py picks it) into a scratch environment, runs what CI runs there (ruff, the strict
# docs build, the test suite), and only if all of it passes writes the environment's versions to constraints.txt.
# Review the diff (git diff constraints.txt) and commit it with the figures of that run.
#   bash scripts/update_constraints.sh
set -euo pipefail
cd "$(dirname "$0")/.."
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
DWGF_VENV="$scratch/venv" DWGF_CONSTRAINTS=none bash scripts/setup_env.sh
# shellcheck disable=SC1091
source "$scratch/venv/bin/activate"
export HF_HUB_OFFLINE=1
ruff check .
bash scripts/build_docs.sh "$scratch/site"
python -m pytest -q
{
  sed -n '/^#/p' constraints.txt
  python -m pip freeze --exclude-editable | grep -v -iE '^(torch|pip|setuptools|wheel)==|^nvidia-|^triton=='
} > "$scratch/constraints.txt"
mv "$scratch/constraints.txt" constraints.txt
echo "update_constraints: constraints.txt written ($(grep -vc '^#' constraints.txt) packages); review: git diff constraints.txt"
