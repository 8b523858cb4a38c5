"""Random-token prompts whose answer is a span copied from the prompt: data for shape presets.

A shape preset (``leank_core.model_source``) has random weights and no tokenizer, so the text
tasks (``leank_core.tasks``) cannot be built, and systems runs need only prompts of exact
lengths whose answer depends on the prompt: each prompt is uniform random token ids, and the
answer is :data:`ANSWER_TOKENS` ids copied from a random place in it. Plain lists (no
``datasets``), so the one-GPU benchmark runs where only torch and transformers are installed.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

ANSWER_TOKENS = 16


def token_copy_samples(vocab_size: int, lengths: Sequence[int], seed: int) -> list[dict[str, list[int]]]:
    """One ``{"input_ids", "answer_ids"}`` sample per prompt length, deterministic in ``seed``."""
    generator = torch.Generator().manual_seed(seed)
    samples = []
    for length in lengths:
        if length < ANSWER_TOKENS:
            raise ValueError(f"token-copy prompts need at least {ANSWER_TOKENS} tokens, got a length of {length}")
        prompt = torch.randint(vocab_size, (length,), generator=generator)
        start = int(torch.randint(length - ANSWER_TOKENS + 1, (1,), generator=generator))
        samples.append({"input_ids": prompt.tolist(), "answer_ids": prompt[start:start + ANSWER_TOKENS].tolist()})
    return samples
