"""The gate on real SmolLM2 masks at 64 samples per cell, 1K–8K, on one GPU (issue 20).

    PYTHONPATH=. python scripts/smollm2_gate.py --out DIR [--samples 64] [--budget-s 480] [--masks NAME ...]

What the validation worker does (``leank_core.evaluation.evaluate``: batches through the decode
engine; the full cache as ``LeanKMask.keep_all`` of the masks' window geometry), run in one
process so the full cache's run is shared by every mask instead of repeated per mask: the eval
split's samples (the GPU validation config's four retrieval tasks plus the eval-only families the training split never
uses) at 1K, 2K, 4K and 8K tokens, scored with the full cache once, then for each committed
mask with the mask and with a random mask of the same per-head kept counts, and with the
identity mask (every channel kept: what the gate must accept). Each mask gets the report
``validate`` would write for a mask file (look 1, the default gate) and its pairs as JSONL (the
input of ``scripts/gate_error_rates.py --pairs``). Runs start while ``--budget-s`` lasts; every
finished mask's files are written at once, so a run cut short keeps what it measured.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import asdict
from pathlib import Path

for _var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
    os.environ.setdefault(_var, "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402

from leank_core.evaluation import evaluate, generate_one  # noqa: E402
from leank_core.hook import apply  # noqa: E402
from leank_core.mask import LeanKMask  # noqa: E402
from leank_core.memory import cache_memory  # noqa: E402
from leank_core.model_source import resolve_model  # noqa: E402
from leank_core.tasks import cached_samples  # noqa: E402
from registry import GatePolicy, Report  # noqa: E402

TASKS = ("passkey", "niah_single", "niah_multikey", "niah_multiquery",  # the GPU validation config's
         "niah_reworded", "variable_tracking_chains", "qa_documents")   # eval-only wordings and families
LENGTHS = (1024, 2048, 4096, 7936)
MASKS = {"gpu_r70": "results/smollm2/mask_r70.safetensors", "gpu_r50": "results/smollm2/mask_r50.safetensors",
         "cpu_quick_r70": "results/smollm2/mask_cpu_quick_r70.safetensors"}
SEED, EXTRA_TOKENS = 1234, 8


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--samples", type=int, default=64, help="samples per task x length cell")
    p.add_argument("--lengths", type=int, nargs="+", default=list(LENGTHS), help="context lengths (default 1K-8K)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--budget-s", type=float, default=480.0, help="start no new run after this many seconds")
    p.add_argument("--masks", nargs="+", choices=[*MASKS, "identity"], default=[*MASKS, "identity"],
                   help="which masks to run after the full cache, in this order (default: all)")
    args = p.parse_args()
    start = time.perf_counter()
    args.out.mkdir(parents=True, exist_ok=True)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    source = resolve_model("smollm2-135m")
    model = source.load(dtype=torch.bfloat16 if device == "cuda" else torch.float32, device=device)
    tokenizer = source.tokenizer()
    masks = {name: LeanKMask.load(path) for name, path in MASKS.items()}
    reference = masks["gpu_r70"]
    apply(model, reference)  # every mask was learned for this model: the hash check runs once
    samples = cached_samples(tokenizer, "eval", TASKS, args.lengths, args.samples, SEED).to_list()
    log = {"device": torch.cuda.get_device_name() if device == "cuda" else "cpu", "samples": len(samples),
           "samples_per_cell": args.samples, "tasks": TASKS, "lengths": args.lengths, "runs": {},
           "setup_s": time.perf_counter() - start}
    print(f"{len(samples)} samples ready after {log['setup_s']:.0f} s", flush=True)

    def run(label: str, mask: LeanKMask | None) -> list[dict] | None:
        if time.perf_counter() - start > args.budget_s:
            print(f"{label}: skipped (budget)", flush=True)
            return None
        t0 = time.perf_counter()
        rows = evaluate(model, tokenizer, samples, mask, EXTRA_TOKENS, label, args.batch_size, progress=False)
        seconds = time.perf_counter() - t0
        log["runs"][label] = {"seconds": seconds, "mean_score": sum(r["score"] for r in rows) / len(rows)}
        print(f"{label}: {seconds:.1f} s, mean score {log['runs'][label]['mean_score']:.3f}", flush=True)
        (args.out / "log.json").write_text(json.dumps(log, indent=1))
        return rows

    if {(m.sink, m.recent) for m in masks.values()} != {(reference.sink, reference.recent)}:
        raise SystemExit("the masks' sink/recent differ: one shared full-cache run needs one window geometry")
    # the full cache in the masks' geometry, as validate scores it; as a mask, the identity the gate must accept
    masks["identity"] = full_cache = reference.keep_all()
    full = run("full", full_cache)
    for name in args.masks:
        mask = masks[name]
        masked = run(f"{name}/masked", mask)
        if masked is None:
            continue
        runs = full + [dict(r, run="masked") for r in masked]
        if name != "identity" and (random := run(f"{name}/random", mask.random_like(SEED))) is not None:
            runs += [dict(r, run="random") for r in random]
        write(args.out / name, model, samples, mask, runs, args.lengths)
    log["total_s"] = time.perf_counter() - start
    (args.out / "log.json").write_text(json.dumps(log, indent=1))


def write(out: Path, model, samples: list[dict], mask: LeanKMask, rows: list[dict], lengths: list[int]) -> None:
    """The mask's report (as ``validate`` writes it for a mask file) and its pairs, one JSON line each."""
    longest = max(samples, key=lambda s: len(s["input_ids"]))
    tokens, _, cache = generate_one(model, longest["input_ids"], mask, len(longest["answer_ids"]) + EXTRA_TOKENS)
    memory = cache_memory(cache)
    report = Report.build(rows, mask.sha256(), mask.model_id, mask.model_hash, GatePolicy(),
                          memory={"tokens": len(longest["input_ids"]) + len(tokens), "k_saving": memory.k_saving,
                                  "v_saving": memory.v_saving, **asdict(memory)},
                          settings={"tasks": list(TASKS), "lengths": list(lengths), "seed": SEED,
                                    "extra_tokens": EXTRA_TOKENS, "script": "scripts/smollm2_gate.py"})
    report.save(out / "report.json")
    (out / "pairs.jsonl").write_text("".join(json.dumps(p.to_dict()) + "\n" for p in report.pairs))
    print(f"{out.name}: {report.summary()}", flush=True)


if __name__ == "__main__":
    main()
