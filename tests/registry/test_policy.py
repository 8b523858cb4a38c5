"""The acceptance policy: margins and suite checked on construction, JSON round trip, damage refused."""

from __future__ import annotations

import json

import pytest

from registry import DEFAULT_POLICY, DamagedRecord, GatePolicy, Policy, Report, Suite

from .conftest import score_rows
from .test_looks import LENIENT, noisy_rows

KEY = "ed25519:" + "A" * 43 + "="


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -1.0, 100.5, True, "1"])
def test_gate_margins_must_be_finite_points_in_0_100(bad) -> None:
    for field in ("mean_margin", "cell_margin"):
        with pytest.raises(ValueError, match=f"gate {field} must be a number of accuracy points in \\[0, 100\\]") as err:
            GatePolicy(**{field: bad})
        assert "\n" not in str(err.value)


def test_strictest_takes_the_smaller_margins_and_the_higher_confidence_and_keeps_its_own_plan() -> None:
    a = GatePolicy(mean_margin=1.0, cell_margin=10.0, confidence=0.99, looks=3)
    b = GatePolicy(mean_margin=2.0, cell_margin=5.0, confidence=0.9, looks=6, power=0.8)
    assert a.strictest(b) == GatePolicy(mean_margin=1.0, cell_margin=5.0, confidence=0.99, looks=3)
    assert b.strictest(a) == GatePolicy(mean_margin=1.0, cell_margin=5.0, confidence=0.99, looks=6, power=0.8)
    assert a.looser_than(b) == ["cell_margin"] and b.looser_than(a) == ["mean_margin", "confidence"]
    assert a.looser_than(a) == []


@pytest.mark.parametrize("suite, counts, missing", [
    (Suite(min_samples=2), {("a", 1): 2, ("b", 1): 1}, ["b@1: 1 of 2 samples"]),
    (Suite(tasks=("a", "c"), min_samples=1), {("a", 1): 1}, ["task c"]),
    (Suite(lengths=(1, 2), min_samples=1), {("a", 1): 1}, ["length 2"]),
    (Suite(tasks=("a",), lengths=(1, 2), min_samples=1), {("a", 1): 1, ("b", 9): 1}, ["a@2: 0 of 1 samples"]),
    (Suite(tasks=("a",), lengths=(1,), min_samples=3), {("a", 1): 3}, []),
    (Suite(min_samples=1), {}, ["no samples"]),
])
def test_suite_says_what_is_missing(suite: Suite, counts: dict, missing: list[str]) -> None:
    assert suite.missing(counts) == missing


@pytest.mark.parametrize("kwargs, needle", [
    ({"tasks": ("a", "a")}, "distinct task names"),
    ({"lengths": (0,)}, "positive token counts"),
    ({"min_samples": 0}, "min_samples must be an integer >= 1"),
    ({"min_samples": 2.5}, "min_samples must be an integer >= 1"),
])
def test_suite_refuses_bad_values(kwargs: dict, needle: str) -> None:
    with pytest.raises(ValueError, match=needle):
        Suite(**kwargs)


def test_policy_round_trips_and_the_defaults_trust_no_key() -> None:
    policy = Policy(GatePolicy(mean_margin=0.5, cell_margin=2.0), Suite(("passkey",), (1024, 2048), 8), (KEY, KEY))
    assert policy.trusted_keys == (KEY,)
    assert Policy.from_json(policy.to_json(), "p") == policy
    assert DEFAULT_POLICY == Policy(GatePolicy(mean_margin=1.0, cell_margin=5.0), Suite((), (), 2), ())
    with pytest.raises(ValueError, match="not an Ed25519 public key"):
        Policy(trusted_keys=("ssh-ed25519 AAAA",))


@pytest.mark.parametrize("edit, needle", [
    (lambda d: d.update(format="other"), "not a leank-registry-policy/1 policy"),
    (lambda d: d.update(extra=1), "not a leank-registry-policy/1 policy"),
    (lambda d: d.update(trusted_keys="k"), "wrong shape"),
    (lambda d: d["suite"].update(tasks="passkey"), "must be lists"),
    (lambda d: d["suite"].update(min_samples=-1), "min_samples"),
    (lambda d: d["gate"].update(cell_margin=1000), "gate cell_margin must be a number of accuracy points"),
    (lambda d: d["gate"].update(other=1), "unknown fields \\['other'\\]"),
    (lambda d: d.update(trusted_keys=["nope"]), "not an Ed25519 public key"),
])
def test_a_damaged_policy_is_one_damaged_record(edit, needle: str) -> None:
    data = Policy().to_dict()
    edit(data)
    with pytest.raises(DamagedRecord, match=needle) as err:
        Policy.from_json(json.dumps(data).encode(), "policy")
    assert "\n" not in str(err.value)


