"""Users' own evaluation sets: a .jsonl or .parquet file of prompts and expected answers.

Each record has ``prompt`` (the text the model continues), ``answer`` (a string or a list of
strings, scored like the built-in tasks: the fraction found in the output), ``task`` (any
name; it labels the cell) and ``length`` (the cell's context-length label in tokens; the
prompt is not cut or padded to it). Records become the same columns as
:func:`~leank_core.tasks.make_samples` produces, so validation runs them unchanged; ``index``
counts records of one task × length cell in file order. Any bad record stops the load with
one line naming the file, the record and what is wrong.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from datasets import Dataset
from transformers import PreTrainedTokenizerBase

from leank_core.tasks.budget import TokenCounter
from leank_core.tasks.generate import FEATURES, gold_continuation

FIELDS = ("prompt", "answer", "task", "length")


def _jsonl(path: Path) -> Iterator[tuple[str, Any]]:
    with path.open(encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if line.strip():
                try:
                    yield f"line {number}", json.loads(line)
                except json.JSONDecodeError as e:
                    raise ValueError(f"{path} line {number}: not valid JSON ({e.msg})") from None


def _parquet(path: Path) -> Iterator[tuple[str, Any]]:
    import pyarrow.parquet as pq

    try:
        records = pq.read_table(path).to_pylist()
    except Exception as e:  # noqa: BLE001 - pyarrow raises several types for a damaged file
        raise ValueError(f"{path}: not a readable parquet file ({type(e).__name__})") from None
    for number, record in enumerate(records, 1):
        yield f"row {number}", record


READERS = {".jsonl": _jsonl, ".parquet": _parquet}


def _answers(value: Any) -> list[str] | None:
    if isinstance(value, str):
        value = [value]
    if isinstance(value, list) and value and all(isinstance(a, str) and a.strip() for a in value):
        return value
    return None


def _check(record: Any, where: str) -> tuple[str, list[str], str, int]:
    if not isinstance(record, Mapping):
        raise ValueError(f"{where}: a record must be an object with {', '.join(FIELDS)}")
    missing = [f for f in FIELDS if f not in record or record[f] is None]
    if missing:
        raise ValueError(f"{where}: missing field {missing[0]!r} (each record needs {', '.join(FIELDS)})")
    prompt, task, length, answers = record["prompt"], record["task"], record["length"], _answers(record["answer"])
    if not isinstance(prompt, str) or not prompt.strip():
        raise ValueError(f"{where}: field 'prompt' must be a non-empty string")
    if answers is None:
        raise ValueError(f"{where}: field 'answer' must be a non-empty string or a non-empty list of them")
    if not isinstance(task, str) or not task.strip():
        raise ValueError(f"{where}: field 'task' must be a non-empty string, got {task!r}")
    if isinstance(length, bool) or not isinstance(length, int) or length <= 0:
        raise ValueError(f"{where}: field 'length' must be a positive integer (tokens), got {length!r}")
    return prompt, answers, task, length


def load_eval_data(path: str | Path, tokenizer: PreTrainedTokenizerBase) -> Dataset:
    """The records of ``path`` as a sample set (columns of ``make_samples``; ``keys`` empty)."""
    path = Path(path)
    reader = READERS.get(path.suffix.lower())
    if reader is None:
        raise ValueError(f"{path}: unknown extension {path.suffix or '(none)'!r}; use .jsonl or .parquet")
    if not path.is_file():
        raise ValueError(f"{path}: no such file")
    counter, seen, rows = TokenCounter(tokenizer), Counter(), []
    for where, record in reader(path):
        prompt, answers, task, length = _check(record, f"{path} {where}")
        rows.append({"task": task, "length": length, "index": seen[(task, length)], "prompt": prompt,
                     "answers": answers, "keys": [], "input_ids": counter.prompt_ids(prompt),
                     "answer_ids": counter.ids(gold_continuation(answers))})
        seen[(task, length)] += 1
    if not rows:
        raise ValueError(f"{path} holds no records; each line (row) needs {', '.join(FIELDS)}")
    return Dataset.from_list(rows, features=FEATURES)
