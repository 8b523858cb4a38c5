"""Validation report: the gate's verdict on its pairs, JSON round trip (its plot: tests/pipelines/test_plot.py)."""

from __future__ import annotations

import json
import re

import pytest

from registry import DamagedRecord, GatePolicy, PairedSample, Report, SignedReport, generate_key
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


def test_build_names_what_was_judged_and_computes_means_deltas_and_speeds():
    rows_ = rows({"a@512": [1, 1], "b@512": [1, 0]}, {"a@512": [1, 0], "b@512": [0, 0]})
    rows_ += [{"run": "random", "task": t, "length": 512, "index": i, "score": 0, "new_tokens": 3, "seconds": 0.0}
              for t in ("a", "b") for i in range(2)]  # a run with no time measured
    r = Report.build(rows_, "sha", "org/m", "hash", GatePolicy(), memory={"k": 1}, settings={"s": 2}, version=3,
                     manifest_sha256="msha")
    assert (r.model_id, r.version, r.model_hash, r.mask_sha256, r.manifest_sha256, r.look) == (
        "org/m", 3, "hash", "sha", "msha", 1)
    assert r.accuracy == {"full": {"a@512": 100.0, "b@512": 50.0}, "masked": {"a@512": 50.0, "b@512": 0.0},
                          "random": {"a@512": 0.0, "b@512": 0.0}}
    assert r.mean == {"full": 75.0, "masked": 25.0, "random": 0.0}
    assert r.deltas == {"a@512": -50.0, "b@512": -50.0}
    assert r.tokens_per_s == {"full": 8.0, "masked": 8.0, "random": 0.0}  # 16 tokens in 2 s; no time -> 0
    assert (r.memory, r.settings) == ({"k": 1}, {"s": 2})
    plain = Report.build(rows({"a@512": [1]}, {"a@512": [1]}), "sha", "org/m", "hash", GatePolicy(), {}, {})
    assert (plain.version, plain.manifest_sha256, plain.look) == (None, "", 1)


def test_speeds_are_per_run_tokens_over_that_runs_seconds():
    rows_ = rows({"a@512": [1]}, {"a@512": [1]})
    rows_[0].update(new_tokens=10, seconds=2.0)
    rows_[1].update(new_tokens=3, seconds=3.0)
    assert build_from(rows_).tokens_per_s == {"full": 5.0, "masked": 1.0}


def build_from(rows_):
    return Report.build(rows_, "sha", "org/m", "hash", GatePolicy(), memory={}, settings={})


def test_save_creates_missing_folders_and_the_summary_line_names_means_look_and_verdict(tmp_path):
    r = build({"passkey@512": [1, 1]}, {"passkey@512": [1, 1]})
    path = r.save(tmp_path / "a" / "b" / "r.json")
    assert Report.from_json(path.read_bytes(), "r.json") == r
    assert r.summary() == f"mean accuracy: full 100.0, masked 100.0 (look 1) -> {r.verdict.summary()}"


@pytest.mark.parametrize("damage,needle", [
    ({"version": "1"}, "r.json: report field 'version' is not int or NoneType"),
    ({"extra_field": 1}, "r.json: report fields ['extra_field'] are missing or unknown"),
    ({"pairs": [{"task": "a"}]}, "r.json: a pair is not a paired sample (PairedSample: unknown fields [], missing "
                                 "fields ['full', 'index', 'length', 'masked'])"),
    ({"gate": {"looks": 0}}, "r.json: verdict or gate is not valid (gate looks must be an integer in [1, 20], got 0)"),
])
def test_a_damaged_report_says_exactly_what_is_wrong(damage, needle):
    good = build({"passkey@512": [1]}, {"passkey@512": [1]}).to_dict()
    with pytest.raises(DamagedRecord, match="^" + re.escape(needle) + "$"):
        Report.from_json(json.dumps({**good, **damage}).encode(), "r.json")
    missing = {k: v for k, v in good.items() if k != "memory"}
    with pytest.raises(DamagedRecord, match=re.escape("r.json: report fields ['memory'] are missing or unknown")):
        Report.from_json(json.dumps(missing).encode(), "r.json")
    with pytest.raises(DamagedRecord, match="^r.json is not valid JSON$"):
        Report.from_json(b"{", "r.json")