def test_verdict_is_recomputed_from_the_pairs_not_read_from_the_report() -> None:
    failing = Report.build(score_rows(passed=False, samples=4), "sha", "org/m", "h",
                           GatePolicy(mean_margin=100.0, cell_margin=100.0), memory={}, settings={})
    assert failing.passed  # the caller's gate let it through
    verdict = Policy().verdict(failing)
    assert verdict.decision == "rejected" and verdict.reasons[0] == "mean drop 100.00 points, lower bound 100.00 > 1"
    short = Report.build(score_rows(samples=1), "sha", "org/m", "h", GatePolicy(), memory={}, settings={})
    verdict = Policy().verdict(short)
    assert verdict.decision == "undecided"
    assert verdict.reasons[0] == "required suite not covered: passkey@512: 1 of 2 samples"


def test_suite_values_are_checked_by_type_and_value_not_by_truthiness() -> None:
    """Task names are non-empty strings; lengths and min_samples are ints (not floats, not bools) >= 1,
    and 1 itself is allowed."""
    for kwargs, needle in (({"tasks": ("",)}, "distinct task names"), ({"lengths": (1.5,)}, "positive token counts"),
                           ({"lengths": (True,)}, "positive token counts"),
                           ({"min_samples": 2.5}, "min_samples must be an integer >= 1"),
                           ({"min_samples": True}, "min_samples must be an integer >= 1")):
        with pytest.raises(ValueError, match=needle):
            Suite(**kwargs)
    assert Suite(tasks=("a",), lengths=(1,), min_samples=1).lengths == (1,)


def test_a_suite_with_required_cells_names_only_the_short_cells() -> None:
    """With tasks and lengths both given, the required cells are their product: a cell never run counts
    as 0 samples, and no separate 'task'/'length' line is added; cells outside the suite are ignored."""
    suite = Suite(tasks=("a",), lengths=(1, 2), min_samples=1)
    assert suite.missing({("a", 1): 1, ("b", 9): 1}) == ["a@2: 0 of 1 samples"]


def test_a_rejected_report_stays_rejected_when_it_also_misses_the_suite() -> None:
    """Missing the required suite turns an acceptance into undecided, never a rejection into one;
    every missing part is listed, separated by '; '."""
    failing = Report.build(score_rows(passed=False, samples=4), "sha", "org/m", "h", GatePolicy(),
                           memory={}, settings={})
    verdict = Policy(suite=Suite(tasks=("passkey", "niah"), lengths=(512, 1024), min_samples=2)).verdict(failing)
    assert verdict.decision == "rejected"
    assert verdict.reasons[0] == ("required suite not covered: niah@512: 0 of 2 samples; "
                                  "niah@1024: 0 of 2 samples; passkey@1024: 0 of 2 samples")


def test_the_verdict_is_taken_at_the_reports_look() -> None:
    """A later look spends more of the error budget: the registry judges the pairs at the look the
    report was made for, so it agrees with the validator's own verdict under the same gate."""
    rows = noisy_rows(8)
    at = {look: Report.build(rows, "sha", "org/m", "h", LENIENT, memory={}, settings={}, look=look) for look in (1, 2)}
    policy = Policy(gate=LENIENT)
    assert at[1].verdict != at[2].verdict  # the look matters for these pairs
    for report in at.values():
        assert policy.verdict(report) == report.verdict


def test_a_policy_suite_that_is_a_list_of_the_right_names_is_damaged_not_a_crash() -> None:
    data = Policy().to_dict()
    data["suite"] = ["tasks", "lengths", "min_samples"]
    with pytest.raises(DamagedRecord, match=r"^policy: suite or trusted_keys has the wrong shape$"):
        Policy.from_json(json.dumps(data).encode(), "policy")
