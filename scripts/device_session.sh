#!/usr/bin/env bash
# This session's GPU runs on one H200 (kind nvidia-h200), three calls back to back while the machine stays
# warm (its files survive between calls; the SmolLM2 file comes in two halves because one call carries at
# most 64 MiB). Each call packs its results into one archive under $OUT (a call returns at most 8 files).
# Made here first: `bash scripts/stage_device.sh download`.
#
#   a  carry .carry/deps .carry/smollm2-a  install; the model hash across dtypes and devices; the whole
#                                          tests/leank_core suite on the GPU (compiled kernels, CUDA graphs)
#   b  carry .carry/smollm2-b              join the SmolLM2 file; its GPU tests; scripts/smollm2_gate.py
#                                          (the gate on the committed masks, 64 samples per cell, 1K-8K)
#   c  nothing carried                     benchmarks/decode_e2e.py on Llama-3.1-8B shapes (all variants, the
#                                          capacity figure) and the training step at 32K/128K
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:?OUT must name the results folder}
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1
export TOKENIZERS_PARALLELISM=false
res=/tmp/res_${1:-none}
mkdir -p "$res"
log() { local name=$1 t0=$SECONDS; shift; "$@" > "$res/$name.log" 2>&1; echo "$name: exit $? after $((SECONDS - t0)) s" | tee -a "$res/steps.txt"; }

case ${1:-} in
  a)
    log install bash scripts/stage_device.sh install
    log model_hash python3 scripts/model_hash_device.py --out "$res/model_hash_device.json"
    log pytest timeout 420 python3 -m pytest -q -ra -p no:cacheprovider tests/leank_core --durations=15 ;;
  b)
    log install bash scripts/stage_device.sh install
    log pytest_smollm2 python3 -m pytest -q -ra -p no:cacheprovider tests/leank_core -k "smollm2 or real_bpe"
    log gate python3 scripts/smollm2_gate.py --out "$res/gate" --budget-s "${2:-360}" ;;
  c)
    log decode_e2e python3 benchmarks/decode_e2e.py --out "$res/decode_e2e.json" --models llama-3.1-8b
    log train_step python3 benchmarks/train_step.py --model llama-3.1-8b --context 32768 131072 \
      --out "$res/scale_1gpu.json" ;;
  *) echo "usage: scripts/device_session.sh a|b [budget_s]|c" >&2; exit 2 ;;
esac
tail -n 3 "$res"/*.log
tar czf "$OUT/${1}.tgz" -C "$res" .
