"""Acceptance cannot be forged: attacks by whoever can write the store, on both backends.

Each test plays one attack or careless edit from issue 18 and checks that the registry refuses
it on read (nothing served, the version listed as damaged with why) or at judge (nothing written).
"""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from registry import (
    DamagedRecord, GatePolicy, MaskRef, MaskRegistry, Policy, RegistryError, SignedReport, Status, Suite, generate_key,
)
from registry.records import Decision
from registry.signing import TRUSTED_KEYS_ENV, pins_path

from .conftest import Backend, make_mask, report_for, score_rows


def one_line(err: pytest.ExceptionInfo) -> str:
    text = str(err.value)
    assert text and "\n" not in text
    return text


def accepted(reg: MaskRegistry, tag: int = 0, model_id: str = "org/m") -> MaskRef:
    ref = reg.push(make_mask(model_id=model_id, tag=tag))
    assert reg.judge(ref, report_for(reg, ref)).status == Status.ACCEPTED
    return ref


def forge_status(backend: Backend, ref: MaskRef, reg: MaskRegistry, report_id: int = 1) -> None:
    """What a bucket writer does: an 'accepted' status citing report ``report_id``."""
    sha = reg.manifest(ref).mask_sha256
    backend.overwrite(f"{ref.model_id}/versions/{ref.version:06d}/status.json",
                      Decision(Status.ACCEPTED, report_id, sha, "2025-01-01T00:00:00+00:00").to_json())


def assert_never_served(reg: MaskRegistry, ref: MaskRef, needle: str) -> None:
    """``ref`` cannot be pulled by number, is not the newest accepted, and is listed as damaged (why: ``needle``)."""
    with pytest.raises(RegistryError, match=needle) as err:
        reg.pull(ref.model_id, ref.version)
    one_line(err)
    try:
        served = reg.pull(ref.model_id).sha256()
    except RegistryError:
        served = None
    assert served != reg.manifest(ref).mask_sha256
    row = {r.version: r for r in reg.list(ref.model_id)}[ref.version]
    assert row.status is None and needle in row.damaged


def test_a_hand_written_report_and_status_never_serve_a_mask(backend: Backend) -> None:
    """Issue 18 item 2: ``{"mask_sha256": sha, "passed": true}`` plus a status made a random mask accepted."""
    reg = MaskRegistry(backend.url)
    ref = reg.push(make_mask(tag=3))
    sha = reg.manifest(ref).mask_sha256
    backend.overwrite("org/m/versions/000001/reports/0001.json", json.dumps({"mask_sha256": sha, "passed": True}).encode())
    forge_status(backend, ref, reg)
    assert_never_served(reg, ref, "not a signed report")


def test_an_unsigned_well_formed_report_is_no_evidence(backend: Backend) -> None:
    reg = MaskRegistry(backend.url)
    ref = reg.push(make_mask())
    backend.overwrite("org/m/versions/000001/reports/0001.json", report_for(reg, ref).report.to_json())
    forge_status(backend, ref, reg)
    assert_never_served(reg, ref, "not a signed report")


def test_a_report_signed_by_an_unknown_key_is_refused_at_judge_and_on_read(backend: Backend, tmp_path) -> None:
    reg = MaskRegistry(backend.url)
    ref = reg.push(make_mask())
    intruder = generate_key(tmp_path / "intruder.key")
    with pytest.raises(ValueError, match="not among the registry policy") as err:
        reg.judge(ref, report_for(reg, ref, signer=intruder))
    one_line(err)
    shown = reg.show("org/m", 1)
    assert shown.status == Status.CANDIDATE and shown.reports == ()  # nothing was written
    backend.overwrite("org/m/versions/000001/reports/0001.json", report_for(reg, ref, signer=intruder).to_json())
    forge_status(backend, ref, reg)
    assert_never_served(reg, ref, "not among the registry policy")
    assert reg.show("org/m", 1).reports[0].problem.startswith("it is signed by key")


