"""Users' own eval sets: .jsonl and .parquet records become make_samples' columns; bad files fail in one line."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from transformers import ByT5Tokenizer

from leank_core.tasks import FEATURES, load_eval_data

RECORDS = [
    {"prompt": "The code is 4711. Remember it.\n\nThe code is", "answer": "4711", "task": "mine", "length": 64},
    {"prompt": "Alice has a cat and a dog.\n\nAlice's pets are", "answer": ["cat", "dog"], "task": "mine", "length": 64},
    {"prompt": "Bob lives in Oslo.\n\nBob lives in", "answer": ["Oslo"], "task": "other", "length": 128},
]


@pytest.fixture(scope="module")
def tok() -> ByT5Tokenizer:
    return ByT5Tokenizer(extra_ids=0)


def write_jsonl(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


@pytest.mark.parametrize("kind", ["jsonl", "parquet"])
def test_records_become_sample_columns(tmp_path, tok, kind):
    path = tmp_path / f"mine.{kind}"
    if kind == "jsonl":
        write_jsonl(path, RECORDS)
    else:
        rows = [r | {"answer": r["answer"] if isinstance(r["answer"], list) else [r["answer"]]} for r in RECORDS]
        pq.write_table(pa.Table.from_pylist(rows), path)
    ds = load_eval_data(path, tok)
    assert ds.features == FEATURES
    assert [(r["task"], r["length"], r["index"]) for r in ds] == [("mine", 64, 0), ("mine", 64, 1), ("other", 128, 0)]
    assert ds[1]["answers"] == ["cat", "dog"] and ds[0]["answers"] == ["4711"] and ds[0]["keys"] == []
    for row, record in zip(ds, RECORDS):
        assert row["prompt"] == record["prompt"]
        assert row["input_ids"] == tok(record["prompt"], add_special_tokens=False)["input_ids"]
        assert row["answer_ids"] == tok(" " + ", ".join(row["answers"]) + ".", add_special_tokens=False)["input_ids"]


@pytest.mark.parametrize("record,match", [
    ({"answer": "x", "task": "t", "length": 64}, "line 2: missing field 'prompt'"),
    ({"prompt": "p", "task": "t", "length": 64}, "missing field 'answer'"),
    ({"prompt": "p", "answer": "x", "length": 64}, "missing field 'task'"),
    ({"prompt": "p", "answer": "x", "task": "t"}, "missing field 'length'"),
    ({"prompt": "", "answer": "x", "task": "t", "length": 64}, "'prompt' must be a non-empty string"),
    ({"prompt": "p", "answer": [], "task": "t", "length": 64}, "'answer' must be"),
    ({"prompt": "p", "answer": ["x", 3], "task": "t", "length": 64}, "'answer' must be"),
    ({"prompt": "p", "answer": "x", "task": 7, "length": 64}, "'task' must be"),
    ({"prompt": "p", "answer": "x", "task": "t", "length": "64"}, "'length' must be a positive integer"),
    ({"prompt": "p", "answer": "x", "task": "t", "length": 0}, "'length' must be a positive integer"),
    ([1, 2], "must be an object"),
])
def test_a_bad_record_fails_in_one_line_naming_it(tmp_path, tok, record, match):
    path = write_jsonl(tmp_path / "bad.jsonl", [RECORDS[0], record])
    with pytest.raises(ValueError, match=match) as info:
        load_eval_data(path, tok)
    assert "\n" not in str(info.value) and str(path) in str(info.value)


def test_bad_files_fail_in_one_line(tmp_path, tok):
    cases = {
        "empty.jsonl": ("\n\n", "holds no records"),
        "broken.jsonl": ('{"prompt": \n', "line 1: not valid JSON"),
        "data.csv": ("prompt,answer\n", "unknown extension '.csv'"),
        "data": ("x", r"unknown extension '\(none\)'"),
        "broken.parquet": ("not parquet", "not a readable parquet file"),
    }
    for name, (text, match) in cases.items():
        (tmp_path / name).write_text(text)
        with pytest.raises(ValueError, match=match) as info:
            load_eval_data(tmp_path / name, tok)
        assert "\n" not in str(info.value), name
    with pytest.raises(ValueError, match="no such file"):
        load_eval_data(tmp_path / "missing.jsonl", tok)
