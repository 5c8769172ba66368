#!/usr/bin/env bash
# On a GPU machine, in one call: the GPU tests (pytest -m gpu) and the benchmarks on CUDA, everything printed.
#   bash benchmarks/gpu_check.sh            # from the repository root, with posecli installed (pip install -e .[dev])
# Exits non-zero if any step failed; every step runs even when an earlier one failed. Each step has a time limit
# (seconds, the first argument of `step`) so that the whole check finishes within 8 minutes.
set -uo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python}"
failed=()

step() {  # step NAME SECONDS CMD...: print a header, run with a time limit, remember failures
    local name="$1" limit="$2"
    shift 2
    echo
    echo "=== ${name} (limit ${limit} s): $*"
    local t0=$SECONDS
    if timeout "$limit" "$@"; then echo "=== ${name}: ok ($((SECONDS - t0)) s)"; else echo "=== ${name}: FAILED ($((SECONDS - t0)) s)"; failed+=("$name"); fi
}

step "environment" 30 "$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, \
'available', torch.cuda.is_available()); print(torch.cuda.get_device_name(0)); \
print('bf16', torch.cuda.is_bf16_supported())"
command -v nvidia-smi >/dev/null && step "nvidia-smi" 10 nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv

step "gpu tests" 90 "$PY" -m pytest -m gpu -v -rs tests
step "train step benchmark" 80 "$PY" benchmarks/train_step.py --device cuda --compile
step "decode benchmark" 30 "$PY" benchmarks/decode.py --device cuda
step "device targets benchmark" 30 "$PY" benchmarks/device_targets.py --device cuda
step "data pipeline benchmark" 40 "$PY" benchmarks/data_pipeline.py --device cuda --json
step "train throughput (W48 384x288 bf16, real loader, 1/4/8/16 workers; --gpu-decode 4/16)" 120 \
    "$PY" benchmarks/train_throughput.py --steps 20 --gpu-decode-workers 4 16
step "demo fine-tune on CUDA" 45 "$PY" -m posecli finetune --preset demo --device cuda --work-dir "${TMPDIR:-/tmp}/posecli-gpu-demo" --overwrite

echo
if [ ${#failed[@]} -eq 0 ]; then
    echo "gpu_check: all steps passed"
else
    echo "gpu_check: FAILED steps: ${failed[*]}"
    exit 1
fi
