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
with the fastest read seen in the same process: ``bandwidth.read_bandwidth``'s plain readers or
any SDPA cell of the table (a decode kernel only reads, so a copy's read + write rate is the
wrong yardstick), and the LeanK speed-up with the one its bytes allow ("% byte limit").

    PYTHONPATH=. python benchmarks/decode_attention.py --out sweep.json --sweep
    PYTHONPATH=. python benchmarks/decode_attention.py --out t.json --config min_chunk=256 num_stages=3

``--sweep`` times one-change-at-a-time kernel configs (``decode_launch.DecodeConfig``) on the
cells the targets name, each config in its own process next to SDPA timed there (a config that
faults the GPU is then one failed row, not the end of the sweep), and prints the best;
``--config`` runs the table with overrides.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import subprocess
import sys
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
import triton
from triton.testing import do_bench_cudagraph

from bandwidth import copy_bandwidth, read_bandwidth

from leank_core.kernels.layout import DecodeState, LayerLayout
from leank_core.kernels.reference import decode_attention_reference
from leank_core.kernels.decode_launch import CONFIG, DecodeConfig, decode_attention_triton

SHAPES = {
    # name: (query heads, KV heads, head dim, layers, published kept-count histogram over all KV heads)
    "llama-3.1-8b": (32, 8, 128, 32, {0: 47, 32: 120, 64: 67, 96: 22}),
    "qwen2.5-7b": (28, 4, 128, 28, {0: 35, 32: 34, 64: 33, 96: 10}),
}
SINK, RECENT = 128, 1024
DTYPE = torch.bfloat16
DEVICE = "cuda"
ELEM = torch.finfo(DTYPE).bits // 8
MEMORY_FRACTION = 0.8  # skip a cell whose buffers would need more of the GPU than this
MAX_ERR = 2e-2  # bf16 outputs: |triton - reference| above this is a wrong kernel, not rounding


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
    lengths = lengths.to(DEVICE)
    return DecodeState(
        dense_k=torch.randn(batch, kv_heads, SINK + RECENT, head_dim, device=DEVICE, dtype=DTYPE),
        dense_v=torch.randn(batch, kv_heads, SINK + RECENT, head_dim, device=DEVICE, dtype=DTYPE),
        sink_len=lengths.clamp(max=SINK).int(), recent_len=(lengths - SINK).clamp(0, RECENT).int(),
        mid_k=torch.randn(batch, rows, cap, device=DEVICE, dtype=DTYPE),
        mid_v=torch.randn(batch, value_heads, cap, head_dim, device=DEVICE, dtype=DTYPE),
        mid_len=(lengths - SINK - RECENT).clamp(min=0).int(),
    )


def check_correctness(config: DecodeConfig = CONFIG) -> float:
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
        layout = LayerLayout.from_mask(mask, SINK, RECENT).to(DEVICE)
        state = make_state(len(lengths), len(counts), 128, layout.kept_channels, layout.value_heads,
                           torch.tensor(lengths), cap=5120)
        q = torch.randn(len(lengths), group * len(counts), 128, device=DEVICE, dtype=DTYPE)
        ref = decode_attention_reference(q, state, layout, 128**-0.5)
        out = decode_attention_triton(q, state, layout, 128**-0.5, config)
        worst = max(worst, (out.float() - ref.float()).abs().max().item())
    return worst


def per_step_ms(steps: list[Callable[[], object]]) -> float:
    """Mean ms of one step when all ``steps`` run back to back inside a CUDA graph.

    ``do_bench_cudagraph`` runs ``steps`` on a stream of its own that does not wait for the default stream, where
    the buffers and their lengths were just written: without the synchronize a step can read a length not yet
    written and fault (``benchmarks/results/decode_sweep_crash.md``: most likely the sweep's illegal access).
    """
    torch.cuda.synchronize()
    return do_bench_cudagraph(lambda: [step() for step in steps], rep=100) / len(steps)


def buffers_for(nbytes: int, layers: int) -> int:
    """Distinct per-layer buffers needed so that one step's working set exceeds 3x the L2 cache."""
    l2 = torch.cuda.get_device_properties(0).L2_cache_size
    return max(1, min(layers, math.ceil(3 * l2 / nbytes)))


