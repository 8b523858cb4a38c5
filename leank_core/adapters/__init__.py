"""Per-architecture adapters; importing this package registers all of them."""

from leank_core.adapters import llama, mistral, qwen2  # noqa: F401  (registration)
from leank_core.adapters.base import ADAPTERS, AttentionAdapter, adapter_for

__all__ = ["ADAPTERS", "AttentionAdapter", "adapter_for"]
