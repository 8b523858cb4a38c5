"""The fused Triton decode kernel computes exactly what the PyTorch reference computes."""

from __future__ import annotations

import pytest
import torch

from leank_core.kernels.layout import DecodeState, LayerLayout
from leank_core.kernels.reference import decode_attention_reference
from leank_core.kernels.triton_decode import decode_attention_triton

SINK, RECENT, D = 4, 8, 32


def layer_mask(counts: list[int], seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    mask = torch.zeros(len(counts), D, dtype=torch.bool)
    for h, c in enumerate(counts):
        mask[h, torch.randperm(D, generator=g)[:c]] = True
    return mask


def random_state(layout: LayerLayout, lengths: list[int], cap: int, dtype, seed: int = 0) -> DecodeState:
    """A cache state holding ``lengths[b]`` tokens per sequence (lengths are what matters, not values)."""
    g = torch.Generator().manual_seed(seed)
    b, hkv = len(lengths), layout.num_kv_heads
    n = torch.tensor(lengths)

    def rand(*shape):
        return torch.randn(*shape, generator=g).to(dtype)

    return DecodeState(
        dense_k=rand(b, hkv, SINK + RECENT, D), dense_v=rand(b, hkv, SINK + RECENT, D),
        sink_len=n.clamp(max=SINK).int(), recent_len=(n - SINK).clamp(0, RECENT).int(),
        mid_k=rand(b, layout.kept_channels, cap), mid_v=rand(b, layout.value_heads, cap, D),
        mid_len=(n - SINK - RECENT).clamp(min=0).int(),
    )


CASES = {
    "mixed buckets with zero and all-kept heads": [0, 16, 32, 16, 0, 8, 24, 32],
    "single bucket": [16, 16, 16, 16],
    "all heads kept": [32, 32],
    "all heads zero": [0, 0, 0],
}


@pytest.mark.parametrize("counts", CASES.values(), ids=CASES.keys())
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_kernel_equals_reference_for_bucket_layouts(counts, dtype):
    layout = LayerLayout.from_mask(layer_mask(counts), SINK, RECENT)
    state = random_state(layout, [SINK + RECENT + 300, SINK + RECENT + 7], cap=320, dtype=dtype)
    q = torch.randn(2, 2 * len(counts), D, generator=torch.Generator().manual_seed(1)).to(dtype)
    ref = decode_attention_reference(q, state, layout, D**-0.5)
    out = decode_attention_triton(q, state, layout, D**-0.5)
    tol = 1e-5 if dtype == torch.float32 else 2e-3
    assert torch.allclose(out.float(), ref.float(), atol=tol, rtol=tol)


@pytest.mark.parametrize("lengths", [[1, 3, SINK, SINK + 5], [SINK + RECENT, SINK + RECENT + 1, 2, 700]],
                         ids=["shorter than sink+recent", "ragged around the boundary"])
@pytest.mark.parametrize("group", [1, 3])
def test_kernel_equals_reference_for_ragged_lengths_and_gqa_groups(lengths, group):
    counts = [0, 8, 32]
    layout = LayerLayout.from_mask(layer_mask(counts, seed=2), SINK, RECENT)
    state = random_state(layout, lengths, cap=768, dtype=torch.float32, seed=3)
    q = torch.randn(len(lengths), group * len(counts), D, generator=torch.Generator().manual_seed(4))
    ref = decode_attention_reference(q, state, layout, 0.3)
    out = decode_attention_triton(q, state, layout, 0.3)
    assert torch.allclose(out, ref, atol=1e-5, rtol=1e-5)
