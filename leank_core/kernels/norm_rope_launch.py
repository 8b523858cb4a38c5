"""Launch code for the residual RMS norm and RoPE kernels (``norm_rope_jit.py``); semantics as in ``reference.py``."""

from __future__ import annotations

import torch
import triton

from leank_core.kernels.layout import row_strided
from leank_core.kernels.norm_rope_jit import residual_rms_norm_kernel, rope_kernel


def residual_rms_norm_triton(residual: torch.Tensor, delta: torch.Tensor | None, weight: torch.Tensor,
                             eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """``(s, norm(s))`` for ``s = residual + delta`` (or ``residual``), rows of ``[..., hidden]``."""
    residual = residual.contiguous()
    hidden = residual.shape[-1]
    total = residual if delta is None else torch.empty_like(residual)
    out = torch.empty_like(residual)
    block = triton.next_power_of_2(hidden)
    residual_rms_norm_kernel[(residual.numel() // hidden,)](
        residual, residual if delta is None else delta.contiguous(), total, weight, out, hidden, eps,
        HAS_DELTA=delta is not None, BLOCK=block, num_warps=8 if block >= 2048 else 4,
    )
    return total, out


def rope_triton(q: torch.Tensor, k: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Rotate-half RoPE of one token per sequence: ``q`` ``[B, H, D]``, ``k`` ``[B, H_kv, D]``, ``cos``/``sin`` ``[B, D]``."""
    b, hq, d = q.shape
    hk = k.shape[1]
    (q, q_row), (k, k_row) = row_strided(q), row_strided(k)
    q_out = q.new_empty(b, hq, d)
    k_out = k.new_empty(b, hk, d)
    rope_kernel[(b, hq + hk)](q, k, cos.contiguous(), sin.contiguous(), q_out, k_out, q_row, k_row, HQ=hq, HK=hk,
                              D=d, num_warps=1)
    return q_out, k_out
