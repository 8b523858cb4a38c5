"""Does ``triton.testing.do_bench_cudagraph`` wait for work queued on the default stream? (It does not.)

    python3 scripts/do_bench_stream_order.py

A value is written on the default stream behind a 0.2 s GPU sleep; the function handed to
``do_bench_cudagraph`` copies it on its first call (in a process whose stream pool already exists).
CUDA events from a common start show when each finished, and the copy shows what the function read. Evidence for
``benchmarks/results/decode_sweep_crash.md`` (why ``decode_attention.per_step_ms`` synchronizes first).
"""

import time

import torch
from triton.testing import do_bench_cudagraph

WRITTEN = 31616


def main() -> None:
    value = torch.zeros(1, dtype=torch.int64, device="cuda")
    seen = torch.zeros_like(value)  # allocated up front: no allocation inside the step
    start, written, read = (torch.cuda.Event(enable_timing=True) for _ in range(3))
    # As in a benchmark that has timed something before: the first stream a process creates sets up torch's
    # stream pool, and that waited for the device here (the host reached the step only after the write).
    torch.cuda.Stream()
    torch.cuda.synchronize()
    start.record()
    torch.cuda._sleep(400_000_000)  # ~0.2 s of GPU time on the default stream
    value.fill_(WRITTEN)
    written.record()
    t0, first_call = time.perf_counter(), []

    def step() -> None:
        if not first_call:
            seen.copy_(value)
            read.record()
            first_call.append(time.perf_counter() - t0)

    do_bench_cudagraph(step, rep=1)
    torch.cuda.synchronize()
    print(f"host s to first step {first_call[0]:.6f}  gpu ms sleep+fill done {start.elapsed_time(written):.2f}  "
          f"gpu ms step copy done {start.elapsed_time(read):.3f}  read {int(seen)} (written: {WRITTEN})")


if __name__ == "__main__":
    main()
