"""Validation report: the gate's verdict on its pairs, JSON round trip (its plot: tests/pipelines/test_plot.py)."""

from __future__ import annotations

import json

import pytest

from registry import DamagedRecord, GatePolicy, PairedSample, Report
from registry.gate import judge
from registry.report import REPORT_FORMAT


def rows(full: dict, masked: dict) -> list[dict]:
    """Per-sample rows with the given per-cell score lists."""
    out = []
    for run, cells in (("full", full), ("masked", masked)):
        for cell, scores in cells.items():
            task, length = cell.split("@")
            out += [{"run": run, "task": task, "length": int(length), "index": i, "score": s, "new_tokens": 4,
                     "seconds": 0.5} for i, s in enumerate(scores)]
    return out


def build(full, masked, gate=GatePolicy(), **kwargs) -> Report:
    return Report.build(rows(full, masked), "sha", "org/m", "hash", gate, memory={}, settings={}, version=1,
                        manifest_sha256="msha", **kwargs)


def test_equal_accuracy_passes_and_reports_speed():
    r = build({"passkey@512": [1, 1]}, {"passkey@512": [1, 1]})
    assert r.passed and r.mean == {"full": 100.0, "masked": 100.0} and r.tokens_per_s["masked"] == 8.0


def test_the_verdict_is_the_gates_on_every_pair_at_the_reports_look():
    """A one-cell loss: the report's verdict is gate.judge on its pairs (earlier looks' included) at its look."""
    full = {f"t{i}@512": [1.0] * 10 for i in range(20)}
    masked = dict(full, **{"t0@512": [0.0] * 10})  # every sample of one cell lost
    earlier = (PairedSample("t0@", 512, 99, 1.0, 0.0),)
    for look in (1, 2):
        r = build(full, masked, look=look, earlier=earlier)
        assert r.look == look and r.pairs[0] == earlier[0] and len(r.pairs) == 201
        assert r.verdict == judge(r.pairs, GatePolicy(), look)
        assert not r.passed and r.verdict.decision == "rejected"
    assert build(full, masked, GatePolicy(mean_margin=10.0, cell_margin=100.0)).passed


def test_runs_must_cover_the_same_cells():
    with pytest.raises(ValueError, match="every prompt needs full and masked"):
        build({"a@1": [1]}, {"b@1": [1]})


def test_report_round_trips_through_json(tmp_path):
    r = build({"passkey@512": [1, 0]}, {"passkey@512": [1, 1]})
    loaded = Report.from_json(r.save(tmp_path / "r.json").read_bytes(), "r.json")
    assert loaded == r


@pytest.mark.parametrize("damage,needle", [
    ({"format": "other"}, f"not a {REPORT_FORMAT} report"),
    ({"look": "2"}, "field 'look' is not int"),
    ({"look": 0}, "look must be >= 1"),
    ({"verdict": {"decision": "accepted"}}, "verdict or gate is not valid"),
    ({"mean": [1]}, "field 'mean' is not dict"),
    ({"extra_field": 1}, "missing or unknown"),
])
def test_a_damaged_report_is_refused_with_one_line(damage, needle):
    good = build({"passkey@512": [1]}, {"passkey@512": [1]}).to_dict()
    with pytest.raises(DamagedRecord, match=needle) as err:
        Report.from_json(json.dumps({**good, **damage}).encode(), "r.json")
    assert "\n" not in str(err.value)
