"""The residual RMS norm and RoPE kernels equal their references, which equal transformers' ops bit for bit
(kernels compiled on CUDA where there is a GPU, in the Triton interpreter elsewhere)."""

from __future__ import annotations

import pytest
import torch
from transformers.models.llama.modeling_llama import LlamaRMSNorm, apply_rotary_pos_emb

from leank_core.kernels.norm_rope_launch import residual_rms_norm_triton, rope_triton
from leank_core.kernels.reference import residual_rms_norm_reference, rope_reference


DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def rand(*shape, dtype=torch.float32, seed=0, device="cpu"):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed)).to(device, dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_reference_norm_is_the_residual_add_then_transformers_rmsnorm_bit_for_bit(dtype):
    hidden = 72
    norm = LlamaRMSNorm(hidden, eps=1e-5).to(dtype)
    with torch.no_grad():
        norm.weight.copy_(rand(hidden, seed=3))
    residual, delta = rand(5, hidden, dtype=dtype), rand(5, hidden, dtype=dtype, seed=1)
    total, normed = residual_rms_norm_reference(residual, delta, norm.weight, norm.variance_epsilon)
    assert torch.equal(total, residual + delta)
    assert torch.equal(normed, norm(residual + delta))
    total, normed = residual_rms_norm_reference(residual, None, norm.weight, norm.variance_epsilon)
    assert total is residual and torch.equal(normed, norm(residual))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("with_delta", [True, False], ids=["residual add", "first layer"])
def test_norm_kernel_equals_the_reference(dtype, with_delta):
    hidden = 72  # not a power of two: the row is masked
    residual, weight = rand(3, hidden, dtype=dtype, device=DEVICE), rand(hidden, dtype=dtype, seed=2, device=DEVICE)
    delta = rand(3, hidden, dtype=dtype, seed=1, device=DEVICE) if with_delta else None
    expected = residual_rms_norm_reference(residual, delta, weight, 1e-6)
    got = residual_rms_norm_triton(residual, delta, weight, 1e-6)
    tol = 1e-6 if dtype == torch.float32 else 1e-3
    for g, e in zip(got, expected):
        torch.testing.assert_close(g, e, atol=tol, rtol=tol)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_reference_rope_is_transformers_rotate_half_bit_for_bit(dtype):
    q, k = rand(2, 4, 16, dtype=dtype), rand(2, 2, 16, dtype=dtype, seed=1)
    cos, sin = rand(2, 16, dtype=dtype, seed=2), rand(2, 16, dtype=dtype, seed=3)
    expected = apply_rotary_pos_emb(q[:, :, None], k[:, :, None], cos[:, None], sin[:, None])
    for got, want in zip(rope_reference(q, k, cos, sin), expected):
        assert torch.equal(got, want[:, :, 0])


@pytest.mark.parametrize("stacked", [False, True], ids=["contiguous", "column blocks of one q/k/v row"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_rope_kernel_equals_the_reference(dtype, stacked):
    if stacked:  # as the engine passes them: views of one [B, (6 + 2 + 2) * D] projection, read in place
        q, k, _ = rand(3, 10 * 32, dtype=dtype, device=DEVICE).split([6 * 32, 2 * 32, 2 * 32], -1)
        q, k = q.unflatten(-1, (6, 32)), k.unflatten(-1, (2, 32))
    else:
        q, k = rand(3, 6, 32, dtype=dtype, device=DEVICE), rand(3, 2, 32, dtype=dtype, seed=1, device=DEVICE)
    cos, sin = rand(3, 32, dtype=dtype, seed=2, device=DEVICE), rand(3, 32, dtype=dtype, seed=3, device=DEVICE)
    tol = 1e-6 if dtype == torch.float32 else 1e-3
    for got, want in zip(rope_triton(q, k, cos, sin), rope_reference(q, k, cos, sin)):
        torch.testing.assert_close(got, want, atol=tol, rtol=tol)
