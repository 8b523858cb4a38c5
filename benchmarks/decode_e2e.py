"""End-to-end decode speed at real model shapes: transformers' generate paths vs LeanKEngine (dense twin and LeanK).

    PYTHONPATH=. python benchmarks/decode_e2e.py --out benchmarks/results/decode_e2e.json     # the GPU run
    PYTHONPATH=. python benchmarks/decode_e2e.py --smoke --out /tmp/decode_e2e.json            # tiny shapes, CPU too

Models: random bf16 weights built on the GPU at the shapes of Llama-3.1-8B and Qwen2.5-7B
(the configs below are those models' config.json numbers), with the authors' reference masks
(``benchmarks/reference_masks``) at sink 128 / recent 1024. Variants:

* ``hf_dynamic``            ``generate`` with a DynamicCache (SDPA);
* ``hf_static_compile``     ``generate`` with a StaticCache, which transformers compiles on first use
                            (only at ``--hf-cells`` of ``--static-models``: the compile costs about a
                            minute per batch size);
* ``leank_cache_generate``  ``generate`` with ``LeanKCache`` (the project's transformers cache);
* ``dense_engine``          ``LeanKEngine(model, None)``: static dense storage, CUDA-graph steps;
* ``leank_engine``          ``LeanKEngine(model, mask)``.

No prefill: decode speed does not depend on the K/V values, and an 8B prefill at 128K costs
seconds of GPU time per cell. Every variant's cache is filled with ``N`` random tokens per
sequence instead (``cache.update`` for the transformers caches, the first attention call for
``LeanKCache``, :func:`fill_random` for the engines), then decoding starts from one random token.
Engines are timed with CUDA events around ``--steps`` decode steps after ``--warmup`` steps
(graph capture included in the warm-up); ``generate`` waits for every step anyway, so its step
time is the mean interval between the last ``--steps`` tokens handed to a streamer.

``roofline_pct`` = the byte roofline (weights read once + the K/V bytes this variant must read
at ``N`` tokens, at the read bandwidth ``read_tb_s`` measured in the same process) / the measured
step time. A step only reads (weights and K/V), and reading runs faster than copying, so the copy
figure ``copy_tb_s`` (read + write, also recorded) would let a step pass 100% of its roofline.
``peak_gib`` = the largest allocation of the cell, weights included. The capacity figure: the
largest batch at ``--capacity-tokens`` whose engine storage, weights and a small reserve fit
``--budget-gib``, for the dense twin and for LeanK, each then timed at that batch.
Cells that do not fit the free memory are recorded with the reason.
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, DynamicCache, LlamaConfig, Qwen2Config, StaticCache

from bandwidth import copy_bandwidth, elapsed_ms, read_bandwidth
from cache_memory import StepClock
from leank_core.adapters import architecture_of
from leank_core.cache import LeanKCache
from leank_core.compat import cache_kwargs
from leank_core.hook import applied
from leank_core.engine import LeanKEngine
from leank_core.engine.engine import DENSE_WINDOW
from leank_core.engine.storage import bytes_per_sequence
from leank_core.mask import LeanKMask

SHAPES = {
    "llama-3.1-8b": (LlamaConfig, dict(
        vocab_size=128256, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
        num_key_value_heads=8, head_dim=128, max_position_embeddings=131072, rms_norm_eps=1e-5,
        rope_parameters={"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0, "low_freq_factor": 1.0,
                         "high_freq_factor": 4.0, "original_max_position_embeddings": 8192},
        tie_word_embeddings=False), "llama3.1-8b-instruct.pth"),
    "qwen2.5-7b": (Qwen2Config, dict(
        vocab_size=152064, hidden_size=3584, intermediate_size=18944, num_hidden_layers=28, num_attention_heads=28,
        num_key_value_heads=4, max_position_embeddings=131072, rms_norm_eps=1e-6,
        rope_parameters={"rope_type": "default", "rope_theta": 1000000.0}, tie_word_embeddings=False,
        use_sliding_window=False), "qwen2.5-7b-instruct.pth"),
}
SINK, RECENT = 128, 1024
# --smoke: the same two architectures at toy size (random 70% masks, short windows), fast enough for a CPU.
SMOKE_SHAPES = {
    "llama-tiny": (LlamaConfig, dict(vocab_size=512, hidden_size=256, intermediate_size=512, num_hidden_layers=2,
                                     num_attention_heads=4, num_key_value_heads=2, head_dim=64)),
    "qwen2-tiny": (Qwen2Config, dict(vocab_size=512, hidden_size=256, intermediate_size=512, num_hidden_layers=2,
                                     num_attention_heads=4, num_key_value_heads=2, use_sliding_window=False)),
}
SMOKE_SINK, SMOKE_RECENT = 16, 64
VARIANTS = ("hf_dynamic", "hf_static_compile", "leank_cache_generate", "dense_engine", "leank_engine")
HF_VARIANTS = VARIANTS[:3]
RESERVE = 2 << 30  # bytes kept free beside a cell's storage: activations, graph pool, cuBLAS workspaces
FREE_FRACTION = 0.95


# -- models and masks ------------------------------------------------------------------------
def build_model(name: str, smoke: bool, device: torch.device) -> torch.nn.Module:
    """Random weights at the model's shape, built directly on ``device`` (bf16 on the GPU, fp32 on CPU)."""
    config_class, fields = (SMOKE_SHAPES if smoke else SHAPES)[name][:2]
    config = config_class(**fields)
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16 if device.type == "cuda" else torch.float32)
    try:
        torch.manual_seed(0)
        with torch.device(device):
            model = AutoModelForCausalLM.from_config(config)
    finally:
        torch.set_default_dtype(default)
    model.generation_config.eos_token_id = None  # random weights: never stop early
    return model.eval()


