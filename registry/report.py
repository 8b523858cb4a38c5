"""The validation report: the evidence a version is judged on (``MaskRegistry.judge``).

A report is plain JSON, stored in the registry next to the exact mask version it judges and
identified by that mask's sha256. Accuracies are in points (0–100). The gate passes when the
masked run's mean accuracy is at most ``max_mean_drop`` points below the full run's and no
task × length cell drops by more than ``max_cell_drop`` points. Validation jobs build reports
(:meth:`Report.build`); the registry reads them back through :meth:`Report.from_json`, which
refuses anything that is not a well-formed report.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from .records import DamagedRecord, dump_json, parse_json_object

REPORT_FORMAT = "leank-validation-report/1"


@dataclass(frozen=True)
class Gate:
    """Thresholds in accuracy points (docs/design.md: no accuracy loss, within noise)."""

    max_mean_drop: float = 1.0
    max_cell_drop: float = 5.0

    def __post_init__(self) -> None:
        if self.max_mean_drop < 0 or self.max_cell_drop < 0:
            raise ValueError("gate thresholds must be >= 0 accuracy points")


def cell_accuracy(rows: Iterable[Mapping[str, Any]]) -> dict[str, dict[str, dict[str, float]]]:
    """``{run: {"task@length": accuracy points}}`` from per-sample score rows."""
    sums: dict[tuple[str, str], list[float]] = defaultdict(list)
    for row in rows:
        sums[(row["run"], f"{row['task']}@{row['length']}")].append(float(row["score"]))
    out: dict[str, dict[str, float]] = defaultdict(dict)
    for (run, cell), scores in sorted(sums.items()):
        out[run][cell] = 100.0 * sum(scores) / len(scores)
    return dict(out)


def _speed(rows: Iterable[Mapping[str, Any]], run: str) -> float:
    mine = [r for r in rows if r["run"] == run]
    seconds = sum(r["seconds"] for r in mine)
    return sum(r["new_tokens"] for r in mine) / seconds if seconds > 0 else 0.0


@dataclass(frozen=True)
class Report:
    """Everything the gate decided and why; round-trips through JSON."""

    model_id: str
    model_hash: str
    mask_sha256: str
    accuracy: dict[str, dict[str, float]]  # run -> cell -> points
    mean: dict[str, float]
    deltas: dict[str, float]  # cell -> masked - full
    passed: bool
    reasons: list[str]
    gate: dict[str, float]
    memory: dict[str, Any]
    tokens_per_s: dict[str, float]
    settings: dict[str, Any] = field(default_factory=dict)
    format: str = REPORT_FORMAT

    @classmethod
    def build(cls, rows: list[Mapping[str, Any]], mask_sha256: str, model_id: str, model_hash: str,
              gate: Gate, memory: dict[str, Any], settings: dict[str, Any]) -> "Report":
        accuracy = cell_accuracy(rows)
        full, masked = accuracy.get("full", {}), accuracy.get("masked", {})
        if set(full) != set(masked) or not full:
            raise ValueError("the full and masked runs must cover the same, non-empty set of task × length cells")
        mean = {run: sum(cells.values()) / len(cells) for run, cells in accuracy.items()}
        deltas = {cell: masked[cell] - full[cell] for cell in full}
        reasons = []
        if mean["masked"] < mean["full"] - gate.max_mean_drop:
            reasons.append(f"mean accuracy {mean['masked']:.1f} < full {mean['full']:.1f} - {gate.max_mean_drop}")
        reasons += [f"{cell} dropped {-d:.1f} points (> {gate.max_cell_drop})"
                    for cell, d in deltas.items() if d < -gate.max_cell_drop]
        return cls(model_id=model_id, model_hash=model_hash, mask_sha256=mask_sha256, accuracy=accuracy,
                   mean=mean, deltas=deltas, passed=not reasons, reasons=reasons, gate=asdict(gate),
                   memory=memory, tokens_per_s={run: _speed(rows, run) for run in accuracy}, settings=settings)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> bytes:
        return dump_json(self.to_dict())

    @classmethod
    def from_json(cls, data: bytes, where: str) -> "Report":
        """Parse stored bytes; DamagedRecord (one line) for anything but a well-formed report."""
        d = parse_json_object(data, where)
        if d.get("format") != REPORT_FORMAT:
            raise DamagedRecord(f"{where} is not a {REPORT_FORMAT} report")
        names = {f.name for f in fields(cls)}
        if set(d) != names:
            raise DamagedRecord(f"{where}: report fields {sorted(set(d) ^ names)} are missing or unknown")
        for name, kind in _FIELD_TYPES.items():
            if not isinstance(d[name], kind) or isinstance(d[name], bool) != (kind is bool):
                raise DamagedRecord(f"{where}: report field {name!r} is not {kind.__name__}")
        return cls(**d)

    def save(self, path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(self.to_json())
        return path

    def summary(self) -> str:
        verdict = "PASS" if self.passed else "FAIL: " + "; ".join(self.reasons)
        means = ", ".join(f"{run} {acc:.1f}" for run, acc in self.mean.items())
        return f"mean accuracy: {means} -> {verdict}"


_FIELD_TYPES = {"model_id": str, "model_hash": str, "mask_sha256": str, "accuracy": dict, "mean": dict, "deltas": dict,
                "passed": bool, "reasons": list, "gate": dict, "memory": dict, "tokens_per_s": dict, "settings": dict}
