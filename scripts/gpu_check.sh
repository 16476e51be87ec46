#!/usr/bin/env bash
# The GPU check: dwgf's GPU suite and a short flow_speed on one CUDA GPU, in under 8 minutes.
#
#   bash scripts/gpu_check.sh [OUTDIR]        # default OUTDIR: gpu_check/
#
# Installs nothing: dwgf and its dependencies must be importable already (on an offline GPU machine, the
# wheels of ../shared/gpu/README.md on PYTHONPATH). Writes four files into OUTDIR:
#   gpu_check.log       the environment, the GPU suite's pytest output, flow_speed's output
#   gpu_suite.json      what the suite measured: the quickstart's per-item PSNR on the CPU and on the GPU
#                       (32-true with CPU generators, with the device's generators, bf16-mixed), seconds per item
#   flow_speed_gpu.md   SD 2.1-base layout, 512 px, one image: float32 and bf16-mixed at N 4 (ms per
#                       iteration, ratio to the floor, peak memory), then grid rows at N 4 in bf16: with and
#                       without the TAESD flow decoder, and with --decoder-chunk 1
#   flow_speed_gpu.png  the grid's seconds per image against peak memory
# Exit status: the GPU suite's (0: every test passed).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="$(mkdir -p "${1:-gpu_check}" && cd "${1:-gpu_check}" && pwd)"
PY="${PYTHON:-python3}"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
LOG="$OUT/gpu_check.log"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

{
  echo "# gpu_check $(date -u +%FT%TZ) on $(hostname)"
  "$PY" -c "import torch, diffusers, lightning; print('torch', torch.__version__, '| CUDA', torch.version.cuda, '| diffusers', diffusers.__version__, '| lightning', lightning.__version__); print('device:', torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'NO CUDA DEVICE')"
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || true
} > "$LOG" 2>&1

# 1. the GPU suite (108 s on a 2-core CPU standing in for the GPU; the quickstart also runs once on the CPU), at most 250 s
echo "## pytest -m gpu" >> "$LOG"
DWGF_GPU_REPORT="$WORK/report" timeout 250 "$PY" -m pytest -m gpu -q -p no:cacheprovider tests/test_gpu.py \
  >> "$LOG" 2>&1
SUITE=$?
echo "pytest exit status: $SUITE" >> "$LOG"
"$PY" - "$WORK/report" "$OUT/gpu_suite.json" "$SUITE" <<'PYEOF'
import json, sys
from pathlib import Path

report, out, status = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
found = {p.stem: json.loads(p.read_text()) for p in sorted(report.glob("*.json"))} if report.is_dir() else {}
summary = {"pytest_exit_status": status, **found}
for name, table in found.items():
    if name.startswith("quickstart_"):
        diffs = [abs(v["gpu"] - v["cpu"]) for v in table.values()]
        summary[name + "_largest_psnr_change_db"] = max(diffs) if diffs else None
out.write_text(json.dumps(summary, indent=1))
PYEOF

# 2. speed and memory at the paper's setting, at most 70 + 70 + 50 + 40 s (each layout is built on the CPU first);
#    with the suite, at most 480 s in all
echo "## flow_speed" >> "$LOG"
for precision in 32 bf16; do
  timeout 70 "$PY" benchmarks/flow_speed.py --sizes --compare-sizes --changes --sd 512:4 --sd-iters 10 --precision "$precision" \
    --output "$WORK/flow_speed_$precision.md" >> "$LOG" 2>&1 || echo "flow_speed --precision $precision failed or timed out" >> "$LOG"
done
timeout 50 "$PY" benchmarks/flow_speed.py --grid sd21:512 --grid-particles 4 --flow-decoder --precision bf16 --sd-iters 10 \
  --output "$WORK/flow_speed_grid.md" --plot "$OUT/flow_speed_gpu.png" >> "$LOG" 2>&1 || echo "flow_speed --grid failed or timed out" >> "$LOG"
# the memory target (<= 8 GB above the weights at N 4): one particle at a time through the decoder
timeout 40 "$PY" benchmarks/flow_speed.py --grid sd21:512 --grid-particles 4 --precision bf16 --sd-iters 10 --decoder-chunk 1 \
  --output "$WORK/flow_speed_grid_chunk1.md" >> "$LOG" 2>&1 || echo "flow_speed --grid --decoder-chunk 1 failed or timed out" >> "$LOG"
cat "$WORK"/flow_speed_32.md "$WORK"/flow_speed_bf16.md "$WORK"/flow_speed_grid.md "$WORK"/flow_speed_grid_chunk1.md \
  > "$OUT/flow_speed_gpu.md" 2>/dev/null
echo "gpu_check: wrote $(ls "$OUT" | tr '\n' ' ')" | tee -a "$LOG"
exit "$SUITE"