class Cell:
    """One model shape at one batch and context: the layouts, a query, and the bytes each variant must read."""

    def __init__(self, name: str, batch: int, n: int, seed: int) -> None:
        self.name, self.batch, self.n = name, batch, n
        self.heads, self.kv_heads, self.d, self.layers, histogram = SHAPES[name]
        self.layouts = [LayerLayout.from_mask(m, SINK, RECENT).to(DEVICE)
                        for m in layer_masks(self.kv_heads, self.d, self.layers, histogram, seed)]
        self.scale = self.d**-0.5
        self.q = torch.randn(batch, self.heads, self.d, device=DEVICE, dtype=DTYPE)
        self.lengths = torch.full((batch,), n)
        self.mid = n - SINK - RECENT
        qo = 2 * self.q.nbytes
        self.dense_bytes = 2 * batch * self.kv_heads * n * self.d * ELEM + qo
        self.leank_bytes = [batch * self.mid * (lay.kept_channels + lay.value_heads * self.d) * ELEM
                            + 2 * batch * self.kv_heads * (SINK + RECENT) * self.d * ELEM + qo for lay in self.layouts]

    def fits(self) -> str | None:
        """Why the cell cannot run here, or None."""
        free = torch.cuda.mem_get_info()[0]
        if self.dense_bytes > MEMORY_FRACTION * free:
            return f"dense K+V of {self.dense_bytes / 2**30:.1f} GiB exceeds {MEMORY_FRACTION:.0%} of free memory"
        return None

    def sdpa_ms(self) -> float:
        copies = buffers_for(self.dense_bytes, self.layers)
        shape = (self.batch, self.kv_heads, self.n, self.d)
        kv = [(torch.randn(shape, device=DEVICE, dtype=DTYPE), torch.randn(shape, device=DEVICE, dtype=DTYPE))
              for _ in range(copies)]
        q4 = self.q.unsqueeze(2)
        return per_step_ms([lambda k=k, v=v: F.scaled_dot_product_attention(q4, k, v, scale=self.scale, enable_gqa=True)
                            for k, v in (kv[i % copies] for i in range(self.layers))])

    def layouts_for(self, dense: bool) -> list[LayerLayout]:
        """Every layer's own layout, or (``dense``) every channel of every head kept."""
        if not dense:
            return self.layouts
        full = LayerLayout.from_mask(torch.ones(self.kv_heads, self.d, dtype=torch.bool), SINK, RECENT).to(DEVICE)
        return [full] * self.layers

    def state_for(self, layouts: list[LayerLayout]) -> DecodeState:
        """Random buffers sized for the widest of ``layouts``; each layer's layout reads only its own rows."""
        rows, value_heads = max(lay.kept_channels for lay in layouts), max(lay.value_heads for lay in layouts)
        return make_state(self.batch, self.kv_heads, self.d, rows, value_heads, self.lengths, self.mid)

    def triton_ms(self, config: DecodeConfig, dense: bool = False) -> float:
        """Per-layer ms of the fused kernel: every layer's own layout, or (``dense``) every channel kept."""
        layouts = self.layouts_for(dense)
        copies = buffers_for(self.dense_bytes if dense else min(self.leank_bytes), self.layers)
        states = [self.state_for(layouts) for _ in range(copies)]
        return per_step_ms([lambda s=states[i % copies], lay=lay: decode_attention_triton(self.q, s, lay, self.scale,
                                                                                          config)
                            for i, lay in enumerate(layouts)])

    @property
    def byte_limit(self) -> float:
        """The speed-up over a dense read that the bytes alone allow."""
        return self.dense_bytes / (sum(self.leank_bytes) / self.layers)


