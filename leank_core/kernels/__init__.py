"""Decode attention over a LeanK cache layer: one dispatch function, one semantics.

``decode_attention`` is the only entry point the cache calls. It picks the fused Triton
kernel where it can run and the PyTorch reference (identical semantics, see
``reference.py``) everywhere else.
"""

from __future__ import annotations

import torch

from leank_core.kernels.layout import DecodeState, LayerLayout
from leank_core.kernels.reference import decode_attention_reference

__all__ = ["DecodeState", "LayerLayout", "decode_attention", "decode_attention_reference"]


def decode_attention(q: torch.Tensor, state: DecodeState, layout: LayerLayout, scale: float) -> torch.Tensor:
    """Attention output ``[B, H, D]`` for one decode query ``q`` ``[B, H, D]``."""
    if q.is_cuda:
        from leank_core.kernels.triton_decode import decode_attention_triton  # triton only where it runs

        return decode_attention_triton(q, state, layout, scale)
    return decode_attention_reference(q, state, layout, scale)
