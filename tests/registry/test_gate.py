"""The gate's decision rule on constructed score tables: it accepts what is shown lossless, rejects
what is shown lossy, says undecided (with a plan) in between, and is a deterministic pure function."""

from __future__ import annotations

import dataclasses
import json
import math
import random
import re

import pytest

from registry.gate import (
    MAX_SAMPLES, TOLERANCE, GatePolicy, PairedSample, Verdict, _status, judge, paired_samples, samples_needed, t_cdf,
    t_quantile,
)

TASKS = ("passkey", "niah_single", "niah_multikey", "niah_multiquery")
LENGTHS = (1024, 2048, 4096, 8192)


def suite(n: int, masked=lambda cell, i, full: full, random_score=None, full=None) -> list[PairedSample]:
    """4 tasks x 4 lengths x ``n``; full scores alternate 1/0 (multiquery: 1, .5, 0) unless given."""
    out = []
    for task in TASKS:
        for length in LENGTHS:
            for i in range(n):
                f = full(task, i) if full else ((1.0, 0.5, 0.0)[i % 3] if task == "niah_multiquery" else float(i % 2 == 0))
                m = masked((task, length), i, f)
                r = None if random_score is None else random_score((task, length), i, f)
                out.append(PairedSample(task, length, i, f, m, r))
    return out


def flipped(flips: set[tuple[str, int, int]]):
    """A masked run equal to full except 0/1 flips at the given (task, length, index)."""
    return lambda cell, i, f: (1.0 - f if (*cell, i) in flips else f)


def broken(cell_broken: tuple[str, int]):
    return lambda cell, i, f: (0.0 if cell == cell_broken else f)


# ---------------------------------------------------------------- clear pass / fail / undecided

@pytest.mark.parametrize("n", [2, 4, 8, 64])
def test_identical_runs_are_always_accepted(n):
    verdict = judge(suite(n))
    assert verdict.decision == "accepted", verdict.reasons
    assert verdict.mean.upper == verdict.mean.drop == 0.0  # nothing varies, so the bound is the estimate
    assert verdict.samples_needed is None and verdict.next_look is None


def test_rare_symmetric_flips_on_a_large_suite_are_accepted():
    rng = random.Random(7)
    flips = {(t, n, i) for t in TASKS for n in LENGTHS for i in range(256) if rng.random() < 0.01}
    verdict = judge(suite(256, flipped(flips)))
    assert flips and verdict.decision == "accepted", verdict.reasons
    assert all(c.upper <= 5.0 for c in verdict.cells) and verdict.mean.upper <= 1.0


def test_a_mask_that_destroys_retrieval_is_rejected_on_the_mean():
    verdict = judge(suite(8, lambda cell, i, f: 0.0))
    assert verdict.decision == "rejected"
    assert verdict.mean.status == "beyond" and verdict.mean.lower > 1.0
    assert verdict.reasons[0].startswith("mean drop")


def test_one_destroyed_cell_is_rejected_by_its_corrected_bound():
    cell = ("niah_single", 4096)
    verdict = judge(suite(32, broken(cell), full=lambda task, i: 1.0))
    assert verdict.decision == "rejected"
    bad = [c for c in verdict.cells if c.status == "beyond"]
    assert [(c.task, c.length) for c in bad] == [cell] and any(r.startswith("niah_single@4096") for r in verdict.reasons)


def test_the_measured_smollm2_pattern_is_undecided_not_rejected():
    """GPU 70 % mask, 4 per cell (results/smollm2): 3 samples worse, 1 better -> was a reject."""
    flips = {("niah_single", 1024, 0), ("niah_multikey", 4096, 2), ("niah_multikey", 1024, 1),
             ("niah_multikey", 1024, 2)}
    verdict = judge(suite(4, flipped(flips)))
    assert verdict.decision == "undecided" and verdict.samples_needed > 32
    # 4 -> 32 per cell in four looks is not expected to decide: go to the last look anyway, and say so
    assert verdict.next_look == 4 and verdict.next_samples == 32
    assert any("continue at look 4 of 4 with 32 samples per cell" in r for r in verdict.reasons)


def test_an_undecided_suite_gets_the_first_look_expected_to_decide():
    rng = random.Random(0)
    flips = {(t, n, i) for t in TASKS for n in LENGTHS for i in range(64) if rng.random() < 0.02}
    verdict = judge(suite(64, flipped(flips)))
    assert verdict.decision == "undecided" and verdict.next_look in (2, 3)  # not just the last look
    assert verdict.next_samples == 64 * 2 ** (verdict.next_look - 1)
    assert all(c.samples_needed == verdict.samples_needed <= verdict.next_samples for c in verdict.cells)
    assert verdict.mean.samples_needed == verdict.samples_needed


# ---------------------------------------------------------------- small samples

@pytest.mark.parametrize("n", [2, 4, 8])
@pytest.mark.parametrize("cell", [("passkey", 1024), ("niah_multiquery", 8192)])
@pytest.mark.parametrize("index", [0, 1])
def test_one_flipped_sample_never_rejects_a_small_suite(n, cell, index):
    verdict = judge(suite(n, flipped({(*cell, index)})))
    assert verdict.decision != "rejected", verdict.reasons