def build_mask(name: str, model: torch.nn.Module, smoke: bool, mask_dir: Path) -> LeanKMask:
    if smoke:
        shape = architecture_of(model).mask_shape
        importance = torch.rand(shape, generator=torch.Generator().manual_seed(0))
        return LeanKMask.from_importance(importance, 0.7, 16, SMOKE_SINK, SMOKE_RECENT)
    return LeanKMask.from_reference_file(mask_dir / SHAPES[name][2], sink=SINK, recent=RECENT)


# -- bytes -------------------------------------------------------------------------------------
def weight_bytes(model: torch.nn.Module) -> int:
    """Bytes a decode step reads from the weights: all of them but the embedding table (a few rows)."""
    embed = model.get_input_embeddings().weight
    tied = embed is model.get_output_embeddings().weight
    return sum(p.nbytes for p in model.parameters() if tied or p is not embed)


def kv_bytes(model: torch.nn.Module, mask: LeanKMask | None, batch: int, tokens: int) -> int:
    """K/V bytes one decode step reads at ``tokens`` tokens: dense, or LeanK's window + compact middle."""
    layers, hkv, d = architecture_of(model).mask_shape
    item = model.dtype.itemsize
    if mask is None:
        return 2 * layers * batch * hkv * tokens * d * item
    window, middle = min(tokens, mask.sink + mask.recent), max(0, tokens - mask.sink - mask.recent)
    counts = mask.kept_counts()
    per_token = int(counts.sum()) + int((counts > 0).sum()) * d  # middle K rows + middle V rows, all layers
    return batch * (2 * layers * hkv * window * d + middle * per_token) * item


# -- filling caches without a prefill -----------------------------------------------------------
def fill_random(engine: LeanKEngine, batch: int, tokens: int) -> None:
    """Benchmark only: rows ``0 .. batch-1`` of every engine buffer get random K/V, and the engine is told
    (``EngineCache.set_lengths``) that each holds ``tokens`` tokens. Call after ``engine.prepare``."""
    for store in engine.cache.layers:
        for buffer in (store.dense_k, store.dense_v, store.mid_k, store.mid_v):
            buffer[:batch].normal_()
    engine.cache.set_lengths(torch.full((batch,), tokens))


def random_kv(model: torch.nn.Module, batch: int, tokens: int) -> torch.Tensor:
    _, hkv, d = architecture_of(model).mask_shape
    return torch.randn(batch, hkv, tokens, d, device=model.device, dtype=model.dtype)


def dynamic_cache(model, mask, batch, tokens, max_len):
    cache = DynamicCache(config=model.config)
    for layer in range(model.config.num_hidden_layers):
        cache.update(random_kv(model, batch, tokens), random_kv(model, batch, tokens), layer)
    return cache


def static_cache(model, mask, batch, tokens, max_len):
    cache = StaticCache(config=model.config, max_cache_len=max_len)
    kv = random_kv(model, batch, tokens)
    for layer in range(model.config.num_hidden_layers):
        cache.update(kv, kv, layer)
    return cache


