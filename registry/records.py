"""The registry's stored records as typed, validated objects: manifests, decisions, statuses.

Every JSON object the registry reads from a store is parsed here before anything uses it, so
a damaged or hand-written file is one :class:`DamagedRecord` with a one-line reason, never a
``KeyError`` three calls later. The JSON shapes on disk are the registry's file format (see
``registry/registry.py`` for the layout); these classes only give them types.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from .errors import RegistryError


class Status(str, Enum):
    """Where a version stands: pushed and unjudged, or judged once and for all."""

    CANDIDATE = "candidate"
    ACCEPTED = "accepted"
    REJECTED = "rejected"


class DamagedRecord(RegistryError):
    """A stored object that is not what the registry wrote there (wrong JSON, wrong shape)."""


def parse_json_object(data: bytes, where: str) -> dict[str, Any]:
    """A JSON object (dict) from stored bytes, or DamagedRecord saying what is wrong with it."""
    try:
        value = json.loads(data, parse_constant=_no_constant)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise DamagedRecord(f"{where} is not valid JSON") from None
    except ValueError as e:
        raise DamagedRecord(f"{where}: {e}") from None
    if not isinstance(value, dict):
        raise DamagedRecord(f"{where} is {type(value).__name__}, not a JSON object")
    return value


def _no_constant(name: str) -> None:
    raise ValueError(f"{name} is not a number JSON allows")


def dump_json(obj: dict[str, Any]) -> bytes:
    """The registry's one JSON encoding (sorted keys, so equal records are equal bytes)."""
    try:
        return json.dumps(obj, sort_keys=True, indent=1, allow_nan=False).encode()
    except (TypeError, ValueError) as e:
        raise ValueError(f"manifest/report must be plain JSON data: {e}") from None


def _field(data: dict[str, Any], name: str, kind: type | tuple[type, ...], where: str) -> Any:
    """``data[name]`` if it has the given JSON type (a bool is not a number here)."""
    kinds = kind if isinstance(kind, tuple) else (kind,)
    value = data.get(name)
    if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
        raise DamagedRecord(f"{where}: field {name!r} is missing or not {' or '.join(k.__name__ for k in kinds)}")
    return value


@dataclass(frozen=True)
class Manifest:
    """What a version is: the mask's identity, geometry and provenance; written once at push.

    ``provenance`` holds the caller's entries (training_config, data_recipe, source, ...);
    every other field is filled by the registry from the mask itself and cannot be set by
    the caller. On disk the two are one flat JSON object.
    """

    model_id: str
    model_hash: str
    mask_sha256: str
    mask_key: str
    version: int
    shape: tuple[int, int, int]
    ratio: float
    align: int
    sink: int
    recent: int
    k_fraction_kept: float
    code_version: str
    created: str
    provenance: dict[str, Any] = field(default_factory=dict)

    FILLED = ("model_id", "model_hash", "mask_sha256", "mask_key", "version", "shape", "ratio", "align", "sink",
              "recent", "k_fraction_kept", "code_version", "created")

    def to_json(self) -> bytes:
        return dump_json({**self.provenance, **{name: getattr(self, name) for name in self.FILLED},
                          "shape": list(self.shape)})

    def to_dict(self) -> dict[str, Any]:
        return json.loads(self.to_json())

    def sha256(self) -> str:
        """Digest of the manifest's canonical bytes: what a signed report binds it by."""
        return hashlib.sha256(self.to_json()).hexdigest()

    @classmethod
    def from_json(cls, data: bytes, where: str) -> "Manifest":
        d = parse_json_object(data, where)
        shape = _field(d, "shape", list, where)
        if len(shape) != 3 or not all(isinstance(n, int) and not isinstance(n, bool) and n > 0 for n in shape):
            raise DamagedRecord(f"{where}: field 'shape' is not [layers, kv_heads, head_dim]")
        version = _field(d, "version", int, where)
        if version < 1:
            raise DamagedRecord(f"{where}: field 'version' must be >= 1")
        return cls(
            model_id=_field(d, "model_id", str, where), model_hash=_field(d, "model_hash", str, where),
            mask_sha256=_field(d, "mask_sha256", str, where), mask_key=_field(d, "mask_key", str, where),
            version=version, shape=tuple(shape), ratio=float(_field(d, "ratio", (int, float), where)),
            align=_field(d, "align", int, where), sink=_field(d, "sink", int, where),
            recent=_field(d, "recent", int, where),
            k_fraction_kept=float(_field(d, "k_fraction_kept", (int, float), where)),
            code_version=_field(d, "code_version", str, where), created=_field(d, "created", str, where),
            provenance={k: v for k, v in d.items() if k not in cls.FILLED},
        )


@dataclass(frozen=True)
class Decision:
    """The judgement recorded for a version: its status and the report that decided it."""

    status: Status
    report_id: int
    mask_sha256: str
    decided: str

    def to_json(self) -> bytes:
        return dump_json({"status": self.status.value, "report_id": self.report_id,
                          "mask_sha256": self.mask_sha256, "decided": self.decided})

    @classmethod
    def from_json(cls, data: bytes, where: str) -> "Decision":
        d = parse_json_object(data, where)
        status = d.get("status")
        if status not in (Status.ACCEPTED.value, Status.REJECTED.value):
            raise DamagedRecord(f"{where}: field 'status' must be 'accepted' or 'rejected', got {status!r}")
        return cls(Status(status), _field(d, "report_id", int, where), _field(d, "mask_sha256", str, where),
                   _field(d, "decided", str, where))
