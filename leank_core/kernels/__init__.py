"""Decode attention over a LeanK cache layer: one dispatch function, one semantics.

``decode_attention`` is the only entry point the cache calls. It picks the fused Triton
kernel where it can run and the PyTorch reference (identical semantics, see
``reference.py``) everywhere else.
"""

from __future__ import annotations

import functools
import importlib.util

import torch

from leank_core.kernels.layout import DecodeState, LayerLayout
from leank_core.kernels.reference import decode_attention_reference

__all__ = ["DecodeState", "LayerLayout", "decode_attention", "decode_attention_reference"]


@functools.cache
def _triton_available() -> bool:
    return importlib.util.find_spec("triton") is not None


def decode_attention(q: torch.Tensor, state: DecodeState, layout: LayerLayout, scale: float) -> torch.Tensor:
    """Attention output ``[B, H, D]`` for one decode query ``q`` ``[B, H, D]``."""
    if q.is_cuda and _triton_available():
        from leank_core.kernels.decode_launch import decode_attention_triton  # triton only where it runs

        return decode_attention_triton(q, state, layout, scale)
    return decode_attention_reference(q, state, layout, scale)
