"""The mask registry: versioned, immutable, integrity-checked masks in a local directory or S3."""

from .errors import RegistryError
from .ids import MaskRef, check_model_id, parse_ref
from .records import DamagedRecord, Decision, Manifest, Status
from .registry import Judgement, MaskRegistry, VersionRecord, VersionSummary
from .report import Gate, Report

__all__ = [
    "DamagedRecord", "Decision", "Gate", "Judgement", "Manifest", "MaskRef", "MaskRegistry", "RegistryError",
    "Report", "Status", "VersionRecord", "VersionSummary", "check_model_id", "parse_ref",
]
