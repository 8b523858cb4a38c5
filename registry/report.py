"""The validation report: the evidence a version is judged on (``MaskRegistry.judge``).

A report names exactly what it judged — model id, registry version, model hash, the mask's
sha256 and the manifest's — and carries the per-sample pairs (each eval sample's score with
the full cache, with the mask, and with the random baseline when run) and the look of the
sequential plan they make up. Accuracies are in points (0–100). The verdict is the gate's
(``registry/gate.py``: a paired statistical test under a :class:`~registry.gate.GatePolicy`,
accepted / rejected / undecided). Validation jobs build reports (:meth:`Report.build`) and sign them
(:class:`SignedReport`); the registry reads them back through :meth:`SignedReport.from_json`,
which refuses anything that is not a well-formed signed report, and re-derives the verdict
from the pairs under its own policy (``registry/policy.py``).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from .gate import RUNS, GatePolicy, PairedSample, Verdict, judge, paired_samples
from .records import DamagedRecord, dump_json, parse_json_object
from .signing import Signer, check_public_key, verify

REPORT_FORMAT = "leank-validation-report/2"
SIGNED_FORMAT = "leank-signed-report/1"
MAX_MARGIN = 100.0  # accuracy points: a larger allowed drop would pass anything


def cell_accuracy(pairs: Iterable[PairedSample], run: str) -> dict[str, float]:
    """``{"task@length": accuracy points}`` of one run over the pairs that have it."""
    sums: dict[str, list[float]] = defaultdict(list)
    for p in pairs:
        if getattr(p, run) is not None:
            sums[f"{p.task}@{p.length}"].append(getattr(p, run))
    return {cell: 100.0 * sum(s) / len(s) for cell, s in sorted(sums.items())}


def _speed(rows: Iterable[Mapping[str, Any]], run: str) -> float:
    mine = [r for r in rows if r["run"] == run]
    seconds = sum(r["seconds"] for r in mine)
    return sum(r["new_tokens"] for r in mine) / seconds if seconds > 0 else 0.0


@dataclass(frozen=True)
class Report:
    """Everything the gate decided and why; round-trips through JSON.

    ``version`` and ``manifest_sha256`` name the registry version validated (None and "" for
    a mask file); ``verdict`` is the validator's, under ``gate`` at ``look``, which the registry
    recomputes from ``pairs`` under its own policy instead of believing.
    """

    model_id: str
    version: int | None
    model_hash: str
    mask_sha256: str
    manifest_sha256: str
    look: int
    pairs: list[PairedSample]
    accuracy: dict[str, dict[str, float]]  # run -> cell -> points
    mean: dict[str, float]
    deltas: dict[str, float]  # cell -> masked - full
    verdict: Verdict
    gate: GatePolicy
    memory: dict[str, Any]
    tokens_per_s: dict[str, float]
    settings: dict[str, Any] = field(default_factory=dict)
    format: str = REPORT_FORMAT

    @classmethod
    def build(cls, rows: list[Mapping[str, Any]], mask_sha256: str, model_id: str, model_hash: str,
              gate: GatePolicy, memory: dict[str, Any], settings: dict[str, Any], version: int | None = None,
              manifest_sha256: str = "", look: int = 1, earlier: Sequence[PairedSample] = ()) -> "Report":
        """The report of evaluated ``rows`` (one per run and sample) at ``look``, after the ``earlier``
        looks' pairs (a later look keeps every earlier sample: the sequential plan's samples accumulate)."""
        pairs = [*earlier, *paired_samples(rows)]
        runs = [run for run in RUNS if any(getattr(p, run) is not None for p in pairs)]
        accuracy = {run: cell_accuracy(pairs, run) for run in runs}
        mean = {run: sum(cells.values()) / len(cells) for run, cells in accuracy.items()}
        deltas = {cell: accuracy["masked"][cell] - acc for cell, acc in accuracy["full"].items()}
        return cls(model_id=model_id, version=version, model_hash=model_hash, mask_sha256=mask_sha256,
                   manifest_sha256=manifest_sha256, look=look, pairs=pairs, accuracy=accuracy, mean=mean,
                   deltas=deltas, verdict=judge(pairs, gate, look), gate=gate, memory=memory,
                   tokens_per_s={run: _speed(rows, run) for run in runs}, settings=settings)

    @property
    def passed(self) -> bool:
        """The validator's verdict accepts (the registry decides with its own)."""
        return self.verdict.accepted

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> bytes:
        return dump_json(self.to_dict())

    @classmethod
    def from_dict(cls, d: dict[str, Any], where: str) -> "Report":
        """A report from its parsed JSON; DamagedRecord (one line) for anything but a well-formed one."""
        if d.get("format") != REPORT_FORMAT:
            raise DamagedRecord(f"{where} is not a {REPORT_FORMAT} report")
        names = {f.name for f in fields(cls)}
        if set(d) != names:
            raise DamagedRecord(f"{where}: report fields {sorted(set(d) ^ names)} are missing or unknown")
        for name, kind in _FIELD_TYPES.items():
            kinds = kind if isinstance(kind, tuple) else (kind,)
            if not isinstance(d[name], kinds) or isinstance(d[name], bool) != (bool in kinds):
                raise DamagedRecord(f"{where}: report field {name!r} is not {' or '.join(k.__name__ for k in kinds)}")
        try:
            pairs = [PairedSample.from_dict(p) for p in d["pairs"]]
        except (TypeError, ValueError, AttributeError) as e:
            raise DamagedRecord(f"{where}: a pair is not a paired sample ({str(e).splitlines()[0][:120]})") from None
        try:
            verdict, gate = Verdict.from_dict(d["verdict"]), GatePolicy.from_dict(d["gate"])
        except (TypeError, ValueError, AttributeError) as e:
            raise DamagedRecord(f"{where}: verdict or gate is not valid ({str(e).splitlines()[0][:120]})") from None
        if d["look"] < 1:
            raise DamagedRecord(f"{where}: look must be >= 1")
        return cls(**{**d, "pairs": pairs, "verdict": verdict, "gate": gate})

    @classmethod
    def from_json(cls, data: bytes, where: str) -> "Report":
        return cls.from_dict(parse_json_object(data, where), where)

    def save(self, path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(self.to_json())
        return path

    def summary(self) -> str:
        means = ", ".join(f"{run} {acc:.1f}" for run, acc in self.mean.items())
        return f"mean accuracy: {means} (look {self.look}) -> {self.verdict.summary()}"


_FIELD_TYPES: dict[str, type | tuple[type, ...]] = {
    "model_id": str, "version": (int, type(None)), "model_hash": str, "mask_sha256": str, "manifest_sha256": str,
    "look": int, "pairs": list, "accuracy": dict, "mean": dict, "deltas": dict, "verdict": dict, "gate": dict,
    "memory": dict, "tokens_per_s": dict, "settings": dict}


def _signed_bytes(report: dict[str, Any]) -> bytes:
    """What a signature covers: the format name, then the report's one JSON encoding."""
    return SIGNED_FORMAT.encode() + b"\n" + dump_json(report)


@dataclass(frozen=True)
class SignedReport:
    """A report with its validator's Ed25519 signature over its canonical bytes.

    Parsing checks the shape only; :meth:`signature_ok` and the registry's checks
    (``MaskRegistry``: trusted key, bound to the version it sits in) decide whether it counts.
    """

    report: Report
    key: str
    signature: str

    @classmethod
    def sign(cls, report: Report, signer: Signer) -> "SignedReport":
        return cls(report, signer.public_key, signer.sign(_signed_bytes(report.to_dict())))

    def signature_ok(self) -> bool:
        return verify(self.key, _signed_bytes(self.report.to_dict()), self.signature)

    def to_json(self) -> bytes:
        return dump_json({"format": SIGNED_FORMAT, "key": self.key, "signature": self.signature,
                          "report": self.report.to_dict()})

    @classmethod
    def from_json(cls, data: bytes, where: str) -> "SignedReport":
        d = parse_json_object(data, where)
        if d.get("format") != SIGNED_FORMAT or set(d) != {"format", "key", "signature", "report"}:
            raise DamagedRecord(f"{where} is not a signed report ({SIGNED_FORMAT}); unsigned reports are not evidence")
        if not isinstance(d["signature"], str) or not isinstance(d["report"], dict):
            raise DamagedRecord(f"{where}: signature or report field has the wrong type")
        try:
            key = check_public_key(d["key"])
        except ValueError as e:
            raise DamagedRecord(f"{where}: {e}") from None
        return cls(Report.from_dict(d["report"], where), key, d["signature"])
