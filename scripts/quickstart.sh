#!/usr/bin/env bash
# The quickstart in one command: sets up .venv (scripts/setup_env.sh: the right torch for this machine,
# then dwgf with its test tools) and runs DWGF box inpainting on the 8 example digits with the prior
# that ships with dwgf, offline. Results: outputs/quickstart/ (summary.png).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
# shellcheck disable=SC1091
source "${DWGF_VENV:-.venv}/bin/activate"
export HF_HUB_OFFLINE=1
dwgf predict --config configs/quickstart.yaml "$@"
echo "quickstart: results in outputs/quickstart/ (see outputs/quickstart/summary.png)"