def test_a_signed_report_edited_after_signing_is_refused(backend: Backend) -> None:
    """A rejected version whose failing report is edited to pass (and status forged) stays unserved."""
    reg = MaskRegistry(backend.url)
    ref = reg.push(make_mask())
    assert reg.judge(ref, report_for(reg, ref, passed=False)).status == Status.REJECTED
    stored = json.loads(reg.store.get("org/m/versions/000001/reports/0001.json"))
    for pair in stored["report"]["pairs"]:
        pair["masked"] = pair["full"]
    backend.overwrite("org/m/versions/000001/reports/0001.json", json.dumps(stored).encode())
    forge_status(backend, ref, reg)
    assert_never_served(reg, ref, "signature does not match")


def test_a_genuine_report_copied_to_another_version_or_model_is_refused(backend: Backend) -> None:
    reg = MaskRegistry(backend.url)
    accepted(reg)
    for model_id in ("org/m", "org/other"):  # version 2 of the same id, and version 1 of another id
        ref = reg.push(make_mask(model_id=model_id, tag=7))
        backend.overwrite(f"{model_id}/versions/{ref.version:06d}/reports/0001.json",
                          reg.store.get("org/m/versions/000001/reports/0001.json"))
        forge_status(backend, ref, reg)
        assert_never_served(reg, ref, "judged org/m@1, not this version")
    assert reg.pull("org/m").sha256() == make_mask().sha256()  # the genuine acceptance still stands


def test_a_manifest_edited_after_acceptance_withdraws_it(backend: Backend) -> None:
    """Issue 18 item 5: the manifest's model hash edited after validation; pulling for that hash fails."""
    reg = MaskRegistry(backend.url)
    ref = accepted(reg)
    backend.overwrite("org/m/versions/000001/manifest.json", replace(reg.manifest(ref), model_hash="def").to_json())
    with pytest.raises(RegistryError) as err:
        reg.pull("org/m", model_hash="def")
    one_line(err)
    assert_never_served(reg, MaskRef("org/m", version=1), "judged model hash")


def test_a_manifest_whose_provenance_is_edited_after_acceptance_is_not_served(backend: Backend) -> None:
    reg = MaskRegistry(backend.url)
    ref = accepted(reg)
    forged = replace(reg.manifest(ref), provenance={"training_config": {"lr": 1.0}, "data_recipe": "forged"})
    backend.overwrite("org/m/versions/000001/manifest.json", forged.to_json())
    assert_never_served(reg, ref, "the manifest changed after the report was signed")


def test_pull_checks_the_model_hash_written_inside_the_mask_file(backend: Backend) -> None:
    """A candidate whose manifest claims another model hash than its mask file is refused (``--model-hash``)."""
    reg = MaskRegistry(backend.url)
    ref = reg.push(make_mask(model_hash="abc"))
    backend.overwrite("org/m/versions/000001/manifest.json", replace(reg.manifest(ref), model_hash="def").to_json())
    with pytest.raises(DamagedRecord, match="mask file of org/m@1 names model org/m hash abc") as err:
        reg.pull("org/m", 1, model_hash="def", allow_unaccepted=True)
    one_line(err)


def test_the_registry_rederives_the_verdict_and_ignores_the_callers_gate_and_verdict(backend: Backend) -> None:
    """Issue 18 item 1: a report built with margins of 100 points passes anything; the registry's policy decides."""
    reg = MaskRegistry(backend.url)
    ref = reg.push(make_mask())
    lax = report_for(reg, ref, passed=False, gate=GatePolicy(mean_margin=100.0, cell_margin=100.0))
    assert lax.report.passed  # what the caller's own gate said
    judgement = reg.judge(ref, lax)
    assert judgement.status == Status.REJECTED and judgement.reasons
    assert judgement.reasons[0] == "mean drop 100.00 points, lower bound 100.00 > 1"  # the policy's margin, not 100
    assert (judgement.verdict.method["mean_margin"], judgement.verdict.method["cell_margin"]) == (1.0, 5.0)


def test_a_callers_stricter_gate_is_kept(backend: Backend) -> None:
    """Every sample scores 0.5 lower with the mask (a constant 50-point drop, no noise): within a policy
    margin of 60 points, beyond a signed stricter cell margin of 40, which the registry keeps."""
    reg = MaskRegistry(backend.url)
    rows = [dict(r, score=0.5) if r["run"] == "masked" else r for r in score_rows(samples=4)]
    lenient_gate = GatePolicy(mean_margin=60.0, cell_margin=60.0)
    reg.update_policy(lambda p: replace(p, gate=lenient_gate))
    lenient, strict = reg.push(make_mask(tag=1)), reg.push(make_mask(tag=2))
    assert reg.judge(lenient, report_for(reg, lenient, rows=rows, gate=lenient_gate)).status == Status.ACCEPTED
    judgement = reg.judge(strict, report_for(reg, strict, rows=rows, gate=GatePolicy(mean_margin=60.0, cell_margin=40.0)))
    assert judgement.status == Status.REJECTED and judgement.verdict.method["cell_margin"] == 40.0
    assert "passkey@512 drop 50.00 points, lower bound 50.00 > 40" in judgement.reasons


