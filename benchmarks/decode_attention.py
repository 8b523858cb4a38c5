"""Decode-attention benchmark: torch SDPA (dense) vs a dense Triton kernel of the same design vs LeanK.

    PYTHONPATH=. python benchmarks/decode_attention.py --out benchmarks/results/decode_attention.json

Per model shape the published mask's kept-count histogram is spread over the layers with a
seeded shuffle. One timed step runs every layer once, back to back (each LeanK layer with its
own layout), captured in a CUDA graph (``triton.testing.do_bench_cudagraph``), so launch
overhead is excluded equally for all three; the per-layer mean is reported. Consecutive layers
read distinct buffers (as many as it takes to exceed 3x the L2 cache), so no layer is served
from L2 left warm by the previous one. SDPA is ``F.scaled_dot_product_attention(...,
enable_gqa=True)`` on an un-expanded ``[B, H_kv, N, D]`` cache (PyTorch picks the backend).
The dense Triton kernel is the LeanK kernel itself with every channel of every head kept.
Bytes read count the K/V actually touched plus query and output; achieved bandwidth is compared
with a device-to-device copy measured in the same process.
"""

from __future__ import annotations

import argparse
import json
import math
import random
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
import triton
from triton.testing import do_bench_cudagraph

from leank_core.kernels.layout import DecodeState, LayerLayout
from leank_core.kernels.reference import decode_attention_reference
from leank_core.kernels.decode_launch import decode_attention_triton

SHAPES = {
    # name: (query heads, KV heads, head dim, layers, published kept-count histogram over all KV heads)
    "llama-3.1-8b": (32, 8, 128, 32, {0: 47, 32: 120, 64: 67, 96: 22}),
    "qwen2.5-7b": (28, 4, 128, 28, {0: 35, 32: 34, 64: 33, 96: 10}),
}
SINK, RECENT = 128, 1024
DTYPE = torch.bfloat16
ELEM = torch.finfo(DTYPE).bits // 8
MEMORY_FRACTION = 0.8  # skip a cell whose buffers would need more of the GPU than this


def layer_masks(kv_heads: int, head_dim: int, layers: int, histogram: dict[int, int], seed: int) -> list[torch.Tensor]:
    """The histogram's kept counts shuffled over (layer, head); random kept channels per head."""
    counts = [c for c, n in histogram.items() for _ in range(n)]
    assert len(counts) == kv_heads * layers, "histogram must cover every KV head of every layer"
    random.Random(seed).shuffle(counts)
    g = torch.Generator().manual_seed(seed)
    masks = torch.zeros(layers, kv_heads, head_dim, dtype=torch.bool)
    for i, c in enumerate(counts):
        masks.view(-1, head_dim)[i, torch.randperm(head_dim, generator=g)[:c]] = True
    return list(masks)


def make_state(batch: int, kv_heads: int, head_dim: int, rows: int, value_heads: int, lengths: torch.Tensor,
               cap: int) -> DecodeState:
    """Random cache buffers; sequence ``b`` holds ``lengths[b]`` tokens, ``cap`` middle columns, ``rows`` kept rows."""
    lengths = lengths.cuda()
    return DecodeState(
        dense_k=torch.randn(batch, kv_heads, SINK + RECENT, head_dim, device="cuda", dtype=DTYPE),
        dense_v=torch.randn(batch, kv_heads, SINK + RECENT, head_dim, device="cuda", dtype=DTYPE),
        sink_len=lengths.clamp(max=SINK).int(), recent_len=(lengths - SINK).clamp(0, RECENT).int(),
        mid_k=torch.randn(batch, rows, cap, device="cuda", dtype=DTYPE),
        mid_v=torch.randn(batch, value_heads, cap, head_dim, device="cuda", dtype=DTYPE),
        mid_len=(lengths - SINK - RECENT).clamp(min=0).int(),
    )


