"""Wall time of device work and the device's memory bandwidth: the yardsticks benchmark percentages use.

Two references, both over buffers of at least 1 GiB, outside any CUDA graph, timed with CUDA
events (median of several after warm-up):

* ``copy_bandwidth``: a plain device-to-device copy, bytes read plus bytes written. A copy
  replayed from a CUDA graph can become a copy-engine transfer that is much slower than the SM
  copy kernel (on an H200 2.8 vs 4.3 TB/s), which made kernels look faster than the hardware.
* ``read_bandwidth``: bytes read by the fastest of a few read-only kernels: two reductions and
  torch's SDPA decoding one query over a large K/V (on an H200 torch's reductions read at only
  ~4.0-4.1 TB/s, below what decode kernels reach). A decode kernel only reads, and reading
  alone runs faster than copying (an H200 copies at ~4.2 TB/s), so a read-only kernel's share
  of the copy figure can pass 100%; its share of this one is the honest figure.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

COPY_BYTES = 1 << 30  # per buffer on the GPU (source and destination each)
CPU_COPY_BYTES = 64 << 20
REPEATS = 10


def elapsed_ms(fn: Callable[[], object], device: torch.device) -> float:
    """Milliseconds between the start and the end of ``fn``'s device work (host time off the GPU)."""
    if device.type != "cuda":
        start = time.perf_counter()
        fn()
        return (time.perf_counter() - start) * 1e3
    begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    begin.record()
    fn()
    end.record()
    end.synchronize()
    return begin.elapsed_time(end)


def steady_ms(fn: Callable[[], object], device: torch.device) -> float:
    """Median of ``REPEATS`` timings of ``fn`` after three warm-up calls (first-call allocation and caching aside)."""
    for _ in range(3):
        fn()
    return statistics.median(elapsed_ms(fn, device) for _ in range(REPEATS))


def copy_bandwidth(device: torch.device) -> float:
    """Bytes/s (read + write) of a plain copy between two large buffers on ``device``."""
    nbytes = COPY_BYTES if device.type == "cuda" else CPU_COPY_BYTES
    src = torch.empty(nbytes, dtype=torch.uint8, device=device)
    dst = torch.empty_like(src)
    return 2 * nbytes / (steady_ms(lambda: dst.copy_(src), device) * 1e-3)


def read_bandwidth(device: torch.device) -> float:
    """Bytes/s read by the fastest of a few read-only kernels over large buffers on ``device`` (no single op is
    the fastest reader on every device, and a yardstick below what some kernel reaches would overstate it)."""
    nbytes = COPY_BYTES if device.type == "cuda" else CPU_COPY_BYTES
    src = torch.ones(nbytes // 2, dtype=torch.bfloat16, device=device)
    # Decode attention over a [B, 8, N, 128] K and V of 4x the buffer each: the shape decode kernels read.
    k = torch.ones(8, 8, 2 * nbytes // (8 * 8 * 128), 128, dtype=torch.bfloat16, device=device)
    v, q = torch.ones_like(k), torch.ones(8, 32, 1, 128, dtype=torch.bfloat16, device=device)
    readers = ((src.nbytes, lambda: src.sum(dtype=torch.float32)), (src.nbytes, lambda: src.view(torch.int64).amax()),
               (2 * k.nbytes, lambda: F.scaled_dot_product_attention(q, k, v, enable_gqa=True)))
    return max(read_bytes / (steady_ms(read, device) * 1e-3) for read_bytes, read in readers)
