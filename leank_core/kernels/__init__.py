"""The two per-layer operations a LeanK decode step needs: dispatch functions, one semantics each.

``decode_attention`` and ``append_token`` are the entry points the caches call. Each picks
its fused Triton kernel where it can run and its PyTorch reference (identical semantics,
see ``reference.py``) everywhere else.
"""

from __future__ import annotations

import functools
import importlib.util

import torch

from leank_core.kernels.layout import DecodeState, LayerLayout
from leank_core.kernels.reference import append_token_reference, decode_attention_reference

__all__ = ["DecodeState", "LayerLayout", "append_token", "append_token_reference", "decode_attention",
           "decode_attention_reference"]


@functools.cache
def _triton_available() -> bool:
    return importlib.util.find_spec("triton") is not None


def decode_attention(q: torch.Tensor, state: DecodeState, layout: LayerLayout, scale: float) -> torch.Tensor:
    """Attention output ``[B, H, D]`` for one decode query ``q`` ``[B, H, D]``."""
    if q.is_cuda and _triton_available():
        from leank_core.kernels.decode_launch import decode_attention_triton  # triton only where it runs

        return decode_attention_triton(q, state, layout, scale)
    return decode_attention_reference(q, state, layout, scale)


def append_token(key: torch.Tensor, value: torch.Tensor, n: torch.Tensor, state: DecodeState,
                 layout: LayerLayout) -> None:
    """Store ``key``/``value`` ``[B, H_kv, D]`` as token ``n[b]`` of each sequence (moving a full ring's outgoing
    token into the compact middle first), in place; no host sync on the GPU."""
    if key.is_cuda and _triton_available():
        from leank_core.kernels.append_launch import append_token_triton  # triton only where it runs

        append_token_triton(key, value, n, state, layout)
    else:
        append_token_reference(key, value, n, state, layout)
