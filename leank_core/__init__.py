"""LeanK as a library: learn a static K-channel mask for a causal LM and apply it.

``leank_core`` is plain PyTorch + transformers (no Ray, DeepSpeed or S3 here); the
pipelines and the registry build on it. The rooms are listed in docs/architecture.md.
"""

from leank_core.adapters import Architecture, architecture_of
from leank_core.cache import LeanKCache
from leank_core.compat import cache_kwargs
from leank_core.engine import LeanKEngine
from leank_core.hook import apply, applied
from leank_core.mask import LeanKMask, quantize_importance
from leank_core.memory import CacheMemory, cache_memory, memory_report
from leank_core.model_hash import model_hash
from leank_core.pull import MaskSource, pull_and_apply

__all__ = [
    "Architecture",
    "CacheMemory",
    "LeanKCache",
    "LeanKEngine",
    "LeanKMask",
    "MaskSource",
    "apply",
    "applied",
    "architecture_of",
    "cache_kwargs",
    "cache_memory",
    "memory_report",
    "model_hash",
    "pull_and_apply",
    "quantize_importance",
]