def run_cell(name: str, batch: int, n: int, seed: int, config: DecodeConfig) -> dict:
    cell = Cell(name, batch, n, seed)
    record = {"model": name, "batch": batch, "tokens": n}
    if reason := cell.fits():
        return {**record, "skipped": reason}
    record["sdpa_ms"] = cell.sdpa_ms()
    record["dense_triton_ms"] = cell.triton_ms(config, dense=True)
    record["leank_ms"] = cell.triton_ms(config)
    torch.cuda.empty_cache()
    record["dense_bytes"] = cell.dense_bytes
    record["leank_bytes"] = sum(cell.leank_bytes) / cell.layers
    record["bytes_ratio"] = record["leank_bytes"] / record["dense_bytes"]
    record["speedup_vs_sdpa"] = record["sdpa_ms"] / record["leank_ms"]
    record["speedup_vs_dense_triton"] = record["dense_triton_ms"] / record["leank_ms"]
    record["pct_of_byte_limit"] = 100 * record["speedup_vs_sdpa"] / cell.byte_limit
    for key, nbytes in (("sdpa", record["dense_bytes"]), ("dense_triton", record["dense_bytes"]),
                        ("leank", record["leank_bytes"])):
        record[f"{key}_tb_s"] = nbytes / (record[f"{key}_ms"] * 1e-3) / 1e12
    return record


def add_read_shares(result: dict, read_bw: float) -> None:
    """Each variant's share of the read bandwidth. The yardstick is the fastest read seen in this process: the
    plain readers of ``bandwidth.read_bandwidth`` or any SDPA cell of the table, so no share passes 100%."""
    timed = [r for r in result["records"] if "skipped" not in r]
    result["read_bw_bytes_s"] = max([read_bw] + [r["sdpa_tb_s"] * 1e12 for r in timed])
    for r in timed:
        for key in ("sdpa", "dense_triton", "leank"):
            r[f"{key}_pct_read_bw"] = 100 * r[f"{key}_tb_s"] * 1e12 / result["read_bw_bytes_s"]


# One change at a time from the default (decode_launch.CONFIG); --sweep times each on the cells the targets name.
# A [128, 128] bf16 K tile plus its V tile is 64 KiB per pipeline stage, so at two stages one program fills most
# of an SM's shared memory: warps, stages and tile height trade occupancy against loads in flight. min_chunk only
# binds where few tokens meet few heads (B1/8K); waves sets how many programs the split plan asks for.
SWEEP_CHANGES = ({}, {"min_chunk": 128}, {"min_chunk": 512}, {"waves": 4}, {"waves": 16}, {"num_stages": 2},
                 {"num_stages": 3}, {"deep_tiles": 8}, {"deep_tiles": 32}, {"num_warps": 8}, {"block_n": 64},
                 {"block_n": 64, "min_chunk": 128}, {"dense_chunk": 128})
# The engine's targets (issue 17) are LeanK over the dense twin at B8/32K and B4/128K, and no cell slower than SDPA.
SWEEP_CELLS = (("llama-3.1-8b", 8, 32768), ("llama-3.1-8b", 4, 131072), ("llama-3.1-8b", 1, 8192),
               ("qwen2.5-7b", 1, 8192), ("qwen2.5-7b", 8, 32768))


def sweep_row(change: dict, seed: int) -> dict:
    """One config's row: LeanK and dense-Triton kernel ms on each sweep cell, against SDPA timed in this process."""
    config = CONFIG._replace(**change)
    row = {"config": config._asdict(), "change": change, "cells": []}
    try:
        err = check_correctness(config)
        problem = f"|triton - reference| = {err:.3g}" if err > MAX_ERR else None
    except Exception as e:  # noqa: BLE001 - a tile that does not fit the SM is a result, not a crash
        problem = f"{type(e).__name__}: {str(e)[:120]}"
    for name, batch, n in SWEEP_CELLS:
        key = (name, batch, n)
        if problem:
            row["cells"].append({"cell": key, "error": problem})
            continue
        c = Cell(name, batch, n, seed)
        sdpa_ms = c.sdpa_ms()
        speedup = sdpa_ms / (ms := c.triton_ms(config))
        dense_ms = c.triton_ms(config, dense=True)  # the engine's dense twin runs the same kernel and config
        row["cells"].append({"cell": key, "leank_ms": ms, "sdpa_ms": sdpa_ms, "speedup_vs_sdpa": speedup,
                             "pct_of_byte_limit": 100 * speedup / c.byte_limit, "dense_triton_ms": dense_ms,
                             "leank_vs_dense_triton": dense_ms / ms})
        del c
        torch.cuda.empty_cache()
    return row


