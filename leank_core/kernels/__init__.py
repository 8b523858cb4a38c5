"""The per-layer operations of a LeanK decode step: dispatch functions, one semantics each.

Each entry point runs its fused Triton kernel where it can (a CUDA tensor, Triton installed)
and its PyTorch reference (identical semantics, see ``reference.py``) everywhere else:
``decode_attention`` and ``append_token`` over a layer's LeanK storage (``layout.py``), and
``residual_rms_norm`` / ``rope`` / ``silu_mul``, the glue between a decode step's matmuls.
"""

from __future__ import annotations

import functools
import importlib.util

import torch

from leank_core.kernels.layout import DecodeState, LayerLayout
from leank_core.kernels.reference import (
    append_token_reference,
    decode_attention_reference,
    residual_rms_norm_reference,
    rope_reference,
    silu_mul_reference,
)

__all__ = ["DecodeState", "LayerLayout", "append_token", "decode_attention", "decode_attention_reference",
           "residual_rms_norm", "rope", "silu_mul"]


@functools.cache
def _triton_available() -> bool:
    return importlib.util.find_spec("triton") is not None


def _use_triton(tensor: torch.Tensor) -> bool:
    return tensor.is_cuda and _triton_available()


def decode_attention(q: torch.Tensor, state: DecodeState, layout: LayerLayout, scale: float) -> torch.Tensor:
    """Attention output ``[B, H, D]`` for one decode query ``q`` ``[B, H, D]``."""
    if _use_triton(q):
        from leank_core.kernels.decode_launch import decode_attention_triton  # triton only where it runs

        return decode_attention_triton(q, state, layout, scale)
    return decode_attention_reference(q, state, layout, scale)


def append_token(key: torch.Tensor, value: torch.Tensor, n: torch.Tensor, state: DecodeState,
                 layout: LayerLayout) -> None:
    """Store ``key``/``value`` ``[B, H_kv, D]`` as token ``n[b]`` of each sequence (moving a full ring's outgoing
    token into the compact middle first), in place; no host sync on the GPU."""
    if _use_triton(key):
        from leank_core.kernels.append_launch import append_token_triton

        append_token_triton(key, value, n, state, layout)
    else:
        append_token_reference(key, value, n, state, layout)


def residual_rms_norm(residual: torch.Tensor, delta: torch.Tensor | None, weight: torch.Tensor,
                      eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """``(s, RMSNorm(s))`` for the residual stream ``s = residual + delta`` (``delta`` None: ``s = residual``)."""
    if _use_triton(residual):
        from leank_core.kernels.norm_rope_launch import residual_rms_norm_triton

        return residual_rms_norm_triton(residual, delta, weight, eps)
    return residual_rms_norm_reference(residual, delta, weight, eps)


def rope(q: torch.Tensor, k: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Rotate-half RoPE of one token per sequence: ``q`` ``[B, H, D]``, ``k`` ``[B, H_kv, D]``, ``cos``/``sin`` ``[B, D]``."""
    if _use_triton(q):
        from leank_core.kernels.norm_rope_launch import rope_triton

        return rope_triton(q, k, cos, sin)
    return rope_reference(q, k, cos, sin)


def silu_mul(gate_up: torch.Tensor) -> torch.Tensor:
    """``silu(gate) * up`` ``[..., I]`` of a stacked gate/up projection's output ``gate_up`` ``[..., 2 * I]``."""
    if _use_triton(gate_up):
        from leank_core.kernels.activation_launch import silu_mul_triton

        return silu_mul_triton(gate_up)
    return silu_mul_reference(gate_up)