def leank_cache(model, mask, batch, tokens, max_len):
    """A LeanKCache holding ``tokens`` random tokens: each layer's first update + attention call stores and
    compacts them exactly as a prompt's would (one random query token instead of the prompt's queries)."""
    cache = LeanKCache(mask, model.config)
    kv = random_kv(model, batch, tokens)
    heads, d = architecture_of(model).num_heads, kv.shape[-1]
    query = torch.randn(batch, heads, 1, d, device=model.device, dtype=model.dtype)
    for index, decoder_layer in enumerate(model.base_model.layers):
        cache.update(kv, kv, index)
        cache.attend(decoder_layer.self_attn, query, kv, kv, None, d**-0.5)
    return cache


CACHES: dict[str, Callable] = {"hf_dynamic": dynamic_cache, "hf_static_compile": static_cache,
                               "leank_cache_generate": leank_cache}


# -- timing --------------------------------------------------------------------------------------
def generate_ms(model, variant, mask, batch, tokens, steps, warmup) -> float:
    """Mean ms per step of ``generate`` over the last ``steps`` of ``warmup + steps`` new tokens."""
    new = warmup + steps
    hooked = applied(model, mask, allow_hash_mismatch=True) if variant == "leank_cache_generate" else nullcontext()
    clock = StepClock()
    try:
        with hooked:
            cache = CACHES[variant](model, mask, batch, tokens, tokens + new + 2)
            ids = torch.randint(3, model.config.vocab_size, (batch, tokens + 1), device=model.device)
            model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=new, do_sample=False,
                           pad_token_id=0, streamer=clock, **cache_kwargs(model, cache))
    finally:
        if variant == "hf_static_compile":
            release_compiled(model)
    intervals = [b - a for a, b in zip(clock.times, clock.times[1:])][-steps:]
    return 1e3 * statistics.mean(intervals)


def release_compiled(model: torch.nn.Module) -> None:
    """Drop transformers' compiled forward and its CUDA graphs: they hold the static cache's memory, and the next
    batch size should get its own static-shape compile (as a fresh process would), not a dynamic-shape recompile."""
    model.__dict__.pop("_compiled_call", None)
    torch._dynamo.reset()
    if model.device.type == "cuda":
        from torch._inductor.cudagraph_trees import reset_cudagraph_trees

        reset_cudagraph_trees()


def engine_ms(model, variant, mask, batch, tokens, steps, warmup) -> float:
    """Mean ms per step of ``LeanKEngine.decode`` over ``steps`` steps, after ``warmup`` (and graph capture)."""
    engine = LeanKEngine(model, mask if variant == "leank_engine" else None, max_batch=batch,
                         max_len=tokens + warmup + steps + 1)
    engine.prepare(batch)
    fill_random(engine, batch, tokens)
    first = torch.randint(3, model.config.vocab_size, (batch,), device=model.device)
    latest = engine.decode(first, warmup, eos_token_id=[])[:, -1]
    return elapsed_ms(lambda: engine.decode(latest, steps, eos_token_id=[]), model.device) / steps


def needed_bytes(model, variant, mask, batch, tokens, max_len) -> int:
    """What a cell allocates beside the weights (storage + the largest transient), to skip cells that cannot fit."""
    dense_layer = kv_bytes(model, None, batch, tokens) // model.config.num_hidden_layers
    if variant in ("dense_engine", "leank_engine"):
        layer_masks = mask.kept if variant == "leank_engine" else torch.ones(architecture_of(model).mask_shape, dtype=bool)
        sink, recent = (mask.sink, mask.recent) if variant == "leank_engine" else DENSE_WINDOW
        return batch * bytes_per_sequence(layer_masks, sink, recent, max_len, model.dtype.itemsize)
    if variant == "leank_cache_generate":
        group = architecture_of(model).num_heads // architecture_of(model).num_kv_heads
        return kv_bytes(model, mask, batch, max_len) + (1 + group) * dense_layer
    return kv_bytes(model, None, batch, max_len) + 2 * dense_layer


