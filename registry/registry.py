"""MaskRegistry: append-only, versioned masks per model id, accepted only by judging a report.

Layout under the store root (every object is created once and never rewritten):

    {org}/{name}/masks/{sha256}.safetensors              mask bytes, content addressed
    {org}/{name}/versions/{N:06d}/manifest.json          version N exists once this exists
    {org}/{name}/versions/{N:06d}/reports/{k:04d}.json   validation reports, numbered
    {org}/{name}/versions/{N:06d}/status.json            the decision (absent: candidate)
    {org}/{name}/versions/{N:06d}/README.md              model card, written at acceptance (for people; never read)

Why this shape:
* The manifest is the commit point and is written last: an upload that dies half way
  leaves at most an unreferenced mask object, never a visible version.
* Version numbers are claimed by conditionally creating the manifest, so concurrent
  pushers each get their own number and none overwrites another.
* Numbers are per model id (``org/name@3`` is unambiguous); each manifest records the
  model hash the mask was learned for, and pull refuses a mask for another hash.
* A decision is a conditionally created object too, so it is made once and stands. The
  one way to make it is :meth:`MaskRegistry.judge`, which stores the report and decides
  from it; reads check an acceptance against its report again, so an "accepted" written by
  anything else (a hand edit, another tool) is refused, never served.
* Every object read is parsed into a typed record (``records.py``, ``report.py``) and bound
  to where it sits (a manifest must name the model id and version of its own folder); a
  damaged version is reported as such without hiding the healthy ones.
"""

from __future__ import annotations

import hashlib
import os
import re
import uuid
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

from leank_core.mask import LeanKMask

from .card import model_card
from .errors import RegistryError
from .ids import MaskRef, check_model_id
from .records import DamagedRecord, Decision, Manifest, Status
from .report import Report
from .store import open_store

_MANIFEST = re.compile(r"versions/(\d{6,})/manifest\.json")
_MODEL_MANIFEST = re.compile(r"([^/]+/[^/]+)/versions/\d{6,}/manifest\.json")
_REPORT = re.compile(r"versions/(\d{6,})/reports/(\d{4,})\.json")


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


def _version_dir(model_id: str, version: int) -> str:
    return f"{model_id}/versions/{version:06d}/"


def _report_key(ref: MaskRef, report_id: int) -> str:
    return f"{_version_dir(ref.model_id, ref.version)}reports/{report_id:04d}.json"


@dataclass(frozen=True)
class Judgement:
    """What :meth:`MaskRegistry.judge` did: the report's number and the version's status after it."""

    ref: MaskRef
    report_id: int
    status: Status
    decided_now: bool  # False: the version had been judged before and keeps that decision


@dataclass(frozen=True)
class VersionSummary:
    """One line of ``list``: a healthy version's manifest and status, or why it is damaged."""

    version: int
    manifest: Manifest | None
    status: Status | None
    reports: int
    damaged: str | None = None

    def to_dict(self) -> dict[str, Any]:
        if self.manifest is None:
            return {"version": self.version, "status": "damaged", "damaged": self.damaged}
        m = self.manifest
        return {"version": self.version, "status": self.status.value, "model_hash": m.model_hash,
                "mask_sha256": m.mask_sha256, "ratio": m.ratio, "align": m.align, "created": m.created,
                "reports": self.reports}


@dataclass(frozen=True)
class VersionRecord:
    """Everything about one version (``show``): manifest, status, decision and every report."""

    ref: MaskRef
    manifest: Manifest
    status: Status
    decision: Decision | None
    reports: tuple[tuple[int, Report], ...]

    def to_dict(self) -> dict[str, Any]:
        decision = None if self.decision is None else {
            "status": self.decision.status.value, "report_id": self.decision.report_id,
            "mask_sha256": self.decision.mask_sha256, "decided": self.decision.decided}
        return {"ref": str(self.ref), "manifest": self.manifest.to_dict(), "status": self.status.value,
                "decision": decision, "reports": [{"id": n, "report": r.to_dict()} for n, r in self.reports]}


