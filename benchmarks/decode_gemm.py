"""How fast the decode step's weight matmuls read their weights, per orientation and BLAS library (GPU only).

    PYTHONPATH=. python benchmarks/decode_gemm.py --out decode_gemm.json

At decode batch sizes every projection of a Llama-3.1-8B layer (q/k/v stacked, o, gate/up
stacked, down) and the LM head is a read of its weight. This times, for batch 1/4/8, each
shape as ``F.linear(x, W)`` (what the engine runs) and as ``(W @ x.T).T`` (the same product
with the weight as the left operand, which cuBLAS serves with other kernels), under the
cuBLAS and cuBLASLt backends, 64 calls replayed from a CUDA graph so launch gaps count as in
the engine. Each time is reported as a share of the read bandwidth measured in this process
(``bandwidth.read_bandwidth``).
"""

from __future__ import annotations

import argparse
import json

import torch
import torch.nn.functional as F

from bandwidth import read_bandwidth, steady_ms

SHAPES = {"qkv": (6144, 4096), "o_proj": (4096, 4096), "gate_up": (28672, 4096), "down": (4096, 14336),
          "lm_head": (128256, 4096)}
CALLS = 64


def weight_left(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    return torch.mm(w, x.T).T


def graph_us(fn, x: torch.Tensor, weights: list[torch.Tensor]) -> float:
    """Microseconds per call of ``fn`` over ``weights`` in turn (distinct weights: nothing is served from L2), from
    ``bandwidth.steady_ms`` of a graph of ``CALLS`` calls."""
    for w in weights[:2]:
        fn(x, w)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for i in range(CALLS):
            fn(x, weights[i % len(weights)])
    return steady_ms(graph.replay, x.device) * 1e3 / CALLS


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    read_tb_s = read_bandwidth(torch.device("cuda")) / 1e12
    records = []
    for name, (n, k) in SHAPES.items():
        count = max(2, int(2e9 // (n * k * 2)))  # > 2 GB of weights in turn, beyond the 50 MB L2
        weights = [torch.randn(n, k, device="cuda", dtype=torch.bfloat16) for _ in range(count)]
        for batch in (1, 4, 8):
            x = torch.randn(batch, k, device="cuda", dtype=torch.bfloat16)
            for library in ("cublas", "cublaslt"):
                torch.backends.cuda.preferred_blas_library(library)
                for orientation, fn in (("linear", F.linear), ("weight_left", weight_left)):
                    us = graph_us(fn, x, weights)
                    pct = 100 * n * k * 2 / (us * 1e-6) / (read_tb_s * 1e12)
                    records.append({"shape": name, "n": n, "k": k, "batch": batch, "library": library,
                                    "orientation": orientation, "us": us, "read_pct": pct})
                    print(f"{name:8s} B{batch} {library:9s} {orientation:11s} {us:8.1f} us {pct:5.1f}%", flush=True)
        del weights
        torch.cuda.empty_cache()
    with open(args.out, "w") as f:
        json.dump({"device": torch.cuda.get_device_name(), "read_tb_s": read_tb_s, "records": records}, f, indent=1)


if __name__ == "__main__":
    main()
