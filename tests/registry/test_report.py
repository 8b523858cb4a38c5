"""Validation report: gate thresholds, JSON round trip, plot."""

from __future__ import annotations

import json

import pytest

from pipelines.plot import plot_report
from registry import DamagedRecord, Gate, Report
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


def build(full, masked, gate=Gate()) -> Report:
    return Report.build(rows(full, masked), "sha", "org/m", "hash", gate, memory={}, settings={}, version=1,
                        manifest_sha256="msha")


def test_equal_accuracy_passes_and_reports_speed():
    r = build({"passkey@512": [1, 1]}, {"passkey@512": [1, 1]})
    assert r.passed and r.mean == {"full": 100.0, "masked": 100.0} and r.tokens_per_s["masked"] == 8.0


def test_a_single_cell_drop_beyond_five_points_fails_even_if_the_mean_is_fine():
    full = {f"t{i}@512": [1.0] * 10 for i in range(20)}
    masked = dict(full, **{"t0@512": [1.0] * 9 + [0.0]})  # -10 points in one cell, -0.5 mean
    r = build(full, masked)
    assert not r.passed and r.reasons == ["t0@512 dropped 10.0 points (> 5.0)"]
    assert build(full, masked, Gate(max_cell_drop=10.0)).passed


def test_a_mean_drop_beyond_one_point_fails():
    full = {f"t{i}@512": [1.0] * 50 for i in range(2)}
    masked = {f"t{i}@512": [1.0] * 49 + [0.0] for i in range(2)}  # -2 points everywhere
    r = build(full, masked)
    assert not r.passed and r.reasons[0].startswith("mean accuracy 98.0 < full 100.0")


def test_runs_must_cover_the_same_cells():
    with pytest.raises(ValueError, match="every prompt needs full and masked"):
        build({"a@1": [1]}, {"b@1": [1]})


def test_report_round_trips_through_json(tmp_path):
    r = build({"passkey@512": [1, 0]}, {"passkey@512": [1, 1]})
    loaded = Report.from_json(r.save(tmp_path / "r.json").read_bytes(), "r.json")
    assert loaded == r
    assert plot_report(r, tmp_path / "r.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize("damage,needle", [
    ({"format": "other"}, f"not a {REPORT_FORMAT} report"),
    ({"passed": "yes"}, "field 'passed' is not bool"),
    ({"mean": [1]}, "field 'mean' is not dict"),
    ({"extra_field": 1}, "missing or unknown"),
])
def test_a_damaged_report_is_refused_with_one_line(damage, needle):
    good = build({"passkey@512": [1]}, {"passkey@512": [1]}).to_dict()
    with pytest.raises(DamagedRecord, match=needle) as err:
        Report.from_json(json.dumps({**good, **damage}).encode(), "r.json")
    assert "\n" not in str(err.value)
