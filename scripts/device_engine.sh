#!/usr/bin/env bash
# The LeanK engine on the GPU machine (issue 17): run from the repository root; everything lands in $OUT.
#
#   scripts/device_engine.sh smoke            tests/leank_core on the GPU, then two Llama-shape cells of
#                                             benchmarks/decode_e2e.py (dense twin and LeanK at B8/32K)   ~4 min
#   scripts/device_engine.sh kernels          decode-kernel config sweep (benchmarks/decode_attention.py --sweep),
#                                             then the kernel table with the default config                ~5 min
#   scripts/device_engine.sh memcheck         the decode kernels, then the engine's whole step (eagerly), under
#                                             compute-sanitizer memcheck (no caching allocator), then the
#                                             kernel table                                                  ~6 min
#   scripts/device_engine.sh full [MODEL...]  benchmarks/decode_e2e.py, all variants and cells, capacity figure
#                                             (both models unless named: llama-3.1-8b qwen2.5-7b)          ~8 min
#
# tests/leank_core/tasks needs `datasets`, which the machine lacks: carry .carry/deps (made here by
# `bash scripts/stage_device.sh download`) and it is installed first. Without it those CPU-only
# data-generation tests are left out, and pytest.log says so.
set -uo pipefail
mode=${1:-smoke}
shift || true
OUT=${OUT:?OUT must name the results folder}
SITE=/tmp/site
export PYTHONPATH=$SITE:$PWD PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1
status=0

# run LOG COMMAND...: tee the command's output to $OUT/LOG, note its wall time and exit code, keep the worst code.
run() {
  local log=$1 t0=$SECONDS rc
  shift
  "$@" 2>&1 | tee "$OUT/$log"
  rc=${PIPESTATUS[0]}
  echo "== $((SECONDS - t0)) s, exit $rc: $*" | tee -a "$OUT/$log"
  [ "$rc" -eq 0 ] || status=$rc
}

case $mode in
  smoke)
    nvidia-smi --query-gpu=name,memory.total,memory.used,driver_version --format=csv | tee "$OUT/gpu.txt"
    [ -d .carry/deps ] && bash scripts/stage_device.sh install
    ignore=()
    if ! python3 -c "import datasets" 2>/dev/null; then
      ignore=(--ignore=tests/leank_core/tasks)
      echo "datasets is not importable here (carry .carry/deps to include them): tests/leank_core/tasks left out" | tee "$OUT/pytest_note.txt"
    fi
    run pytest.log python3 -m pytest -q -ra tests/leank_core ${ignore[@]+"${ignore[@]}"} --durations=20
    run decode_e2e_smoke.log python3 benchmarks/decode_e2e.py --out "$OUT/decode_e2e_smoke.json" \
      --models llama-3.1-8b --batches 8 --tokens 32768 --variants dense_engine leank_engine --capacity-tokens 0 --steps 16 ;;
  kernels)
    run decode_sweep.log python3 benchmarks/decode_attention.py --sweep --out "$OUT/decode_sweep.json"
    run decode_attention.log python3 benchmarks/decode_attention.py --out "$OUT/decode_attention.json" ;;
  memcheck)
    PYTORCH_NO_CUDA_MEMORY_CACHING=1 run memcheck.log timeout 240 compute-sanitizer --tool memcheck --print-limit 20 \
      python3 scripts/memcheck_decode.py
    PYTORCH_NO_CUDA_MEMORY_CACHING=1 run engine_memcheck.log timeout 330 compute-sanitizer --tool memcheck \
      --print-limit 20 python3 scripts/memcheck_engine.py
    run decode_attention.log python3 benchmarks/decode_attention.py --out "$OUT/decode_attention.json" ;;
  full)
    models=("$@")
    [ ${#models[@]} -gt 0 ] || models=(llama-3.1-8b qwen2.5-7b)
    run decode_e2e.log python3 benchmarks/decode_e2e.py --out "$OUT/decode_e2e.json" --models "${models[@]}" ;;
  *)
    echo "usage: scripts/device_engine.sh smoke | kernels | memcheck | full [MODEL...]" >&2
    exit 2 ;;
esac
exit $status
