"""Run benchmark samples through greedy generation, with the full cache or with a LeanK mask.

This is what the validation gate measures, so it runs what users run: the decode engine
(dense prefill, compact middle, the decode kernels; its dense twin for the full cache), in
batches, whose tokens equal ``generate`` with a ``LeanKCache`` (or a dynamic cache) — the
engine's tests hold it to that. :func:`generate_one` is ``generate`` itself, used for the
cache-memory figure of a report.
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
from leank_core.engine import LeanKEngine
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
    batch_size: int = 8,
    progress: bool = True,
) -> list[dict[str, Any]]:
    """One row per sample: task, length, index, score (RULER-style), output text, timing.

    Samples run greedily through :class:`~leank_core.engine.LeanKEngine` (``mask=None``: its
    dense twin, which decodes exactly like ``generate`` with a full cache), ``batch_size`` at a
    time, prompts of similar length together. Each sample keeps its gold answer's token count
    plus ``extra_tokens`` new tokens (models often open with ": " or a space, so long answers
    such as uuids are never cut off) — the same tokens a one-sample ``generate`` with that budget
    gives. ``seconds`` is the sample's share of its batch's wall time.
    """
    samples = list(samples)
    budgets = [len(s["answer_ids"]) + extra_tokens for s in samples]
    longest = max(len(s["input_ids"]) + b for s, b in zip(samples, budgets))
    engine = LeanKEngine(model, mask, max_batch=batch_size, max_len=longest)
    eos = model.generation_config.eos_token_id
    pad = (eos[0] if isinstance(eos, list) else eos) if eos is not None else 0
    device = next(model.parameters()).device
    order = sorted(range(len(samples)), key=lambda i: len(samples[i]["input_ids"]))
    rows: list[dict[str, Any]] = [{} for _ in samples]
    bar = tqdm(total=len(samples), desc=label, disable=not progress)
    for first in range(0, len(order), batch_size):
        batch = order[first:first + batch_size]
        ids, attention = left_padded([samples[i]["input_ids"] for i in batch], pad, device)
        start = time.perf_counter()
        outputs = engine.generate(ids, attention, max_new_tokens=max(budgets[i] for i in batch), pad_token_id=pad)
        seconds = (time.perf_counter() - start) / len(batch)
        for i, out in zip(batch, outputs):
            tokens = out[: budgets[i]].tolist()
            text = tokenizer.decode(tokens, skip_special_tokens=True)
            rows[i] = {"run": label, "task": samples[i]["task"], "length": int(samples[i]["length"]),
                       "index": int(samples[i]["index"]), "score": score(text, samples[i]["answers"]),
                       "output": text, "new_tokens": len(tokens), "seconds": seconds}
        bar.update(len(batch))
    bar.close()
    return rows


def left_padded(prompts: Sequence[Sequence[int]], pad: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """``[B, T]`` input ids and attention mask with every prompt right-aligned (left padding)."""
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad, dtype=torch.long)
    attention = torch.zeros(len(prompts), width, dtype=torch.long)
    for row, prompt in enumerate(prompts):
        ids[row, width - len(prompt):] = torch.tensor(prompt, dtype=torch.long)
        attention[row, width - len(prompt):] = 1
    return ids.to(device), attention.to(device)
