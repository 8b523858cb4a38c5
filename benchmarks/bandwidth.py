"""Wall time of device work and the device's copy bandwidth: the yardstick every benchmark's percentages use.

The reference is a plain device-to-device copy of at least 1 GiB, outside any CUDA graph,
timed with CUDA events (median of several after warm-up), counting bytes read plus bytes
written. A copy replayed from a CUDA graph can become a copy-engine transfer that is much
slower than the SM copy kernel (on an H200 2.8 vs 4.3 TB/s), which made kernels look faster
than the hardware; this one is what the memory system really delivers.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch

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


def copy_bandwidth(device: torch.device) -> float:
    """Bytes/s (read + write) of a plain copy between two large buffers on ``device``."""
    nbytes = COPY_BYTES if device.type == "cuda" else CPU_COPY_BYTES
    src = torch.empty(nbytes, dtype=torch.uint8, device=device)
    dst = torch.empty_like(src)
    for _ in range(3):
        dst.copy_(src)
    ms = statistics.median(elapsed_ms(lambda: dst.copy_(src), device) for _ in range(REPEATS))
    return 2 * nbytes / (ms * 1e-3)