def check_correctness() -> float:
    """Max |triton - reference| over small GPU cases: mixed buckets incl. zero and all-kept heads, ragged
    lengths (some shorter than sink + recent), GQA groups 4 and 7, an all-zero layer."""
    worst = 0.0
    cases = [([0, 32, 64, 128], 4, [SINK + RECENT + 3000, SINK + RECENT + 17, 50, SINK + 3]),
             ([96, 0, 32, 32], 7, [SINK + RECENT + 5000]),
             ([0, 0, 0, 0], 4, [SINK + RECENT + 300, 700])]
    for counts, group, lengths in cases:
        mask = torch.zeros(len(counts), 128, dtype=torch.bool)
        for h, c in enumerate(counts):
            mask[h, torch.randperm(128)[:c]] = True
        layout = LayerLayout.from_mask(mask, SINK, RECENT).to("cuda")
        state = make_state(len(lengths), len(counts), 128, layout.kept_channels, layout.value_heads,
                           torch.tensor(lengths), cap=5120)
        q = torch.randn(len(lengths), group * len(counts), 128, device="cuda", dtype=DTYPE)
        ref = decode_attention_reference(q, state, layout, 128**-0.5)
        out = decode_attention_triton(q, state, layout, 128**-0.5)
        worst = max(worst, (out.float() - ref.float()).abs().max().item())
    return worst


def per_step_ms(steps: list[Callable[[], object]]) -> float:
    """Mean ms of one step when all ``steps`` run back to back inside a CUDA graph."""
    return do_bench_cudagraph(lambda: [step() for step in steps], rep=100) / len(steps)


def copy_bandwidth() -> float:
    """Bytes/s (read + write) of a 2 GiB device-to-device copy."""
    src = torch.empty(1 << 30, device="cuda", dtype=DTYPE)
    dst = torch.empty_like(src)
    bandwidth = 2 * src.nbytes / (per_step_ms([lambda: dst.copy_(src)]) * 1e-3)
    del src, dst
    return bandwidth


def buffers_for(nbytes: int, layers: int) -> int:
    """Distinct per-layer buffers needed so that one step's working set exceeds 3x the L2 cache."""
    l2 = torch.cuda.get_device_properties(0).L2_cache_size
    return max(1, min(layers, math.ceil(3 * l2 / nbytes)))


def run_cell(name: str, batch: int, n: int, copy_bw: float, seed: int) -> dict:
    heads, kv_heads, d, layers, histogram = SHAPES[name]
    layouts = [LayerLayout.from_mask(m, SINK, RECENT).to("cuda") for m in layer_masks(kv_heads, d, layers, histogram,
                                                                                      seed)]
    scale = d**-0.5
    q = torch.randn(batch, heads, d, device="cuda", dtype=DTYPE)
    lengths = torch.full((batch,), n)
    mid = n - SINK - RECENT
    qo = 2 * q.nbytes
    dense_bytes = 2 * batch * kv_heads * n * d * ELEM
    record = {"model": name, "batch": batch, "tokens": n}
    free = torch.cuda.mem_get_info()[0]
    if dense_bytes > MEMORY_FRACTION * free:
        record["skipped"] = f"dense K+V of {dense_bytes / 2**30:.1f} GiB exceeds {MEMORY_FRACTION:.0%} of free memory"
        return record

    copies = buffers_for(dense_bytes, layers)
    kv = [(torch.randn(batch, kv_heads, n, d, device="cuda", dtype=DTYPE),
           torch.randn(batch, kv_heads, n, d, device="cuda", dtype=DTYPE)) for _ in range(copies)]
    q4 = q.unsqueeze(2)
    record["sdpa_ms"] = per_step_ms([lambda k=k, v=v: F.scaled_dot_product_attention(q4, k, v, scale=scale,
                                                                                     enable_gqa=True)
                                     for k, v in (kv[i % copies] for i in range(layers))])
    del kv

    full = LayerLayout.from_mask(torch.ones(kv_heads, d, dtype=torch.bool), SINK, RECENT).to("cuda")
    states = [make_state(batch, kv_heads, d, kv_heads * d, kv_heads, lengths, mid) for _ in range(copies)]
    record["dense_triton_ms"] = per_step_ms([lambda s=states[i % copies]: decode_attention_triton(q, s, full, scale)
                                             for i in range(layers)])
    del states

    # LeanK: buffers sized for the widest layer; each layer's layout reads only its own rows.
    leank_bytes = [batch * mid * (lay.kept_channels + lay.value_heads * d) * ELEM
                   + 2 * batch * kv_heads * (SINK + RECENT) * d * ELEM + qo for lay in layouts]
    copies = buffers_for(min(leank_bytes), layers)
    rows, value_heads = max(lay.kept_channels for lay in layouts), max(lay.value_heads for lay in layouts)
    states = [make_state(batch, kv_heads, d, rows, value_heads, lengths, mid) for _ in range(copies)]
    record["leank_ms"] = per_step_ms([lambda s=states[i % copies], lay=lay: decode_attention_triton(q, s, lay, scale)
                                      for i, lay in enumerate(layouts)])
    del states
    torch.cuda.empty_cache()

    record["dense_bytes"] = dense_bytes + qo
    record["leank_bytes"] = sum(leank_bytes) / layers
    record["bytes_ratio"] = record["leank_bytes"] / record["dense_bytes"]
    record["speedup_vs_sdpa"] = record["sdpa_ms"] / record["leank_ms"]
    record["speedup_vs_dense_triton"] = record["dense_triton_ms"] / record["leank_ms"]
    for key, nbytes in (("sdpa", record["dense_bytes"]), ("dense_triton", record["dense_bytes"]),
                        ("leank", record["leank_bytes"])):
        record[f"{key}_tb_s"] = nbytes / (record[f"{key}_ms"] * 1e-3) / 1e12
        record[f"{key}_pct_copy_bw"] = 100 * nbytes / (record[f"{key}_ms"] * 1e-3) / copy_bw
    return record


