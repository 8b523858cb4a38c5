"""The mask registry: versioned, immutable, integrity-checked masks in a local directory or S3."""

from .errors import RegistryError
from .ids import MaskRef, check_model_id, parse_ref
from .registry import MaskRegistry

__all__ = ["MaskRef", "MaskRegistry", "RegistryError", "check_model_id", "parse_ref"]
