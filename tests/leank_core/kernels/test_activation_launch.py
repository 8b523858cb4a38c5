"""The SiLU-gate kernel equals its reference, which is transformers' gated MLP activation bit for bit
(kernel compiled on CUDA where there is a GPU, in the Triton interpreter elsewhere)."""

from __future__ import annotations

import pytest
import torch
from transformers.models.llama.modeling_llama import LlamaMLP

from leank_core.kernels.activation_launch import BLOCK, silu_mul_triton
from leank_core.kernels.reference import silu_mul_reference
from tests.conftest import tiny_model
from tests.leank_core.kernels.test_norm_rope_launch import DEVICE, rand


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_reference_of_the_stacked_gate_up_output_is_what_the_mlp_feeds_its_down_projection(dtype):
    mlp = LlamaMLP(tiny_model().config).to(dtype)
    x = rand(3, mlp.hidden_size, dtype=dtype)
    gate_up = torch.cat([mlp.gate_proj(x), mlp.up_proj(x)], -1)
    assert torch.equal(mlp.down_proj(silu_mul_reference(gate_up)), mlp(x))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_kernel_equals_the_reference(dtype):
    inter = BLOCK + 40  # two blocks per row, the second one masked
    gate_up = 4 * rand(2, 3, 2 * inter, dtype=dtype, device=DEVICE)
    got = silu_mul_triton(gate_up)
    assert got.shape == (2, 3, inter)
    tol = 1e-6 if dtype == torch.float32 else 1e-3
    torch.testing.assert_close(got, silu_mul_reference(gate_up), atol=tol, rtol=tol)
