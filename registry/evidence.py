"""A validation report as people read it: one row per task × length, one column per run, the
registry's verdict in a line. The registry site and the model card both show exactly this.

A report in the store may be no evidence at all (unsigned, signed by an unknown key, copied;
see docs/trust.md) and its tables are checked for their top-level types only, so the values
inside may be any JSON: whatever is not a finite number is shown as text, never computed with.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .gate import Estimate
from .report import Report

if TYPE_CHECKING:
    from .registry import ReportEntry

RUN_ORDER = ("full", "masked", "random")  # the runs validate writes, in reading order; others follow
MISSING = "–"


def number(value: Any) -> float | None:
    """``value`` as a float if it is a finite JSON number (a bool is not one), else None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def points(value: Any, signed: bool = False) -> str:
    """Accuracy points with one decimal; text as it is; ``–`` for nothing."""
    if value is None:
        return MISSING
    x = number(value)
    if x is None:
        return str(value)
    return f"{x:+.1f}" if signed else f"{x:.1f}"


def percent(fraction: Any) -> str:
    x = number(fraction)
    return MISSING if x is None else f"{100 * x:.1f} %"


@dataclass(frozen=True)
class Row:
    """One task × length cell: the stored value of every run, and masked − full where both are numbers."""

    key: str  # as stored: "task@length"
    task: str
    length: int | None  # None when the key is not task@<integer>
    values: dict[str, Any]

    @property
    def delta(self) -> float | None:
        full, masked = number(self.values.get("full")), number(self.values.get("masked"))
        return None if full is None or masked is None else masked - full


@dataclass(frozen=True)
class AccuracyTable:
    runs: list[str]
    rows: list[Row]
    means: dict[str, Any]

    def length_means(self) -> dict[str, dict[int, float]]:
        """``{run: {length: mean over tasks}}`` from the numeric cells (what a chart plots)."""
        sums: dict[str, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
        for row in self.rows:
            for run, value in row.values.items():
                if row.length is not None and (x := number(value)) is not None:
                    sums[run][row.length].append(x)
        return {run: {n: sum(v) / len(v) for n, v in sorted(by.items())} for run, by in sums.items()}


def accuracy_table(report: Report) -> AccuracyTable:
    """The report's ``accuracy`` (run → cell → points) turned into rows per cell."""
    accuracy = {run: cells for run, cells in report.accuracy.items() if isinstance(cells, dict)}
    runs = [r for r in RUN_ORDER if r in accuracy] + sorted(r for r in accuracy if r not in RUN_ORDER)
    rows = []
    for key in sorted({key for cells in accuracy.values() for key in cells}, key=_cell_order):
        task, _, length = key.rpartition("@")
        rows.append(Row(key, task or key, int(length) if length.isdigit() and task else None,
                        {run: accuracy[run].get(key) for run in runs}))
    return AccuracyTable(runs, rows, dict(report.mean))


def cell_bounds(entry: ReportEntry) -> dict[str, Estimate]:
    """The registry's per-cell estimates (drop and its one-sided bounds), by ``task@length``."""
    return {} if entry.verdict is None else {f"{c.task}@{c.length}": c for c in entry.verdict.cells}


def _cell_order(key: str) -> tuple[str, int, str]:
    task, _, length = key.rpartition("@")
    return (task, int(length), key) if length.isdigit() and task else (key, -1, key)


def verdict(entry: ReportEntry) -> str:
    """The registry's verdict on the report under its policy today (``ACCEPTED``, ``REJECTED: reasons``
    or ``UNDECIDED: reasons``, with the mean drop's upper bound), or why the report is no evidence;
    then the mean accuracy of every run, in one line."""
    if entry.verdict is None:
        head = f"not evidence: {entry.problem}"
    else:
        v = entry.verdict
        bound = MISSING if v.mean.upper is None else f"{v.mean.upper:.2f}"
        head = f"{v.decision.upper()} (mean drop {v.mean.drop:+.2f} points, upper bound {bound})"
        head += "" if v.accepted else ": " + "; ".join(v.reasons)
    mean = entry.signed.report.mean if entry.signed is not None else {}
    means = ", ".join(f"{run} {points(value)}" for run, value in mean.items())
    return f"{head} (mean {means})" if means else head
