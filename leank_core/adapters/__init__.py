"""What LeanK knows about each supported architecture family; importing this package registers them."""

from leank_core.adapters import llama, mistral, qwen2  # noqa: F401  (registration)
from leank_core.adapters.base import ARCHITECTURES, Architecture, architecture_of

__all__ = ["ARCHITECTURES", "Architecture", "architecture_of"]
