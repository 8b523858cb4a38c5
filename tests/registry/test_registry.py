"""MaskRegistry against both backends (local directory and a real S3 server process)."""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import re
import threading
from dataclasses import replace

import pytest

from registry import DamagedRecord, MaskRef, MaskRegistry, RegistryError, Status

from .conftest import Backend, make_mask, report_for


def one_line(err: pytest.ExceptionInfo) -> str:
    text = str(err.value)
    assert text and "\n" not in text
    return text


def judge(reg: MaskRegistry, ref: MaskRef, passed: bool = True):
    """Judge ``ref``'s own mask with a passing (or failing) signed report."""
    return reg.judge(ref, report_for(reg, ref, passed))


def test_push_fills_manifest_from_the_stored_bytes(backend: Backend) -> None:
    reg = MaskRegistry(backend.url)
    mask = make_mask()
    ref = reg.push(mask, {"training_config": {"lr": 0.01}, "data_recipe": "synthetic-v1"})
    assert (ref, str(ref)) == (MaskRef("org/m", "abc", 1), "org/m@1")
    shown = reg.show("org/m", 1)
    m = shown.manifest
    stored = reg.store.get(m.mask_key)
    assert m.mask_sha256 == hashlib.sha256(stored).hexdigest() == mask.sha256()
    assert (m.model_id, m.model_hash, m.ratio, m.align, m.sink, m.recent) == ("org/m", "abc", 0.125, 16, 4, 8)
    assert m.provenance == {"training_config": {"lr": 0.01}, "data_recipe": "synthetic-v1"}
    assert m.code_version and m.created
    assert shown.status == Status.CANDIDATE and shown.reports == ()


def test_push_refuses_registry_owned_manifest_keys(backend: Backend) -> None:
    with pytest.raises(ValueError, match="status"):
        MaskRegistry(backend.url).push(make_mask(), {"status": "accepted"})


def test_push_never_overwrites_same_mask_twice_gives_two_versions(backend: Backend) -> None:
    reg = MaskRegistry(backend.url)
    assert [reg.push(make_mask()).version for _ in range(2)] == [1, 2]
    assert [r.version for r in reg.list("org/m")] == [1, 2]


def _push_from_process(url: str, env: dict[str, str], tag: int, barrier, out) -> None:
    os.environ.update(env)
    reg = MaskRegistry(url)
    barrier.wait()
    out.put((tag, reg.push(make_mask(tag=tag)).version))


