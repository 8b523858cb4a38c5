"""Launch code for the gated MLP activation kernel (``activation_jit.py``); semantics as in ``reference.py``."""

from __future__ import annotations

import torch
import triton

from leank_core.kernels.activation_jit import silu_mul_kernel

BLOCK = 1024


def silu_mul_triton(gate_up: torch.Tensor) -> torch.Tensor:
    """``silu(gate) * up`` ``[..., I]`` of ``gate_up`` ``[..., 2 * I]`` (gate first)."""
    gate_up = gate_up.contiguous()
    inter = gate_up.shape[-1] // 2
    out = gate_up.new_empty(*gate_up.shape[:-1], inter)
    silu_mul_kernel[(gate_up.numel() // (2 * inter), triton.cdiv(inter, BLOCK))](gate_up, out, inter, BLOCK=BLOCK,
                                                                                  num_warps=4)
    return out
