"""Eval-only phrasing families and the newer task families: rotated per sample, never seen in training."""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import fields

import pytest
from transformers import ByT5Tokenizer

from leank_core.tasks import FAMILIES, FAMILY_TASKS, TASKS, Difficulty, make_samples
from leank_core.tasks.families import family_of
from leank_core.tasks.generate import FamilyPools

TRAIN = FAMILIES["train"]["train"]
EVAL = FAMILIES["eval"]


@pytest.fixture(scope="module")
def tok() -> ByT5Tokenizer:
    return ByT5Tokenizer(extra_ids=0)


@pytest.fixture(scope="module")
def wide(tok):
    """Two samples per eval family for each rotated task (8 per cell) and the train split's."""
    return {split: make_samples(tok, split, FAMILY_TASKS, [1024], 8, seed=0) for split in ("train", "eval")}


def texts(value) -> list[str]:
    return [value] if isinstance(value, str) else [t for v in value for t in texts(v)] if isinstance(value, tuple) else []


@pytest.mark.parametrize("family", list(EVAL))
def test_eval_families_share_no_wording_with_training(family):
    p = EVAL[family]
    for f in fields(p):
        mine, train = set(texts(getattr(p, f.name))), set(texts(getattr(TRAIN, f.name)))
        if f.name not in ("syllables", "var_letters", "key_words", "slots"):
            assert mine and not mine & train, f.name
    assert not set(p.syllables) & set(TRAIN.syllables)
    assert not set(p.var_letters) & set(TRAIN.var_letters)
    assert not {w for part in p.key_words for w in part} & {w for part in TRAIN.key_words for w in part}
    assert not {w for v in p.slots.values() for w in v} & {w for v in TRAIN.slots.values() for w in v}


@pytest.mark.parametrize("family", list(EVAL))
def test_eval_filler_never_uses_training_filler(family):
    train, mine = FamilyPools.build("train", "train"), FamilyPools.build("eval", family)
    for pool in ("sentences", "passkey_sentences", "words"):
        assert not set(getattr(train, pool)) & set(getattr(mine, pool)), pool


@pytest.mark.parametrize("family", [f for f in EVAL if f != "ruler"])  # RULER's own noise says "The grass is green."
def test_new_eval_filler_avoids_every_word_training_fills_in(family):
    mine = FamilyPools.build("eval", family)
    train_words = {w for v in TRAIN.slots.values() for w in v}
    assert not train_words & {w for s in mine.sentences + mine.passkey_sentences for w in re.findall(r"[a-z]+", s.lower())}


def test_rotated_tasks_meet_every_eval_family_and_the_rest_keep_ruler():
    for task in TASKS:
        used = Counter(family_of("eval", task, i) for i in range(16))
        assert set(used) == (set(EVAL) if task in FAMILY_TASKS else {"ruler"}), task
        assert {family_of("train", task, i) for i in range(16)} == {"train"}
    # both needle kinds (index parity) meet every family
    assert {(family_of("eval", "niah_reworded", i), i % 2) for i in range(8)} == {(f, k) for f in EVAL for k in (0, 1)}


def test_rotated_samples_are_worded_by_their_family(wide):
    for row in wide["eval"]:
        family = EVAL[family_of("eval", row["task"], row["index"])]
        head = {"niah_reworded": family.niah_head.split("{")[0], "variable_tracking_chains": family.vt_head,
                "qa_documents": family.qa_head}[row["task"]]
        assert row["prompt"].startswith(head), (row["task"], row["index"])


def test_rotated_tasks_share_nothing_with_their_training_samples(wide):
    train, test = wide["train"], wide["eval"]
    assert not set(train["prompt"]) & set(test["prompt"])
    assert not {k for r in train for k in r["keys"]} & {k for r in test for k in r["keys"]}
    assert not {a for r in train for a in r["answers"]} & {a for r in test for a in r["answers"]}
    sentences = lambda ds: {s.strip() for r in ds for s in re.split(r"(?<=[.!?])\s", r["prompt"])}  # noqa: E731
    shared = sentences(train) & sentences(test)
    assert all(re.fullmatch(r"[\w\s-]*\d+\.?", s) for s in shared), shared  # at most a bare number could repeat


def test_variable_tracking_chains_has_distinct_chains_and_asks_the_first(tok):
    d = Difficulty(hops=3, chains=4)
    for row in make_samples(tok, "eval", ["variable_tracking_chains"], [2048], 2, seed=5, difficulty=d):
        prompt = row["prompt"]
        value = row["keys"][0]
        assert len(row["answers"]) == d.hops + 1 and len(set(row["answers"])) == d.hops + 1
        starts = re.findall(r"VAR (\w+) = (\d+)\.", prompt)
        assert len(starts) == d.chains and len({v for _, v in starts}) == d.chains
        assert (row["answers"][0], value) in starts
        assert len(re.findall(r"VAR \w+ = VAR \w+\.", prompt)) == d.chains * d.hops
        for prev, name in zip(row["answers"], row["answers"][1:]):
            assert f"VAR {name} = VAR {prev}." in prompt


def test_qa_documents_answer_is_stated_only_for_the_asked_person(wide):
    for row in wide["eval"]:
        if row["task"] != "qa_documents":
            continue
        family = EVAL[family_of("eval", "qa_documents", row["index"])]
        person, answer = row["keys"][0], row["answers"][0]
        documents = row["prompt"].rsplit("\n\n", 1)[0].split(family.qa_document.split("{")[0])[1:]
        assert len(documents) >= 2  # the asked one and at least one distractor
        holding = [d for d in documents if re.search(rf"\b{answer}\b", d)]
        assert holding and all(d.startswith(person) for d in holding), (row["index"], answer)
        assert sum(d.startswith(person) for d in documents) == 1
