"""The acceptance policy: margins and suite checked on construction, JSON round trip, damage refused."""

from __future__ import annotations

import json

import pytest

from registry import DEFAULT_POLICY, DamagedRecord, Gate, Policy, Report, Suite

from .conftest import score_rows

KEY = "ed25519:" + "A" * 43 + "="


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -1.0, 100.5, True, "1"])
def test_gate_margins_must_be_finite_points_in_0_100(bad) -> None:
    for field in ("max_mean_drop", "max_cell_drop"):
        with pytest.raises(ValueError, match=f"gate margin {field} must be a finite number") as err:
            Gate(**{field: bad})
        assert "\n" not in str(err.value)


def test_strictest_and_looser_than_compare_each_margin() -> None:
    a, b = Gate(1.0, 10.0), Gate(2.0, 5.0)
    assert a.strictest(b) == b.strictest(a) == Gate(1.0, 5.0)
    assert a.looser_than(b) == ["max_cell_drop"] and b.looser_than(a) == ["max_mean_drop"]
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
    policy = Policy(Gate(0.5, 2.0), Suite(("passkey",), (1024, 2048), 8), (KEY, KEY))
    assert policy.trusted_keys == (KEY,)
    assert Policy.from_json(policy.to_json(), "p") == policy
    assert DEFAULT_POLICY == Policy(Gate(1.0, 5.0), Suite((), (), 2), ())
    with pytest.raises(ValueError, match="not an Ed25519 public key"):
        Policy(trusted_keys=("ssh-ed25519 AAAA",))


@pytest.mark.parametrize("edit, needle", [
    (lambda d: d.update(format="other"), "not a leank-registry-policy/1 policy"),
    (lambda d: d.update(extra=1), "not a leank-registry-policy/1 policy"),
    (lambda d: d.update(trusted_keys="k"), "wrong shape"),
    (lambda d: d["suite"].update(tasks="passkey"), "must be lists"),
    (lambda d: d["suite"].update(min_samples=-1), "min_samples"),
    (lambda d: d["gate"].update(max_cell_drop=1000), "gate is not valid"),
    (lambda d: d["gate"].update(other=1), "gate is not valid"),
    (lambda d: d.update(trusted_keys=["nope"]), "not an Ed25519 public key"),
])
def test_a_damaged_policy_is_one_damaged_record(edit, needle: str) -> None:
    data = Policy().to_dict()
    edit(data)
    with pytest.raises(DamagedRecord, match=needle) as err:
        Policy.from_json(json.dumps(data).encode(), "policy")
    assert "\n" not in str(err.value)


def test_verdict_is_recomputed_from_the_pairs_not_read_from_the_report() -> None:
    failing = Report.build(score_rows(passed=False, samples=4), "sha", "org/m", "h", Gate(100.0, 100.0),
                           memory={}, settings={})
    assert failing.passed  # the caller's gate let it through
    passed, reasons = Policy().verdict(failing)
    assert not passed and reasons[0].startswith("mean accuracy 0.0 < full 100.0 - 1.0")
    short = Report.build(score_rows(samples=1), "sha", "org/m", "h", Gate(), memory={}, settings={})
    assert Policy().verdict(short) == (False, ["required suite not covered: passkey@512: 1 of 2 samples"])
