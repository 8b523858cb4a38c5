"""Where the registry keeps each object: every key is built (and recognised) here.

    {org}/{name}/masks/{sha256}.safetensors              mask bytes, content addressed
    {org}/{name}/versions/{N:06d}/manifest.json          version N exists once this exists
    {org}/{name}/versions/{N:06d}/reports/{k:04d}.json   signed validation reports, numbered
    {org}/{name}/versions/{N:06d}/status.json            the decision (absent: candidate)
    {org}/{name}/versions/{N:06d}/README.md              model card, written at acceptance (for people; never read)
    _registry/policy/{n:06d}.json                        the acceptance policy, newest number wins

Numbers are zero-padded for readable listings; larger numbers simply have more digits (every
reader parses them as integers). ``_registry`` cannot clash with a model id: ids start with a
letter or digit.
"""

from __future__ import annotations

import re

MANIFEST = re.compile(r"(?P<model_id>[^/]+/[^/]+)/versions/(?P<version>\d{6,})/manifest\.json")
REPORT = re.compile(r"(?P<model_id>[^/]+/[^/]+)/versions/(?P<version>\d{6,})/reports/(?P<report>\d{4,})\.json")
MASK = re.compile(r"(?P<model_id>[^/]+/[^/]+)/masks/(?P<sha>[0-9a-f]{64})\.safetensors")
POLICY_DIR = "_registry/policy/"
POLICY = re.compile(r"_registry/policy/(?P<number>\d{6,})\.json")


def version_dir(model_id: str, version: int) -> str:
    return f"{model_id}/versions/{version:06d}/"


def manifest_key(model_id: str, version: int) -> str:
    return version_dir(model_id, version) + "manifest.json"


def status_key(model_id: str, version: int) -> str:
    return version_dir(model_id, version) + "status.json"


def card_key(model_id: str, version: int) -> str:
    return version_dir(model_id, version) + "README.md"


def reports_dir(model_id: str, version: int) -> str:
    return version_dir(model_id, version) + "reports/"


def report_key(model_id: str, version: int, report_id: int) -> str:
    return f"{reports_dir(model_id, version)}{report_id:04d}.json"


def mask_key(model_id: str, sha: str) -> str:
    return f"{model_id}/masks/{sha}.safetensors"


def policy_key(number: int) -> str:
    return f"{POLICY_DIR}{number:06d}.json"
