"""The gate's error-rate study (scripts/gate_error_rates.py): simulated and resampled-real suites."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from registry.gate import PairedSample

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "gate_error_rates.py"
SMALL = ["--seeds", "4", "--sizes", "4", "--sequential-first", "4"]


@pytest.fixture(scope="module")
def study():
    spec = importlib.util.spec_from_file_location("gate_error_rates", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def rates_add_up(rows, seeds):
    return all(sum(r[d] for d in ("accepted", "rejected", "undecided")) == seeds for r in rows)


def test_simulation_reports_every_scenario_and_size(study, tmp_path):
    out = tmp_path / "rates.json"
    assert study.main(SMALL + ["--out", str(out)]) == 0
    result = json.loads(out.read_text())
    scenarios = {r["scenario"] for r in result["fixed"]}
    assert scenarios == set(result["scenarios"]) >= {"identity", "no_drop", "random_70"}
    assert rates_add_up(result["fixed"], 4) and rates_add_up(result["sequential"], 4)
    by = {r["scenario"]: r for r in result["fixed"]}
    assert by["identity"]["accepted"] == 4 and by["random_70"]["rejected"] == 4
    assert result["scenarios"]["identity"]["true_mean_drop"] == 0 < result["scenarios"]["random_70"]["true_mean_drop"]


def test_real_pairs_are_resampled_per_cell(study, tmp_path):
    pairs = tmp_path / "pairs.jsonl"
    rows = [PairedSample(t, 1024, i, float(i % 2), 0.0, 0.0) for t in ("a", "b") for i in range(8)]
    pairs.write_text("".join(json.dumps(r.to_dict()) + "\n" for r in rows))
    out = tmp_path / "real.json"
    assert study.main(SMALL + ["--pairs", str(pairs), "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    by = {r["scenario"]: r for r in result["fixed"]}
    assert result["cells"] == {"a@1024": 8, "b@1024": 8} and set(by) == {"masked", "identity", "random"}
    assert by["identity"]["accepted"] == 4 and by["masked"]["accepted"] == 0


def test_a_bad_pairs_file_is_one_line_and_exit_2(study, tmp_path, capsys):
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text('{"task": "a", "length": 1024, "index": 0, "full": 2.0, "masked": 0.0}\n')
    assert study.main(SMALL + ["--pairs", str(pairs), "--out", str(tmp_path / "x.json")]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "pairs.jsonl:1" in err and not (tmp_path / "x.json").exists()