def test_a_looser_policy_later_cannot_accept_what_the_signed_gate_failed(backend: Backend) -> None:
    reg = MaskRegistry(backend.url)
    ref = reg.push(make_mask())
    assert reg.judge(ref, report_for(reg, ref, passed=False)).status == Status.REJECTED
    reg.update_policy(lambda p: replace(p, gate=GatePolicy(mean_margin=100.0, cell_margin=100.0)))
    forge_status(backend, ref, reg)
    assert_never_served(reg, ref, "is rejected: mean drop 100.00 points")


def test_a_stricter_policy_withdraws_acceptances_whose_evidence_no_longer_passes(backend: Backend) -> None:
    reg = MaskRegistry(backend.url)
    ref = accepted(reg)  # two samples per cell
    reg.update_policy(lambda p: replace(p, suite=Suite(min_samples=3)))
    assert_never_served(reg, ref, "passkey@512: 2 of 3 samples")
    reg.update_policy(lambda p: replace(p, suite=Suite(min_samples=2)))
    assert reg.pull("org/m").sha256() == make_mask().sha256()


def test_judge_refuses_a_report_that_does_not_cover_the_required_suite(backend: Backend) -> None:
    reg = MaskRegistry(backend.url)
    reg.update_policy(lambda p: replace(p, suite=Suite(tasks=("passkey", "niah_single"), lengths=(512,), min_samples=2)))
    ref = reg.push(make_mask())
    with pytest.raises(ValueError, match="required suite .*niah_single@512: 0 of 2 samples") as err:
        reg.judge(ref, report_for(reg, ref))
    one_line(err)
    assert reg.show("org/m", 1).reports == () and reg.show("org/m", 1).status == Status.CANDIDATE


