"""MaskRegistry: append-only, versioned masks per model id, accepted only through a passing report.

Layout under the store root (every object is created once and never rewritten):

    {org}/{name}/masks/{sha256}.safetensors              mask bytes, content addressed
    {org}/{name}/versions/{N:06d}/manifest.json          version N exists once this exists
    {org}/{name}/versions/{N:06d}/reports/{k:04d}.json   validation reports, numbered
    {org}/{name}/versions/{N:06d}/status.json            the decision (absent: candidate)

Why this shape:
* The manifest is the commit point and is written last: an upload that dies half way
  leaves at most an unreferenced mask object, never a visible version.
* Version numbers are claimed by conditionally creating the manifest, so concurrent
  pushers each get their own number and none overwrites another.
* Numbers are per model id (``org/name@3`` is unambiguous); each manifest records the
  model hash the mask was learned for, and pull refuses a mask for another hash.
* A decision is a conditionally created object too, so it is made once and stands; the
  only way to write "accepted" is :meth:`MaskRegistry.accept`, which demands a passing
  report for exactly these mask bytes. Reads check that again, so an "accepted" written
  by anything else (a hand edit, another tool) is refused, never served.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import uuid
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

from leank_core.mask import LeanKMask

from .errors import RegistryError
from .ids import MaskRef, check_model_id
from .store import open_store

CANDIDATE, ACCEPTED, REJECTED = "candidate", "accepted", "rejected"
_MANIFEST = re.compile(r"versions/(\d{6})/manifest\.json")
_REPORT = re.compile(r"versions/(\d{6})/reports/(\d{4,})\.json")


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


class MaskRegistry:
    """Push, validate-gate and pull masks in a local directory or ``s3://bucket/prefix``."""

    def __init__(self, url: str | None = None) -> None:
        self.url = url or default_url()
        self.store = open_store(self.url)
        self.cache_dir = cache_root() / "masks"

    # -- writing -----------------------------------------------------------------------
    def push(self, mask: LeanKMask, manifest: dict[str, Any] | None = None) -> MaskRef:
        """Store ``mask`` as the next version of its model id, status candidate.

        ``manifest`` adds provenance (``training_config``, ``data_recipe``, ...); the
        registry fills the facts it can check itself and refuses caller values for them.
        """
        check_model_id(mask.model_id)
        if manifest is not None and not isinstance(manifest, dict):
            raise ValueError(f"the manifest must be a JSON object (dict), got {type(manifest).__name__}")
        if not mask.model_hash:
            raise ValueError("the mask has no model hash; set it (LeanKMask.with_identity) before pushing")
        data = mask.to_bytes()
        record = _build_manifest(mask, _sha256(data), dict(manifest or {}))
        self._put_mask(record["mask_key"], data, record["mask_sha256"])
        version = max(self._versions(mask.model_id), default=0) + 1
        while not self.store.create(_version_dir(mask.model_id, version) + "manifest.json",
                                    _json({**record, "version": version})):
            version += 1  # another pusher claimed this number first
        return MaskRef(mask.model_id, mask.model_hash, version)

    def attach_report(self, ref: MaskRef, report: dict[str, Any]) -> int:
        """Store a new numbered, immutable report for ``ref``'s version; returns its number."""
        if not isinstance(report, dict) or not isinstance(report.get("mask_sha256"), str) \
                or not isinstance(report.get("passed"), bool):
            raise ValueError("a validation report needs 'mask_sha256' (str) and 'passed' (bool)")
        self._manifest_for(ref)
        prefix = _version_dir(ref.model_id, ref.version) + "reports/"
        number = max(self._reports(ref), default=0) + 1
        while not self.store.create(f"{prefix}{number:04d}.json", _json(report)):
            number += 1
        return number

    def accept(self, ref: MaskRef, report_id: int) -> None:
        """candidate → accepted, only on a passing report for exactly this version's mask bytes."""
        manifest = self._manifest_for(ref)
        problem = self._acceptance_problem(manifest, report_id)
        if problem:
            raise RegistryError(f"cannot accept {ref}: {problem}; attach a passing validation report for this version")
        self._decide(ref, manifest, ACCEPTED, report_id)

    def reject(self, ref: MaskRef, report_id: int) -> None:
        """candidate → rejected, citing the report that judged it."""
        manifest = self._manifest_for(ref)
        self._report(ref, report_id)
        self._decide(ref, manifest, REJECTED, report_id)

    def _put_mask(self, key: str, data: bytes, sha: str) -> None:
        if self.store.create(key, data):
            return
        existing = self.store.get(key)  # same digest, so normally the same bytes pushed before
        if existing is None or _sha256(existing) != sha:
            raise RegistryError(f"{self.store.url}/{key} exists with other content; the registry is damaged, repair that object")

    def _acceptance_problem(self, manifest: dict[str, Any], report_id: Any) -> str | None:
        """Why report ``report_id`` cannot accept this version, or None if it can: it must
        exist, have passed, and have judged exactly the version's mask bytes."""
        ref = MaskRef(manifest["model_id"], version=manifest["version"])
        report = self._json_object(_report_key(ref, report_id)) if isinstance(report_id, int) else None
        if report is None:
            return f"there is no report {report_id}"
        if report.get("passed") is not True:
            return f"report {report_id} did not pass"
        if report.get("mask_sha256") != manifest["mask_sha256"]:
            return (f"report {report_id} judged mask {str(report.get('mask_sha256'))[:12]}, "
                    f"not this version's mask {manifest['mask_sha256'][:12]}")
        return None

    def _decide(self, ref: MaskRef, manifest: dict[str, Any], status: str, report_id: int) -> None:
        decision = {"status": status, "report_id": report_id, "mask_sha256": manifest["mask_sha256"], "decided": _now()}
        if not self.store.create(_version_dir(ref.model_id, ref.version) + "status.json", _json(decision)):
            current = self._status(manifest)
            raise RegistryError(f"{ref} is already {current}; decisions are final, push a new version to try again")

    # -- reading -----------------------------------------------------------------------
    def resolve(self, ref: MaskRef) -> MaskRef:
        """Fill in version and hash; without a version, the newest of any status (what a
        validation job validates)."""
        m = self._select(ref.model_id, ref.version, ref.model_hash or None, allow_unaccepted=True)
        return MaskRef(m["model_id"], m["model_hash"], m["version"])

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

    def list(self, model_id: str) -> list[dict[str, Any]]:
        """One summary per version, oldest first."""
        keys = self.store.list(f"{check_model_id(model_id)}/versions/")
        out = []
        for version in self._require_versions(model_id, keys):
            m = self._manifest(model_id, version)
            reports = sum(1 for k in keys if k.startswith(_version_dir(model_id, version) + "reports/"))
            out.append({"version": version, "status": self._status(m), "model_hash": m["model_hash"],
                        "mask_sha256": m["mask_sha256"], "ratio": m["ratio"], "align": m["align"],
                        "created": m["created"], "reports": reports})
        return out

    def show(self, model_id: str, version: int | None = None) -> dict[str, Any]:
        """Manifest, current status, the decision record and every report of one version
        (the newest version of any status if none is given)."""
        m = self._select(model_id, version, None, allow_unaccepted=True)
        ref = MaskRef(model_id, m["model_hash"], m["version"])
        return {"ref": str(ref), "manifest": m, "status": self._status(m),
                "decision": self._decision(model_id, ref.version),
                "reports": [{"id": n, "report": self._report(ref, n)} for n in self._reports(ref)]}

    def _select(self, model_id: str, version: int | None, model_hash: str | None,
                allow_unaccepted: bool) -> dict[str, Any]:
        """The manifest pull/resolve/show act on, after the status and model-hash checks."""
        check_model_id(model_id)
        if version is not None:
            m = self._manifest(model_id, version)
            _check_hash(m, model_hash)
            status = self._status(m)
            if status != ACCEPTED and not allow_unaccepted:
                raise RegistryError(f"{model_id}@{version} is {status}, not accepted; pull an accepted version "
                                    f"(leank registry list {model_id})")
            return m
        mismatch = None
        for v in reversed(self._require_versions(model_id)):
            m = self._manifest(model_id, v)
            if not allow_unaccepted and self._status(m) != ACCEPTED:
                continue
            if model_hash and m["model_hash"] != model_hash:
                mismatch = mismatch or m
                continue
            return m
        if mismatch is not None:
            _check_hash(mismatch, model_hash)
        raise RegistryError(f"{model_id} has no accepted version yet; validate a candidate (leank validate) first")

    def _fetch(self, manifest: dict[str, Any]) -> tuple[Path, bytes]:
        """The mask bytes, verified against the manifest both when cached and when downloaded."""
        sha, ref = manifest["mask_sha256"], f"{manifest['model_id']}@{manifest['version']}"
        path = self.cache_dir / f"{sha}.safetensors"
        try:
            data = path.read_bytes()
            if _sha256(data) == sha:
                return path, data
        except OSError:
            pass  # absent or unreadable: fetch it again
        data = self.store.get(manifest["mask_key"])
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

    def _reports(self, ref: MaskRef) -> list[int]:
        keys = self.store.list(_version_dir(ref.model_id, ref.version) + "reports/")
        prefix = f"{ref.model_id}/"
        return sorted(int(m.group(2)) for k in keys if (m := _REPORT.fullmatch(k.removeprefix(prefix))))

    def _manifest_for(self, ref: MaskRef) -> dict[str, Any]:
        if ref.version is None:
            raise ValueError(f"{ref} names no version; use org/name@VERSION")
        m = self._manifest(ref.model_id, ref.version)
        _check_hash(m, ref.model_hash or None)
        return m

    def _manifest(self, model_id: str, version: int) -> dict[str, Any]:
        m = self._json_object(_version_dir(model_id, version) + "manifest.json")
        if m is None:
            raise RegistryError(f"{model_id}@{version} does not exist in {self.store.url}; see leank registry list {model_id}")
        return m

    def _report(self, ref: MaskRef, report_id: int) -> dict[str, Any]:
        report = self._json_object(_report_key(ref, report_id))
        if report is None:
            raise RegistryError(f"{ref} has no report {report_id}; attach the validation report first")
        return report

    def _decision(self, model_id: str, version: int) -> dict[str, Any] | None:
        return self._json_object(_version_dir(model_id, version) + "status.json")

    def _status(self, manifest: dict[str, Any]) -> str:
        """What the version's decision says (candidate if none), after re-checking an
        acceptance against its report."""
        decision = self._decision(manifest["model_id"], manifest["version"])
        if decision is None:
            return CANDIDATE
        status = decision.get("status")
        if status == ACCEPTED:
            problem = self._acceptance_problem(manifest, decision.get("report_id"))
            if problem:
                raise RegistryError(f"{manifest['model_id']}@{manifest['version']} is marked accepted but {problem}; "
                                    f"the registry is damaged, have its owner inspect that version's status.json")
        return status

    def _json_object(self, key: str) -> dict[str, Any] | None:
        data = self.store.get(key)
        if data is None:
            return None
        try:
            return json.loads(data)
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise RegistryError(f"{self.store.url}/{key} is not valid JSON; the registry is damaged") from None


