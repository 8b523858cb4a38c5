"""Scoring of generated answers (what the gate's accuracy is made of)."""

from __future__ import annotations

import pytest
import torch
from transformers import ByT5Tokenizer

from leank_core.evaluation import evaluate, generate_one, score
from leank_core.hook import apply
from leank_core.mask import LeanKMask
from leank_core.model_hash import model_hash
from tests.conftest import tiny_model


def test_score_is_the_fraction_of_expected_strings_found():
    assert score("The pass key is 12345.", ["12345"]) == 1.0
    assert score("1234", ["12345"]) == 0.0
    assert score("alpha and GAMMA", ["alpha", "beta", "gamma", "delta"]) == 0.5
    assert score("ABCDEF-0A", ["abcdef-0a"]) == 1.0
    with pytest.raises(ValueError, match="^score needs at least one expected answer$"):
        score("anything", [])


def _samples(n: int) -> list[dict]:
    g = torch.Generator().manual_seed(3)
    # sorted by length and batched in pairs, the longest prompt (64 tokens, a 1-token answer) shares a batch with
    # a 6-token answer: the batch needs room for 64 + 6 + extra, more than any one sample's prompt + budget
    lengths, answers = [64, 62, 20, 30][:n], [1, 6, 2, 2][:n]
    return [{"task": "t", "length": 64, "index": i, "answers": ["x"],
             "input_ids": torch.randint(3, 259, (n_tokens,), generator=g).tolist(), "answer_ids": [5] * answer}
            for i, (n_tokens, answer) in enumerate(zip(lengths, answers))]


@pytest.mark.parametrize("masked", [False, True])
def test_batched_evaluation_gives_each_sample_what_generate_gives_it_alone(masked):
    """Ragged prompts batched through the engine, each with its own token budget, equal one-by-one generate."""
    model = tiny_model(vocab_size=259)  # every id the byte tokenizer can decode
    mask = None
    if masked:
        alpha = torch.rand(2, 2, 16, generator=torch.Generator().manual_seed(0))
        mask = LeanKMask.from_importance(alpha, 0.5, 4, 4, 8, model_hash=model_hash(model))
        apply(model, mask)
    tokenizer = ByT5Tokenizer(extra_ids=0)
    samples = _samples(4)
    rows = evaluate(model, tokenizer, samples, mask, extra_tokens=3, label="run", batch_size=2, progress=False)
    for sample, row in zip(samples, rows):
        budget = len(sample["answer_ids"]) + 3
        tokens, _, _ = generate_one(model, sample["input_ids"], mask, budget)
        assert (row["index"], row["run"]) == (sample["index"], "run")
        assert row["output"] == tokenizer.decode(tokens, skip_special_tokens=True) and row["new_tokens"] == len(tokens)