def test_a_registry_without_policy_trusts_only_the_readers_own_and_pinned_keys(
        bare_backend: Backend, signer, tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The documented default: no policy, no keys of its own; each reader trusts its own validator key
    ($LEANK_SIGNING_KEY here) and the keys it pins, and nothing a bucket writer brings."""
    reg = MaskRegistry(bare_backend.url)
    assert reg.policy() == Policy()
    mine, pinned, foreign = (reg.push(make_mask(tag=t)) for t in range(3))
    intruder, colleague = generate_key(tmp_path / "intruder.key"), generate_key(tmp_path / "colleague.key")
    with pytest.raises(ValueError, match=r"not among this reader's own and pinned keys \(the registry has no policy\)"):
        reg.judge(foreign, report_for(reg, foreign, signer=intruder))
    assert reg.judge(mine, report_for(reg, mine)).status == Status.ACCEPTED
    monkeypatch.setenv(TRUSTED_KEYS_ENV, colleague.public_key)
    assert reg.judge(pinned, report_for(reg, pinned, signer=colleague)).status == Status.ACCEPTED
    assert [r.status for r in reg.list("org/m")] == [Status.ACCEPTED, Status.ACCEPTED, Status.CANDIDATE]
    monkeypatch.delenv("LEANK_SIGNING_KEY")  # a reader with no key of its own and no pins trusts nothing
    monkeypatch.delenv(TRUSTED_KEYS_ENV)
    with pytest.raises(RegistryError, match="no accepted version"):
        reg.pull("org/m")


def test_removing_a_key_withdraws_every_acceptance_it_signed(backend: Backend, signer) -> None:
    reg = MaskRegistry(backend.url)
    ref = accepted(reg)
    reg.update_policy(lambda p: replace(p, trusted_keys=()))
    assert_never_served(reg, ref, "not among the registry policy")


@pytest.mark.parametrize("pin", ["env", "file"])
def test_a_pinning_reader_ignores_a_key_a_bucket_writer_adds_to_the_policy(backend: Backend, signer, tmp_path,
                                                                          monkeypatch: pytest.MonkeyPatch,
                                                                          pin: str) -> None:
    reg = MaskRegistry(backend.url)
    accepted(reg)
    intruder = generate_key(tmp_path / "intruder.key")
    forged_policy = replace(reg.policy(), trusted_keys=(signer.public_key, intruder.public_key))
    backend.overwrite("_registry/policy/000002.json", forged_policy.to_json())  # the writer's own key, added
    ref = reg.push(make_mask(tag=9))
    backend.overwrite("org/m/versions/000002/reports/0001.json", report_for(reg, ref, signer=intruder).to_json())
    forge_status(backend, ref, reg)
    assert reg.pull("org/m", 2).extra == {"tag": 9}  # a reader that pins nothing trusts the policy as stored
    if pin == "env":
        monkeypatch.setenv(TRUSTED_KEYS_ENV, signer.public_key)
    else:
        pins_path().parent.mkdir(parents=True, exist_ok=True)
        pins_path().write_text(f"# our validators\n{signer.public_key}\n")
    assert_never_served(reg, ref, "not among the registry policy's keys this reader pins")
    assert reg.pull("org/m").extra == {"tag": 0}  # the genuinely accepted version is still served


@pytest.mark.parametrize("damage", [b"[1]", b'{"format": "leank-registry-policy/1"}', b"not json",
                                    b'{"format": "leank-registry-policy/1", "gate": {"mean_margin": NaN, '
                                    b'"cell_margin": 5}, "suite": {"tasks": [], "lengths": [], "min_samples": 1}, '
                                    b'"trusted_keys": []}'])
def test_a_damaged_policy_fails_closed_with_one_line(backend: Backend, damage: bytes) -> None:
    reg = MaskRegistry(backend.url)
    ref = accepted(reg)
    candidate = reg.push(make_mask(tag=1))
    backend.overwrite("_registry/policy/000002.json", damage)
    for call in (lambda: reg.pull("org/m"), lambda: reg.pull("org/m", 1), lambda: reg.judge(candidate, None)):
        with pytest.raises(DamagedRecord, match="registry policy _registry/policy/000002.json") as err:
            call()
        one_line(err)
    rows = reg.list("org/m")  # still listed: the candidate as such, the acceptance as unverifiable
    assert [r.status for r in rows] == [None, Status.CANDIDATE] and "policy" in rows[0].damaged
    assert reg.show("org/m", ref.version).problem


def test_show_reports_each_damaged_or_untrusted_report_without_failing(backend: Backend, tmp_path) -> None:
    reg = MaskRegistry(backend.url)
    ref = accepted(reg)
    reg.judge(ref, report_for(reg, ref))  # report 2: genuine
    backend.overwrite("org/m/versions/000001/reports/0003.json", b'"just a string"')
    backend.overwrite("org/m/versions/000001/reports/0004.json",
                      report_for(reg, ref, signer=generate_key(tmp_path / "k")).to_json())
    shown = reg.show("org/m", 1)
    assert shown.status == Status.ACCEPTED and shown.problem is None
    assert [(r.report_id, r.problem is None) for r in shown.reports] == [(1, True), (2, True), (3, False), (4, False)]
    assert "not a JSON object" in shown.reports[2].problem and "signed by key" in shown.reports[3].problem
    as_json = shown.to_dict()
    assert [r["trusted"] for r in as_json["reports"]] == [True, True, False, False]


def test_a_damaged_status_is_shown_with_why_and_blocks_nothing_else(backend: Backend) -> None:
    reg = MaskRegistry(backend.url)
    accepted(reg)
    ref = accepted(reg, tag=1)
    backend.overwrite("org/m/versions/000002/status.json", b'"accepted"')
    shown = reg.show("org/m", 2)
    assert shown.status is None and "not a JSON object" in shown.problem
    assert shown.to_dict()["status"] == "damaged"
    assert reg.pull("org/m").extra == {"tag": 0}
    with pytest.raises(DamagedRecord):
        reg.judge(ref, report_for(reg, ref))  # a damaged version cannot be judged either
    assert isinstance(SignedReport.from_json(reg.store.get("org/m/versions/000002/reports/0001.json"), "r"),
                      SignedReport)