def _report_key(ref: MaskRef, report_id: int) -> str:
    return f"{_version_dir(ref.model_id, ref.version)}reports/{int(report_id):04d}.json"


def _check_hash(manifest: dict[str, Any], model_hash: str | None) -> None:
    if model_hash and manifest["model_hash"] != model_hash:
        raise RegistryError(
            f"{manifest['model_id']}@{manifest['version']}: mask was learned for model hash "
            f"{manifest['model_hash']}, this model is {model_hash}; learn a mask for this model"
        )


def _build_manifest(mask: LeanKMask, sha: str, extra: dict[str, Any]) -> dict[str, Any]:
    """The caller's provenance plus the facts the registry fills (and will not take from the caller)."""
    filled = {
        "model_id": mask.model_id, "model_hash": mask.model_hash, "mask_sha256": sha,
        "mask_key": f"{mask.model_id}/masks/{sha}.safetensors", "shape": list(mask.shape),
        "ratio": float(mask.ratio), "align": mask.align, "sink": mask.sink, "recent": mask.recent,
        "k_fraction_kept": mask.k_fraction_kept, "code_version": code_version(), "created": _now(),
    }
    clash = sorted(k for k in extra if k in filled or k in ("status", "version"))
    if clash:
        raise ValueError(f"manifest keys {', '.join(clash)} are set by the registry; leave them out")
    record = {**extra, **filled}
    _json(record)
    return record


def _json(obj: dict[str, Any]) -> bytes:
    try:
        return json.dumps(obj, sort_keys=True, indent=1).encode()
    except (TypeError, ValueError) as e:
        raise ValueError(f"manifest/report must be plain JSON data: {e}") from None
