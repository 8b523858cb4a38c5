"""MaskRegistry: append-only, versioned masks per model id, accepted only by a trusted signed report.

Layout: ``registry/layout.py``. Trust model: docs/trust.md. Why this shape:

* The manifest is the commit point and is written last: an upload that dies half way
  leaves at most an unreferenced mask object (``leank registry gc`` removes it once older
  than a grace period), never a visible version.
* Version numbers are claimed by conditionally creating the manifest, so concurrent
  pushers each get their own number and none overwrites another.
* Numbers are per model id (``org/name@3`` is unambiguous); each manifest records the
  model hash the mask was learned for, pull refuses a mask for another hash, and the mask
  file's own model hash must say the same.
* Acceptance needs evidence, not a flag: :meth:`MaskRegistry.judge` takes a validation
  report signed by a key the registry's policy trusts (and the reader pins, if it pins any),
  which names this model id, version, model hash, mask sha256 and manifest digest; the
  registry re-derives pass/fail from the report's per-sample pairs under its own policy.
  ``status.json`` is only an index: every read of an accepted version checks the cited
  report again (signature, trusted key, binding, verdict under today's policy), so a
  status written by anything else gains nothing.
* A decision is a conditionally created object, made once; it stands as long as its
  report still holds.
* Every object read is parsed into a typed record (``records.py``, ``report.py``,
  ``policy.py``) and bound to where it sits; a damaged or untrusted version is reported
  as such (``list``, ``show``) without hiding the healthy ones.
"""

from __future__ import annotations

import hashlib
import os
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

from leank_core.mask import LeanKMask

from . import layout
from .card import model_card
from .errors import RegistryError
from .ids import MaskRef, check_model_id
from .policy import DEFAULT_POLICY, Policy, sample_counts
from .records import DamagedRecord, Decision, Manifest, Status
from .gate import Verdict
from .report import Report, SignedReport
from .signing import own_public_key, pinned_keys, short
from .store import open_store


def cache_root() -> Path:
    """The user's cache directory for leank (honours XDG_CACHE_HOME)."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "leank"


def default_url() -> str:
    """The embedded registry: ``$LEANK_REGISTRY`` or a directory in the user cache."""
    return os.environ.get("LEANK_REGISTRY") or str(cache_root() / "registry")


def code_version() -> str:
    try:
        return metadata.version("leank")
    except metadata.PackageNotFoundError:
        return "unknown"


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


@dataclass(frozen=True)
class Trust:
    """What one reader trusts in one registry: its policy, and the report-signing keys it accepts.

    ``whose`` says where the keys come from (for messages). ``problem`` is set (and
    ``policy`` None) when the stored policy is damaged; then nothing that needs the policy
    can be decided or served.
    """

    policy: Policy | None
    keys: frozenset[str]
    whose: str
    problem: str | None = None

    def require(self) -> Policy:
        if self.policy is None:
            raise DamagedRecord(self.problem or "the registry policy is unreadable")
        return self.policy


@dataclass(frozen=True)
class Judgement:
    """What :meth:`MaskRegistry.judge` did: the report's number, the version's status after it, and
    the registry's own verdict on the report (undecided: the version stays a candidate and the
    verdict says which look to run next and with how many samples)."""

    ref: MaskRef
    report_id: int
    status: Status
    decided_now: bool  # False: already decided before (decisions are final), or undecided now
    verdict: Verdict

    @property
    def reasons(self) -> tuple[str, ...]:
        return self.verdict.reasons


@dataclass(frozen=True)
class VersionSummary:
    """One line of ``list``: a healthy version's manifest and status, or why it is damaged."""

    version: int
    manifest: Manifest | None
    status: Status | None
    reports: int
    damaged: str | None = None

    def to_dict(self) -> dict[str, Any]:
        if self.status is None:
            return {"version": self.version, "status": "damaged", "damaged": self.damaged}
        m = self.manifest
        return {"version": self.version, "status": self.status.value, "model_hash": m.model_hash,
                "mask_sha256": m.mask_sha256, "ratio": m.ratio, "align": m.align, "created": m.created,
                "reports": self.reports}