def test_a_single_sample_per_cell_cannot_be_bounded():
    verdict = judge(suite(1))
    assert verdict.decision == "undecided" and verdict.mean.upper is None
    assert verdict.samples_needed >= 2 and any("unbounded" in r for r in verdict.reasons)


# ---------------------------------------------------------------- fractional scores

def test_fractional_scores_are_paired_exactly():
    """Multi-answer tasks score fractions: the drop is the mean of full - masked over cells."""
    half = lambda cell, i, f: max(0.0, f - 0.5) if cell[0] == "niah_multiquery" else f  # noqa: E731
    samples = suite(6, half)
    verdict = judge(samples)
    cells = {(c.task, c.length): c for c in verdict.cells}
    for (task, length), c in cells.items():
        mine = [s for s in samples if (s.task, s.length) == (task, length)]
        assert c.drop == pytest.approx(100 * sum(s.full - s.masked for s in mine) / len(mine))
        assert c.lower <= c.drop <= c.upper
    assert verdict.mean.drop == pytest.approx(sum(c.drop for c in cells.values()) / len(cells))
    assert all(cells[("niah_multiquery", n)].drop > 0 for n in LENGTHS)


def test_a_constant_fractional_drop_just_inside_the_margin_is_accepted():
    """1.0 vs 0.95 is 5 points up to float rounding; the tolerance counts it as on the margin."""
    samples = suite(4, lambda cell, i, f: 0.95, full=lambda task, i: 1.0)
    assert judge(samples, GatePolicy(mean_margin=5.0, cell_margin=5.0)).decision == "accepted"


# ---------------------------------------------------------------- exact boundaries

@pytest.mark.parametrize("margin,decision", [(25.0, "accepted"), (24.99, "rejected")])
def test_a_drop_exactly_at_the_margin_is_within_it(margin, decision):
    samples = suite(4, lambda cell, i, f: 0.5, full=lambda task, i: 0.75)  # every sample drops 25 points
    verdict = judge(samples, GatePolicy(mean_margin=margin, cell_margin=margin))
    assert verdict.decision == decision
    assert verdict.mean.drop == verdict.mean.upper == verdict.mean.lower == 25.0


# ---------------------------------------------------------------- random baseline

def test_learning_mattered_when_the_random_mask_is_far_worse():
    verdict = judge(suite(16, random_score=lambda cell, i, f: 0.0))
    assert verdict.decision == "accepted" and verdict.baseline.learning_mattered
    assert verdict.baseline.gain == pytest.approx(verdict.mean.masked - verdict.mean.random)
    assert verdict.baseline.lower > 0 and verdict.mean.random == 0.0


def test_a_random_mask_as_good_as_the_learned_one_is_reported_but_does_not_block():
    verdict = judge(suite(16, random_score=lambda cell, i, f: f))
    assert verdict.decision == "accepted" and not verdict.baseline.learning_mattered
    assert any(r.startswith("learning did not matter") for r in verdict.reasons)


def test_no_random_run_means_no_baseline_and_a_partial_one_is_refused():
    assert judge(suite(4)).baseline is None
    samples = suite(4, random_score=lambda cell, i, f: 0.0)
    samples[3] = PairedSample(samples[3].task, samples[3].length, samples[3].index, 1.0, 1.0)
    with pytest.raises(ValueError, match="random-baseline score"):
        judge(samples)


# ---------------------------------------------------------------- sequential plan

def test_an_undecided_last_look_has_no_next_look_and_is_not_accepted():
    flips = {("passkey", 1024, 0), ("niah_single", 2048, 1)}
    policy = GatePolicy(looks=2)
    verdict = judge(suite(4, flipped(flips)), policy, look=2)
    assert verdict.decision == "undecided" and verdict.next_look is verdict.next_samples is None
    assert any("was the plan's last: not accepted" in r for r in verdict.reasons)
    with pytest.raises(ValueError, match="look must be"):
        judge(suite(4), policy, look=3)


@pytest.mark.parametrize("looks", [1, 2, 4, 7])
def test_the_looks_spend_exactly_the_error_budget(looks):
    policy = GatePolicy(confidence=0.9, looks=looks)
    spent = [policy.alpha(j) for j in range(1, looks + 1)]
    assert sum(spent) == pytest.approx(0.1) and spent == sorted(spent, reverse=True)


def test_rejects_are_corrected_over_cells_and_accepts_are_not():
    verdict = judge(suite(4), GatePolicy(confidence=0.9, looks=3), look=2)
    m = verdict.method
    assert m["alpha_accept"] == pytest.approx(0.025) and m["alpha_reject_mean"] == pytest.approx(0.0125)
    assert m["alpha_reject_cell"] == pytest.approx(0.0125 / len(verdict.cells)) and m["look"] == 2


def test_samples_needed_is_the_smallest_n_whose_bound_clears_the_margin():
    from statistics import NormalDist

    z = NormalDist().inv_cdf
    for estimate, sd, margin in [(0.0, 22.0, 1.0), (2.0, 30.0, 5.0), (12.0, 40.0, 5.0)]:
        n = samples_needed(estimate, sd, margin, alpha=0.0125, power=0.9)
        reach = lambda k: (z(1 - 0.0125) + z(0.9)) * sd / math.sqrt(k)  # noqa: E731
        assert reach(n) <= abs(margin - estimate) < reach(n - 1)
    assert samples_needed(5.0, 10.0, 5.0, alpha=0.05, power=0.9) is None  # on the margin: no n decides


