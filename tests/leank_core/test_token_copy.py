"""Token-copy samples: exact prompt lengths, an answer copied from the prompt, seeded."""

from __future__ import annotations

import pytest

from leank_core.token_copy import ANSWER_TOKENS, token_copy_samples


def contains(prompt: list[int], span: list[int]) -> bool:
    return any(prompt[i:i + len(span)] == span for i in range(len(prompt) - len(span) + 1))


def test_prompts_have_the_asked_lengths_and_answers_are_spans_of_them():
    samples = token_copy_samples(300, [40, 16, 1000], seed=1)
    assert [len(s["input_ids"]) for s in samples] == [40, 16, 1000]
    for s in samples:
        assert len(s["answer_ids"]) == ANSWER_TOKENS and contains(s["input_ids"], s["answer_ids"])
        assert all(0 <= t < 300 for t in s["input_ids"])


def test_the_seed_decides_the_samples():
    assert token_copy_samples(300, [50], seed=1) == token_copy_samples(300, [50], seed=1)
    assert token_copy_samples(300, [50], seed=1) != token_copy_samples(300, [50], seed=2)


def test_a_prompt_shorter_than_the_answer_is_refused():
    with pytest.raises(ValueError, match="at least 16 tokens"):
        token_copy_samples(300, [10], seed=0)
