"""Issue 9, GPU part: SmolLM2-135M full-recipe mask learning and evaluation, run directly
through leank_core (no Ray/DeepSpeed on the device). Writes JSON + masks to --out.

    python smollm2_gpu_recipe.py learn --model M.gguf --out DIR
    python smollm2_gpu_recipe.py eval  --model M.gguf --out DIR
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from collections import defaultdict
from pathlib import Path

for k in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
    os.environ[k] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402
import transformers  # noqa: E402

from leank_core.hook import apply  # noqa: E402
from leank_core.tasks import DataRecipe, make_samples, make_training_samples  # noqa: E402
from leank_core.evaluation import evaluate  # noqa: E402
from leank_core.model_source import resolve_model  # noqa: E402
from leank_core.mask import LeanKMask  # noqa: E402
from leank_core.training import TrainConfig, learn_mask  # noqa: E402

MODEL_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
CUDA = torch.cuda.is_available()  # CPU only for a local smoke run
EVAL_TASKS = ["passkey", "niah_single", "niah_multikey", "niah_multiquery"]


def env() -> dict:
    return {"gpu": torch.cuda.get_device_name(0) if CUDA else "cpu", "torch": torch.__version__, "transformers": transformers.__version__,
            "python": platform.python_version(), "command": " ".join([sys.executable, *sys.argv])}


def load(path: str):
    src = resolve_model(path, model_id=MODEL_ID)
    t = time.perf_counter()
    model = src.load(dtype=torch.bfloat16 if CUDA else torch.float32, device="cuda" if CUDA else "cpu")
    return src, model, time.perf_counter() - t


def learn(args: argparse.Namespace) -> None:
    src, model, load_s = load(args.model)
    tok = src.tokenizer()
    recipe = DataRecipe(min_length=args.min_length, max_length=args.max_length, n_samples=args.n_samples)
    t = time.perf_counter()
    data = make_training_samples(tok, recipe).select_columns(["input_ids", "answer_ids"]).to_list()
    data_s = time.perf_counter() - t
    runs = []
    for ratio in args.ratios:
        cfg = TrainConfig(ratio=ratio, stage1_steps=args.stage1_steps, stage2_steps=args.stage2_steps)
        if CUDA:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        t = time.perf_counter()
        mask = learn_mask(model, data, cfg, model_id=MODEL_ID, extra={"data_recipe": recipe.to_dict()}, progress=True)
        if CUDA:
            torch.cuda.synchronize()
        wall = time.perf_counter() - t
        name = f"mask_r{round(ratio * 100)}"
        mask.save(args.out / f"{name}.safetensors")
        runs.append({"name": name, "ratio": ratio, "wall_s": round(wall, 2), "peak_gpu_mib": torch.cuda.max_memory_allocated() / 2**20 if CUDA else None,
                     "k_fraction_kept": mask.k_fraction_kept, "v_fraction_kept": mask.v_fraction_kept,
                     "kept_counts_per_layer_head": mask.kept_counts().tolist(), "sha256": mask.sha256(),
                     "training_config": cfg.to_dict()})
        print(name, f"{wall:.1f}s", f"K kept {mask.k_fraction_kept:.3f} V kept {mask.v_fraction_kept:.3f}", flush=True)
        result = {"what": "learn_mask directly (leank_core.training), one H100, bf16", **env(), "model_load_s": round(load_s, 2),
                  "data_recipe": recipe.to_dict(), "data_generation_s": round(data_s, 2), "runs": runs}
        (args.out / "learn.json").write_text(json.dumps(result, indent=1))


def summarize(rows: list[dict]) -> dict:
    cells = defaultdict(list)
    for r in rows:
        cells[(r["run"], r["task"], r["length"])].append(r["score"])
    table = defaultdict(dict)
    for (run, task, length), s in sorted(cells.items()):
        table[run][f"{task}@{length}"] = {"accuracy": 100 * sum(s) / len(s), "n": len(s)}
    means = {run: sum(c["accuracy"] for c in t.values()) / len(t) for run, t in table.items()}
    return {"cells": table, "mean_accuracy": means}


def evaluate_all(args: argparse.Namespace) -> None:
    src, model, load_s = load(args.model)
    tok = src.tokenizer()
    r70 = LeanKMask.load(args.out / "mask_r70.safetensors")
    r50 = LeanKMask.load(args.out / "mask_r50.safetensors")
    apply(model, r70)
    apply(model, r50)
    masks = {"full": None, "learned_r70": r70, "random_r70": r70.random_like(args.seed), "learned_r50": r50}
    samples = make_samples(tok, "eval", EVAL_TASKS, args.lengths, args.samples, args.seed).to_list()
    rows, walls = [], {}
    for run, mask in masks.items():
        t = time.perf_counter()
        rows += evaluate(model, tok, samples, mask, args.extra_tokens, run, progress=False)
        walls[run] = round(time.perf_counter() - t, 2)
        result = {"what": "leank_core.evaluation.evaluate directly, one H100, bf16", **env(), "tasks": EVAL_TASKS,
                  "lengths": args.lengths, "samples_per_cell": args.samples, "seed": args.seed,
                  "random_baseline": f"mask_r70.random_like({args.seed})", "extra_tokens": args.extra_tokens,
                  "wall_s": walls, **summarize(rows), "rows": rows}
        (args.out / "eval.json").write_text(json.dumps(result, indent=1))
        print(run, f"{walls[run]:.1f}s", f"mean {result['mean_accuracy'][run]:.1f}", flush=True)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("stage", choices=["learn", "eval"])
    p.add_argument("--model", required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--ratios", type=float, nargs="+", default=[0.7, 0.5])
    p.add_argument("--stage1-steps", type=int, default=400)
    p.add_argument("--stage2-steps", type=int, default=40)
    p.add_argument("--n-samples", type=int, default=256)
    p.add_argument("--min-length", type=int, default=1024)
    p.add_argument("--max-length", type=int, default=8000)
    p.add_argument("--lengths", type=int, nargs="+", default=[1024, 2048, 4096, 8000])
    p.add_argument("--samples", type=int, default=8)
    p.add_argument("--seed", type=int, default=1234)
    p.add_argument("--extra-tokens", type=int, default=8)
    args = p.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    (learn if args.stage == "learn" else evaluate_all)(args)


if __name__ == "__main__":
    main()