# ---------------------------------------------------------------- determinism and JSON

def test_same_input_in_any_order_gives_an_identical_verdict_and_json():
    flips = {("passkey", 2048, 1), ("niah_multikey", 1024, 3)}
    samples = suite(6, flipped(flips), random_score=lambda cell, i, f: 0.0)
    shuffled = samples[:]
    random.Random(3).shuffle(shuffled)
    a, b = judge(samples), judge(shuffled)
    assert a == b and json.dumps(a.to_dict(), sort_keys=True) == json.dumps(b.to_dict(), sort_keys=True)
    again = Verdict.from_dict(json.loads(json.dumps(a.to_dict())))
    assert again == a and json.dumps(again.to_dict()) == json.dumps(a.to_dict())


@pytest.mark.parametrize("damage,match", [
    (lambda d: d.update(decision="passed"), "decision"),
    (lambda d: d.pop("mean"), "missing fields"),
    (lambda d: d["mean"].update(upper=float("nan")), "finite"),
    (lambda d: d["cells"][0].update(status="fine"), "status"),
    (lambda d: d.update(cells="all good"), "wrong shape|Estimate"),
    (lambda d: d.update(format="leank-gate-verdict/0"), "not a leank-gate-verdict/1"),
    (lambda d: d.update(extra=1), "unknown fields"),
])
def test_a_damaged_verdict_is_refused_with_one_line(damage, match):
    data = json.loads(json.dumps(judge(suite(4)).to_dict()))
    damage(data)
    with pytest.raises(ValueError, match=match) as info:
        Verdict.from_dict(data)
    assert "\n" not in str(info.value)


# ---------------------------------------------------------------- bad input

@pytest.mark.parametrize("kwargs,match", [
    (dict(mean_margin=float("nan")), "mean_margin"),
    (dict(cell_margin=float("inf")), "cell_margin"),
    (dict(mean_margin=-1.0), "mean_margin"),
    (dict(cell_margin=101.0), "cell_margin"),
    (dict(mean_margin="1"), "mean_margin"),
    (dict(confidence=1.0), "confidence"),
    (dict(confidence=float("nan")), "confidence"),
    (dict(power=0.2), "power"),
    (dict(looks=0), "looks"),
    (dict(looks=2.5), "looks"),
    (dict(looks=True), "looks"),
])
def test_bad_policies_are_refused_with_one_line(kwargs, match):
    with pytest.raises(ValueError, match=match) as info:
        GatePolicy(**kwargs)
    assert "\n" not in str(info.value)


def test_policy_round_trips_and_refuses_unknown_fields():
    policy = GatePolicy(mean_margin=2.0, looks=2)
    assert GatePolicy.from_dict(json.loads(json.dumps(policy.to_dict()))) == policy
    assert GatePolicy.from_dict({}) == GatePolicy()
    with pytest.raises(ValueError, match="unknown fields"):
        GatePolicy.from_dict({"max_drop": 1})


@pytest.mark.parametrize("kwargs,match", [
    (dict(full=float("nan")), "score 'full'"),
    (dict(masked=1.5), "score 'masked'"),
    (dict(random=-0.1), "score 'random'"),
    (dict(full=True), "score 'full'"),
    (dict(task=""), "task"),
    (dict(length=0), "length"),
    (dict(index=-1), "index"),
])
def test_bad_samples_are_refused_with_one_line(kwargs, match):
    with pytest.raises(ValueError, match=match) as info:
        PairedSample(**(dict(task="passkey", length=1024, index=0, full=1.0, masked=1.0) | kwargs))
    assert "\n" not in str(info.value)


def test_empty_or_duplicated_samples_are_refused():
    with pytest.raises(ValueError, match="at least one"):
        judge([])
    with pytest.raises(ValueError, match="appears twice"):
        judge(suite(2) + suite(2)[:1])


def test_paired_samples_joins_evaluation_rows():
    rows = [{"run": run, "task": "passkey", "length": 1024, "index": i, "score": score}
            for i in range(2) for run, score in (("full", 1.0), ("masked", 0.0), ("random", 0.0))]
    pairs = paired_samples(rows[::-1])
    assert pairs == [PairedSample("passkey", 1024, i, 1.0, 0.0, 0.0) for i in range(2)]
    with pytest.raises(ValueError, match="no 'masked' score"):
        paired_samples([r for r in rows if r["run"] != "masked"])
    with pytest.raises(ValueError, match="two 'full' scores"):
        paired_samples(rows + rows[:1])


# ---------------------------------------------------------------- the t distribution

def test_t_quantile_inverts_the_cdf_and_tends_to_the_normal():
    from statistics import NormalDist

    for df in (1, 2.5, 7, 63, 1e4):
        for p in (0.5, 0.9, 0.95, 0.99, 0.9999):
            assert t_cdf(t_quantile(p, df), df) == pytest.approx(p, abs=1e-12)
    assert t_quantile(0.975, 1e6) == pytest.approx(NormalDist().inv_cdf(0.975), rel=1e-5)
    assert t_quantile(0.95, 3) > t_quantile(0.95, 30) > t_quantile(0.95, 3000)