def sweep(seed: int) -> dict:
    """Every config of SWEEP_CHANGES in a fresh process (a fault is that row's error); the best by min x SDPA, then
    geomean % of the byte limit."""
    rows = []
    for change in SWEEP_CHANGES:
        run = subprocess.run([sys.executable, __file__, "--sweep-row", json.dumps(change), "--seed", str(seed),
                              "--out", os.devnull],
                             capture_output=True, text=True, check=False)
        if run.returncode == 0:
            row = json.loads(run.stdout.strip().splitlines()[-1])
        else:
            error = (run.stderr.strip().splitlines() or [f"exit {run.returncode}"])[-1][:160]
            row = {"config": CONFIG._replace(**change)._asdict(), "change": change,
                   "cells": [{"cell": list(key), "error": error} for key in SWEEP_CELLS]}
        ok = [x for x in row["cells"] if "error" not in x]
        row["min_speedup_vs_sdpa"] = min((x["speedup_vs_sdpa"] for x in ok), default=0.0)
        row["geomean_pct_of_byte_limit"] = math.exp(sum(math.log(x["pct_of_byte_limit"]) for x in ok) / len(ok)) \
            if len(ok) == len(SWEEP_CELLS) else 0.0
        rows.append(row)
        print(json.dumps(row), flush=True)
    best = max(rows, key=lambda r: (r["min_speedup_vs_sdpa"] >= 1, r["geomean_pct_of_byte_limit"]))
    return {"cells": [list(k) for k in SWEEP_CELLS], "rows": rows, "best": best["config"]}


def sweep_markdown(result: dict) -> str:
    head = "| change | " + " | ".join(f"{m} B{b} {n // 1024}K" for m, b, n in result["cells"]) + \
        " | min x SDPA | geomean % byte limit |"
    default = DecodeConfig(**result["rows"][0]["config"]).describe()
    lines = [f"LeanK ms per layer (x vs SDPA, % of the byte limit; the dense Triton kernel's ms); default {default}",
             "", head, "|---" * (len(result["cells"]) + 3) + "|"]
    for row in result["rows"]:
        cells = [f"{x['leank_ms']:.4f} ({x['speedup_vs_sdpa']:.2f}x, {x['pct_of_byte_limit']:.0f}%; dense "
                 f"{x['dense_triton_ms']:.4f})" if "error" not in x
                 else x["error"][:40] for x in row["cells"]]
        change = ", ".join(f"{k}={v}" for k, v in row["change"].items()) or "default"
        lines.append(f"| {change} | " + " | ".join(cells) +
                     f" | {row['min_speedup_vs_sdpa']:.2f} | {row['geomean_pct_of_byte_limit']:.0f} |")
    lines += ["", "best: DecodeConfig(" + ", ".join(f"{k}={v}" for k, v in result["best"].items()) + ")"]
    return "\n".join(lines)