def run_cell(model, name, variant, mask, batch, tokens, args, read_bw) -> dict:
    record = {"model": name, "batch": batch, "tokens": tokens, "variant": variant}
    device = model.device
    max_len = tokens + args.warmup + args.steps + 2
    if device.type == "cuda":
        gc.collect()
        torch.cuda.empty_cache()
        need = needed_bytes(model, variant, mask, batch, tokens, max_len) + RESERVE
        free = torch.cuda.mem_get_info()[0]
        if need > FREE_FRACTION * free:
            return {**record, "skipped": f"needs {need / 2**30:.1f} GiB beside the weights, {free / 2**30:.1f} GiB free"}
        torch.cuda.reset_peak_memory_stats()
    timer = engine_ms if variant.endswith("engine") else generate_ms
    try:
        ms = timer(model, variant, mask, batch, tokens, args.steps, args.warmup)
    except torch.OutOfMemoryError as e:
        return {**record, "skipped": f"out of memory: {str(e).splitlines()[0][:160]}"}
    reads = weight_bytes(model) + kv_bytes(model, mask if "leank" in variant else None, batch, tokens)
    record.update(tok_s=1e3 * batch / ms, ms_per_step=ms, roofline_pct=100 * (reads / read_bw * 1e3) / ms,
                  peak_gib=torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else None)
    return record