def markdown(result: dict) -> str:
    lines = [f"{result['device']}, torch {result['torch']}, triton {result['triton']}. Measured device-to-device "
             f"copy bandwidth {result['copy_bw_bytes_s'] / 1e12:.2f} TB/s (read + write). bf16, sink {SINK}, recent "
             f"{RECENT}, alignment 32; published kept-count histograms spread over all layers; ms = per-layer mean "
             "of all layers run back to back in a CUDA graph. Bytes = K/V actually read + q/out.", "",
             "| model | B | N | SDPA ms | dense Triton ms | LeanK ms | LeanK vs SDPA | LeanK vs dense Triton "
             "| LeanK bytes / dense | SDPA TB/s | dense Triton TB/s | LeanK TB/s | LeanK % copy BW |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in result["records"]:
        head = f"| {r['model']} | {r['batch']} | {r['tokens'] // 1024}K |"
        if "skipped" in r:
            lines.append(f"{head} skipped: {r['skipped']} |||||||||||")
            continue
        lines.append(f"{head} {r['sdpa_ms']:.3f} | {r['dense_triton_ms']:.3f} | {r['leank_ms']:.3f} | "
                     f"{r['speedup_vs_sdpa']:.2f}x | {r['speedup_vs_dense_triton']:.2f}x | {r['bytes_ratio']:.1%} | "
                     f"{r['sdpa_tb_s']:.2f} | {r['dense_triton_tb_s']:.2f} | {r['leank_tb_s']:.2f} | "
                     f"{r['leank_pct_copy_bw']:.0f}% |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="JSON output path (a .md table is written beside it)")
    parser.add_argument("--models", nargs="+", default=list(SHAPES), choices=list(SHAPES))
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8, 16])
    parser.add_argument("--tokens", type=int, nargs="+", default=[8192, 32768, 131072])
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    err = check_correctness()
    print(f"max |triton - reference| over the GPU check cases = {err:.3e}", flush=True)
    if err > 2e-2:
        raise SystemExit("kernel disagrees with the reference; not timing it")
    copy_bw = copy_bandwidth()
    print(f"copy bandwidth {copy_bw / 1e12:.2f} TB/s", flush=True)
    result = {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "triton": triton.__version__,
              "copy_bw_bytes_s": copy_bw, "max_abs_err_vs_reference": err, "sink": SINK, "recent": RECENT,
              "dtype": str(DTYPE), "records": []}
    for name in args.models:
        for batch in args.batches:
            for n in args.tokens:
                r = run_cell(name, batch, n, copy_bw, args.seed)
                result["records"].append(r)
                print(json.dumps(r), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    table = markdown(result)
    args.out.with_suffix(".md").write_text(table + "\n")
    print(table)


if __name__ == "__main__":
    main()
