"""Samples of one split under one tokenizer, as ``datasets.Dataset``: the public entry points.

One generator serves both uses of synthetic data: the *train* split feeds mask learning and
the *eval* split is the held-out benchmark of the validation gate. Prompts are completion
style and end right where the answer starts ("... The pass key is"): small models retrieve
well with plain completions, while chat templates fail beyond ~2K.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any, Literal

from datasets import Dataset, Features, List, Value
from transformers import PreTrainedTokenizerBase

from leank_core.tasks.budget import TokenCounter, realize
from leank_core.tasks.builders import BUILDERS, TASKS, Difficulty, TaskInputs
from leank_core.tasks.families import FamilyPools, family_of

SPLITS = ("train", "eval")
FEATURES = Features({
    "task": Value("string"), "length": Value("int64"), "index": Value("int64"), "prompt": Value("string"),
    "answers": List(Value("string")), "keys": List(Value("string")),
    "input_ids": List(Value("int64")), "answer_ids": List(Value("int64")),
})


class SampleGenerator:
    """Samples of one split under one tokenizer; pools are built and tokenized once."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase, split: str, difficulty: Difficulty):
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}: use 'train' or 'eval'")
        self.split, self.counter, self.difficulty = split, TokenCounter(tokenizer), difficulty
        self.pools: dict[str, FamilyPools] = {}

    def family(self, name: str) -> FamilyPools:
        if name not in self.pools:
            self.pools[name] = FamilyPools.build(self.split, name)
        return self.pools[name]

    def sample(self, task: str, length: int, index: int, n: int, seed: int) -> dict[str, Any]:
        rng = random.Random(f"leank-data/{self.split}/{seed}/{task}/{length}/{index}")
        f = self.family(family_of(self.split, task, index))
        ctx = TaskInputs(f.phrasing, f.sentences, f.passkey_sentences, f.words, self.counter, self.difficulty, index, n)
        draft = BUILDERS[task](ctx, rng, task, length)
        prompt, ids = realize(draft, task, length, self.counter, rng)
        return {
            "task": task, "length": length, "index": index, "prompt": prompt,
            "answers": draft.answers, "keys": draft.keys, "input_ids": ids,
            "answer_ids": self.counter.ids(gold_continuation(draft.answers)),
        }


def gold_continuation(answers: Sequence[str]) -> str:
    """What a perfect model would generate after the prompt (its tokens are ``answer_ids``)."""
    return " " + ", ".join(answers) + "."


def check_tasks_and_lengths(tasks: Sequence[str], lengths: Sequence[int]) -> None:
    for task in tasks:
        if task not in TASKS:
            raise ValueError(f"unknown task {task!r}: choose from {', '.join(TASKS)}")
    for length in lengths:
        if isinstance(length, bool) or not isinstance(length, int) or length <= 0:
            raise ValueError(f"bad length {length!r}: lengths are positive token counts (int)")


def make_samples(
    tokenizer: PreTrainedTokenizerBase,
    split: Literal["train", "eval"],
    tasks: Sequence[str],
    lengths: Sequence[int],
    n_per_cell: int,
    seed: int,
    *,
    difficulty: Difficulty = Difficulty(),
) -> Dataset:
    """``n_per_cell`` samples for every task x length, deterministic in (split, seed).

    Columns: ``task``, ``length`` (target tokens), ``index`` (within the cell), ``prompt``
    (instructions + haystack + question, ending where the answer starts), ``answers`` (the
    expected strings, scored with :func:`leank_core.evaluation.score`), ``keys`` (what the question asks about:
    niah keys, the passkey's name, the tracked value; empty for word-frequency tasks),
    ``input_ids`` (the prompt tokenized with ``add_special_tokens=False``, prefixed by
    ``tokenizer.bos_token_id`` when the tokenizer has one; ``length - LENGTH_TOLERANCE <=
    len(input_ids) <= length``) and ``answer_ids`` (the gold continuation
    ``" " + ", ".join(answers) + "."``, no special tokens).
    Each sample has its own rng keyed by (split, seed, task, length, index), so a cell does
    not change when other tasks or lengths are added; the asked needle's depth is stratified
    over the cell (sample ``i`` of ``n_per_cell`` sits in the ``i``-th slice of the context),
    so changing ``n_per_cell`` moves needles. ``difficulty`` sets needle and answer counts.
    """
    check_tasks_and_lengths(tasks, lengths)
    if n_per_cell < 1:
        raise ValueError(f"n_per_cell must be >= 1, got {n_per_cell}")
    gen = SampleGenerator(tokenizer, split, difficulty)
    rows = [gen.sample(t, length, i, n_per_cell, seed) for t in tasks for length in lengths for i in range(n_per_cell)]
    return Dataset.from_list(rows, features=FEATURES)
