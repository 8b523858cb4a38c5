#!/usr/bin/env bash
# The issue-21 systems runs on the GPU machine (results go to results/scale/ once the lead commits them).
# Run from the repo root; every mode writes its logs and records under $OUT.
#
#   step  one H200 (nvidia-h200), nothing carried: benchmarks/train_step.py on the llama-3.1-8b preset at
#         8K, 32K and 128K -> $OUT/scale_1gpu.json (the plain step, zero_stage null)
#   job   two H200s (nvidia-h200-x2), carry [".carry/ray", ".carry/deps"] made by
#         `bash scripts/stage_device.sh download`: the Ray job pipelines/learn_masks.py under DeepSpeed ZeRO-3 at
#         32K tokens, llama-3.1-8b with 1 then 2 workers (same global batch of 2 samples a step), then
#         llama-3.1-70b with 2 workers -> $OUT/scale_2gpu.json, plus each job's log
#
# Shape presets have random weights (leank_core/model_source.py): these runs measure speed and memory only,
# and the job pushes no mask for them. Records follow results/scale/scale.json: model, gpus, zero_stage,
# context, step_s (mean over the steps after the first), prefill_s (the same prompt's no-grad prefill alone),
# tokens_per_s (prompt + 2 x answer tokens per sample / step time), peak_gib_per_gpu (max_memory_allocated,
# weights included; the fullest GPU).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1  # never NVLink multicast there
export TOKENIZERS_PARALLELISM=false RAY_DEDUP_LOGS=0
seconds() { local t0=$SECONDS; "$@"; echo "wall $((SECONDS - t0)) s: $*"; }

learn() {  # <preset> <workers> <steps>: one Ray job at 32K tokens, its log and metrics under $OUT
  local preset=$1 workers=$2 steps=$3 name="scale-$1-w$2"
  seconds python3 pipelines/learn_masks.py --model "$preset" --num-workers "$workers" --gpus-per-worker 1 \
    --zero-stage 3 --batch-size 2 --stage1-steps $((steps - 1)) --stage2-steps 1 --sink 128 --recent 1024 \
    --n-samples 2 --min-length 32768 --max-length 32768 --checkpoint-every 1000 \
    --storage-path /tmp/ray_results --registry /tmp/registry --name "$name-$RANDOM" 2>&1 | tee "$OUT/$name.log"
  grep '^metrics: ' "$OUT/$name.log" | tail -1 | cut -c10- > "$OUT/$name.metrics.json"
}

case "${1:-}" in
  step)
    nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
    seconds python3 benchmarks/train_step.py --model llama-3.1-8b --context 8192 32768 131072 \
      --out "$OUT/scale_1gpu.json" 2>&1 | tee "$OUT/step.log" ;;
  job)
    nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
    bash scripts/stage_device.sh install
    learn llama-3.1-8b 1 4
    learn llama-3.1-8b 2 4
    learn llama-3.1-70b 2 3
    python3 - "$OUT" <<'EOF'
import json, sys
from pathlib import Path

out = Path(sys.argv[1])
records = []
for model, gpus in (("llama-3.1-8b", 1), ("llama-3.1-8b", 2), ("llama-3.1-70b", 2)):
    text = (out / f"scale-{model}-w{gpus}.metrics.json").read_text().strip()
    if not text:
        print(f"{model} on {gpus} GPUs: no metrics (see its log)")
        continue
    m = json.loads(text)
    records.append({"model": model, "gpus": gpus, "zero_stage": 3, "context": 32768, "step_s": m["step_s"],
                    "prefill_s": m["prefill_s"], "tokens_per_s": m["tokens_per_s"],
                    "peak_gib_per_gpu": m["peak_gib_per_gpu"]})
(out / "scale_2gpu.json").write_text(json.dumps({"records": records}, indent=1) + "\n")
print(json.dumps({"records": records}, indent=1))
by = {(r["model"], r["gpus"]): r for r in records}
if ("llama-3.1-8b", 1) in by and ("llama-3.1-8b", 2) in by:
    one, two = by["llama-3.1-8b", 1]["tokens_per_s"], by["llama-3.1-8b", 2]["tokens_per_s"]
    print(f"8B at 32K, ZeRO-3: scaling efficiency (tokens/s at 2) / (2 x tokens/s at 1) = {two / (2 * one):.1%}")
EOF
    ;;
  *) echo "usage: $0 step|job" >&2; exit 2 ;;
esac