class MaskRegistry:
    """Push, judge and pull masks in a local directory or ``s3://bucket/prefix``."""

    def __init__(self, url: str | None = None) -> None:
        self.url = url or default_url()
        self.store = open_store(self.url)
        self.cache_dir = cache_root() / "masks"

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
                         mask_key=_mask_key(mask.model_id, sha), version=1, shape=mask.shape,
                         ratio=float(mask.ratio), align=mask.align, sink=mask.sink, recent=mask.recent,
                         k_fraction_kept=mask.k_fraction_kept, code_version=code_version(), created=_now(),
                         provenance=dict(provenance or {}))
        draft.to_json()  # refuse non-JSON provenance before anything is written
        self._put_mask(draft.mask_key, data, sha)
        version = max(self._versions(mask.model_id), default=0) + 1
        while not self.store.create(_version_dir(mask.model_id, version) + "manifest.json",
                                    replace(draft, version=version).to_json()):
            version += 1  # another pusher claimed this number first
        return MaskRef(mask.model_id, mask.model_hash, version)

    def judge(self, ref: MaskRef, report: Report) -> Judgement:
        """Attach ``report`` to ``ref``'s version and, if the version is a candidate, decide it.

        The report must judge exactly this version's mask bytes. A version already decided
        keeps its decision (decisions are final); the new report is still stored beside the
        earlier ones.
        """
        manifest = self.manifest(ref)
        if report.mask_sha256 != manifest.mask_sha256:
            raise ValueError(f"the report judged mask {report.mask_sha256[:12]}, not {ref}'s mask "
                             f"{manifest.mask_sha256[:12]}; validate that version's mask")
        report_id = self._attach(ref, report)
        current = self._status(manifest)
        if current != Status.CANDIDATE:
            return Judgement(ref, report_id, current, decided_now=False)
        status = Status.ACCEPTED if report.passed else Status.REJECTED
        decision = Decision(status, report_id, manifest.mask_sha256, _now())
        if not self.store.create(_version_dir(ref.model_id, ref.version) + "status.json", decision.to_json()):
            return Judgement(ref, report_id, self._status(manifest), decided_now=False)  # a concurrent judge won
        if status == Status.ACCEPTED:
            self.store.create(_version_dir(ref.model_id, ref.version) + "README.md",
                              model_card(self.show(ref.model_id, ref.version)).encode())
        return Judgement(ref, report_id, status, decided_now=True)

    def _attach(self, ref: MaskRef, report: Report) -> int:
        prefix = _version_dir(ref.model_id, ref.version) + "reports/"
        number = max(self._report_ids(ref), default=0) + 1
        while not self.store.create(f"{prefix}{number:04d}.json", report.to_json()):
            number += 1
        return number

    def _put_mask(self, key: str, data: bytes, sha: str) -> None:
        if self.store.create(key, data):
            return
        existing = self.store.get(key)  # same digest, so normally the same bytes pushed before
        if existing is None or _sha256(existing) != sha:
            raise RegistryError(f"{self.store.url}/{key} exists with other content; the registry is damaged, repair that object")

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
        for another model. Non-accepted versions need ``allow_unaccepted`` (validation jobs).
        """
        return LeanKMask.from_bytes(self._fetch(self._select(model_id, version, model_hash, allow_unaccepted))[1])

    def pull_path(self, model_id: str, version: int | None = None, model_hash: str | None = None,
                  allow_unaccepted: bool = False) -> Path:
        """As :meth:`pull`, but the verified cached file's path."""
        return self._fetch(self._select(model_id, version, model_hash, allow_unaccepted))[0]

    def model_ids(self) -> list[str]:
        """Every model id with at least one version (damaged ones too), sorted; a folder whose name is
        not a valid ``org/name`` is skipped, never shown."""
        found = {m.group(1) for key in self.store.list("") if (m := _MODEL_MANIFEST.fullmatch(key))}
        return sorted(model_id for model_id in found if _is_model_id(model_id))

    def list(self, model_id: str) -> list[VersionSummary]:
        """One summary per version, oldest first; a damaged version says why instead of failing the list."""
        keys = self.store.list(f"{check_model_id(model_id)}/versions/")
        out = []
        for version in self._require_versions(model_id, keys):
            reports = sum(1 for k in keys if k.startswith(_version_dir(model_id, version) + "reports/"))
            try:
                m = self._manifest(model_id, version)
                out.append(VersionSummary(version, m, self._status(m), reports))
            except DamagedRecord as e:
                out.append(VersionSummary(version, None, None, reports, damaged=str(e)))
        return out

    def show(self, model_id: str, version: int | None = None) -> VersionRecord:
        """Manifest, current status, the decision record and every report of one version
        (the newest version of any status if none is given)."""
        m = self._select(model_id, version, None, allow_unaccepted=True)
        ref = MaskRef(model_id, m.model_hash, m.version)
        return VersionRecord(ref, m, self._status(m), self._decision(ref),
                             tuple((n, self._report(ref, n)) for n in self._report_ids(ref)))

    def _select(self, model_id: str, version: int | None, model_hash: str | None,
                allow_unaccepted: bool) -> Manifest:
        """The manifest pull/resolve/show act on, after the status and model-hash checks."""
        check_model_id(model_id)
        if version is not None:
            m = self._manifest(model_id, version)
            _check_hash(m, model_hash)
            status = self._status(m)
            if status != Status.ACCEPTED and not allow_unaccepted:
                raise RegistryError(f"{model_id}@{version} is {status.value}, not accepted; pull an accepted version "
                                    f"(leank registry list {model_id})")
            return m
        mismatch = None
        for v in reversed(self._require_versions(model_id)):
            try:
                m = self._manifest(model_id, v)
                if not allow_unaccepted and self._status(m) != Status.ACCEPTED:
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

    def _fetch(self, manifest: Manifest) -> tuple[Path, bytes]:
        """The mask bytes, verified against the manifest both when cached and when downloaded."""
        sha, ref = manifest.mask_sha256, f"{manifest.model_id}@{manifest.version}"
        path = self.cache_dir / f"{sha}.safetensors"
        try:
            data = path.read_bytes()
            if _sha256(data) == sha:
                return path, data
        except OSError:
            pass  # absent or unreadable: fetch it again
        data = self.store.get(manifest.mask_key)
        if data is None:
            raise RegistryError(f"the mask object of {ref} is missing from {self.store.url}; the registry is damaged")
        if _sha256(data) != sha:
            raise RegistryError(f"the mask of {ref} in {self.store.url} does not match its manifest sha256 "
                                f"(tampered or truncated); refusing it, push the mask again")
        try:
            self.cache_dir.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")  # unique per writer, threads too
            tmp.write_bytes(data)
            tmp.replace(path)
        except OSError as e:
            raise RegistryError(f"cannot write the mask cache {self.cache_dir}: {e.strerror}; set XDG_CACHE_HOME") from None
        return path, data

    def _versions(self, model_id: str, keys: list[str] | None = None) -> list[int]:
        keys = self.store.list(f"{model_id}/versions/") if keys is None else keys
        prefix = f"{model_id}/"
        return sorted(int(m.group(1)) for k in keys if (m := _MANIFEST.fullmatch(k.removeprefix(prefix))))

    def _require_versions(self, model_id: str, keys: list[str] | None = None) -> list[int]:
        versions = self._versions(model_id, keys)
        if not versions:
            raise RegistryError(f"no masks for model id '{model_id}' in {self.store.url}; check the id or push one")
        return versions

    def _report_ids(self, ref: MaskRef) -> list[int]:
        keys = self.store.list(_version_dir(ref.model_id, ref.version) + "reports/")
        prefix = f"{ref.model_id}/"
        return sorted(int(m.group(2)) for k in keys if (m := _REPORT.fullmatch(k.removeprefix(prefix))))

    def _manifest(self, model_id: str, version: int) -> Manifest:
        key = _version_dir(model_id, version) + "manifest.json"
        data = self.store.get(key)
        if data is None:
            raise RegistryError(f"{model_id}@{version} does not exist in {self.store.url}; see leank registry list {model_id}")
        where = f"{model_id}@{version} manifest"
        m = Manifest.from_json(data, where)
        if (m.model_id, m.version) != (model_id, version) or m.mask_key != _mask_key(model_id, m.mask_sha256):
            raise DamagedRecord(f"{where} names {m.model_id}@{m.version} ({m.mask_key}): it was copied from "
                                "elsewhere; the registry is damaged")
        return m

    def _report(self, ref: MaskRef, report_id: int) -> Report:
        data = self.store.get(_report_key(ref, report_id))
        if data is None:
            raise RegistryError(f"{ref} has no report {report_id}")
        return Report.from_json(data, f"{ref} report {report_id}")

    def _decision(self, ref: MaskRef) -> Decision | None:
        data = self.store.get(_version_dir(ref.model_id, ref.version) + "status.json")
        return None if data is None else Decision.from_json(data, f"{ref} status")

    def _status(self, manifest: Manifest) -> Status:
        """What the version's decision says (candidate if none), after re-checking an
        acceptance against the report it cites."""
        ref = MaskRef(manifest.model_id, version=manifest.version)
        decision = self._decision(ref)
        if decision is None:
            return Status.CANDIDATE
        if decision.status == Status.ACCEPTED:
            problem = self._acceptance_problem(ref, manifest, decision.report_id)
            if problem:
                raise DamagedRecord(f"{ref} is marked accepted but {problem}; the registry is damaged, have its "
                                    "owner inspect that version's status.json")
        return decision.status

    def _acceptance_problem(self, ref: MaskRef, manifest: Manifest, report_id: int) -> str | None:
        """Why report ``report_id`` cannot accept this version, or None if it does."""
        try:
            report = self._report(ref, report_id)
        except RegistryError as e:
            return str(e).removeprefix(f"{ref} ")
        if not report.passed:
            return f"report {report_id} did not pass"
        if report.mask_sha256 != manifest.mask_sha256:
            return (f"report {report_id} judged mask {report.mask_sha256[:12]}, "
                    f"not this version's mask {manifest.mask_sha256[:12]}")
        return None


def _is_model_id(text: str) -> bool:
    try:
        return bool(check_model_id(text))
    except ValueError:
        return False


def _mask_key(model_id: str, sha: str) -> str:
    return f"{model_id}/masks/{sha}.safetensors"


def _check_hash(manifest: Manifest, model_hash: str | None) -> None:
    if model_hash and manifest.model_hash != model_hash:
        raise RegistryError(
            f"{manifest.model_id}@{manifest.version}: mask was learned for model hash "
            f"{manifest.model_hash}, this model is {model_hash}; learn a mask for this model"
        )