def test_t_quantile_matches_scipy():
    stats = pytest.importorskip("scipy.stats")
    for df in (1, 3, 7.5, 63, 500):
        for p in (0.9, 0.99, 0.999999):
            assert t_quantile(p, df) == pytest.approx(stats.t.ppf(p, df), rel=1e-9)


# ---------------------------------------------------------------- the verdict as a record

def stored_verdict() -> dict:
    """An undecided verdict with a baseline and a next look: every field present and non-null."""
    flips = {("niah_single", 1024, 0), ("niah_multikey", 4096, 2), ("niah_multikey", 1024, 1),
             ("niah_multikey", 1024, 2)}
    verdict = judge(suite(4, flipped(flips), random_score=lambda cell, i, f: 0.0))
    assert verdict.decision == "undecided" and verdict.baseline and verdict.next_look
    return json.loads(json.dumps(verdict.to_dict()))


def test_a_stored_verdict_round_trips_and_format_may_be_omitted():
    data = stored_verdict()
    verdict = Verdict.from_dict(data)
    assert json.loads(json.dumps(verdict.to_dict())) == data
    assert Verdict.from_dict({k: v for k, v in data.items() if k != "format"}) == verdict


def _set(data: dict, path: str, value) -> dict:
    *parents, last = path.split(".")
    node = data
    for key in parents:
        node = node[int(key)] if isinstance(node, list) else node[key]
    if value is _DELETE:
        del node[last]
    else:
        node[last] = value
    return data


_DELETE = object()


@pytest.mark.parametrize("path,value,message", [
    ("format", "other", "not a leank-gate-verdict/1 verdict (format 'other')"),
    ("decision", "maybe", "verdict decision must be one of accepted, rejected, undecided, got 'maybe'"),
    ("reasons", [1], "verdict reasons must be a list of strings"),
    ("cells", [], "verdict cells must be a non-empty list of cell estimates"),
    ("baseline.learning_mattered", "yes", "baseline learning_mattered must be true or false"),
    ("baseline.gain", "x", "baseline gain must be a finite number, got 'x'"),
    ("baseline.lower", float("nan"), "baseline lower must be a finite number, got nan"),
    ("samples_needed", 0, "verdict samples_needed must be a finite integer >= 1, got 0"),
    ("samples_needed", 1.5, "verdict samples_needed must be a finite integer >= 1, got 1.5"),
    ("samples_needed", True, "verdict samples_needed must be a finite integer >= 1, got True"),
    ("next_look", 1, "verdict next_look must be a finite integer >= 2, got 1"),
    ("next_samples", 1, "verdict next_samples must be a finite integer >= 2, got 1"),
    ("next_samples", None, "verdict next_look and next_samples come together"),
    ("method", {}, "verdict method must be an object with a name"),
    ("method", "paired-t", "verdict method must be an object with a name"),
    ("mean.task", "passkey", "an estimate has both task and length (a cell) or neither (the mean)"),
    ("cells.0.length", None, "an estimate has both task and length (a cell) or neither (the mean)"),
    ("mean.status", "maybe", "estimate status must be one of within, beyond, open, got 'maybe'"),
    ("mean.n", 0, "estimate n must be a finite integer >= 1, got 0"),
    ("mean.n", None, "estimate n must be a finite integer >= 1, got None"),
    ("baseline.gain", None, "baseline gain must be a finite number, got None"),
    ("mean.samples_needed", 0, "estimate samples_needed must be a finite integer >= 1, got 0"),
    ("mean.full", float("inf"), "estimate full must be a finite number, got inf"),
    ("mean.random", "x", "estimate random must be a finite number, got 'x'"),
    ("mean.drop", None, "estimate drop must be a finite number, got None"),
    ("extra", 1, "Verdict: unknown fields ['extra'], missing fields []"),
    ("reasons", _DELETE, "Verdict: unknown fields [], missing fields ['reasons']"),
    ("mean", [1], "Estimate must be a JSON object, got list"),
    ("cells.0.extra", 1, "Estimate: unknown fields ['extra'], missing fields []"),
    ("cells", 5, "verdict has a part of the wrong shape: "),
])
def test_a_damaged_stored_verdict_is_refused_with_what_is_wrong(path, value, message):
    with pytest.raises(ValueError, match="^" + re.escape(message)):
        Verdict.from_dict(_set(stored_verdict(), path, value))


def test_a_cell_estimate_must_be_a_cell_and_the_mean_the_mean():
    data = stored_verdict()
    data["mean"] = data["cells"][0]
    with pytest.raises(ValueError, match="^verdict mean must be the estimate over all cells$"):
        Verdict.from_dict(data)
    data = stored_verdict()
    data["cells"][1] = stored_verdict()["mean"]
    with pytest.raises(ValueError, match="^verdict cells must be a non-empty list of cell estimates$"):
        Verdict.from_dict(data)


def test_optional_numbers_may_be_null_and_bounds_are_inclusive():
    data = stored_verdict()
    for path, value in [("mean.upper", None), ("mean.lower", None), ("mean.random", None), ("baseline.lower", None),
                        ("samples_needed", None), ("mean.samples_needed", 1), ("next_look", 2), ("next_samples", 2),
                        ("mean.n", 1)]:
        _set(data, path, value)
    verdict = Verdict.from_dict(data)
    assert verdict.baseline.lower is None and verdict.next_samples == 2 and verdict.mean.samples_needed == 1
    assert Verdict.from_dict(_set(data, "baseline", None)).baseline is None
    with pytest.raises(ValueError, match="^verdict baseline must be a baseline comparison or null$"):
        dataclasses.replace(verdict, baseline="learned")


