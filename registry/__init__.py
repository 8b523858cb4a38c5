"""The mask registry: versioned, immutable, integrity-checked masks in a local directory or S3,
accepted only on a validation report signed by a trusted key (docs/trust.md)."""

from .errors import RegistryError
from .ids import MaskRef, check_model_id, parse_ref
from .policy import DEFAULT_POLICY, Policy, Suite
from .records import DamagedRecord, Decision, Manifest, Status
from .registry import Judgement, MaskRegistry, ReportEntry, Trust, VersionRecord, VersionSummary
from .gate import GatePolicy, PairedSample, Verdict
from .report import Report, SignedReport
from .signing import Signer, generate_key, load_signer
from .urls import redact_text, redact_url

__all__ = [
    "DEFAULT_POLICY", "DamagedRecord", "Decision", "GatePolicy", "Judgement", "Manifest", "MaskRef", "MaskRegistry",
    "PairedSample", "Policy", "RegistryError", "Report", "ReportEntry", "SignedReport", "Signer", "Status", "Suite",
    "Trust", "Verdict",
    "VersionRecord", "VersionSummary", "check_model_id", "generate_key", "load_signer", "parse_ref", "redact_text",
    "redact_url",
]