@dataclass(frozen=True)
class ReportEntry:
    """One stored report of a version (``show``): the report if it parses, why it is no evidence
    (``problem``), and the registry's verdict on it under its policy today (``passed`` None: no verdict)."""

    report_id: int
    signed: SignedReport | None
    problem: str | None  # None: signed by a trusted key and bound to this version
    verdict: Verdict | None = None

    @property
    def passed(self) -> bool | None:
        return None if self.verdict is None else self.verdict.accepted

    @property
    def reasons(self) -> tuple[str, ...]:
        return () if self.verdict is None else self.verdict.reasons

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"id": self.report_id, "trusted": self.problem is None}
        if self.problem:
            out["problem"] = self.problem
        if self.verdict is not None:
            out["registry_verdict"] = self.verdict.to_dict()
        if self.signed is not None:
            out.update(signed_by=self.signed.key, report=self.signed.report.to_dict())
        return out


@dataclass(frozen=True)
class VersionRecord:
    """Everything about one version (``show``): manifest, status (None: damaged, see ``problem``),
    decision and every report."""

    ref: MaskRef
    manifest: Manifest
    status: Status | None
    problem: str | None
    decision: Decision | None
    reports: tuple[ReportEntry, ...]

    def to_dict(self) -> dict[str, Any]:
        decision = None if self.decision is None else {
            "status": self.decision.status.value, "report_id": self.decision.report_id,
            "mask_sha256": self.decision.mask_sha256, "decided": self.decision.decided}
        return {"ref": str(self.ref), "manifest": self.manifest.to_dict(),
                "status": self.status.value if self.status else "damaged", "problem": self.problem,
                "decision": decision, "reports": [r.to_dict() for r in self.reports]}


