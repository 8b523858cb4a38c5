"""Checkpoint files a worker may trust: digests written at save time, loads that cannot run code.

Whoever can write the checkpoint storage (a shared directory, a bucket) must not be able to
run code on the workers that resume from it, nor hand them silently altered state:

* :func:`load_tensors` reads a torch-saved file with ``weights_only=True``: tensors and plain
  containers only, never an arbitrary pickle;
* :func:`write_digest` records, after the save, the sha256 of every file in the checkpoint
  directory; :func:`verify_digest` refuses a checkpoint whose files differ from it (changed,
  missing, or added — e.g. a pickle dropped beside the tensors) before anything is loaded.
  ``write_digest`` also returns one digest of the whole checkpoint: kept somewhere the
  storage's writers cannot reach (the job's run record, a metric reported with the
  checkpoint), it also catches a rewrite of the digest file itself.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

DIGEST_FILE = "leank_digest.json"
_CHUNK = 1 << 20


class CheckpointError(ValueError):
    """A checkpoint that fails verification or cannot be read safely (one line)."""


def _file_digests(directory: Path) -> dict[str, str]:
    out = {}
    for path in sorted(p for p in directory.rglob("*") if p.is_file() and p.name != DIGEST_FILE):
        h = hashlib.sha256()
        with open(path, "rb") as f:
            while chunk := f.read(_CHUNK):
                h.update(chunk)
        out[path.relative_to(directory).as_posix()] = h.hexdigest()
    return out


def _top(files: dict[str, str]) -> str:
    return hashlib.sha256(json.dumps(files, sort_keys=True).encode()).hexdigest()


def write_digest(directory: str | Path) -> str:
    """Record the sha256 of every file under ``directory`` in :data:`DIGEST_FILE`; return the
    checkpoint's one digest (over the sorted file digests)."""
    directory = Path(directory)
    files = _file_digests(directory)
    (directory / DIGEST_FILE).write_text(json.dumps({"files": files}, indent=1, sort_keys=True))
    return _top(files)


def verify_digest(directory: str | Path, expected: str | None = None) -> str:
    """Check ``directory`` against its :data:`DIGEST_FILE` (and against ``expected``, the digest
    :func:`write_digest` returned, when the caller kept it); return the digest or raise
    :class:`CheckpointError`."""
    directory = Path(directory)
    try:
        recorded = json.loads((directory / DIGEST_FILE).read_text())["files"]
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint {directory} has no {DIGEST_FILE}; it was not written by leank "
                              "(or predates digests): start the run again") from None
    except (ValueError, KeyError, TypeError, UnicodeDecodeError):
        recorded = None
    if not isinstance(recorded, dict):
        raise CheckpointError(f"checkpoint {directory}: {DIGEST_FILE} is damaged; refusing to resume from it")
    actual = _file_digests(directory)
    changed = sorted(k for k in set(actual) | set(recorded) if actual.get(k) != recorded.get(k))
    if changed:
        raise CheckpointError(f"checkpoint {directory} differs from its digest (files changed, added or missing: "
                              f"{', '.join(changed[:5])}); refusing to resume from it")
    top = _top(actual)
    if expected is not None and top != expected:
        raise CheckpointError(f"checkpoint {directory} is not the one this run saved (digest {top[:12]}, "
                              f"expected {expected[:12]}); refusing to resume from it")
    return top


def load_tensors(path: str | Path) -> Any:
    """``torch.load`` of a checkpoint file with ``weights_only=True`` (CPU); CheckpointError if the
    file holds anything but tensors and plain containers."""
    import pickle

    import torch

    try:
        return torch.load(Path(path), map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError) as e:
        raise CheckpointError(f"checkpoint file {path} cannot be loaded as tensors only "
                              f"({str(e).splitlines()[0][:120]}); refusing it") from None
