"""Synthetic long-context data: deterministic, length-exact, solvable, train/eval disjoint."""

from __future__ import annotations

import json
import time
from collections import Counter

import pytest
from transformers import ByT5Tokenizer

from tests.conftest import requires_smollm2

from leank_core.tasks import (
    FEATURES, LENGTH_TOLERANCE, TASKS, TRAIN_TASKS, DataRecipe, Difficulty, make_samples, make_training_samples,
)
from leank_core.tasks.budget import TokenCounter

RETRIEVAL = ("passkey", "niah_single", "niah_multikey", "niah_multivalue", "niah_multiquery", "variable_tracking",
             "niah_reworded", "variable_tracking_chains", "qa_documents")
LENGTHS = [1024, 2048]  # bytes: the shortest that fits RULER's wording and four uuid needles


@pytest.fixture(scope="module")
def tok() -> ByT5Tokenizer:
    return ByT5Tokenizer(extra_ids=0)


@pytest.fixture(scope="module")
def eval_set(tok):
    return make_samples(tok, "eval", TASKS, LENGTHS, 3, seed=0)


@pytest.fixture(scope="module")
def train_set(tok):
    return make_samples(tok, "train", TASKS, LENGTHS, 3, seed=0)


def context_of(row) -> str:
    """The prompt without its final question (the question repeats keys, never answers)."""
    return row["prompt"].rsplit("\n\n", 1)[0]


def test_same_seed_same_dataset_other_seed_other_dataset(tok, eval_set):
    again = make_samples(tok, "eval", TASKS, LENGTHS, 3, seed=0)
    other = make_samples(tok, "eval", TASKS, LENGTHS, 3, seed=1)
    assert again.to_list() == eval_set.to_list()
    assert all(a["prompt"] != b["prompt"] for a, b in zip(other, eval_set))


def test_a_cell_does_not_depend_on_the_other_cells(tok, eval_set):
    alone = make_samples(tok, "eval", ["niah_multikey"], [2048], 3, seed=0).to_list()
    assert alone == [r for r in eval_set.to_list() if r["task"] == "niah_multikey" and r["length"] == 2048]


def test_eval_samples_never_equal_training_samples(train_set, eval_set):
    assert not {r["prompt"] for r in train_set} & {r["prompt"] for r in eval_set}
    pairs = lambda ds: {(k, a) for r in ds for k in r["keys"] for a in r["answers"]}  # noqa: E731
    assert pairs(train_set) and not pairs(train_set) & pairs(eval_set)
    assert not {k for r in train_set for k in r["keys"]} & {k for r in eval_set for k in r["keys"]}


def test_splits_use_different_wording_and_haystack(train_set, eval_set):
    """Eval follows RULER's wording; training paraphrases it, over another filler family."""
    sentences = lambda ds, t: {s for r in ds if r["task"] == t for s in context_of(r).split(". ")[1:-1]}  # noqa: E731
    for task in ("passkey", "niah_single"):
        assert not sentences(train_set, task) & sentences(eval_set, task)
    assert "special magic" in next(r for r in eval_set if r["task"] == "niah_single")["prompt"]
    assert "special magic" not in " ".join(train_set["prompt"])


def test_every_prompt_is_within_tolerance_of_its_length(tok, eval_set, train_set):
    for row in [*eval_set, *train_set]:
        assert row["length"] - LENGTH_TOLERANCE <= len(row["input_ids"]) <= row["length"], (row["task"], row["length"])
        assert row["input_ids"] == tok(row["prompt"], add_special_tokens=False)["input_ids"]


def test_bos_is_prepended_when_the_tokenizer_has_one():
    tok = ByT5Tokenizer(extra_ids=0)
    tok.bos_token = tok.pad_token
    row = make_samples(tok, "eval", ["passkey"], [1024], 1, seed=0)[0]
    assert row["input_ids"][0] == tok.pad_token_id
    assert row["input_ids"][1:] == tok(row["prompt"], add_special_tokens=False)["input_ids"]
    assert 1024 - LENGTH_TOLERANCE <= len(row["input_ids"]) <= 1024


def test_prompts_end_where_the_answer_starts(tok, eval_set):
    for row in eval_set:
        assert row["prompt"].endswith(("is", "are", ":")), row["prompt"][-40:]
        assert row["answer_ids"] == tok(" " + ", ".join(row["answers"]) + ".", add_special_tokens=False)["input_ids"]


@pytest.mark.parametrize("split", ["train", "eval"])
def test_retrieval_answers_are_written_in_the_context(split, eval_set, train_set):
    for row in eval_set if split == "eval" else train_set:
        if row["task"] in RETRIEVAL:
            context = context_of(row)
            assert all(a in context for a in row["answers"]), row["task"]
            assert all(k in context for k in row["keys"]), row["task"]


def test_multikey_has_distractor_needles_of_the_same_format(eval_set):
    for row in eval_set:
        if row["task"] == "niah_multikey":
            assert context_of(row).count("One of the special magic") == Difficulty().needles


def test_difficulty_sets_needle_and_answer_counts(tok):
    hard = Difficulty(needles=7, values=5, queries=3, hops=6, common=8, frequent=4)
    ds = make_samples(tok, "eval", TASKS, [2048], 1, seed=0, difficulty=hard)
    row = {r["task"]: r for r in ds}
    assert context_of(row["niah_multikey"]).count("One of the special magic") == 7
    assert [len(row[t]["answers"]) for t in ("niah_multivalue", "niah_multiquery", "variable_tracking")] == [5, 3, 7]
    assert [len(row[t]["answers"]) for t in ("common_words", "frequent_words")] == [8, 4]
    with pytest.raises(ValueError, match="queries"):
        Difficulty(needles=2, queries=3)
    with pytest.raises(ValueError, match="Difficulty field"):
        Difficulty(hops=0)


