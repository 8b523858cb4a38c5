"""Run LeanKEngine's decode step eagerly on the GPU so ``compute-sanitizer --tool memcheck`` sees every access.

    PYTORCH_NO_CUDA_MEMORY_CACHING=1 compute-sanitizer --tool memcheck python3 scripts/memcheck_engine.py

Why: ``memcheck_decode.py`` checks the attention kernels alone. The step also runs the residual norm,
RoPE (on q/k/v read in place from the stacked projection), the append kernel moving tokens from the
recent ring into the compact middle, and the SiLU-gate kernel. Without the caching allocator every
tensor is its own allocation, so memcheck reports any access past a buffer; but a CUDA graph cannot
be captured then (capture may not call cudaMalloc), so the step runs eagerly here: the same kernels
the graph replays. Tiny random Llama (no biases) and Qwen2 (q/k/v biases) models with 128-wide heads,
so every kept-count tier (0, 32, 64, 96, 128 channels) occurs; small windows so the middle fills;
a ragged left-padded batch in a larger bucket.
"""

import torch
from transformers import AutoModelForCausalLM, LlamaConfig, Qwen2Config

from leank_core.engine import LeanKEngine
from leank_core.evaluation import left_padded
from leank_core.mask import LeanKMask

SHAPE = dict(vocab_size=300, hidden_size=256, intermediate_size=512, num_hidden_layers=2, num_attention_heads=8,
             num_key_value_heads=4, head_dim=128, max_position_embeddings=512)
COUNTS = [[0, 32, 96, 128], [64, 32, 0, 32]]  # kept channels per KV head, per layer
PROMPTS = [70, 33, 9]


def mask_with(counts: list[list[int]]) -> LeanKMask:
    kept = torch.zeros(len(counts), len(counts[0]), 128, dtype=torch.bool)
    for layer, row in enumerate(counts):
        for head, c in enumerate(row):
            kept[layer, head, torch.randperm(128)[:c]] = True
    return LeanKMask(kept=kept, sink=4, recent=16, align=32, ratio=1 - kept.float().mean().item())


def main() -> None:
    torch.manual_seed(0)
    for config in (LlamaConfig(**SHAPE), Qwen2Config(**SHAPE)):
        model = AutoModelForCausalLM.from_config(config).to("cuda", torch.bfloat16).eval()
        model.generation_config.eos_token_id = None
        for mask in (mask_with(COUNTS), None):
            engine = LeanKEngine(model, mask, max_batch=4, max_len=160)
            engine.graphs.eager = True  # see the module docstring
            ids, attn = left_padded([torch.randint(3, 300, (n,)).tolist() for n in PROMPTS], 0, model.device)
            tokens = engine.generate(ids, attn, max_new_tokens=48)
            torch.cuda.synchronize()
            print(f"{config.model_type} {'LeanK' if mask else 'dense twin'}: {len(tokens)} sequences, "
                  f"{sum(t.numel() for t in tokens)} tokens decoded eagerly", flush=True)


if __name__ == "__main__":
    main()
