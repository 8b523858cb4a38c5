"""CUDA graphs of the decode step: one per (batch bucket, sampling mode), captured on first use.

A bucket is the batch size rounded up to a power of two (capped at ``max_batch``), so a
handful of graphs serve every batch size; rows beyond the real batch decode harmless
dummy sequences. Capture needs a warm-up run (kernel compilation, cuBLAS workspaces) that
really executes the step and so overwrites what the bucket's rows hold: the engine
captures before it writes a batch's prompts. All graphs share one memory pool (they never
run concurrently). Off the GPU the step simply runs eagerly.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from leank_core.engine.sampling import SamplingMode

WARMUP_RUNS = 2


class StepGraphs:
    """Runs ``step(bucket, mode)`` — replaying its captured graph on CUDA."""

    def __init__(self, step: Callable[[int, SamplingMode], None], max_batch: int, device: torch.device) -> None:
        self.step, self.max_batch, self.device = step, max_batch, device
        self.graphs: dict[tuple[int, SamplingMode], torch.cuda.CUDAGraph] = {}
        self.pool = torch.cuda.graph_pool_handle() if device.type == "cuda" else None
        # Eager: every step runs as plain launches. Off the GPU there are no graphs; a tool that must see every
        # allocation (compute-sanitizer without the caching allocator, where capture cannot run) sets it too.
        self.eager = device.type != "cuda"

    def bucket(self, batch: int) -> int:
        return min(1 << (batch - 1).bit_length(), self.max_batch)

    def captured(self, bucket: int, mode: SamplingMode) -> bool:
        return self.eager or (bucket, mode) in self.graphs

    def capture(self, bucket: int, mode: SamplingMode) -> None:
        """Warm up and capture (overwrites the rows of the bucket; see module docstring)."""
        if self.captured(bucket, mode):
            return
        side = torch.cuda.Stream(self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(side):
            for _ in range(WARMUP_RUNS):
                self.step(bucket, mode)
        torch.cuda.current_stream(self.device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self.pool):
            self.step(bucket, mode)
        self.graphs[(bucket, mode)] = graph

    def run(self, bucket: int, mode: SamplingMode) -> None:
        if self.eager:
            self.step(bucket, mode)
            return
        self.graphs[(bucket, mode)].replay()
