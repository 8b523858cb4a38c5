"""An on-disk cache of generated sample sets, so a validation does not rebuild its suite each run.

Building 1,024 SmolLM2 prompts at 1K–8K tokens takes ~20 s of CPU (tokenizing filler);
loading them back takes ~0.1 s. A set is keyed by everything it depends on: the tokenizer
(its vocabulary and rules), the arguments of :func:`make_samples`, and the source of this
package, so a change to any task builder or phrasing invalidates the cache by itself.
Entries live under ``$XDG_CACHE_HOME/leank/tasks`` (default ``~/.cache/leank/tasks``) and are
written to a temporary folder first, then renamed: a killed run leaves no half-written entry.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

from datasets import Dataset, are_progress_bars_disabled, disable_progress_bars, enable_progress_bars
from transformers import PreTrainedTokenizerBase

from leank_core.tasks.builders import Difficulty
from leank_core.tasks.generate import make_samples

PACKAGE = Path(__file__).resolve().parent


def default_cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "leank" / "tasks"


def tokenizer_identity(tokenizer: PreTrainedTokenizerBase) -> str:
    """sha256 of what decides token ids: the class, the full tokenizer definition (fast
    tokenizers) or the vocabulary (others), and the special tokens prompts use."""
    h = hashlib.sha256(type(tokenizer).__name__.encode())
    backend = getattr(tokenizer, "backend_tokenizer", None)
    h.update(backend.to_str().encode() if backend is not None else
             json.dumps(sorted(tokenizer.get_vocab().items())).encode())
    h.update(json.dumps([tokenizer.bos_token_id, tokenizer.eos_token_id]).encode())
    return h.hexdigest()


def code_identity() -> str:
    """sha256 of this package's source: any change to how samples are made is a new key."""
    h = hashlib.sha256()
    for path in sorted(PACKAGE.glob("*.py")):
        h.update(path.name.encode() + b"\0" + path.read_bytes())
    return h.hexdigest()


def cached_samples(tokenizer: PreTrainedTokenizerBase, split: str, tasks: Sequence[str], lengths: Sequence[int],
                   n_per_cell: int, seed: int, *, difficulty: Difficulty = Difficulty(),
                   cache_dir: Path | None = None) -> Dataset:
    """:func:`~leank_core.tasks.make_samples`, read from the cache when this exact set was built before.

    An entry that cannot be read (damaged, from another ``datasets`` version) is rebuilt.
    """
    key = hashlib.sha256(json.dumps({
        "tokenizer": tokenizer_identity(tokenizer), "code": code_identity(), "split": split, "tasks": list(tasks),
        "lengths": list(lengths), "n_per_cell": n_per_cell, "seed": seed, "difficulty": asdict(difficulty),
    }, sort_keys=True).encode()).hexdigest()[:32]
    path = (cache_dir or default_cache_dir()) / key
    if path.is_dir():
        try:
            return Dataset.load_from_disk(str(path))
        except Exception:  # noqa: BLE001 - any unreadable entry is simply rebuilt
            shutil.rmtree(path, ignore_errors=True)
    dataset = make_samples(tokenizer, split, tasks, lengths, n_per_cell, seed, difficulty=difficulty)
    tmp = path.with_name(f"{key}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    quiet = not are_progress_bars_disabled()
    if quiet:
        disable_progress_bars()  # a cache write is not news on the terminal
    try:
        dataset.save_to_disk(str(tmp))
    finally:
        if quiet:
            enable_progress_bars()
    try:
        tmp.rename(path)
    except OSError:  # another process stored the same entry first
        shutil.rmtree(tmp, ignore_errors=True)
    return dataset
