"""Run the decode kernels eagerly at a real shape so ``compute-sanitizer --tool memcheck`` can see every access.

    PYTORCH_NO_CUDA_MEMORY_CACHING=1 compute-sanitizer --tool memcheck python3 scripts/memcheck_decode.py
    ncu --kernel-name regex:leank_split --launch-skip 6 --launch-count 1 python3 scripts/memcheck_decode.py

(the second: Nsight Compute on one LeanK layer at Llama B8/32K: three check launches, then layer 3;
``--launch-skip 35`` takes the dense launch instead; sections and output in
``benchmarks/results/decode_kernel_ncu.txt``)

Why: ``decode_attention.py --sweep`` once hit an illegal memory access that did not come back when the
same configs ran alone; its likely cause was the benchmark's stream ordering
(``benchmarks/results/decode_sweep_crash.md``), but an out-of-bounds read that lands in mapped memory
only faults for some address layouts, so the kernels' own accesses are checked here. Without the
caching allocator every tensor is its own allocation, so memcheck reports any access past a buffer.
Runs the GPU correctness cases (ragged lengths, zero and all-kept heads) and every layer of the Llama
B8/32K cell, LeanK and dense.
"""

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import decode_attention as bench  # noqa: E402

from leank_core.kernels.decode_launch import decode_attention_triton  # noqa: E402


def main() -> None:
    print(f"max |triton - reference| = {bench.check_correctness():.3e}", flush=True)
    cell = bench.Cell("llama-3.1-8b", 8, 32768, 0)
    # the dense layers all share one layout: one of them covers every access
    for name, layouts in (("leank", cell.layouts_for(dense=False)), ("dense", cell.layouts_for(dense=True)[:1])):
        state = cell.state_for(layouts)
        for layout in layouts:
            decode_attention_triton(cell.q, state, layout, cell.scale)
        torch.cuda.synchronize()
        print(f"{name}: {len(layouts)} layers at B{cell.batch}/{cell.n} ran", flush=True)


if __name__ == "__main__":
    main()
