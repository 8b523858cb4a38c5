"""Run benchmark samples through greedy generation, with the full cache or with a LeanK mask.

This is what the validation gate measures, so it uses exactly what users get: ordinary
``generate`` with a :class:`~leank_core.cache.LeanKCache` (dense prefill, compact middle,
the decode kernel on GPU) for the masked run and the default dynamic cache for the full run.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch
from tqdm.auto import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from leank_core.cache import LeanKCache
from leank_core.compat import cache_kwargs
from leank_core.mask import LeanKMask


def score(prediction: str, answers: Sequence[str]) -> float:
    """RULER's string_match_all: the fraction of expected strings found in ``prediction`` (case-insensitive)."""
    if not answers:
        raise ValueError("score needs at least one expected answer")
    text = prediction.lower()
    return sum(a.lower() in text for a in answers) / len(answers)


@torch.no_grad()
def generate_one(
    model: PreTrainedModel, input_ids: list[int], mask: LeanKMask | None, max_new_tokens: int
) -> tuple[list[int], float, LeanKCache | None]:
    """Greedy continuation of one prompt; returns (new tokens, seconds, the LeanK cache if any)."""
    device = next(model.parameters()).device
    ids = torch.tensor([input_ids], device=device)
    cache = LeanKCache(mask, model.config) if mask is not None else None
    start = time.perf_counter()
    out = model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=max_new_tokens,
                         pad_token_id=model.generation_config.eos_token_id, **(cache_kwargs(model, cache) if cache else {}))
    if device.type == "cuda":
        torch.cuda.synchronize()
    return out[0, ids.shape[1]:].tolist(), time.perf_counter() - start, cache


def evaluate(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    samples: Iterable[Mapping[str, Any]],
    mask: LeanKMask | None,
    extra_tokens: int,
    label: str,
    progress: bool = True,
) -> list[dict[str, Any]]:
    """One row per sample: task, length, index, score (RULER-style), output text, timing.

    Each sample generates its gold answer's token count plus ``extra_tokens`` (models often
    open with ": " or a space), so long answers such as uuids are never cut off.
    """
    rows = []
    for sample in tqdm(list(samples), desc=label, disable=not progress):
        budget = len(sample["answer_ids"]) + extra_tokens
        tokens, seconds, _ = generate_one(model, sample["input_ids"], mask, budget)
        text = tokenizer.decode(tokens, skip_special_tokens=True)
        rows.append({
            "run": label, "task": sample["task"], "length": int(sample["length"]), "index": int(sample["index"]),
            "score": score(text, sample["answers"]), "output": text,
            "new_tokens": len(tokens), "seconds": seconds,
        })
    return rows