def test_the_asked_needle_moves_through_the_context_with_index(tok):
    ds = make_samples(tok, "eval", ["passkey"], [2048], 4, seed=3)
    depth = [r["prompt"].index(r["answers"][0]) / len(r["prompt"]) for r in ds]
    assert depth == sorted(depth) and depth[0] < 0.3 and depth[-1] > 0.7


@pytest.mark.parametrize("split", ["train", "eval"])
@pytest.mark.parametrize("task,sep,k", [("common_words", ",", 5), ("frequent_words", None, 3)])
def test_aggregation_answers_are_really_the_most_frequent(split, task, sep, k, eval_set, train_set):
    for row in eval_set if split == "eval" else train_set:
        if row["task"] == task:
            words = context_of(row).rsplit("\n\n", 1)[1].split(sep)
            counts = Counter(w.strip() for w in words if w.strip()).most_common()
            assert len(row["answers"]) == k
            assert {w for w, _ in counts[:k]} == set(row["answers"])
            assert counts[k - 1][1] > counts[k][1]  # strictly: no tie with the first distractor


def test_columns_and_types(eval_set):
    assert eval_set.features == FEATURES
    row = eval_set[0]
    assert set(row) == {"task", "length", "index", "prompt", "answers", "keys", "input_ids", "answer_ids"}
    assert isinstance(row["prompt"], str) and isinstance(row["length"], int) and isinstance(row["index"], int)
    assert all(isinstance(a, str) for a in row["answers"]) and all(isinstance(i, int) for i in row["input_ids"])
    assert sorted(set(eval_set["task"])) == sorted(TASKS)
    assert sorted(set(eval_set["index"])) == [0, 1, 2]


@pytest.mark.parametrize("args,match", [
    (dict(tasks=["needle"]), "unknown task 'needle'"),
    (dict(lengths=[0]), "bad length 0"),
    (dict(lengths=["1024"]), "bad length '1024'"),
    (dict(lengths=[100]), "too short"),
    (dict(split="test"), "unknown split"),
    (dict(n_per_cell=0), "n_per_cell"),
])
def test_bad_arguments_fail_with_one_line(tok, args, match):
    kwargs = dict(split="eval", tasks=["passkey"], lengths=[1024], n_per_cell=1, seed=0) | args
    with pytest.raises(ValueError, match=match) as info:
        make_samples(tok, **kwargs)
    assert "\n" not in str(info.value)


def test_training_recipe_lengths_tasks_and_determinism(tok):
    recipe = DataRecipe(min_length=1024, max_length=2048, n_samples=12, seed=5)
    ds = make_training_samples(tok, recipe)
    assert len(ds) == 12 and set(ds["task"]) == set(TRAIN_TASKS)
    assert all(1024 <= n <= 2048 for n in ds["length"]) and len(set(ds["length"])) > 6
    assert all(r["length"] - LENGTH_TOLERANCE <= len(r["input_ids"]) <= r["length"] for r in ds)
    assert make_training_samples(tok, recipe).to_list() == ds.to_list()
    shards = [ds.shard(num_shards=2, index=i) for i in range(2)]
    assert sorted(p for s in shards for p in s["prompt"]) == sorted(ds["prompt"])


def test_recipe_round_trips_and_rejects_nonsense():
    recipe = DataRecipe(tasks=("passkey",), min_length=512, max_length=4096, n_samples=3, seed=9,
                        difficulty=Difficulty(needles=6))
    assert DataRecipe.from_dict(json.loads(json.dumps(recipe.to_dict()))) == recipe
    with pytest.raises(ValueError, match="min_length"):
        DataRecipe(min_length=4096, max_length=1024)
    with pytest.raises(ValueError, match="unknown task"):
        DataRecipe(tasks=("sudoku",))
    with pytest.raises(ValueError, match="unknown DataRecipe fields"):
        DataRecipe.from_dict({"steps": 3})
    with pytest.raises(ValueError, match="unknown Difficulty fields"):
        DataRecipe.from_dict({"difficulty": {"keys": 3}})


@pytest.mark.slow
@requires_smollm2
def test_real_bpe_tokenizer_8k_prompts_are_exact_and_cheap():
    """SmolLM2's BPE: 4K/8K prompts within tolerance, each whole prompt tokenized about once."""
    from leank_core.model_source import resolve_model

    tok = resolve_model("smollm2-135m").tokenizer()
    calls = Counter()
    prompt_ids = TokenCounter.prompt_ids

    def counted(self, text):
        calls["prompt"] += 1
        return prompt_ids(self, text)

    TokenCounter.prompt_ids = counted
    try:
        start = time.perf_counter()
        ds = make_samples(tok, "eval", TASKS, [4096, 8192], 2, seed=0)
        seconds = time.perf_counter() - start
    finally:
        TokenCounter.prompt_ids = prompt_ids
    for row in ds:
        assert row["length"] - LENGTH_TOLERANCE <= len(row["input_ids"]) <= row["length"], (row["task"], row["length"])
        assert row["input_ids"] == [tok.bos_token_id] + tok(row["prompt"], add_special_tokens=False)["input_ids"]
        if row["task"] in RETRIEVAL:
            assert all(a in context_of(row) for a in row["answers"])
    assert calls["prompt"] <= 3 * len(ds)  # 1 for the head's count + 1-2 whole-prompt checks per sample
    print(f"\n{len(ds)} samples at 4K/8K in {seconds:.2f} s ({seconds / len(ds) * 1000:.0f} ms/sample); "
          f"{calls['prompt']} prompt tokenizations")