def test_a_long_multi_line_error_is_cut_to_one_line_of_120_characters():
    good = build({"passkey@512": [1]}, {"passkey@512": [1]}).to_dict()
    damaged = {**good, "pairs": [{**good["pairs"][0], "task": "t" * 300}], "verdict": {"decision": "x\ny"}}
    damaged["pairs"][0]["full"] = "high\nlow"
    with pytest.raises(DamagedRecord) as err:
        Report.from_json(json.dumps(damaged).encode(), "r.json")
    reason = str(err.value).split("(", 1)[1][:-1]
    assert "\n" not in str(err.value) and len(reason) == 120 and reason.startswith("sample ")
    verdict_damaged = {**good, "verdict": {}}  # its error lists eight missing fields: longer than 120 characters
    with pytest.raises(DamagedRecord) as err:
        Report.from_json(json.dumps(verdict_damaged).encode(), "r.json")
    reason = str(err.value).split("(", 1)[1][:-1]
    assert len(reason) == 120 and reason.startswith("Verdict: unknown fields [], missing fields ['baseline'")


@pytest.fixture
def signed(tmp_path) -> SignedReport:
    return SignedReport.sign(build({"passkey@512": [1, 0]}, {"passkey@512": [1, 1]}), generate_key(tmp_path / "k"))


def test_a_signed_report_is_the_format_key_signature_and_report(signed):
    data = json.loads(signed.to_json())
    assert data == {"format": "leank-signed-report/1", "key": signed.key, "signature": signed.signature,
                    "report": json.loads(signed.report.to_json())}
    assert SignedReport.from_json(signed.to_json(), "r.json") == signed and signed.signature_ok()
    assert signed.key.startswith("ed25519:")


@pytest.mark.parametrize("damage,needle", [
    ({"format": "leank-validation-report/2"}, "r.json is not a signed report (leank-signed-report/1); unsigned "
                                              "reports are not evidence"),
    ({"extra": 1}, "r.json is not a signed report (leank-signed-report/1); unsigned reports are not evidence"),
    ({"signature": 5}, "r.json: signature or report field has the wrong type"),
    ({"report": [1]}, "r.json: signature or report field has the wrong type"),
    ({"key": "rsa:AAAA"}, "r.json: "),
])
def test_a_damaged_signed_report_is_refused_with_one_line(signed, damage, needle):
    data = {**json.loads(signed.to_json()), **damage}
    with pytest.raises(DamagedRecord, match="^" + re.escape(needle)) as err:
        SignedReport.from_json(json.dumps(data).encode(), "r.json")
    assert "\n" not in str(err.value)


def test_a_report_that_is_not_the_one_signed_fails_its_signature(signed):
    other = build({"passkey@512": [1, 1]}, {"passkey@512": [1, 1]})
    assert not SignedReport(other, signed.key, signed.signature).signature_ok()


def test_the_signature_covers_the_format_line_and_the_reports_canonical_json(signed):
    from registry.records import dump_json
    from registry.signing import verify

    assert verify(signed.key, b"leank-signed-report/1\n" + dump_json(signed.report.to_dict()), signed.signature)


def test_damage_inside_a_signed_report_is_reported_under_the_files_name(signed):
    data = json.loads(signed.to_json())
    data["report"]["look"] = 0
    with pytest.raises(DamagedRecord, match="^r.json: look must be >= 1$"):
        SignedReport.from_json(json.dumps(data).encode(), "r.json")
    with pytest.raises(DamagedRecord, match="^r.json is not valid JSON$"):
        SignedReport.from_json(b"{", "r.json")
