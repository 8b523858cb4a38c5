"""Triton kernel of the gated MLP's activation at decode time (launch: ``activation_launch.py``).

``silu_mul_kernel``: program ``(row, block)`` reads one block of the gate and up halves of a
row of the stacked gate/up projection's output ``[rows, 2 * I]`` and writes
``silu(gate) * up`` ``[rows, I]``: the Llama-family MLP's ``act_fn(gate_proj(x)) * up_proj(x)``
in one launch instead of two elementwise kernels over strided halves. SiLU is computed in
float32 and rounded to the input dtype, then the product likewise, as PyTorch rounds them.
"""

import triton
import triton.language as tl


@triton.jit
def silu_mul_kernel(gate_up_ptr, out_ptr, inter, BLOCK: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    offs = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    ok = offs < inter
    gate = tl.load(gate_up_ptr + row * 2 * inter + offs, mask=ok, other=0.0)
    up = tl.load(gate_up_ptr + row * 2 * inter + inter + offs, mask=ok, other=0.0)
    g = gate.to(tl.float32)
    act = (g / (1.0 + tl.exp(-g))).to(gate.dtype)
    tl.store(out_ptr + row * inter + offs, (act.to(tl.float32) * up.to(tl.float32)).to(gate.dtype), mask=ok)
