"""The registry's acceptance policy: gate margins, the required suite, the trusted signing keys.

The policy belongs to the registry, not to whoever runs validation: it is stored at the
registry root (``registry/layout.py``), written only by ``leank registry policy set``, and read
and checked on every judge and every read of an accepted version. A registry with no policy
uses :data:`DEFAULT_POLICY` (documented in docs/trust.md): the default gate, at least two
samples per task × length cell (the smallest recipe here uses two), and no keys of its own —
then each reader trusts only its own validator key and the keys it pins.

The verdict on a report is re-derived here from the report's per-sample pairs with the gate's
test (``registry/gate.py``) at the report's look, under the stricter of the policy's gate and
the gate the report was signed with (a validator may only be stricter than the registry; a
later looser policy cannot loosen a signed report).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from .gate import GatePolicy, PairedSample, Verdict, judge
from .records import DamagedRecord, dump_json, parse_json_object
from .report import Report
from .signing import check_public_key

POLICY_FORMAT = "leank-registry-policy/1"


@dataclass(frozen=True)
class Suite:
    """What a report must cover: these tasks at these lengths (empty: any), each cell with at
    least ``min_samples`` paired samples."""

    tasks: tuple[str, ...] = ()
    lengths: tuple[int, ...] = ()
    min_samples: int = 2

    def __post_init__(self) -> None:
        object.__setattr__(self, "tasks", tuple(self.tasks))
        object.__setattr__(self, "lengths", tuple(self.lengths))
        if not all(isinstance(t, str) and t for t in self.tasks) or len(set(self.tasks)) != len(self.tasks):
            raise ValueError(f"suite tasks must be distinct task names, got {list(self.tasks)}")
        if not all(_is_int(n) and n > 0 for n in self.lengths) or len(set(self.lengths)) != len(self.lengths):
            raise ValueError(f"suite lengths must be distinct positive token counts, got {list(self.lengths)}")
        if not _is_int(self.min_samples) or self.min_samples < 1:
            raise ValueError(f"suite min_samples must be an integer >= 1, got {self.min_samples!r}")

    def missing(self, counts: Mapping[tuple[str, int], int]) -> list[str]:
        """What ``counts`` (samples per (task, length) cell) lacks for this suite (empty: covered)."""
        if not counts:
            return ["no samples"]
        required = {(t, n) for t in self.tasks for n in self.lengths}
        out = [] if required else (
            [f"task {t}" for t in self.tasks if all(task != t for task, _ in counts)]
            + [f"length {n}" for n in self.lengths if all(length != n for _, length in counts)])
        return out + [f"{t}@{n}: {counts.get((t, n), 0)} of {self.min_samples} samples"
                      for t, n in sorted(set(counts) | required) if counts.get((t, n), 0) < self.min_samples]


def sample_counts(pairs: Iterable[PairedSample]) -> Counter:
    """Paired samples per (task, length) cell."""
    return Counter(p.cell for p in pairs)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True)
class Policy:
    """Gate margins, required suite and trusted report-signing keys of one registry."""

    gate: GatePolicy = field(default_factory=GatePolicy)
    suite: Suite = field(default_factory=Suite)
    trusted_keys: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "trusted_keys", tuple(sorted({check_public_key(k) for k in self.trusted_keys})))

    def verdict(self, report: Report) -> Verdict:
        """The registry's verdict on ``report``, recomputed from its pairs at its look under the
        stricter of this policy's gate and the report's own; a report that does not cover the
        required suite is not accepted (undecided: more samples can still decide it)."""
        verdict = judge(report.pairs, self.gate.strictest(report.gate), report.look)
        missing = self.suite.missing(sample_counts(report.pairs))
        if not missing:
            return verdict
        return replace(verdict, decision="undecided" if verdict.accepted else verdict.decision,
                       reasons=(f"required suite not covered: {'; '.join(missing)}", *verdict.reasons))

    def to_dict(self) -> dict[str, Any]:
        return {"format": POLICY_FORMAT,
                "gate": self.gate.to_dict(),
                "suite": {"tasks": list(self.suite.tasks), "lengths": list(self.suite.lengths),
                          "min_samples": self.suite.min_samples},
                "trusted_keys": list(self.trusted_keys)}

    def to_json(self) -> bytes:
        return dump_json(self.to_dict())

    @classmethod
    def from_json(cls, data: bytes, where: str) -> "Policy":
        d = parse_json_object(data, where)
        if d.get("format") != POLICY_FORMAT or set(d) != {"format", "gate", "suite", "trusted_keys"}:
            raise DamagedRecord(f"{where} is not a {POLICY_FORMAT} policy")
        suite, keys = d["suite"], d["trusted_keys"]
        if not isinstance(suite, dict) or set(suite) != {"tasks", "lengths", "min_samples"} or not isinstance(keys, list):
            raise DamagedRecord(f"{where}: suite or trusted_keys has the wrong shape")
        if not isinstance(suite["tasks"], list) or not isinstance(suite["lengths"], list):
            raise DamagedRecord(f"{where}: suite tasks and lengths must be lists")
        try:
            return cls(GatePolicy.from_dict(d["gate"]), Suite(**suite), tuple(keys))
        except (TypeError, ValueError) as e:
            raise DamagedRecord(f"{where}: {str(e).splitlines()[0]}") from None


DEFAULT_POLICY = Policy()
