#!/usr/bin/env bash
# On a GPU machine, in one call: the GPU tests (pytest -m gpu) and the benchmarks on CUDA, everything printed.
#   bash benchmarks/gpu_check.sh            # from the repository root, with posecli installed (pip install -e .[dev])
# Exits non-zero if any step failed; every step runs even when an earlier one failed.
set -uo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python}"
failed=()

step() {  # step NAME CMD...: print a header, run, remember failures
    local name="$1"
    shift
    echo
    echo "=== ${name}: $*"
    local t0=$SECONDS
    if "$@"; then echo "=== ${name}: ok ($((SECONDS - t0)) s)"; else echo "=== ${name}: FAILED ($((SECONDS - t0)) s)"; failed+=("$name"); fi
}

step "environment" "$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, \
'available', torch.cuda.is_available()); print(torch.cuda.get_device_name(0)); \
print('bf16', torch.cuda.is_bf16_supported())"
command -v nvidia-smi >/dev/null && step "nvidia-smi" nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv

step "gpu tests" "$PY" -m pytest -m gpu -v -rs tests
step "train step benchmark" "$PY" benchmarks/train_step.py --device cuda --compile
step "decode benchmark" "$PY" benchmarks/decode.py --device cuda
step "device targets benchmark" "$PY" benchmarks/device_targets.py --device cuda
step "data pipeline benchmark" "$PY" benchmarks/data_pipeline.py --device cuda --json
step "demo fine-tune on CUDA" "$PY" -m posecli finetune --preset demo --device cuda --work-dir "${TMPDIR:-/tmp}/posecli-gpu-demo" --overwrite

echo
if [ ${#failed[@]} -eq 0 ]; then
    echo "gpu_check: all steps passed"
else
    echo "gpu_check: FAILED steps: ${failed[*]}"
    exit 1
fi