def capacity(model, name, mask, args, read_bw) -> dict:
    """Largest engine batch at ``args.capacity_tokens`` within ``args.budget_gib``: dense twin vs LeanK, timed there."""
    tokens = args.capacity_tokens
    max_len = tokens + args.warmup + args.steps + 2
    room = args.budget_gib * 2**30 - sum(p.nbytes for p in model.parameters()) - RESERVE
    shape = architecture_of(model).mask_shape
    result = {"model": name, "tokens": tokens, "budget_gib": args.budget_gib}
    for variant, layer_masks, (sink, recent) in (("dense_engine", torch.ones(shape, dtype=torch.bool), DENSE_WINDOW),
                                                  ("leank_engine", mask.kept, (mask.sink, mask.recent))):
        batch = int(room // bytes_per_sequence(layer_masks, sink, recent, max_len, model.dtype.itemsize))
        record = run_cell(model, name, variant, mask, batch, tokens, args, read_bw) if batch > 0 else \
            {"skipped": "not even one sequence fits"}
        result[variant] = {k: record.get(k) for k in ("tok_s", "peak_gib", "skipped") if k in record} | {"batch": batch}
        print(json.dumps({"capacity": result[variant], "variant": variant}), flush=True)
    dense, lean = result["dense_engine"], result["leank_engine"]
    if dense["batch"] > 0:
        result["batch_ratio"] = lean["batch"] / dense["batch"]
    if dense.get("tok_s") and lean.get("tok_s"):
        result["tok_s_ratio"] = lean["tok_s"] / dense["tok_s"]
    return result


# -- report ----------------------------------------------------------------------------------------
def tokens_label(n: int) -> str:
    return f"{n // 1024}K" if n % 1024 == 0 else str(n)


def find(records, model, batch, tokens, variant) -> dict | None:
    for r in records:
        if (r["model"], r["batch"], r["tokens"], r["variant"]) == (model, batch, tokens, variant) and "tok_s" in r:
            return r
    return None


def roofline_ms(record: dict) -> float:
    """The step time the record's bytes would take at the read bandwidth."""
    return record["ms_per_step"] * record["roofline_pct"] / 100


def beyond_roofline_ms(record: dict) -> float:
    """How much longer the step took than its bytes need at the read bandwidth."""
    return record["ms_per_step"] - roofline_ms(record)


def byte_bound(leank: dict, dense: dict, target: float) -> str:
    """What the bytes allow a LeanK/dense ratio, and what the target asks of each engine's time beyond its roofline.

    Both engines read the same weights and pay the same per-kernel costs (launch gaps, ramps, tails, the small
    kernels), so that time beyond the byte roofline is about equal in ms; it weighs more on the engine that reads
    fewer bytes, and caps the ratio below the byte ratio. With equal time O beyond the rooflines R_dense and R_leank,
    (R_dense + O) / (R_leank + O) >= target holds only for O <= (R_dense - target * R_leank) / (target - 1).
    """
    roof_l, roof_d = roofline_ms(leank), roofline_ms(dense)
    allowed = (roof_d - target * roof_l) / (target - 1)
    return (f"; the bytes allow {roof_d / roof_l:.2f}x; time beyond the byte roofline per step: leank_engine "
            f"{beyond_roofline_ms(leank):.2f} ms, dense_engine {beyond_roofline_ms(dense):.2f} ms; "
            f"{target}x needs both within {allowed:.2f} ms")


def targets(result: dict) -> list[str]:
    """The issue's 'done means' as measured ratios next to their targets (Llama shapes)."""
    recs, m = result["records"], "llama-3.1-8b"
    lines = []

    def ratio(label, a, b, key, target):
        if a and b:
            lines.append(f"- {label}: {a[key] / b[key]:.2f}x (target >= {target}x)")
        else:
            lines.append(f"- {label}: not measured")

    for batch, tokens in ((8, 32768), (4, 131072)):
        r = find(recs, m, batch, tokens, "leank_engine")
        lines.append(f"- leank_engine roofline at B{batch}/{tokens // 1024}K: "
                     + (f"{r['roofline_pct']:.0f}% (target >= 70%)" if r else "not measured"))
    for batch, tokens, target in ((8, 32768, 1.4), (4, 131072, 1.45)):
        leank, dense = find(recs, m, batch, tokens, "leank_engine"), find(recs, m, batch, tokens, "dense_engine")
        ratio(f"leank_engine / dense_engine tok/s at B{batch}/{tokens // 1024}K", leank, dense, "tok_s", target)
        if leank and dense:
            lines[-1] += byte_bound(leank, dense, target)
    for batch in (1, 8):
        ratio(f"dense_engine / hf_static_compile tok/s at B{batch}/32K", find(recs, m, batch, 32768, "dense_engine"),
              find(recs, m, batch, 32768, "hf_static_compile"), "tok_s", 1.5)
    for cap in result.get("capacity", []):
        if cap["model"] == m and "batch_ratio" in cap:
            lines.append(f"- largest batch at {cap['tokens'] // 1024}K in {cap['budget_gib']} GiB: LeanK "
                         f"{cap['leank_engine']['batch']} vs dense {cap['dense_engine']['batch']} = "
                         f"{cap['batch_ratio']:.2f}x (target >= 1.4x); tok/s {cap['leank_engine'].get('tok_s') or 0:.1f} "
                         f"vs {cap['dense_engine'].get('tok_s') or 0:.1f} (target: higher)")
    return lines


def markdown(result: dict) -> str:
    lines = [f"{result['device']}; read bandwidth {result['read_tb_s']:.2f} TB/s (the roofline's; a copy reads + writes "
             f"{result['copy_tb_s']:.2f}); {result['method']}", "",
             "| model | B | N | variant | tok/s | ms/step | roofline % | ms beyond roofline | peak GiB |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in result["records"]:
        head = f"| {r['model']} | {r['batch']} | {tokens_label(r['tokens'])} | {r['variant']} |"
        if "skipped" in r:
            lines.append(f"{head} skipped: {r['skipped']} |||||")
            continue
        peak = f"{r['peak_gib']:.1f}" if r["peak_gib"] is not None else "-"
        lines.append(f"{head} {r['tok_s']:.1f} | {r['ms_per_step']:.2f} | {r['roofline_pct']:.0f} | "
                     f"{beyond_roofline_ms(r):.2f} | {peak} |")
    for cap in result.get("capacity", []):
        parts = [f"{v} batch {cap[v]['batch']}, " + (f"{cap[v]['tok_s']:.1f} tok/s, peak {cap[v]['peak_gib']:.1f} GiB"
                                                     if cap[v].get("tok_s") else cap[v].get("skipped", ""))
                 for v in ("dense_engine", "leank_engine")]
        lines += ["", f"Capacity, {cap['model']} at {tokens_label(cap['tokens'])} within {cap['budget_gib']} GiB: "
                  + "; ".join(parts)]
    return "\n".join(lines + ["", "Targets (issue 17):", *targets(result)])


# -- command line -----------------------------------------------------------------------------------
def parse_cells(values: list[str]) -> set[tuple[int, int]] | None:
    """``BxN`` pairs (``8x32768``), or ``all``; ValueError naming a malformed one."""
    if values == ["all"]:
        return None
    cells = set()
    for value in values:
        batch, _, tokens = value.partition("x")
        if not (batch.isdigit() and tokens.isdigit()):
            raise ValueError(f"--hf-cells takes BxN pairs such as 8x32768, or 'all'; got {value!r}")
        cells.add((int(batch), int(tokens)))
    return cells


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="JSON path; the markdown table is written beside it")
    parser.add_argument("--smoke", action="store_true", help="tiny shapes, short contexts, few steps (runs on CPU)")
    parser.add_argument("--models", nargs="+", help="default: both (llama-3.1-8b qwen2.5-7b; --smoke: the tiny ones)")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    parser.add_argument("--batches", type=int, nargs="+", help="default 1 4 8 16 32 (--smoke: 1 2)")
    parser.add_argument("--tokens", type=int, nargs="+", help="context lengths N; default 32768 131072 (--smoke: 300)")
    parser.add_argument("--hf-cells", nargs="+", help="BxN cells where the generate variants run, or 'all'; "
                        "default 1x32768 8x32768 (--smoke: all)")
    parser.add_argument("--static-models", nargs="+", help="models whose hf_static_compile cells run (its compile "
                        "costs about a minute per batch size); default llama-3.1-8b, the targets' shapes (--smoke: all)")
    parser.add_argument("--steps", type=int, help="timed decode steps per cell (default 32; --smoke 3)")
    parser.add_argument("--warmup", type=int, help="untimed steps first (default 4; --smoke 2)")
    parser.add_argument("--capacity-tokens", type=int, default=131072, help="context of the capacity figure; 0: skip")
    parser.add_argument("--budget-gib", type=float, default=120.0)
    parser.add_argument("--mask-dir", type=Path, default=Path(__file__).parent / "reference_masks")
    args = parser.parse_args()
    shapes = SMOKE_SHAPES if args.smoke else SHAPES
    args.models = args.models or list(shapes)
    args.static_models = args.static_models or (list(shapes) if args.smoke else ["llama-3.1-8b"])
    args.batches = args.batches or ([1, 2] if args.smoke else [1, 4, 8, 16, 32])
    args.tokens = args.tokens or ([300] if args.smoke else [32768, 131072])
    args.steps = args.steps or (3 if args.smoke else 32)
    args.warmup = args.warmup or (2 if args.smoke else 4)
    try:
        args.hf_cells = parse_cells(args.hf_cells or (["all"] if args.smoke else ["1x32768", "8x32768"]))
    except ValueError as e:
        parser.error(str(e))
    if unknown := [m for m in args.models if m not in shapes]:
        parser.error(f"unknown model {unknown[0]!r}: choose from {', '.join(shapes)}" + ("" if args.smoke else
                     " (the tiny ones need --smoke)"))
    if not args.smoke and not args.mask_dir.is_dir():
        parser.error(f"--mask-dir {args.mask_dir} does not exist: it must hold the reference masks")
    if min(args.tokens) < 2 or min(args.batches) < 1 or args.steps < 1:
        parser.error("--tokens must be >= 2, --batches >= 1 and --steps >= 1")
    return args


def main() -> None:
    args = parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    copy_bw, read_bw = copy_bandwidth(device), read_bandwidth(device)
    print(f"copy bandwidth {copy_bw / 1e12:.2f} TB/s, read bandwidth {read_bw / 1e12:.2f} TB/s", flush=True)
    result = {"device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu", "copy_tb_s": copy_bw / 1e12,
              "read_tb_s": read_bw / 1e12,
              "method": f"random {'bf16' if device.type == 'cuda' else 'fp32'} weights; each cache filled with N random "
                        "tokens per sequence instead of a prefill (engines: benchmarks/decode_e2e.py fill_random); "
                        f"{args.warmup} warm-up + {args.steps} timed decode steps per cell",
              "records": [], "capacity": []}
    for name in args.models:
        model = build_model(name, args.smoke, device)
        mask = build_mask(name, model, args.smoke, args.mask_dir)
        for batch in args.batches:
            for tokens in args.tokens:
                for variant in args.variants:
                    if variant in HF_VARIANTS and args.hf_cells is not None and (batch, tokens) not in args.hf_cells:
                        continue
                    if variant == "hf_static_compile" and name not in args.static_models:
                        continue
                    record = run_cell(model, name, variant, mask, batch, tokens, args, read_bw)
                    result["records"].append(record)
                    print(json.dumps(record), flush=True)
                    write(result, args.out)  # after every cell: a run stopped at its time limit keeps what it measured
        if args.capacity_tokens and device.type == "cuda":
            result["capacity"].append(capacity(model, name, mask, args, read_bw))
            write(result, args.out)
        del model
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()
    print(write(result, args.out))


def write(result: dict, out: Path) -> str:
    """The JSON and its markdown table (returned) as measured so far."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    table = markdown(result)
    out.with_suffix(".md").write_text(table + "\n")
    return table


if __name__ == "__main__":
    main()