def test_the_summary_line_names_the_decision_the_mean_drop_and_every_reason():
    verdict = Verdict.from_dict(stored_verdict())
    assert verdict.summary() == (f"undecided: mean drop {verdict.mean.drop:.2f} points (upper bound "
                                 f"{verdict.mean.upper:.2f}); " + "; ".join(verdict.reasons))
    unbounded = judge(suite(1))
    assert unbounded.summary().startswith("undecided: mean drop 0.00 points (unbounded); ")


@pytest.mark.parametrize("field,good,bad", [
    ("mean_margin", [0.0, 100, 2], [-0.1, 100.5, float("nan"), True, "1"]),
    ("cell_margin", [0, 100.0], [-1, 101, None]),
    ("confidence", [0.5, 0.999], [0.49, 1.0, True, "0.9"]),
    ("power", [0.5, 0.99], [0.4, 1.0, False]),
    ("looks", [1, 20], [0, 21, 2.0, True]),
])
def test_policy_fields_accept_their_whole_range_and_refuse_anything_else(field, good, bad):
    for value in good:
        assert getattr(GatePolicy(**{field: value}), field) == value
    for value in bad:
        with pytest.raises(ValueError, match=f"^gate {field} must be "):
            GatePolicy(**{field: value})


def test_two_policies_combine_to_the_stricter_and_name_where_one_is_looser():
    owner = GatePolicy(mean_margin=1.0, cell_margin=5.0, confidence=0.95, looks=3, power=0.8)
    signed = GatePolicy(mean_margin=2.0, cell_margin=4.0, confidence=0.9, looks=5, power=0.95)
    assert owner.strictest(signed) == GatePolicy(mean_margin=1.0, cell_margin=4.0, confidence=0.95, looks=3, power=0.8)
    assert signed.strictest(owner) == GatePolicy(mean_margin=1.0, cell_margin=4.0, confidence=0.95, looks=5, power=0.95)
    assert signed.looser_than(owner) == ["mean_margin", "confidence"]
    assert owner.looser_than(signed) == ["cell_margin"]
    assert owner.looser_than(owner) == []
    assert GatePolicy.from_dict({"looks": 2}) == GatePolicy(looks=2)
    with pytest.raises(ValueError, match=r"^GatePolicy: unknown fields \['margin'\], missing fields \[\]$"):
        GatePolicy.from_dict({"margin": 1})


def test_a_paired_sample_round_trips_and_its_record_is_checked():
    sample = PairedSample("passkey", 1024, 3, 1.0, 0.5, 0.0)
    assert sample.to_dict() == {"task": "passkey", "length": 1024, "index": 3, "full": 1.0, "masked": 0.5,
                                "random": 0.0}
    assert PairedSample.from_dict(sample.to_dict()) == sample
    assert PairedSample.from_dict({k: v for k, v in sample.to_dict().items() if k != "random"}).random is None
    with pytest.raises(ValueError, match=r"^PairedSample: unknown fields \[\], missing fields \['masked'\]$"):
        PairedSample.from_dict({"task": "passkey", "length": 1024, "index": 3, "full": 1.0})
    with pytest.raises(ValueError, match="^PairedSample must be a JSON object, got list$"):
        PairedSample.from_dict([1])


# ---------------------------------------------------------------- the plan, recomputed from its definition

def planned(samples: list[PairedSample], policy: GatePolicy, look: int) -> tuple[int | None, int | None]:
    """(growth, next look) from the rule in _plan's docstring, with statistics.stdev and samples_needed."""
    from statistics import stdev

    verdict = judge(samples, policy, look)
    cells = {}
    for s in samples:
        cells.setdefault((s.task, s.length), []).append(100.0 * (s.full - s.masked))
    sds = {cell: stdev(d) if len(d) > 1 else 100.0 for cell, d in cells.items()}
    k, n_min = len(cells), min(len(d) for d in cells.values())
    mean_sd = math.sqrt(sum(sds[c] ** 2 * n_min / len(d) for c, d in cells.items())) / k
    hypotheses = [(verdict.mean, mean_sd, n_min, policy.mean_margin, 2)] if verdict.mean.status == "open" else []
    hypotheses += [(e, sds[(e.task, e.length)], e.n, policy.cell_margin, 2 * k) for e in verdict.cells
                   if e.status == "open"]

    def growth(target):
        """The factor each cell must grow by for every open hypothesis (None: no size decides one)."""
        alpha, factors = policy.alpha(target), [1.0]
        for e, sd, n, margin, split in hypotheses:
            accept = samples_needed(0.0, sd, margin, alpha, policy.power)
            reject = samples_needed(e.drop, sd, margin, alpha / split, policy.power) if e.drop > margin else None
            if accept is None and reject is None:
                return None
            factors.append(min(x for x in (accept, reject) if x is not None) / n)
        return max(factors)

    later = {target: growth(target) for target in range(look + 1, policy.looks + 1)}
    fitting = [t for t, g in later.items() if g is None or g <= 2 ** (t - look)]
    if fitting:  # the first later look whose doubled cells suffice (or that no size decides)
        first = fitting[0]
        return (None if later[first] is None else 2 ** (first - look)), first
    last = growth(policy.looks)  # none suffices: as much as the last look's requirement, doubled at least once
    return (None if last is None else 2 ** max(1, math.ceil(math.log2(last)))), (
        policy.looks if look < policy.looks else None)