class MaskRegistry:
    """Push, judge and pull masks in a local directory or ``s3://bucket/prefix``."""

    def __init__(self, url: str | None = None) -> None:
        self.url = url or default_url()
        self.store = open_store(self.url)
        self.cache_dir = cache_root() / "masks"

    # -- policy (admin) ------------------------------------------------------------------
    def policy(self) -> Policy:
        """The newest stored policy, or :data:`DEFAULT_POLICY` if none was ever set."""
        return self._newest_policy(self._policy_numbers())

    def update_policy(self, change: Callable[[Policy], Policy]) -> Policy:
        """Store ``change(current policy)`` as the next policy (``leank registry policy set``).

        Policies are numbered and never overwritten; a concurrent update makes this one
        re-read and re-apply ``change``, so neither is lost.
        """
        while True:
            numbers = self._policy_numbers()
            new = change(self._newest_policy(numbers))
            if self.store.create(layout.policy_key((numbers[-1] if numbers else 0) + 1), new.to_json()):
                return new

    def trust(self) -> Trust:
        """The policy and the keys this reader trusts (docs/trust.md): the policy's keys, or with
        pins, the pinned ones among them; a registry without a policy: the reader's pinned keys
        and its own validator key."""
        pins = pinned_keys()
        numbers = self._policy_numbers()
        if not numbers:
            own = own_public_key()
            return Trust(DEFAULT_POLICY, (pins or frozenset()) | ({own} if own else frozenset()),
                         "this reader's own and pinned keys (the registry has no policy)")
        try:
            policy = self._newest_policy(numbers)
        except DamagedRecord as e:
            return Trust(None, frozenset(), "", problem=f"{e}; its owner runs leank registry policy set")
        if pins is None:
            return Trust(policy, frozenset(policy.trusted_keys), "the registry policy's keys")
        return Trust(policy, frozenset(policy.trusted_keys) & pins, "the registry policy's keys this reader pins")

    def _newest_policy(self, numbers: list[int]) -> Policy:
        """The policy stored under the last of ``numbers`` (one listing serves the caller's whole decision)."""
        if not numbers:
            return DEFAULT_POLICY
        key = layout.policy_key(numbers[-1])
        data = self.store.get(key)
        if data is None:
            raise RegistryError(f"the registry policy {key} vanished while being read; retry")
        return Policy.from_json(data, f"registry policy {key}")

    def _policy_numbers(self) -> list[int]:
        return sorted(int(m.group("number")) for k in self.store.list(layout.POLICY_DIR)
                      if (m := layout.POLICY.fullmatch(k)))

    # -- writing -----------------------------------------------------------------------
    def push(self, mask: LeanKMask, provenance: dict[str, Any] | None = None) -> MaskRef:
        """Store ``mask`` as the next version of its model id, status candidate.

        ``provenance`` adds the caller's entries (``training_config``, ``data_recipe``, ...);
        the registry fills the facts it can check itself and refuses caller values for them.
        """
        check_model_id(mask.model_id)
        if provenance is not None and not isinstance(provenance, dict):
            raise ValueError(f"the manifest must be a JSON object (dict), got {type(provenance).__name__}")
        if not mask.model_hash:
            raise ValueError("the mask has no model hash; set it (LeanKMask.with_identity) before pushing")
        clash = sorted(k for k in (provenance or {}) if k in Manifest.FILLED or k == "status")
        if clash:
            raise ValueError(f"manifest keys {', '.join(clash)} are set by the registry; leave them out")
        data = mask.to_bytes()
        sha = _sha256(data)
        draft = Manifest(model_id=mask.model_id, model_hash=mask.model_hash, mask_sha256=sha,
                         mask_key=layout.mask_key(mask.model_id, sha), version=1, shape=mask.shape,
                         ratio=float(mask.ratio), align=mask.align, sink=mask.sink, recent=mask.recent,
                         k_fraction_kept=mask.k_fraction_kept, code_version=code_version(), created=_now(),
                         provenance=dict(provenance or {}))
        draft.to_json()  # refuse non-JSON provenance before anything is written
        self._put_mask(draft.mask_key, data, sha)
        version = max(self._versions(mask.model_id), default=0) + 1
        while not self.store.create(layout.manifest_key(mask.model_id, version),
                                    replace(draft, version=version).to_json()):
            version += 1  # another pusher claimed this number first
        # A gc that found this (already existing) mask object unreferenced may have removed it
        # before the manifest above existed; the manifest now protects it, so put it back.
        self.store.create(draft.mask_key, data)
        return MaskRef(mask.model_id, mask.model_hash, version)

    def judge(self, ref: MaskRef, signed: SignedReport) -> Judgement:
        """Attach ``signed`` to ``ref``'s version and, if the version is a candidate, decide it.

        The report must be signed by a trusted key, name exactly this version (model id,
        version, model hash, mask and manifest digests) and cover the policy's required
        suite; otherwise ValueError and nothing is written. The decision is the registry's
        verdict under its policy, not the report's own. A version already decided keeps its
        decision (decisions are final); the new report is still stored beside the earlier ones.
        """
        trust = self.trust()
        policy = trust.require()
        manifest = self.manifest(ref)
        problem = self._report_problem(ref, manifest, signed, trust)
        if problem:
            raise ValueError(f"{ref}: report refused: {problem}")
        missing = policy.suite.missing(sample_counts(signed.report.pairs))
        if missing:
            raise ValueError(f"{ref}: the report does not cover the registry's required suite ({'; '.join(missing)}); "
                             "validate with the tasks, lengths and samples of `leank registry policy show`")
        current = self._status(manifest, trust)
        if current == Status.CANDIDATE:
            self._check_look(ref, manifest, signed.report, trust)
        report_id = self._attach(ref, signed)
        verdict = policy.verdict(signed.report)
        if current != Status.CANDIDATE or verdict.decision == "undecided":
            return Judgement(ref, report_id, current, decided_now=False, verdict=verdict)
        status = Status.ACCEPTED if verdict.accepted else Status.REJECTED
        decision = Decision(status, report_id, manifest.mask_sha256, _now())
        if not self.store.create(layout.status_key(ref.model_id, ref.version), decision.to_json()):
            current = self._status(manifest, trust)  # a concurrent judge won
            return Judgement(ref, report_id, current, decided_now=False, verdict=verdict)
        if status == Status.ACCEPTED:
            self.store.create(layout.card_key(ref.model_id, ref.version),
                              model_card(self.show(ref.model_id, ref.version)).encode())
        return Judgement(ref, report_id, status, decided_now=True, verdict=verdict)

    def previous_look(self, ref: MaskRef) -> ReportEntry | None:
        """The candidate's latest trusted report with the registry's verdict on it, if that verdict was
        undecided: the look a new validation continues (its samples are kept, its look number grows)."""
        return self._previous_look(ref, self.manifest(ref), self.trust())

    def _previous_look(self, ref: MaskRef, manifest: Manifest, trust: Trust) -> ReportEntry | None:
        entries = [self._report_entry(ref, manifest, n, trust) for n in self._report_ids(ref)]
        trusted = [e for e in entries if e.problem is None and e.verdict is not None]
        if not trusted or trusted[-1].verdict.decision != "undecided":
            return None
        return trusted[-1]

    def _check_look(self, ref: MaskRef, manifest: Manifest, report: Report, trust: Trust) -> None:
        """A candidate's looks follow one sequential plan (docs/gate.md): each look later than the last,
        at most the policy's number of looks, keeping every earlier sample; anything else would spend
        the error budget twice (ValueError)."""
        previous = self._previous_look(ref, manifest, trust)
        last = 0 if previous is None else previous.signed.report.look
        looks = trust.require().gate.looks
        if not last < report.look <= looks:
            raise ValueError(f"{ref}: report refused: it is look {report.look}, but this candidate's next look must "
                             f"be in {last + 1}..{looks}" + ("" if last < looks else " (its plan is used up: push "
                             "the mask again for a fresh plan)") + "; validate again to continue its sequential plan")
        if previous is not None and not set(previous.signed.report.pairs) <= set(report.pairs):
            raise ValueError(f"{ref}: report refused: look {report.look} drops samples of look {last}; "
                             "a later look keeps every earlier sample")

    def _attach(self, ref: MaskRef, signed: SignedReport) -> int:
        number = max(self._report_ids(ref), default=0) + 1
        while not self.store.create(layout.report_key(ref.model_id, ref.version, number), signed.to_json()):
            number += 1
        return number

    def _put_mask(self, key: str, data: bytes, sha: str) -> None:
        if self.store.create(key, data):
            return
        existing = self.store.get(key)  # same digest, so normally the same bytes pushed before
        if existing is not None and _sha256(existing) != sha:
            raise RegistryError(f"{self.store.url}/{key} exists with other content; the registry is damaged, repair that object")
        # existing is None: a gc removed it just now; push() creates it again after the manifest

    # -- reading -----------------------------------------------------------------------
    def manifest(self, ref: MaskRef) -> Manifest:
        """The manifest of ``ref``'s version (which must be named), checked against ``ref.model_hash``."""
        if ref.version is None:
            raise ValueError(f"{ref} names no version; use org/name@VERSION")
        m = self._manifest(ref.model_id, ref.version)
        _check_hash(m, ref.model_hash or None)
        return m

    def location(self, manifest: Manifest) -> str:
        """Where the version's mask object lives (for people: a path or an s3:// URL)."""
        return f"{self.store.url.rstrip('/')}/{manifest.mask_key}"

    def resolve(self, ref: MaskRef) -> MaskRef:
        """Fill in version and hash; without a version, the newest of any status (what a
        validation job validates)."""
        m = self._select(ref.model_id, ref.version, ref.model_hash or None, allow_unaccepted=True)
        return MaskRef(m.model_id, m.model_hash, m.version)

    def pull(self, model_id: str, version: int | None = None, model_hash: str | None = None,
             allow_unaccepted: bool = False) -> LeanKMask:
        """The newest accepted mask (or ``version``), sha256-verified and cached locally.

        ``model_hash`` (the hash of the model it will be applied to) refuses masks learned
        for another model; it is checked against the manifest and the mask file itself.
        Non-accepted versions need ``allow_unaccepted`` (validation jobs).
        """
        return self._fetch(self._select(model_id, version, model_hash, allow_unaccepted))[1]

    def pull_path(self, model_id: str, version: int | None = None, model_hash: str | None = None,
                  allow_unaccepted: bool = False) -> Path:
        """As :meth:`pull`, but the verified cached file's path."""
        return self._fetch(self._select(model_id, version, model_hash, allow_unaccepted))[0]

    def model_ids(self) -> list[str]:
        """Every model id with at least one version (damaged ones too), sorted; a folder whose name is
        not a valid ``org/name`` is skipped, never shown."""
        found = {m.group("model_id") for key in self.store.list("") if (m := layout.MANIFEST.fullmatch(key))}
        return sorted(model_id for model_id in found if _is_model_id(model_id))

    def list(self, model_id: str) -> list[VersionSummary]:
        """One summary per version, oldest first; a damaged version says why instead of failing the list."""
        keys = self.store.list(f"{check_model_id(model_id)}/versions/")
        trust = self.trust()
        out = []
        for version in self._require_versions(model_id, keys):
            reports = sum(1 for k in keys if k.startswith(layout.reports_dir(model_id, version)))
            m = None
            try:
                m = self._manifest(model_id, version)
                out.append(VersionSummary(version, m, self._status(m, trust), reports))
            except DamagedRecord as e:
                out.append(VersionSummary(version, m, None, reports, damaged=str(e)))
        return out

    def show(self, model_id: str, version: int | None = None) -> VersionRecord:
        """Manifest, current status (or why it cannot be trusted), the decision record and every
        report with its trust (the newest version of any status if none is given)."""
        m = self._select(model_id, version, None, allow_unaccepted=True)
        ref = MaskRef(model_id, m.model_hash, m.version)
        trust = self.trust()
        status, problem, decision = None, None, None
        try:
            decision = self._decision(ref)
            status = self._status(m, trust)
        except DamagedRecord as e:
            problem = str(e)
        return VersionRecord(ref, m, status, problem, decision,
                             tuple(self._report_entry(ref, m, n, trust) for n in self._report_ids(ref)))

    def _report_entry(self, ref: MaskRef, manifest: Manifest, report_id: int, trust: Trust) -> ReportEntry:
        try:
            signed = self._report(ref, report_id)
        except DamagedRecord as e:
            return ReportEntry(report_id, None, str(e))
        if trust.policy is None:  # no keys to check against: the damaged policy is the problem
            return ReportEntry(report_id, signed, trust.problem)
        problem = self._report_problem(ref, manifest, signed, trust)
        if problem:
            return ReportEntry(report_id, signed, problem)
        return ReportEntry(report_id, signed, None, trust.policy.verdict(signed.report))

    def _select(self, model_id: str, version: int | None, model_hash: str | None,
                allow_unaccepted: bool) -> Manifest:
        """The manifest pull/resolve/show act on, after the status and model-hash checks."""
        check_model_id(model_id)
        trust = None
        if not allow_unaccepted:
            trust = self.trust()
            trust.require()  # a damaged policy is the registry's problem, not each version's
        if version is not None:
            m = self._manifest(model_id, version)
            _check_hash(m, model_hash)
            if not allow_unaccepted:
                status = self._status(m, trust)
                if status != Status.ACCEPTED:
                    raise RegistryError(f"{model_id}@{version} is {status.value}, not accepted; pull an accepted "
                                        f"version (leank registry list {model_id})")
            return m
        mismatch = None
        for v in reversed(self._require_versions(model_id)):
            try:
                m = self._manifest(model_id, v)
                if not allow_unaccepted and self._status(m, trust) != Status.ACCEPTED:
                    continue
            except DamagedRecord:
                continue  # listed as damaged by `list`; never served
            if model_hash and m.model_hash != model_hash:
                mismatch = mismatch or m
                continue
            return m
        if mismatch is not None:
            _check_hash(mismatch, model_hash)
        raise RegistryError(f"{model_id} has no accepted version yet; validate a candidate (leank validate) first")

    def _fetch(self, manifest: Manifest) -> tuple[Path, LeanKMask]:
        """The mask, verified against the manifest (bytes and the identity written in the file)
        both when cached and when downloaded."""
        sha, ref = manifest.mask_sha256, f"{manifest.model_id}@{manifest.version}"
        path = self.cache_dir / f"{sha}.safetensors"
        try:
            data = path.read_bytes()
            if _sha256(data) == sha:
                return path, _identified(data, manifest)
        except OSError:
            pass  # absent or unreadable: fetch it again
        data = self.store.get(manifest.mask_key)
        if data is None:
            raise RegistryError(f"the mask object of {ref} is missing from {self.store.url}; the registry is damaged")
        if _sha256(data) != sha:
            raise RegistryError(f"the mask of {ref} in {self.store.url} does not match its manifest sha256 "
                                f"(tampered or truncated); refusing it, push the mask again")
        mask = _identified(data, manifest)
        try:
            self.cache_dir.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")  # unique per writer, threads too
            tmp.write_bytes(data)
            tmp.replace(path)
        except OSError as e:
            raise RegistryError(f"cannot write the mask cache {self.cache_dir}: {e.strerror}; set XDG_CACHE_HOME") from None
        return path, mask

    def _versions(self, model_id: str, keys: list[str] | None = None) -> list[int]:
        keys = self.store.list(f"{model_id}/versions/") if keys is None else keys
        return sorted(int(m.group("version")) for k in keys
                      if (m := layout.MANIFEST.fullmatch(k)) and m.group("model_id") == model_id)

    def _require_versions(self, model_id: str, keys: list[str] | None = None) -> list[int]:
        versions = self._versions(model_id, keys)
        if not versions:
            raise RegistryError(f"no masks for model id '{model_id}' in {self.store.url}; check the id or push one")
        return versions

    def _report_ids(self, ref: MaskRef) -> list[int]:
        keys = self.store.list(layout.reports_dir(ref.model_id, ref.version))
        return sorted(int(m.group("report")) for k in keys
                      if (m := layout.REPORT.fullmatch(k)) and m.group("model_id") == ref.model_id)

    def _manifest(self, model_id: str, version: int) -> Manifest:
        data = self.store.get(layout.manifest_key(model_id, version))
        if data is None:
            raise RegistryError(f"{model_id}@{version} does not exist in {self.store.url}; see leank registry list {model_id}")
        where = f"{model_id}@{version} manifest"
        m = Manifest.from_json(data, where)
        if (m.model_id, m.version) != (model_id, version) or m.mask_key != layout.mask_key(model_id, m.mask_sha256):
            raise DamagedRecord(f"{where} names {m.model_id}@{m.version} ({m.mask_key}): it was copied from "
                                "elsewhere; the registry is damaged")
        return m

    def _report(self, ref: MaskRef, report_id: int) -> SignedReport:
        data = self.store.get(layout.report_key(ref.model_id, ref.version, report_id))
        if data is None:
            raise DamagedRecord(f"{ref} has no report {report_id}")
        return SignedReport.from_json(data, f"{ref} report {report_id}")

    def _decision(self, ref: MaskRef) -> Decision | None:
        data = self.store.get(layout.status_key(ref.model_id, ref.version))
        return None if data is None else Decision.from_json(data, f"{ref} status")

    def _status(self, manifest: Manifest, trust: Trust) -> Status:
        """What the version's decision says (candidate if none), after checking the report it
        cites: trusted signature, bound to this version, and (for an acceptance) still a pass
        under the registry's policy. DamagedRecord says why a decision cannot stand."""
        ref = MaskRef(manifest.model_id, version=manifest.version)
        decision = self._decision(ref)
        if decision is None:
            return Status.CANDIDATE
        problem = None
        if decision.mask_sha256 != manifest.mask_sha256:
            problem = f"its status names mask {decision.mask_sha256[:12]}, not {manifest.mask_sha256[:12]}"
        if problem is None:
            policy = trust.require()
            try:
                signed = self._report(ref, decision.report_id)
                problem = self._report_problem(ref, manifest, signed, trust)
            except DamagedRecord as e:
                problem = str(e).removeprefix(f"{ref} ")
            if problem is None and decision.status == Status.ACCEPTED:
                verdict = policy.verdict(signed.report)
                if not verdict.accepted:
                    problem = (f"under the registry's policy report {decision.report_id} is {verdict.decision}: "
                               f"{(verdict.reasons or ('no reason given',))[0]}")
        if problem:
            raise DamagedRecord(f"{ref} is marked {decision.status.value} but {problem}: that decision is damaged "
                                "and the version is not served; re-push the mask and validate it")
        return decision.status

    def _report_problem(self, ref: MaskRef, manifest: Manifest, signed: SignedReport, trust: Trust) -> str | None:
        """Why ``signed`` is no evidence about ``ref``'s version for this reader, or None if it is."""
        if signed.key not in trust.keys:
            return (f"it is signed by key {short(signed.key)}, which is not among {trust.whose}"
                    f" ({', '.join(map(short, sorted(trust.keys))) or 'none'})")
        if not signed.signature_ok():
            return "its signature does not match its content (edited after signing)"
        r = signed.report
        if (r.model_id, r.version) != (ref.model_id, ref.version):
            return f"it judged {r.model_id}@{r.version}, not this version (copied from elsewhere)"
        if r.mask_sha256 != manifest.mask_sha256:
            return (f"the report judged mask {r.mask_sha256[:12]}, not {ref}'s mask {manifest.mask_sha256[:12]}; "
                    "validate that version's mask")
        if r.model_hash != manifest.model_hash:
            return f"it judged model hash {r.model_hash[:12]}, the manifest says {manifest.model_hash[:12]}"
        if r.manifest_sha256 != manifest.sha256():
            return "the manifest changed after the report was signed"
        return None


def _identified(data: bytes, manifest: Manifest) -> LeanKMask:
    """The mask in ``data``, which must name the manifest's model id and model hash."""
    ref = f"{manifest.model_id}@{manifest.version}"
    try:
        mask = LeanKMask.from_bytes(data)
    except ValueError as e:
        raise DamagedRecord(f"the mask file of {ref} is not a readable mask ({e}); the registry is damaged") from None
    if (mask.model_id, mask.model_hash) != (manifest.model_id, manifest.model_hash):
        raise DamagedRecord(f"the mask file of {ref} names model {mask.model_id} hash {mask.model_hash[:12]}, its "
                            f"manifest {manifest.model_id} hash {manifest.model_hash[:12]}; refusing it")
    return mask


def _is_model_id(text: str) -> bool:
    try:
        return bool(check_model_id(text))
    except ValueError:
        return False


def _check_hash(manifest: Manifest, model_hash: str | None) -> None:
    if model_hash and manifest.model_hash != model_hash:
        raise RegistryError(
            f"{manifest.model_id}@{manifest.version}: mask was learned for model hash "
            f"{manifest.model_hash}, this model is {model_hash}; learn a mask for this model"
        )
