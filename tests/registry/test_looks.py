"""A candidate's validations follow one sequential plan: later looks keep every earlier sample."""

from __future__ import annotations

from dataclasses import replace

import pytest

from registry import GatePolicy, MaskRegistry, Status

from .conftest import Backend, make_mask, report_for


LENIENT = GatePolicy(mean_margin=5.0, cell_margin=20.0)  # margins a few dozen samples per cell can decide


def noisy_rows(samples: int, first_index: int = 0) -> list[dict]:
    """Two cells where the mask flips samples 0 and 1 (one answer each way): no loss on average, but too
    noisy to decide at 8 samples per cell; later samples are unchanged."""
    rows = []
    for task in ("passkey", "niah"):
        for i in range(first_index, first_index + samples):
            full = 1.0 if i % 2 else 0.0
            masked = 1.0 - full if i in (0, 1) else full
            rows += [{"run": "full", "task": task, "length": 512, "index": i, "score": full, "new_tokens": 4,
                      "seconds": 0.5},
                     {"run": "masked", "task": task, "length": 512, "index": i, "score": masked, "new_tokens": 4,
                      "seconds": 0.5}]
    return rows


def test_an_undecided_look_keeps_the_version_a_candidate_and_the_next_look_continues_it(backend: Backend) -> None:
    reg = MaskRegistry(backend.url)
    reg.update_policy(lambda p: replace(p, gate=LENIENT))
    ref = reg.push(make_mask())
    first = reg.judge(ref, report_for(reg, ref, rows=noisy_rows(8), gate=LENIENT))
    assert first.status == Status.CANDIDATE and first.verdict.decision == "undecided" and not first.decided_now
    assert first.verdict.next_look > 1 and first.verdict.next_samples > 8
    previous = reg.previous_look(ref)
    assert previous.report_id == first.report_id and previous.signed.report.look == 1

    with pytest.raises(ValueError, match=r"it is look 1, but this candidate's next look must be in 2\.\.4"):
        reg.judge(ref, report_for(reg, ref, rows=noisy_rows(8), gate=LENIENT))  # a second first look would spend alpha twice
    with pytest.raises(ValueError, match="look 2 drops samples of look 1"):
        reg.judge(ref, report_for(reg, ref, rows=noisy_rows(8, first_index=8), look=2, gate=LENIENT))  # fresh samples only
    more = noisy_rows(first.verdict.next_samples - 8, first_index=8)
    later = reg.judge(ref, report_for(reg, ref, rows=more, look=first.verdict.next_look, gate=LENIENT,
                                      earlier=tuple(previous.signed.report.pairs)))
    assert later.status == Status.ACCEPTED and later.decided_now
    assert reg.previous_look(ref) is None  # decided: nothing left to continue


def test_looks_beyond_the_policys_plan_are_refused(backend: Backend) -> None:
    reg = MaskRegistry(backend.url)
    ref = reg.push(make_mask())
    with pytest.raises(ValueError, match=r"next look must be in 1\.\.4"):
        reg.judge(ref, report_for(reg, ref, look=5, gate=GatePolicy(looks=6)))  # the validator's plan, not the registry's
    assert reg.show("org/m", 1).reports == ()