def rare_flips(n: int, rate: float, seed: int = 11) -> set[tuple[str, int, int]]:
    rng = random.Random(seed)
    return {(t, length, i) for t in TASKS for length in LENGTHS for i in range(n) if rng.random() < rate}


PLAN_CASES = {
    "smollm2 pattern": (lambda: suite(4, flipped({("niah_single", 1024, 0), ("niah_multikey", 4096, 2),
                                                    ("niah_multikey", 1024, 1), ("niah_multikey", 1024, 2)})),
                        1, GatePolicy(looks=4)),
    "rare flips, 64 per cell": (lambda: suite(64, flipped(rare_flips(64, 0.03))), 1, GatePolicy(looks=4)),
    "one lossy cell": (lambda: suite(8, lambda cell, i, f: (0.0 if cell == ("passkey", 1024) and i < 3 else f)),
                       1, GatePolicy(looks=4)),
    "drops beyond the margins, not yet shown": (
        lambda: suite(4, lambda cell, i, f: 0.0 if i == 0 and cell[1] == 1024 else f, full=lambda t, i: 1.0),
        1, GatePolicy(looks=4)),
    "second look of three": (lambda: suite(4, flipped({("passkey", 1024, 0), ("niah_single", 2048, 1)})),
                             2, GatePolicy(looks=3)),
    "last look": (lambda: suite(4, flipped({("passkey", 1024, 0), ("niah_single", 2048, 1)})), 3, GatePolicy(looks=3)),
    "rare flips, 2%": (lambda: suite(64, flipped(rare_flips(64, 0.02, seed=0))), 1, GatePolicy()),
    "a margin of 0": (lambda: suite(4, flipped({("passkey", 1024, 0), ("passkey", 1024, 1)})), 1,
                      GatePolicy(mean_margin=0.0)),
    "a margin of 0 at the last look": (lambda: suite(4, flipped({("passkey", 1024, 0), ("passkey", 1024, 1)})), 2,
                                       GatePolicy(mean_margin=0.0, looks=2)),
    "three looks ahead of six": (lambda: suite(32, flipped(rare_flips(32, 0.01, seed=0))), 1, GatePolicy(looks=6)),
    "three looks ahead, 64 per cell": (lambda: suite(64, flipped(rare_flips(64, 0.03, seed=0))), 1,
                                       GatePolicy(looks=6)),
    "last look, one doubling short": (lambda: suite(64, flipped(rare_flips(64, 0.01, seed=2))), 3, GatePolicy(looks=3)),
    "one sample per cell": (lambda: suite(1), 1, GatePolicy(looks=4)),
    "uneven cells": (lambda: suite(4, flipped({("passkey", 1024, 0)})) + [
        PairedSample("passkey", 1024, 10 + i, 1.0, float(i % 2)) for i in range(4)], 1, GatePolicy(looks=4)),
}


@pytest.mark.parametrize("case", PLAN_CASES)
def test_the_next_look_and_sample_sizes_follow_the_planning_rule(case):
    make, look, policy = PLAN_CASES[case]
    samples = make()
    verdict = judge(samples, policy, look)
    if verdict.decision != "undecided":
        pytest.fail(f"{case}: the case must be undecided, got {verdict.decision}")
    scale, next_look = planned(samples, policy, look)
    assert verdict.next_look == next_look
    if next_look is not None:
        assert verdict.next_samples == max(c.n for c in verdict.cells) * 2 ** (next_look - look)
    assert [c.samples_needed for c in verdict.cells] == [None if scale is None else c.n * scale for c in verdict.cells]
    assert verdict.samples_needed == verdict.mean.samples_needed == (
        None if scale is None else max(c.n * scale for c in verdict.cells))


# ---------------------------------------------------------------- exact edges of the statistics and the reasons

def test_samples_needed_at_its_edges():
    from statistics import NormalDist

    z = NormalDist().inv_cdf(1 - 0.05) + NormalDist().inv_cdf(0.9)
    assert samples_needed(0.0, 1e-12, TOLERANCE, 0.05, 0.9) is None  # a gap of exactly the tolerance is "on it"
    assert samples_needed(0.0, 1e-12, 2 * TOLERANCE, 0.05, 0.9) == 2  # never fewer than 2
    assert samples_needed(0.0, 1.0, 100.0, 0.05, 0.9) == 2
    exactly_max = math.sqrt(MAX_SAMPLES - 0.5) / z  # the sd whose plan is MAX_SAMPLES per cell
    assert samples_needed(0.0, exactly_max, 1.0, 0.05, 0.9) == MAX_SAMPLES
    assert samples_needed(0.0, 2 * exactly_max, 1.0, 0.05, 0.9) is None


