"""Triton kernels for the small per-token steps between a decode step's matmuls (launch: ``norm_rope_launch.py``).

A decode step at batch sizes of 1-32 spends more time launching tiny elementwise kernels than
running them: a Hugging Face RMSNorm is eight kernels, a rotate-half RoPE of q and k a dozen.
These two kernels do the same arithmetic, with the same roundings, in one launch each:

``residual_rms_norm_kernel``: program ``row`` adds the layer's output ``delta`` to the residual
stream (rounded to the stream's dtype, as ``residual + delta`` is), writes the sum, and writes
its RMS norm ``weight * (s * rsqrt(mean(s^2) + eps)).to(dtype)`` computed in float32.

``rope_kernel``: program ``(b, head)`` rotates one head of q (heads ``< HQ``) or k (the rest):
``x * cos + rotate_half(x) * sin``, each product and the sum rounded to the input dtype as the
elementwise PyTorch ops round them. q and k are read with a row stride per sequence (heads
contiguous within a row), so they can be column blocks of one stacked q/k/v projection.
"""

import triton
import triton.language as tl


@triton.jit
def residual_rms_norm_kernel(residual_ptr, delta_ptr, sum_ptr, weight_ptr, out_ptr, hidden, eps,
                             HAS_DELTA: tl.constexpr, BLOCK: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    offs = tl.arange(0, BLOCK)
    ok = offs < hidden
    x = tl.load(residual_ptr + row * hidden + offs, mask=ok, other=0.0)
    if HAS_DELTA:
        delta = tl.load(delta_ptr + row * hidden + offs, mask=ok, other=0.0)
        x = (x.to(tl.float32) + delta.to(tl.float32)).to(x.dtype)
        tl.store(sum_ptr + row * hidden + offs, x, mask=ok)
    h = x.to(tl.float32)
    variance = tl.sum(h * h, 0) / hidden
    h = h * tl.math.rsqrt(variance + eps)
    w = tl.load(weight_ptr + offs, mask=ok, other=0.0)
    y = (w.to(tl.float32) * h.to(x.dtype).to(tl.float32)).to(x.dtype)
    tl.store(out_ptr + row * hidden + offs, y, mask=ok)


@triton.jit
def rope_kernel(q_ptr, k_ptr, cos_ptr, sin_ptr, q_out_ptr, k_out_ptr, q_row, k_row, HQ: tl.constexpr,
                HK: tl.constexpr, D: tl.constexpr):
    b = tl.program_id(0).to(tl.int64)
    head = tl.program_id(1)
    offs = tl.arange(0, D)
    half = D // 2
    rotated = (offs + half) % D  # rotate_half: [-x2, x1]
    sign = tl.where(offs < half, -1.0, 1.0)
    c = tl.load(cos_ptr + b * D + offs).to(tl.float32)
    s = tl.load(sin_ptr + b * D + offs).to(tl.float32)
    if head < HQ:
        src = q_ptr + b * q_row + head * D
        dst = q_out_ptr + (b * HQ + head) * D
    else:
        src = k_ptr + b * k_row + (head - HQ) * D
        dst = k_out_ptr + (b * HK + head - HQ) * D
    x = tl.load(src + offs)
    r = tl.load(src + rotated).to(tl.float32) * sign
    dtype = x.dtype
    y = (x.to(tl.float32) * c).to(dtype).to(tl.float32) + (r * s).to(dtype).to(tl.float32)
    tl.store(dst + offs, y.to(dtype))
