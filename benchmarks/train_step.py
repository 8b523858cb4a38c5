"""Speed and memory of one training step against the prefill of the same prompt alone (a script, not a test).

    python benchmarks/train_step.py --model llama-3.1-8b --context 8192 32768 131072 --out scale_1gpu.json
    python benchmarks/train_step.py --smoke --out smoke.json        # CPU, the tiny-llama preset
    python benchmarks/train_step.py --model llama-3.1-8b --context 32768 --profile   # where a step's time goes

For every context length: a token-copy prompt of exactly that many tokens with a 16-token
answer (``leank_core.token_copy``), ``--warmup`` then ``--steps`` no-grad prefills of the
prompt alone (``leank_core.kv_snapshot.prefill``), then ``--warmup`` then ``--steps`` steps of
the project's own step: ``compute_loss`` (prefill with the teacher, student; stage 1) + backward +
``ClampedAdam`` on α. The model is built once, with random weights when ``--model`` is a shape
preset (on the device, bf16 on a GPU). The peak is ``torch.cuda.max_memory_allocated`` over
the steps, weights included (0 on CPU).

Writes ``{"records": [...]}`` in the ``results/scale/scale.json`` schema (``zero_stage`` null:
a plain step on one device, no DeepSpeed) and prints step / prefill for each context.
``--profile`` then records one more step and one more prefill alone per context with
``torch.profiler`` and prints, for each, the operator calls made from Python or autograd
(each one host work, most of them a kernel launch), the kernel launches, the kernels run on
the GPU and the host's waits for it, then the operators and kernels that make the step cost
more than the prefill alone, by self GPU time (CPU time without a GPU): the step's 16-token
passes are many small kernels, so the counts show whether launches or the GPU's own work
make its extra cost.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

if __package__ in (None, ""):  # run as a script
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from torch.autograd import DeviceType  # noqa: E402
from torch.profiler import ProfilerActivity  # noqa: E402

from leank_core.adapters import architecture_of  # noqa: E402
from leank_core.hook import install  # noqa: E402
from leank_core.kv_snapshot import prefill  # noqa: E402
from leank_core.model_source import resolve_model  # noqa: E402
from leank_core.token_copy import token_copy_samples  # noqa: E402
from leank_core.training import ClampedAdam, Importance, TrainConfig, compute_loss, freeze  # noqa: E402

SMOKE = {"model": "tiny-llama", "context": [512, 2048], "sink": 16, "recent": 64, "device": "cpu"}


def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="llama-3.1-8b", help="shape preset or any --model of the learn job (default %(default)s)")
    p.add_argument("--context", type=int, nargs="+", default=[8192, 32768, 131072], help="prompt lengths in tokens")
    p.add_argument("--sink", type=int, default=128, help="sink tokens (default %(default)s)")
    p.add_argument("--recent", type=int, default=1024, help="recent tokens (default %(default)s)")
    p.add_argument("--steps", type=int, default=2, help="timed repetitions of each (default %(default)s)")
    p.add_argument("--warmup", type=int, default=1, help="untimed repetitions first (default %(default)s)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--smoke", action="store_true", help="CPU run of the tiny-llama preset at 512 and 2048 tokens")
    p.add_argument("--out", type=Path, help="write the records here (JSON)")
    p.add_argument("--profile", action="store_true", help="also profile one step and one prefill per context")
    args = p.parse_args(argv)
    if args.smoke:
        for key, value in SMOKE.items():
            setattr(args, key, value)
    if args.steps < 1 or args.warmup < 0:
        p.error("--steps must be >= 1 and --warmup >= 0")
    return args


def seconds_per_call(fn: Callable[[], object], device: torch.device, warmup: int, repeats: int) -> float:
    """Mean wall time of ``fn`` over ``repeats`` calls after ``warmup`` untimed ones (device synchronised)."""
    for _ in range(warmup):
        fn()
    _synchronize(device)
    began = time.perf_counter()
    for _ in range(repeats):
        fn()
    _synchronize(device)
    return (time.perf_counter() - began) / repeats


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(step: Callable[[], None], prefill_alone: Callable[[], object], device: torch.device,
            warmup: int, repeats: int) -> tuple[float, float, float]:
    """(prefill seconds, step seconds, peak GiB over the steps) for one sample."""
    prefill_s = seconds_per_call(prefill_alone, device, warmup, repeats)
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    step_s = seconds_per_call(step, device, warmup, repeats)
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else 0.0
    return prefill_s, step_s, peak


def step_and_prefill(model, importance: Importance, sample: dict, config: TrainConfig,
                     device: torch.device) -> tuple[Callable[[], None], Callable[[], object]]:
    """One training step (``compute_loss`` + backward + ``ClampedAdam``) and the prefill of its prompt alone."""
    optimizer = ClampedAdam(importance.parameters(), lr=config.lr)
    prompt = torch.tensor([sample["input_ids"]], device=device)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        compute_loss(model, importance, sample, config, stage=1).total.backward()
        optimizer.step()

    return step, lambda: prefill(model, prompt)


def profile_calls(fn: Callable[[], object], device: torch.device) -> torch.profiler.profile:
    """``torch.profiler`` record of one call of ``fn`` (after the timed calls: nothing is a first call)."""
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with torch.profiler.profile(activities=activities) as prof:
        fn()
        _synchronize(device)
    return prof


def call_counts(prof: torch.profiler.profile) -> dict[str, int]:
    """Operators called from Python or autograd (not from inside another operator), kernel launches, GPU kernels,
    and host waits for the GPU (``cuda*Synchronize``, one of them the profiler's own at the end)."""
    events = prof.events()
    ops = [e for e in events if e.name.startswith("aten::")
           and (e.cpu_parent is None or not e.cpu_parent.name.startswith("aten::"))]
    launches = [e for e in events if e.name.startswith(("cudaLaunch", "cuLaunch"))]
    kernels = [e for e in events if e.device_type == DeviceType.CUDA]
    syncs = [e for e in events if e.name.startswith("cuda") and e.name.endswith("Synchronize")]
    return {"ops": len(ops), "launches": len(launches), "gpu_kernels": len(kernels), "syncs": len(syncs)}


def print_profile(context: int, step: torch.profiler.profile, prefill_alone: torch.profiler.profile,
                  device: torch.device, rows: int = 25) -> None:
    """Counts of both calls, then the operators that make the step cost more than the prefill alone:
    self GPU time (CPU time without a GPU) and calls, step minus prefill, largest first."""
    s, p = call_counts(step), call_counts(prefill_alone)
    print(f"context {context}, per call: " + ", ".join(
        f"{name} step {s[name]} / prefill alone {p[name]} / step - prefill {s[name] - p[name]}" for name in s))
    attr = "self_device_time_total" if device.type == "cuda" else "self_cpu_time_total"
    before = {e.key: (getattr(e, attr), e.count) for e in prefill_alone.key_averages()}
    extra = sorted(((getattr(e, attr) - before.get(e.key, (0, 0))[0], e.count - before.get(e.key, (0, 0))[1], e.key)
                    for e in step.key_averages()), reverse=True)
    print(f"{'extra ms':>10} {'extra calls':>11}  operator or kernel (step - prefill alone, by self "
          f"{'GPU' if device.type == 'cuda' else 'CPU'} time)")
    for us, calls, key in extra[:rows]:
        print(f"{us / 1e3:10.3f} {calls:11d}  {key[:100]}")
    total = sum(us for us, _, _ in extra if us > 0)
    print(f"{total / 1e3:10.3f} ms in all operators that cost more in the step", flush=True)


def main(argv: list[str] | None = None) -> int:
    args = parse(sys.argv[1:] if argv is None else argv)
    device = torch.device(args.device)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    source = resolve_model(args.model)
    began = time.perf_counter()
    model = install(freeze(source.load(dtype=dtype, device=device)))
    print(f"{source.model_id}: built in {time.perf_counter() - began:.1f} s on {device} ({dtype})", flush=True)
    config = TrainConfig(sink=args.sink, recent=args.recent)
    vocab = model.config.get_text_config().vocab_size
    records = []
    for context in args.context:
        [sample] = token_copy_samples(vocab, [context], seed=0)
        importance = Importance(architecture_of(model).mask_shape).to(device)
        step, prefill_alone = step_and_prefill(model, importance, sample, config, device)
        prefill_s, step_s, peak = measure(step, prefill_alone, device, args.warmup, args.steps)
        if args.profile:
            print_profile(context, profile_calls(step, device), profile_calls(prefill_alone, device), device)
        tokens = context + 2 * len(sample["answer_ids"])  # prefill, teacher, student (as the learn job counts)
        records.append({"model": args.model, "gpus": 1 if device.type == "cuda" else 0, "zero_stage": None,
                        "context": context, "step_s": step_s, "prefill_s": prefill_s, "tokens_per_s": tokens / step_s,
                        "peak_gib_per_gpu": peak})
        print(f"context {context}: step {step_s:.3f} s, prefill alone {prefill_s:.3f} s, "
              f"step / prefill {step_s / prefill_s:.3f}, peak {peak:.1f} GiB", flush=True)
    text = json.dumps({"records": records}, indent=1)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