def test_status_is_within_up_to_the_tolerance_and_beyond_only_past_it():
    assert _status(1.0 + TOLERANCE, None, 1.0) == "within"
    assert _status(None, 1.0 + TOLERANCE, 1.0) == "open"
    assert _status(None, 1.0, 1.0) == "open"
    assert _status(None, 1.0 + 2 * TOLERANCE, 1.0) == "beyond"


@pytest.mark.parametrize("look", ["1", True, 1.0, 0, 5])
def test_a_look_outside_the_plan_is_refused(look):
    with pytest.raises(ValueError, match=r"^look must be an integer in \[1, 4\] \(the policy's looks\)"):
        judge(suite(2), GatePolicy(), look)


def test_score_rows_that_cannot_pair_are_refused_with_the_prompt_named():
    row = {"task": "passkey", "length": 1024, "index": 3, "score": 1.0}
    with pytest.raises(ValueError, match=r"^unknown run 'other' in a score row: expected one of full, masked, random$"):
        paired_samples([{**row, "run": "other"}])
    with pytest.raises(ValueError, match="^two 'full' scores for passkey@1024#3: a prompt is scored once per run$"):
        paired_samples([{**row, "run": "full"}, {**row, "run": "full"}])


def welch_upper(samples: list[PairedSample], alpha: float) -> float:
    """The mean's one-sided upper bound from its textbook definition (Welch–Satterthwaite df)."""
    from statistics import fmean, variance

    cells = {}
    for s in samples:
        cells.setdefault((s.task, s.length), []).append(100.0 * (s.full - s.masked))
    parts = [variance(d) / len(d) for d in cells.values()]
    df = sum(parts) ** 2 / sum(p * p / (len(d) - 1) for p, d in zip(parts, cells.values()))
    k = len(cells)
    return fmean(fmean(d) for d in cells.values()) + t_quantile(1 - alpha, df) * math.sqrt(sum(parts)) / k


@pytest.mark.parametrize("scale", [1.0, 0.001])  # 0.001: differences of a tenth of a point, variances below 1
def test_the_mean_bound_uses_welch_satterthwaite_degrees_of_freedom(scale):
    rows = [PairedSample("a", 512, i, 1.0, 1.0 - scale * (i % 2)) for i in range(4)]
    rows += [PairedSample("b", 512, i, 1.0, 1.0 - scale * (i % 3 == 0)) for i in range(9)]
    verdict = judge(rows, GatePolicy(mean_margin=100.0, cell_margin=100.0))
    assert verdict.mean.upper == pytest.approx(welch_upper(rows, GatePolicy().alpha(1)), rel=1e-9)


def test_the_baseline_gain_and_its_bound():
    rows = [PairedSample("a", 512, i, 1.0, 1.0, float(i % 2)) for i in range(6)]
    verdict = judge(rows)
    gains = [100.0 * (1.0 - (i % 2)) for i in range(6)]
    from statistics import fmean, stdev

    bound = fmean(gains) - t_quantile(1 - GatePolicy().alpha(1), 5) * stdev(gains) / math.sqrt(6)
    assert verdict.baseline.gain == 50.0 and verdict.baseline.lower == pytest.approx(bound, rel=1e-12)
    assert verdict.baseline.learning_mattered == (bound > 0)
    single = judge(suite(1, random_score=lambda cell, i, f: 0.0))
    assert single.baseline.lower is None and not single.baseline.learning_mattered
    assert any(r.endswith("lower bound unbounded (a cell has 1 sample))") for r in single.reasons)


def test_the_reasons_state_each_decided_or_open_hypothesis_with_its_own_margin():
    policy = GatePolicy(mean_margin=1.0, cell_margin=5.0)
    accepted = judge(suite(8), policy)
    m = accepted.mean
    assert accepted.reasons == (f"mean drop {m.drop:.2f} points, upper bound {m.upper:.2f} <= 1; "
                                "every cell's upper bound <= 5",)
    rejected = judge(suite(32, broken(("niah_single", 4096)), full=lambda task, i: 1.0), policy)
    [cell] = [c for c in rejected.cells if c.status == "beyond"]
    assert [r for r in rejected.reasons if "not decided" in r] == []  # open hypotheses are named only when undecided
    assert f"niah_single@4096 drop {cell.drop:.2f} points, lower bound {cell.lower:.2f} > 5" in rejected.reasons
    undecided = judge(suite(4, flipped({("niah_single", 1024, 0), ("niah_multikey", 4096, 2),
                                        ("niah_multikey", 1024, 1), ("niah_multikey", 1024, 2)})), policy)
    m, c = undecided.mean, next(c for c in undecided.cells if c.status == "open")
    assert undecided.reasons[0] == (f"mean drop {m.drop:.2f} points, upper bound {m.upper:.2f} > 1 and lower bound "
                                    f"{m.lower:.2f} <= 1: not decided")
    assert (f"{c.task}@{c.length} drop {c.drop:.2f} points, upper bound {c.upper:.2f} > 5 and lower bound "
            f"{c.lower:.2f} <= 5: not decided") in undecided.reasons
    assert undecided.reasons[-1] == (f"continue at look 4 of 4 with 32 samples per cell (about "
                                     f"{undecided.samples_needed} samples per cell are expected to decide)")
    no_size = judge(suite(4, flipped({("passkey", 1024, 0), ("passkey", 1024, 1)})), GatePolicy(mean_margin=0.0))
    assert no_size.reasons[-1].endswith("(with a margin of 0 no sample size is expected to decide)")
    unbounded = judge(suite(1), policy)
    assert unbounded.reasons[0] == ("mean drop 0.00 points, upper bound unbounded (a cell has 1 sample) > 1 and lower "
                                    "bound unbounded (a cell has 1 sample) <= 1: not decided")
    no_gain = judge(suite(16, random_score=lambda cell, i, f: f), policy)
    b = no_gain.baseline
    assert no_gain.reasons[-1] == ("learning did not matter: the learned mask is not significantly better than a "
                                   f"random mask with the same kept counts (gain {b.gain:.2f} points, lower bound "
                                   f"{b.lower:.2f})")