@pytest.mark.parametrize("mode", ["threads", "processes"])
def test_eight_concurrent_pushers_get_eight_distinct_readable_versions(backend: Backend, mode: str) -> None:
    n = 8
    if mode == "threads":
        barrier, results = threading.Barrier(n), []

        def push(tag: int) -> None:
            reg = MaskRegistry(backend.url)
            barrier.wait()
            results.append((tag, reg.push(make_mask(tag=tag)).version))

        workers = [threading.Thread(target=push, args=(t,)) for t in range(n)]
    else:
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload(["torch", "registry", "tests.registry.conftest"])
        barrier, queue = ctx.Barrier(n), ctx.Queue()
        env = {k: v for k, v in os.environ.items() if k.startswith(("AWS_", "XDG_"))}
        workers = [ctx.Process(target=_push_from_process, args=(backend.url, env, t, barrier, queue)) for t in range(n)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(timeout=120)
    if mode == "processes":
        assert all(w.exitcode == 0 for w in workers)
        results = [queue.get(timeout=10) for _ in range(n)]
    assert sorted(v for _, v in results) == list(range(1, n + 1))
    reg = MaskRegistry(backend.url)
    for tag, version in results:
        assert reg.pull("org/m", version, allow_unaccepted=True).extra == {"tag": tag}


@pytest.mark.parametrize("damage", ["tampered", "truncated"])
def test_pull_refuses_a_damaged_mask_object(backend: Backend, damage: str) -> None:
    reg = MaskRegistry(backend.url)
    ref = reg.push(make_mask())
    key = reg.show("org/m", 1).manifest.mask_key
    good = reg.store.get(key)
    bad = make_mask(tag=99).to_bytes() if damage == "tampered" else good[: len(good) // 2]
    backend.overwrite(key, bad)
    with pytest.raises(RegistryError, match="does not match its manifest sha256") as err:
        reg.pull("org/m", ref.version, allow_unaccepted=True)
    one_line(err)


def test_cached_copy_is_verified_on_reuse(backend: Backend) -> None:
    reg = MaskRegistry(backend.url)
    mask = make_mask()
    reg.push(mask)
    path = reg.pull_path("org/m", 1, allow_unaccepted=True)
    path.write_bytes(b"corrupted cache")
    assert reg.pull("org/m", 1, allow_unaccepted=True).sha256() == mask.sha256()
    assert path.read_bytes() == mask.to_bytes()


def test_concurrent_pulls_share_the_cache_safely(backend: Backend) -> None:
    """Eight threads missing the cache at once all get the verified mask, and one cached file remains."""
    reg = MaskRegistry(backend.url)
    mask = make_mask()
    reg.push(mask)
    barrier, results = threading.Barrier(8), []

    def pull() -> None:
        barrier.wait()
        try:
            results.append(reg.pull("org/m", 1, allow_unaccepted=True).sha256())
        except Exception as e:  # noqa: BLE001 - reported below
            results.append(repr(e))

    workers = [threading.Thread(target=pull) for _ in range(8)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert results == [mask.sha256()] * 8
    assert [p.name for p in reg.cache_dir.iterdir()] == [f"{mask.sha256()}.safetensors"]


class FailingStore:
    """Delegates to a real store but fails every create whose key contains `fail_on`."""

    def __init__(self, store, fail_on: str) -> None:
        self.store, self.fail_on, self.url = store, fail_on, store.url

    def create(self, key: str, data: bytes) -> bool:
        if self.fail_on in key:
            raise RegistryError("injected upload failure")
        return self.store.create(key, data)

    def get(self, key: str) -> bytes | None:
        return self.store.get(key)

    def list(self, prefix: str) -> list[str]:
        return self.store.list(prefix)


@pytest.mark.parametrize("fail_on", ["/masks/", "manifest.json"])
def test_a_failed_upload_never_becomes_a_version(backend: Backend, fail_on: str) -> None:
    reg = MaskRegistry(backend.url)
    reg.store = FailingStore(reg.store, fail_on)
    with pytest.raises(RegistryError, match="injected"):
        reg.push(make_mask())
    clean = MaskRegistry(backend.url)
    with pytest.raises(RegistryError, match="no masks for model id"):
        clean.list("org/m")
    assert clean.push(make_mask()).version == 1


def test_pull_returns_newest_accepted_never_candidate_or_rejected(backend: Backend) -> None:
    reg = MaskRegistry(backend.url)
    refs = [reg.push(make_mask(tag=t)) for t in range(4)]
    judge(reg, refs[0])
    judge(reg, refs[1])
    judge(reg, refs[3], passed=False)
    assert reg.pull("org/m").extra == {"tag": 1}
    assert [r.status.value for r in reg.list("org/m")] == ["accepted", "accepted", "candidate", "rejected"]
    for version in (3, 4):
        with pytest.raises(RegistryError, match="not accepted") as err:
            reg.pull("org/m", version)
        one_line(err)
    assert reg.pull("org/m", 3, allow_unaccepted=True).extra == {"tag": 2}


def test_pull_with_no_accepted_version_is_refused(backend: Backend) -> None:
    reg = MaskRegistry(backend.url)
    reg.push(make_mask())
    with pytest.raises(RegistryError, match="no accepted version") as err:
        reg.pull("org/m")
    one_line(err)


def test_pull_for_a_model_with_another_hash_is_refused(backend: Backend) -> None:
    reg = MaskRegistry(backend.url)
    ref = reg.push(make_mask(model_hash="abc"))
    judge(reg, ref)
    assert reg.pull("org/m", model_hash="abc").model_hash == "abc"
    for version in (None, 1):
        with pytest.raises(RegistryError, match="learned for model hash abc, this model is def") as err:
            reg.pull("org/m", version, model_hash="def")
        one_line(err)


def test_pull_by_hash_picks_the_newest_accepted_for_that_hash(backend: Backend) -> None:
    reg = MaskRegistry(backend.url)
    for h in ("abc", "def"):
        judge(reg, reg.push(make_mask(model_hash=h)))
    assert reg.pull("org/m", model_hash="abc").model_hash == "abc"
    assert reg.pull("org/m").model_hash == "def"


def test_judge_accepts_on_a_passing_report_for_these_bytes_and_rejects_on_a_failing_one(backend: Backend) -> None:
    reg = MaskRegistry(backend.url)
    good, bad = reg.push(make_mask(tag=1)), reg.push(make_mask(tag=2))
    with pytest.raises(ValueError, match="not org/m@1's mask") as err:
        reg.judge(good, report_for(reg, good, mask_sha256=make_mask(tag=5).sha256()))
    one_line(err)
    assert reg.show("org/m", 1).status == Status.CANDIDATE and reg.show("org/m", 1).reports == ()
    first = judge(reg, good)
    assert (first.report_id, first.status, first.decided_now) == (1, Status.ACCEPTED, True)
    assert judge(reg, bad, passed=False).status == Status.REJECTED
    shown = reg.show("org/m", 1)
    assert shown.decision.report_id == 1 and [r.report_id for r in shown.reports] == [1]
    # the model card is written at acceptance only, as README.md in the version's folder (registry/layout.py)
    assert reg.store.get("org/m/versions/000001/README.md") is not None
    assert reg.store.get("org/m/versions/000002/README.md") is None


@pytest.mark.parametrize("forged", [
    {"status": "accepted"},                  # no report cited
    {"status": "accepted", "report_id": 1, "mask_sha256": "x", "decided": "now"},  # cites the failing report
    ["accepted"],                            # valid JSON, wrong shape
    "accepted",
])
def test_an_accepted_status_written_behind_the_registrys_back_is_never_served(backend: Backend, forged) -> None:
    reg = MaskRegistry(backend.url)
    ref = reg.push(make_mask())
    reg.push(make_mask(tag=1))
    reg._attach(ref, report_for(reg, ref, passed=False))
    assert reg.store.create("org/m/versions/000001/status.json", json.dumps(forged).encode())
    with pytest.raises(DamagedRecord, match="damaged|not a JSON object|missing") as err:
        reg.pull("org/m", 1)
    one_line(err)
    with pytest.raises(RegistryError, match="no accepted version"):
        reg.pull("org/m")
    listed = reg.list("org/m")  # the damaged version is listed as such; the healthy one is not hidden
    assert [(r.version, r.status) for r in listed] == [(1, None), (2, Status.CANDIDATE)] and listed[0].damaged


def test_a_decision_is_final(backend: Backend) -> None:
    reg = MaskRegistry(backend.url)
    ref = reg.push(make_mask())
    judge(reg, ref, passed=False)
    again = judge(reg, ref)
    assert (again.report_id, again.status, again.decided_now) == (2, Status.REJECTED, False)
    assert reg.show("org/m", 1).status == Status.REJECTED


def test_manifest_must_be_a_dict(backend: Backend) -> None:
    with pytest.raises(ValueError, match="must be a JSON object"):
        MaskRegistry(backend.url).push(make_mask(), ["training_config"])


def test_resolve_fills_in_the_newest_version_of_any_status(backend: Backend) -> None:
    reg = MaskRegistry(backend.url)
    reg.push(make_mask())
    reg.push(make_mask(model_hash="def"))
    assert reg.resolve(MaskRef("org/m")) == MaskRef("org/m", "def", 2)


def test_unknown_model_id_is_a_one_line_error(backend: Backend) -> None:
    reg = MaskRegistry(backend.url)
    reg.push(make_mask())
    for call in (lambda: reg.list("org/other"), lambda: reg.pull("org/other"), lambda: reg.show("org/other")):
        with pytest.raises(RegistryError, match="no masks for model id 'org/other'") as err:
            call()
        one_line(err)
    with pytest.raises(RegistryError, match="org/m@7 does not exist"):
        reg.pull("org/m", 7)


@pytest.mark.parametrize("bad", ["../etc", "org/../../x", "/abs/name", "org", "org/name/extra", "org/na\nme", "org/.."])
def test_model_ids_that_could_escape_the_prefix_are_refused(backend: Backend, bad: str) -> None:
    reg = MaskRegistry(backend.url)
    with pytest.raises(ValueError, match="invalid model id") as err:
        reg.pull(bad)
    one_line(err)
    with pytest.raises(ValueError, match="invalid model id"):
        reg.push(make_mask(model_id=bad))


def test_default_registry_is_a_local_directory_in_the_user_cache(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    assert MaskRegistry().url == str(tmp_path / "cache" / "leank" / "registry")
    monkeypatch.setenv("LEANK_REGISTRY", str(tmp_path / "elsewhere"))
    reg = MaskRegistry()
    reg.push(make_mask())
    assert (tmp_path / "elsewhere" / "org" / "m" / "versions" / "000001" / "manifest.json").is_file()


def test_a_manifest_copied_to_another_model_id_is_refused_and_the_copy_stays_unpullable(backend: Backend) -> None:
    reg = MaskRegistry(backend.url)
    ref = reg.push(make_mask())
    judge(reg, ref)
    reg.push(make_mask(model_id="org/other"))
    for name in ("manifest.json", "status.json", "reports/0001.json"):
        backend.overwrite(f"org/other/versions/000002/{name}", reg.store.get(f"org/m/versions/000001/{name}"))
    with pytest.raises(DamagedRecord, match="copied from elsewhere") as err:
        reg.pull("org/other", 2)
    one_line(err)
    with pytest.raises(RegistryError, match="no accepted version"):
        reg.pull("org/other")
    assert [r.status for r in reg.list("org/other")] == [Status.CANDIDATE, None]


@pytest.mark.parametrize("damage", [b"[1, 2]", b"{}", b'{"model_id": "org/m"}', b"not json"])
def test_a_damaged_manifest_is_listed_as_damaged_without_hiding_healthy_versions(backend: Backend, damage: bytes) -> None:
    reg = MaskRegistry(backend.url)
    for tag in range(3):
        judge(reg, reg.push(make_mask(tag=tag)))
    backend.overwrite("org/m/versions/000003/manifest.json", damage)
    rows = reg.list("org/m")
    assert [r.status for r in rows] == [Status.ACCEPTED, Status.ACCEPTED, None]
    assert rows[2].damaged and "\n" not in rows[2].damaged
    assert reg.pull("org/m").extra == {"tag": 1}  # newest healthy accepted version


def test_versions_beyond_six_digits_are_listed_judged_and_pulled_in_numeric_order(backend: Backend) -> None:
    reg = MaskRegistry(backend.url)
    first = reg.push(make_mask(tag=0))
    manifest = replace(reg.manifest(first), version=999_999)
    assert reg.store.create("org/m/versions/999999/manifest.json", manifest.to_json())
    big = reg.push(make_mask(tag=1))
    assert big.version == 1_000_000
    assert reg.store.get("org/m/versions/1000000/manifest.json") is not None  # padding stays 6, more digits fit
    assert [r.version for r in reg.list("org/m")] == [1, 999_999, 1_000_000]
    judge(reg, first)
    judge(reg, big)
    assert reg.pull("org/m").extra == {"tag": 1} and reg.resolve(MaskRef("org/m")).version == 1_000_000
    assert reg.push(make_mask(tag=2)).version == 1_000_001


def test_show_and_list_records_are_the_documented_json(backend: Backend) -> None:
    """What `leank registry show` / `list` print: every field under its name, the decision citing its report."""
    reg = MaskRegistry(backend.url)
    ref = reg.push(make_mask(tag=1))
    decided = judge(reg, ref)
    record = reg.show("org/m", 1)
    shown = json.loads(json.dumps(record.to_dict()))
    entry = record.reports[0]
    assert shown == {
        "ref": "org/m@1", "manifest": json.loads(json.dumps(record.manifest.to_dict())), "status": "accepted",
        "problem": None,
        "decision": {"status": "accepted", "report_id": 1, "mask_sha256": record.manifest.mask_sha256,
                     "decided": record.decision.decided},
        "reports": [{"id": 1, "trusted": True, "registry_verdict": json.loads(json.dumps(entry.verdict.to_dict())),
                     "signed_by": entry.signed.key, "report": json.loads(entry.signed.report.to_json())}]}
    assert decided.report_id == 1 and record.decision.decided
    reg.push(make_mask(tag=2))
    backend.overwrite("org/m/versions/000002/manifest.json", b"{not json")
    healthy, damaged = (r.to_dict() for r in reg.list("org/m"))
    m = record.manifest
    assert healthy == {"version": 1, "status": "accepted", "model_hash": m.model_hash, "mask_sha256": m.mask_sha256,
                       "ratio": m.ratio, "align": m.align, "created": m.created, "reports": 1}
    assert damaged == {"version": 2, "status": "damaged", "damaged": reg.list("org/m")[1].damaged}
    assert damaged["damaged"]


def test_an_untrusted_report_is_shown_with_its_problem(backend: Backend, tmp_path) -> None:
    from registry import generate_key

    reg = MaskRegistry(backend.url)
    ref = reg.push(make_mask(tag=1))
    intruder = generate_key(tmp_path / "intruder.key")  # a report stored behind the registry's back
    reg.store.create("org/m/versions/000001/reports/0001.json", report_for(reg, ref, signer=intruder).to_json())
    [entry] = reg.show("org/m", 1).to_dict()["reports"]
    assert entry["trusted"] is False and entry["problem"] and entry["signed_by"] == intruder.public_key


# -- defaults, messages and edge cases of the public methods (mutation survivors, issue 22) -------------------

LONG_HASH, OTHER_HASH = "0123456789abcdef", "0123456789abXXXX"  # equal in their first 12 characters only


class HookedStore:
    """Delegates to a real store; ``hide`` drops listed keys containing it (a listing that lags behind
    the writes), ``before_create(key)`` runs before each create (another writer acting first)."""

    def __init__(self, store, hide: str | None = None, before_create=None) -> None:
        self.store, self.url, self.hide, self.before_create = store, store.url, hide, before_create
        self.listed: list[str] = []

    def create(self, key: str, data: bytes) -> bool:
        if self.before_create:
            self.before_create(key)
        return self.store.create(key, data)

    def get(self, key: str) -> bytes | None:
        return self.store.get(key)

    def list(self, prefix: str) -> list[str]:
        self.listed.append(prefix)
        return [k for k in self.store.list(prefix) if not (self.hide and self.hide in k)]

    def delete(self, key: str) -> None:
        self.store.delete(key)


def test_cache_and_default_registry_live_under_xdg_cache_home_else_home_dot_cache(
        monkeypatch: pytest.MonkeyPatch, tmp_path, backend: Backend) -> None:
    """The XDG base-directory convention: $XDG_CACHE_HOME, or ~/.cache when it is unset or empty."""
    from registry.registry import cache_root, default_url

    ref = MaskRegistry(backend.url).push(make_mask())
    path = MaskRegistry(backend.url).pull_path("org/m", ref.version, allow_unaccepted=True)
    assert path == tmp_path / "cache" / "leank" / "masks" / f"{make_mask().sha256()}.safetensors"
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    for unset in (lambda: monkeypatch.delenv("XDG_CACHE_HOME"), lambda: monkeypatch.setenv("XDG_CACHE_HOME", "")):
        unset()
        assert cache_root() == tmp_path / "home" / ".cache" / "leank"
        assert default_url() == str(tmp_path / "home" / ".cache" / "leank" / "registry")
        assert MaskRegistry(backend.url).cache_dir == tmp_path / "home" / ".cache" / "leank" / "masks"


def test_the_manifest_records_the_installed_leank_version_else_unknown(monkeypatch: pytest.MonkeyPatch) -> None:
    from importlib import metadata

    from registry import registry as module

    monkeypatch.setattr(module.metadata, "version", lambda name: f"version of {name}")
    assert module.code_version() == "version of leank"

    def missing(name: str) -> str:
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(module.metadata, "version", missing)
    assert module.code_version() == "unknown"


def test_created_and_decided_are_utc_timestamps(backend: Backend) -> None:
    from datetime import datetime, timedelta

    reg = MaskRegistry(backend.url)
    ref = reg.push(make_mask())
    judge(reg, ref)
    shown = reg.show("org/m", 1)
    for stamp in (shown.manifest.created, shown.decision.decided):
        assert datetime.fromisoformat(stamp).utcoffset() == timedelta(0)


def test_a_trust_without_policy_refuses_with_its_problem_or_says_the_policy_is_unreadable() -> None:
    from registry.registry import Trust

    with pytest.raises(DamagedRecord, match="^the registry policy is unreadable$"):
        Trust(None, frozenset(), "").require()
    with pytest.raises(DamagedRecord, match="^policy 7 is list$"):
        Trust(None, frozenset(), "", problem="policy 7 is list").require()


def test_a_policy_that_vanishes_while_read_says_retry(backend: Backend) -> None:
    reg = MaskRegistry(backend.url)
    reg.store = HookedStore(reg.store)
    reg.store.get = lambda key: None  # listed, then deleted before the read
    with pytest.raises(RegistryError, match=r"^the registry policy _registry/policy/000001\.json vanished while "
                                            r"being read; retry$"):
        reg.policy()


def test_policies_are_numbered_from_one_without_gaps(bare_backend: Backend, signer) -> None:
    from .conftest import trusting_policy

    reg = MaskRegistry(bare_backend.url)
    for _ in range(2):
        reg.update_policy(lambda _: trusting_policy(signer))
    assert reg.store.list("_registry/") == ["_registry/policy/000001.json", "_registry/policy/000002.json"]
    assert reg.policy() == trusting_policy(signer)


def test_push_refusals_are_one_line_saying_what_to_do(backend: Backend) -> None:
    reg = MaskRegistry(backend.url)
    with pytest.raises(ValueError, match=r"^the manifest must be a JSON object \(dict\), got list$"):
        reg.push(make_mask(), ["training_config"])
    with pytest.raises(ValueError, match=r"^the mask has no model hash; set it \(LeanKMask\.with_identity\) before "
                                         r"pushing$"):
        reg.push(make_mask(model_hash=""))
    with pytest.raises(ValueError, match="^manifest keys created, status, version are set by the registry; leave "
                                         "them out$"):
        reg.push(make_mask(), {"version": 3, "status": "accepted", "created": "now", "source": "ok"})
    assert reg.store.list("org/") == []


def test_a_push_whose_listing_lags_takes_the_next_free_number(backend: Backend) -> None:
    """Version numbers are claimed by conditional creates: a pusher that does not yet see version 1 (another
    pusher's, just written) tries 1, loses, and takes 2 — no number skipped."""
    reg = MaskRegistry(backend.url)
    reg.push(make_mask(tag=0))
    lagging = MaskRegistry(backend.url)
    lagging.store = HookedStore(lagging.store, hide="manifest.json")
    assert lagging.push(make_mask(tag=1)).version == 2
    assert [r.version for r in reg.list("org/m")] == [1, 2]


def test_a_report_attached_with_a_lagging_listing_takes_the_next_free_number(backend: Backend) -> None:
    reg = MaskRegistry(backend.url)
    ref = reg.push(make_mask())
    judge(reg, ref, passed=False)
    lagging = MaskRegistry(backend.url)
    lagging.store = HookedStore(lagging.store, hide="/reports/")
    assert judge(lagging, ref).report_id == 2
    assert [r.report_id for r in reg.show("org/m", 1).reports] == [1, 2]


def test_a_judgement_names_the_version_its_report_and_whether_it_decided(backend: Backend) -> None:
    reg = MaskRegistry(backend.url)
    ref = reg.push(make_mask())
    first = reg.judge(ref, report_for(reg, ref))
    again = reg.judge(ref, report_for(reg, ref, passed=False))
    assert (first.ref, first.report_id, first.status, first.decided_now, first.verdict.accepted) == (
        ref, 1, Status.ACCEPTED, True, True)
    assert (again.ref, again.report_id, again.status, again.decided_now, again.verdict.decision) == (
        ref, 2, Status.ACCEPTED, False, "rejected")


def test_a_judge_that_loses_the_race_to_decide_reports_the_winners_decision(backend: Backend) -> None:
    """Two judges of one candidate: the decision is made once; the loser keeps its report and says
    what the winner decided, not what it would have."""
    reg = MaskRegistry(backend.url)
    ref = reg.push(make_mask())
    failing = report_for(reg, ref, passed=False)

    def rival_decides_first(key: str) -> None:
        if key.endswith("status.json") and not reg.store.list("org/m/versions/000001/status"):
            assert MaskRegistry(backend.url).judge(ref, failing).decided_now

    racing = MaskRegistry(backend.url)
    racing.store = HookedStore(racing.store, before_create=rival_decides_first)
    lost = racing.judge(ref, report_for(reg, ref))
    assert (lost.ref, lost.report_id, lost.status, lost.decided_now, lost.verdict.accepted) == (
        ref, 1, Status.REJECTED, False, True)
    assert reg.show("org/m", 1).decision.report_id == 2


def test_the_model_card_is_written_for_the_accepted_version_only(backend: Backend) -> None:
    from registry.card import model_card

    reg = MaskRegistry(backend.url)
    good, bad = reg.push(make_mask(tag=0)), reg.push(make_mask(tag=1))
    judge(reg, good)
    judge(reg, bad, passed=False)
    assert reg.store.get("org/m/versions/000001/README.md") == model_card(reg.show("org/m", 1)).encode()
    assert reg.store.get("org/m/versions/000002/README.md") is None
    assert [k for k in reg.store.list("") if k.endswith("README.md")] == ["org/m/versions/000001/README.md"]


def test_judge_names_each_gap_in_the_required_suite(backend: Backend) -> None:
    from registry import Suite

    reg = MaskRegistry(backend.url)
    reg.update_policy(lambda p: replace(p, suite=Suite(tasks=("passkey", "niah"), lengths=(512,), min_samples=3)))
    ref = reg.push(make_mask())
    with pytest.raises(ValueError, match=r"^org/m@1: the report does not cover the registry's required suite "
                                         r"\(niah@512: 0 of 3 samples; passkey@512: 2 of 3 samples\); validate with "
                                         r"the tasks, lengths and samples of `leank registry policy show`$"):
        judge(reg, ref)


def refused(reg: MaskRegistry, ref: MaskRef, report, problem: str) -> None:
    with pytest.raises(ValueError, match=f"^{re.escape(f'{ref}: report refused: {problem}')}$"):
        reg.judge(ref, report)
    assert reg.show(ref.model_id, ref.version).reports == ()


def test_judge_says_exactly_why_a_report_is_no_evidence(backend: Backend, tmp_path) -> None:
    from registry import SignedReport, generate_key
    from registry.signing import short

    reg = MaskRegistry(backend.url)
    ref = reg.push(make_mask(model_hash=LONG_HASH))
    m = reg.manifest(ref)
    other = make_mask(tag=9).sha256()
    refused(reg, ref, report_for(reg, ref, mask_sha256=other),
            f"the report judged mask {other[:12]}, not org/m@1's mask {m.mask_sha256[:12]}; validate that version's mask")
    refused(reg, ref, report_for(reg, ref, model_hash=OTHER_HASH),
            f"it judged model hash {OTHER_HASH[:12]}, the manifest says {LONG_HASH[:12]}")
    refused(reg, ref, report_for(reg, ref, manifest_sha256="0" * 64), "the manifest changed after the report was signed")
    genuine = report_for(reg, ref)
    edited = SignedReport(replace(genuine.report, look=2), genuine.key, genuine.signature)
    refused(reg, ref, edited, "its signature does not match its content (edited after signing)")
    stranger, second = generate_key(tmp_path / "stranger.key"), generate_key(tmp_path / "second.key")
    policy = reg.update_policy(lambda p: replace(p, trusted_keys=(*p.trusted_keys, second.public_key)))
    keys = ", ".join(short(k) for k in sorted(policy.trusted_keys))
    refused(reg, ref, report_for(reg, ref, signer=stranger),
            f"it is signed by key {short(stranger.public_key)}, which is not among the registry policy's keys ({keys})")
    assert len(policy.trusted_keys) == 2


def test_a_reader_that_trusts_no_key_says_none(bare_backend: Backend, signer, monkeypatch: pytest.MonkeyPatch,
                                               tmp_path) -> None:
    from registry.signing import SIGNING_KEY_ENV, short

    reg = MaskRegistry(bare_backend.url)
    ref = reg.push(make_mask())
    report = report_for(reg, ref, signer=signer)
    monkeypatch.setenv(SIGNING_KEY_ENV, str(tmp_path / "no-such.key"))
    refused(reg, ref, report, f"it is signed by key {short(signer.public_key)}, which is not among this reader's own "
                              "and pinned keys (the registry has no policy) (none)")


def test_a_damaged_policy_is_what_show_blames_for_each_report(backend: Backend) -> None:
    """With the policy unreadable no key is trusted or distrusted: every report's problem is the policy, not
    its key (this once said "not among  (none)")."""
    reg = MaskRegistry(backend.url)
    ref = reg.push(make_mask())
    judge(reg, ref)
    backend.overwrite("_registry/policy/000002.json", b"[1]")
    problem = ("registry policy _registry/policy/000002.json is list, not a JSON object; its owner runs leank "
               "registry policy set")
    shown = reg.show("org/m", 1)
    assert shown.problem == problem and [r.problem for r in shown.reports] == [problem]
    assert shown.reports[0].signed is not None and shown.reports[0].passed is None


def test_a_looks_message_says_the_allowed_range_and_what_to_do(backend: Backend) -> None:
    from .test_looks import LENIENT, noisy_rows

    reg = MaskRegistry(backend.url)
    reg.update_policy(lambda p: replace(p, gate=LENIENT))
    ref = reg.push(make_mask())
    first = reg.judge(ref, report_for(reg, ref, rows=noisy_rows(8), gate=LENIENT))
    assert first.verdict.decision == "undecided"
    with pytest.raises(ValueError, match=r"^org/m@1: report refused: it is look 1, but this candidate's next look must "
                                         r"be in 2\.\.4; validate again to continue its sequential plan$"):
        reg.judge(ref, report_for(reg, ref, rows=noisy_rows(8), gate=LENIENT))
    with pytest.raises(ValueError, match="^org/m@1: report refused: look 2 drops samples of look 1; a later look "
                                         "keeps every earlier sample$"):
        reg.judge(ref, report_for(reg, ref, rows=noisy_rows(8, first_index=8), look=2, gate=LENIENT))
    same = reg.judge(ref, report_for(reg, ref, rows=noisy_rows(8), look=2, gate=LENIENT))  # keeps every sample
    assert same.report_id == 2 and same.status == Status.CANDIDATE


def test_a_candidate_whose_last_look_was_undecided_must_be_pushed_again(backend: Backend) -> None:
    from registry import GatePolicy

    from .test_looks import noisy_rows

    one_look = GatePolicy(mean_margin=5.0, cell_margin=20.0, looks=1)
    reg = MaskRegistry(backend.url)
    reg.update_policy(lambda p: replace(p, gate=one_look))
    ref = reg.push(make_mask())
    last = reg.judge(ref, report_for(reg, ref, rows=noisy_rows(8), gate=one_look))
    assert last.verdict.decision == "undecided" and last.verdict.next_look is None
    with pytest.raises(ValueError, match=r"^org/m@1: report refused: it is look 1, but this candidate's next look must "
                                         r"be in 2\.\.1 \(its plan is used up: push the mask again for a fresh plan\); "
                                         r"validate again to continue its sequential plan$"):
        reg.judge(ref, report_for(reg, ref, rows=noisy_rows(8), gate=one_look))


def test_an_existing_mask_object_with_other_bytes_refuses_the_push(backend: Backend) -> None:
    reg = MaskRegistry(backend.url)
    mask = make_mask()
    key = f"org/m/masks/{mask.sha256()}.safetensors"
    backend.overwrite(key, b"something else")
    with pytest.raises(RegistryError, match=f"^{re.escape(reg.store.url)}/{key} exists with other content; the registry is "
                                            "damaged, repair that object$"):
        reg.push(mask)
    assert reg.store.list("org/m/versions/") == []


def test_manifest_needs_a_version_and_checks_the_refs_model_hash(backend: Backend) -> None:
    reg = MaskRegistry(backend.url)
    reg.push(make_mask())
    with pytest.raises(ValueError, match="^org/m names no version; use org/name@VERSION$"):
        reg.manifest(MaskRef("org/m"))
    with pytest.raises(RegistryError, match="^org/m@1: mask was learned for model hash abc, this model is def; learn "
                                            "a mask for this model$"):
        reg.manifest(MaskRef("org/m", "def", 1))
    assert reg.manifest(MaskRef("org/m", "abc", 1)).version == 1


def test_location_is_where_the_mask_object_is(backend: Backend, tmp_path) -> None:
    from pathlib import Path

    reg = MaskRegistry(backend.url)
    mask = make_mask()
    m = reg.manifest(reg.push(mask))
    where = reg.location(m)
    if backend.name == "local":
        assert Path(where).read_bytes() == mask.to_bytes()
        for name in ("storeX", "store "):  # only a trailing slash is trimmed from the registry's URL
            elsewhere = MaskRegistry(str(tmp_path / name))
            assert Path(elsewhere.location(elsewhere.manifest(elsewhere.push(mask)))).read_bytes() == mask.to_bytes()
    else:
        assert where == f"{backend.url}/{m.mask_key}" == MaskRegistry(backend.url + "/").location(m)


def test_resolve_and_pull_path_honour_the_version_and_model_hash(backend: Backend) -> None:
    reg = MaskRegistry(backend.url)
    reg.push(make_mask(model_hash="abc"))
    reg.push(make_mask(model_hash="def"))
    assert reg.resolve(MaskRef("org/m", version=1)) == MaskRef("org/m", "abc", 1)
    assert reg.resolve(MaskRef("org/m", "abc")) == MaskRef("org/m", "abc", 1)
    with pytest.raises(RegistryError, match="learned for model hash def, this model is abc"):
        reg.resolve(MaskRef("org/m", "abc", 2))
    with pytest.raises(RegistryError, match="learned for model hash def, this model is abc"):
        reg.pull_path("org/m", 2, model_hash="abc", allow_unaccepted=True)
    assert reg.show("org/m", 2).ref == MaskRef("org/m", "def", 2)


def test_model_ids_lists_each_valid_id_once_and_skips_foreign_folders(backend: Backend) -> None:
    reg = MaskRegistry(backend.url)
    assert reg.model_ids() == []
    for model_id in ("org/zeta", "org/m", "org/m"):
        reg.push(make_mask(model_id=model_id))
    backend.overwrite("_junk/x/versions/000001/manifest.json", reg.store.get("org/m/versions/000001/manifest.json"))
    assert reg.model_ids() == ["org/m", "org/zeta"]


def test_list_reads_one_listing_and_keeps_what_a_damaged_row_could_read(backend: Backend) -> None:
    """One LIST of the model's versions serves the version numbers and the report counts (one snapshot);
    a row damaged by its status keeps its manifest and report count, one damaged by its manifest has none.
    Push and pull, too, list only the model's own versions, never the whole store."""
    reg = MaskRegistry(backend.url)
    for tag in range(3):
        judge(reg, reg.push(make_mask(tag=tag)))
    backend.overwrite("org/m/versions/000002/status.json", b'"accepted"')
    backend.overwrite("org/m/versions/000003/manifest.json", b"[1, 2]")
    reg.store = HookedStore(reg.store)
    rows = reg.list("org/m")
    assert [p for p in reg.store.listed if not p.startswith("_registry/")] == ["org/m/versions/"]
    assert [(r.status, r.reports) for r in rows] == [(Status.ACCEPTED, 1), (None, 1), (None, 1)]
    assert rows[1].manifest == reg.manifest(MaskRef("org/m", version=2)) and rows[2].manifest is None
    assert rows[1].damaged == "org/m@2 status is str, not a JSON object"
    assert rows[2].damaged == "org/m@3 manifest is list, not a JSON object"
    reg.store.listed.clear()
    reg.push(make_mask(tag=9))
    reg.pull("org/m")
    assert {p for p in reg.store.listed if not p.startswith("_registry/")} == {"org/m/versions/"}


def test_a_manifest_copied_from_another_version_of_the_same_model_is_refused(backend: Backend) -> None:
    reg = MaskRegistry(backend.url)
    first = reg.push(make_mask(tag=0))
    reg.push(make_mask(tag=1))
    backend.overwrite("org/m/versions/000002/manifest.json", reg.store.get("org/m/versions/000001/manifest.json"))
    with pytest.raises(DamagedRecord, match=f"^org/m@2 manifest names org/m@1 \\({reg.manifest(first).mask_key}\\): "
                                            "it was copied from elsewhere; the registry is damaged$"):
        reg.pull("org/m", 2, allow_unaccepted=True)


DAMAGED = ": that decision is damaged and the version is not served; re-push the mask and validate it"


def test_why_a_decision_cannot_stand_is_said_in_full(backend: Backend) -> None:
    from registry.records import Decision

    reg = MaskRegistry(backend.url)
    refs = [reg.push(make_mask(tag=t)) for t in range(3)]
    for ref in refs:
        judge(reg, ref)
    shas = [reg.manifest(r).mask_sha256 for r in refs]
    backend.overwrite("org/m/versions/000001/status.json",
                      Decision(Status.ACCEPTED, 5, shas[0], "2026-01-01T00:00:00+00:00").to_json())
    backend.overwrite("org/m/versions/000002/status.json",
                      Decision(Status.ACCEPTED, 1, shas[0], "2026-01-01T00:00:00+00:00").to_json())
    backend.overwrite("org/m/versions/000003/reports/0001.json", b"[1]")
    assert [r.damaged for r in reg.list("org/m")] == [
        "org/m@1 is marked accepted but has no report 5" + DAMAGED,
        f"org/m@2 is marked accepted but its status names mask {shas[0][:12]}, not {shas[1][:12]}" + DAMAGED,
        "org/m@3 is marked accepted but report 1 is list, not a JSON object" + DAMAGED]
    assert [r.problem for r in reg.show("org/m", 3).reports] == ["org/m@3 report 1 is list, not a JSON object"]


def test_a_stray_file_among_the_reports_is_no_report(backend: Backend) -> None:
    reg = MaskRegistry(backend.url)
    ref = reg.push(make_mask())
    judge(reg, ref)
    backend.overwrite("org/m/versions/000001/reports/notes.txt", b"written by hand")
    assert [r.report_id for r in reg.show("org/m", 1).reports] == [1]
    assert judge(reg, ref).report_id == 2


def test_a_missing_or_unreadable_mask_object_and_an_unwritable_cache_are_one_line(
        backend: Backend, monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    from registry import layout

    reg = MaskRegistry(backend.url)
    ref = reg.push(make_mask(model_hash=LONG_HASH))
    m = reg.manifest(ref)
    garbage = b"not a safetensors file"
    sha = hashlib.sha256(garbage).hexdigest()
    backend.overwrite(layout.mask_key("org/m", sha), garbage)
    backend.overwrite("org/m/versions/000001/manifest.json",
                      replace(m, mask_sha256=sha, mask_key=layout.mask_key("org/m", sha)).to_json())
    with pytest.raises(DamagedRecord, match=r"^the mask file of org/m@1 is not a readable mask \(.+\); the registry "
                                            r"is damaged$"):
        reg.pull("org/m", 1, allow_unaccepted=True)
    backend.overwrite("org/m/versions/000001/manifest.json", replace(m, model_hash=OTHER_HASH).to_json())
    with pytest.raises(DamagedRecord, match=f"^the mask file of org/m@1 names model org/m hash {LONG_HASH[:12]}, its "
                                            f"manifest org/m hash {OTHER_HASH[:12]}; refusing it$"):
        reg.pull("org/m", 1, allow_unaccepted=True)
    backend.overwrite("org/m/versions/000001/manifest.json", m.to_json())
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocker))
    with pytest.raises(RegistryError, match=f"^cannot write the mask cache {re.escape(str(blocker))}/leank/masks: .+; set "
                                            "XDG_CACHE_HOME$"):
        MaskRegistry(backend.url).pull("org/m", 1, allow_unaccepted=True)
    reg.store.delete(m.mask_key)
    with pytest.raises(RegistryError, match=f"^the mask object of org/m@1 is missing from {re.escape(reg.store.url)}; the "
                                            "registry is damaged$"):
        MaskRegistry(backend.url).pull("org/m", 1, allow_unaccepted=True)
