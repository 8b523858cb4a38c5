"""Where an engine decode step's time goes at the issue-17 cells (Llama-3.1-8B shapes, random bf16 weights).

    PYTHONPATH=. python scripts/profile_engine_step.py > profile.txt        # GPU only

For the dense twin and LeanK at B8/32K and B4/128K: the graph-replayed step time (as
``benchmarks/decode_e2e.py`` measures it), then the step run eagerly under ``torch.profiler``
with its GPU kernel time summed by kernel: how much is attention, how much the weight matmuls,
how much the small glue kernels, and how much of the replayed step is no kernel at all.
"""

from __future__ import annotations

import sys
from collections import defaultdict
from pathlib import Path

import torch
from torch.autograd import DeviceType

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from bandwidth import elapsed_ms  # noqa: E402
from decode_e2e import build_mask, build_model, fill_random  # noqa: E402

from leank_core.engine import LeanKEngine  # noqa: E402
from leank_core.engine.decode_step import decode_logits  # noqa: E402

MODEL = "llama-3.1-8b"
CELLS = ((8, 32768), (4, 131072))
STEPS, PROFILED = 16, 3


def kernel_us(engine: LeanKEngine, batch: int) -> dict[str, float]:
    """Mean GPU microseconds per eager step, by kernel name."""
    tokens = engine.tokens[:batch]
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        for _ in range(PROFILED):
            decode_logits(engine.decoder, engine.cache, tokens)
        torch.cuda.synchronize()
    totals: dict[str, float] = defaultdict(float)
    for event in prof.key_averages():
        if event.device_type == DeviceType.CUDA:
            totals[event.key] += event.self_device_time_total / PROFILED
    return totals


def main() -> None:
    device = torch.device("cuda")
    model = build_model(MODEL, False, device)
    mask = build_mask(MODEL, model, False, Path(__file__).resolve().parents[1] / "benchmarks" / "reference_masks")
    for batch, tokens in CELLS:
        for name, m in (("dense_engine", None), ("leank_engine", mask)):
            engine = LeanKEngine(model, m, max_batch=batch, max_len=tokens + 2 * STEPS + 8)
            engine.prepare(batch)
            fill_random(engine, batch, tokens)
            first = torch.randint(3, model.config.vocab_size, (batch,), device=device)
            latest = engine.decode(first, 4, eos_token_id=[])[:, -1]
            step_ms = elapsed_ms(lambda: engine.decode(latest, STEPS, eos_token_id=[]), device) / STEPS
            us = kernel_us(engine, batch)
            busy = sum(us.values()) / 1e3
            print(f"\n== {name} B{batch}/{tokens // 1024}K: graph step {step_ms:.3f} ms; eager kernels {busy:.3f} ms "
                  f"({len(us)} kernel names)")
            for key, value in sorted(us.items(), key=lambda kv: -kv[1])[:25]:
                print(f"{value / 1e3:8.3f} ms  {key[:110]}")
            del engine
            torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
