"""Where a decode step's time goes: DynamicCache vs LeanKCache, SmolLM2 geometry, random weights."""
import sys, time, torch
from transformers import LlamaConfig, LlamaForCausalLM, DynamicCache
from leank_core.cache import LeanKCache
from leank_core.compat import cache_kwargs
from leank_core.hook import apply
from leank_core.mask import LeanKMask

N = int(sys.argv[2]) if len(sys.argv) > 2 else 40
ctx = int(sys.argv[1]) if len(sys.argv) > 1 else 8064
cfg = LlamaConfig(vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
                  num_key_value_heads=3, head_dim=64, max_position_embeddings=8192, rope_theta=1e5)
torch.manual_seed(0)
DEV = "cuda" if torch.cuda.is_available() else "cpu"
model = LlamaForCausalLM(cfg).to(DEV, torch.bfloat16 if DEV == "cuda" else torch.float32).eval()
alpha = torch.rand(30, 3, 64)
mask = LeanKMask.from_importance(alpha, 0.7, 16, 64, 256, model_id="x", model_hash="")

def sync():
    if DEV == "cuda":
        torch.cuda.synchronize()


def run(variant, prof=False):
    if variant == "leank":
        apply(model, mask, allow_hash_mismatch=True)
        cache = LeanKCache(mask, model.config)
    else:
        cache = DynamicCache(config=model.config)
    ids = torch.randint(3, 49152, (1, ctx), device=DEV)
    with torch.no_grad():
        out = model(ids, **cache_kwargs(model, cache), use_cache=True)
        tok = out.logits[:, -1:].argmax(-1)
        times = []
        for i in range(N):
            if prof and i == N - 10:
                p = torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU, torch.profiler.ProfilerActivity.CUDA]); p.__enter__()
            sync(); t = time.perf_counter()
            out = model(tok, **cache_kwargs(model, cache), use_cache=True)
            tok = out.logits[:, -1:].argmax(-1)
            sync(); times.append(time.perf_counter() - t)
        if prof:
            p.__exit__(None, None, None)
            print(p.key_averages().table(sort_by="cpu_time_total", row_limit=35))
    steady = sorted(times[5:N - 10])[len(times[5:N - 10]) // 2]
    print(f"{variant}: median step {steady*1e3:.2f} ms ({1/steady:.1f} tok/s)", flush=True)

run("dynamic", prof=True)
run("leank", prof=True)