def markdown(result: dict) -> str:
    lines = [f"{result['device']}, torch {result['torch']}, triton {result['triton']}. "
             f"Read bandwidth {result['read_bw_bytes_s'] / 1e12:.2f} TB/s (the fastest read-only kernel seen in this "
             f"process: plain readers of >= 1 GiB outside CUDA graphs read "
             f"{result['plain_read_bw_bytes_s'] / 1e12:.2f}, or an SDPA cell below; a copy reads + writes "
             f"{result['copy_bw_bytes_s'] / 1e12:.2f} TB/s). bf16, sink {SINK}, recent {RECENT}, alignment 32; "
             "published kept-count histograms spread over all layers; ms = per-layer mean of all layers run back "
             "to back in a CUDA graph. Bytes = K/V actually "
             "read + q/out. % byte limit = (LeanK vs SDPA) / (dense bytes / LeanK bytes). Kernel config: "
             f"{result['config']}.", "",
             "| model | B | N | SDPA ms | dense Triton ms | LeanK ms | LeanK vs SDPA | % byte limit | LeanK vs dense "
             "Triton | LeanK bytes / dense | SDPA TB/s | dense Triton TB/s | LeanK TB/s | SDPA % read BW | "
             "LeanK % read BW |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in result["records"]:
        head = f"| {r['model']} | {r['batch']} | {r['tokens'] // 1024}K |"
        if "skipped" in r:
            lines.append(f"{head} skipped: {r['skipped']} |||||||||||||")
            continue
        lines.append(f"{head} {r['sdpa_ms']:.3f} | {r['dense_triton_ms']:.3f} | {r['leank_ms']:.3f} | "
                     f"{r['speedup_vs_sdpa']:.2f}x | {r['pct_of_byte_limit']:.0f}% | "
                     f"{r['speedup_vs_dense_triton']:.2f}x | "
                     f"{r['bytes_ratio']:.1%} | {r['sdpa_tb_s']:.2f} | {r['dense_triton_tb_s']:.2f} | "
                     f"{r['leank_tb_s']:.2f} | {r['sdpa_pct_read_bw']:.0f}% | {r['leank_pct_read_bw']:.0f}% |")
    return "\n".join(lines)


def parse_config(pairs: list[str]) -> DecodeConfig:
    """``key=value`` overrides of the default kernel config; ValueError naming the bad pair."""
    fields = {}
    for pair in pairs:
        key, _, value = pair.partition("=")
        if key not in DecodeConfig._fields or not value.isdigit():
            raise ValueError(f"--config takes key=integer with key in {', '.join(DecodeConfig._fields)}; got {pair!r}")
        fields[key] = int(value)
    return CONFIG._replace(**fields)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="JSON output path (a .md table is written beside it)")
    parser.add_argument("--models", nargs="+", default=list(SHAPES), choices=list(SHAPES))
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8, 16])
    parser.add_argument("--tokens", type=int, nargs="+", default=[8192, 32768, 131072])
    parser.add_argument("--config", nargs="*", default=[], metavar="KEY=VALUE",
                        help="override kernel config fields for the table (see decode_launch.DecodeConfig)")
    parser.add_argument("--sweep", action="store_true",
                        help="instead of the table: time one-change-at-a-time kernel configs on the target cells")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--sweep-row", metavar="JSON", help=argparse.SUPPRESS)  # one --sweep config, in its own process
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    if args.sweep_row is not None:
        print(json.dumps(sweep_row(json.loads(args.sweep_row), args.seed)))
        return
    if args.config and args.sweep:
        parser.error("--sweep varies the default config; leave out --config")
    try:
        config = parse_config(args.config)
    except ValueError as e:
        parser.error(str(e))
    if not torch.cuda.is_available():
        parser.error("this benchmark times GPU kernels: run it on a machine with CUDA")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    if args.sweep:  # each row checks its own config against the reference, in its own process
        result = sweep(args.seed)
        table = sweep_markdown(result)
    else:
        err = check_correctness(config)
        print(f"max |triton - reference| over the GPU check cases = {err:.3e}", flush=True)
        if err > MAX_ERR:
            raise SystemExit("kernel disagrees with the reference; not timing it")
        copy_bw, read_bw = copy_bandwidth(torch.device("cuda")), read_bandwidth(torch.device("cuda"))
        print(f"copy bandwidth {copy_bw / 1e12:.2f} TB/s, read bandwidth {read_bw / 1e12:.2f} TB/s", flush=True)
        result = {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "triton": triton.__version__,
                  "copy_bw_bytes_s": copy_bw, "plain_read_bw_bytes_s": read_bw, "max_abs_err_vs_reference": err,
                  "sink": SINK, "recent": RECENT,
                  "dtype": str(DTYPE), "config": config.describe(), "records": []}
        for name in args.models:
            for batch in args.batches:
                for n in args.tokens:
                    r = run_cell(name, batch, n, args.seed, config)
                    result["records"].append(r)
                    print(json.dumps(r), flush=True)
        add_read_shares(result, read_bw)
        table = markdown(result)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    args.out.with_suffix(".md").write_text(table + "\n")
    print(table)


if __name__ == "__main__":
    main()
