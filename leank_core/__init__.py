"""LeanK as a library: learn a static K-channel mask for a causal LM and apply it.

``leank_core`` is plain PyTorch + transformers (no Ray, DeepSpeed or S3 here); the
pipelines and the registry build on it.
"""

from leank_core.adapters import AttentionAdapter, adapter_for
from leank_core.cache import CacheMemory, LeanKCache, apply, cache_kwargs, memory_report
from leank_core.mask import LeanKMask, quantize_importance
from leank_core.model_hash import model_hash

__all__ = [
    "AttentionAdapter",
    "CacheMemory",
    "LeanKCache",
    "LeanKMask",
    "adapter_for",
    "apply",
    "cache_kwargs",
    "memory_report",
    "model_hash",
    "quantize_importance",
]