@pytest.mark.parametrize("x", [0.0, 0.01, 0.3, 0.5, 0.77, 0.99, 1.0])
def test_the_incomplete_beta_function_matches_its_closed_forms(x):
    """I_x(1, 1) = x, I_x(a, 1) = x^a and I_x(1, b) = 1 - (1 - x)^b, including the ends 0 and 1."""
    from registry.gate import _betainc

    assert _betainc(1.0, 1.0, x) == pytest.approx(x, abs=1e-13)
    for a in (0.5, 3.0, 40.0):
        assert _betainc(a, 1.0, x) == pytest.approx(x**a, abs=1e-13)
        assert _betainc(1.0, a, x) == pytest.approx(1 - (1 - x) ** a, abs=1e-13)


@pytest.mark.parametrize("field,value,message", [
    ("length", 0, "a sample's length must be an integer >= 1, got 0"),
    ("length", "512", "a sample's length must be an integer >= 1, got '512'"),
    ("index", -1, "a sample's index must be an integer >= 0, got -1"),
    ("index", True, "a sample's index must be an integer >= 0, got True"),
])
def test_a_samples_place_is_checked(field, value, message):
    good = {"task": "passkey", "length": 1, "index": 0, "full": 1.0, "masked": 1.0}
    assert PairedSample(**good).length == 1  # the smallest valid length and index
    with pytest.raises(ValueError, match="^" + re.escape(message) + "$"):
        PairedSample(**{**good, field: value})


def test_sample_sets_the_gate_cannot_judge_are_refused_with_the_reason():
    with pytest.raises(ValueError, match="^the gate needs at least one paired sample$"):
        judge([])
    with pytest.raises(ValueError, match=r"^the gate takes PairedSample objects \(see registry.gate.paired_samples\)$"):
        judge([{"task": "passkey"}])
    samples = suite(2)
    with pytest.raises(ValueError, match="^sample niah_single@2048#1 appears twice: each prompt is one pair$"):
        judge(samples + [samples[TASKS.index("niah_single") * 8 + 1 * 2 + 1]])
    mixed = suite(2, random_score=lambda cell, i, f: 0.0)[:3] + suite(2)[3:]
    with pytest.raises(ValueError, match=("^some samples have a random-baseline score and some do not: give it for all "
                                          "or none$")):
        judge(mixed)


def test_the_t_distribution_is_symmetric():
    for df in (1.0, 4.5, 30.0):
        assert t_cdf(0.0, df) == 0.5
        assert t_cdf(-2.0, df) == pytest.approx(1 - t_cdf(2.0, df), abs=1e-14) and t_cdf(-2.0, df) < 0.5


def test_cell_bounds_use_n_minus_one_degrees_of_freedom_and_the_mean_row_is_the_mean_over_cells():
    from statistics import fmean, stdev

    rows = [PairedSample("a", 512, i, 1.0, float(i % 3 == 0)) for i in range(9)]
    rows += [PairedSample("b", 512, i, 0.0, 0.0) for i in range(3)]  # uneven: pooled and per-cell means differ
    verdict = judge(rows, GatePolicy(mean_margin=100.0, cell_margin=100.0))
    drops = [100.0 * (1.0 - float(i % 3 == 0)) for i in range(9)]
    cell = verdict.cells[0]
    width = t_quantile(1 - GatePolicy().alpha(1), 8) * stdev(drops) / 3
    assert cell.upper == pytest.approx(fmean(drops) + width, rel=1e-12)
    assert verdict.mean.full == fmean(c.full for c in verdict.cells) == 50.0
    assert verdict.mean.masked == fmean(c.masked for c in verdict.cells)


def test_a_rejected_verdict_names_what_is_beyond_and_leaves_open_hypotheses_unmentioned():
    lossy = {("passkey", 1024, i) for i in (0, 5, 9)}
    rejected = judge(suite(32, lambda cell, i, f: 0.0 if cell == ("niah_single", 4096) or (*cell, i) in lossy else f,
                           full=lambda task, i: 1.0))
    assert rejected.decision == "rejected" and any(c.status == "open" for c in [rejected.mean, *rejected.cells])
    assert not any("not decided" in r for r in rejected.reasons)


def test_the_last_looks_reason_names_the_look():
    flips = {("passkey", 1024, 0), ("niah_single", 2048, 1)}
    verdict = judge(suite(4, flipped(flips)), GatePolicy(looks=2), look=2)
    assert verdict.reasons[-1] == (f"look 2 was the plan's last: not accepted (about {verdict.samples_needed} samples "
                                   "per cell are expected to decide)")
