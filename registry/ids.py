"""Model ids and version references: user input that ends up inside object keys.

An id becomes two path components of every key, so anything that could leave the
registry prefix (``..``, absolute paths, control characters, extra slashes) is refused.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_PART = r"[A-Za-z0-9][A-Za-z0-9._-]{0,95}"
_MODEL_ID = re.compile(rf"{_PART}/{_PART}")
_REF = re.compile(r"(?P<model_id>[^@]*)(?:@(?P<version>[0-9]+))?")


def check_model_id(model_id: str) -> str:
    """Return ``model_id`` if it is a safe ``org/name`` id, else raise a one-line ValueError."""
    if not isinstance(model_id, str) or not _MODEL_ID.fullmatch(model_id) or ".." in model_id:
        raise ValueError(
            f"invalid model id {model_id!r}: use 'org/name' (letters, digits, '-', '_', '.'; no '..')"
        )
    return model_id


@dataclass(frozen=True)
class MaskRef:
    """One mask version: ``org/name@3``. ``version`` is None only before resolution."""

    model_id: str
    model_hash: str = ""
    version: int | None = None

    def __post_init__(self) -> None:
        check_model_id(self.model_id)
        if self.version is not None and (not isinstance(self.version, int) or self.version < 1):
            raise ValueError(f"version must be a positive integer, got {self.version!r}")

    def __str__(self) -> str:
        return self.model_id if self.version is None else f"{self.model_id}@{self.version}"


def parse_ref(text: str) -> MaskRef:
    """``org/name`` or ``org/name@3`` → :class:`MaskRef` (hash unknown until resolved)."""
    m = _REF.fullmatch(text)
    if m is None:
        raise ValueError(f"invalid mask reference {text!r}: use 'org/name' or 'org/name@VERSION'")
    version = m.group("version")
    return MaskRef(m.group("model_id"), version=int(version) if version else None)
