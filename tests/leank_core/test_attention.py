"""The masked-attention semantics training and inference share."""

from __future__ import annotations

import pytest
import torch

from leank_core.attention import MaskedAttention, masked_attention, middle_key_mask
from leank_core.hook import install
from tests.conftest import tiny_model

SINK, RECENT = 3, 4


class Layer(torch.nn.Module):
    """The attributes the hook reads from an attention module."""

    layer_idx = 0
    is_causal = True


def test_middle_keys_are_those_past_the_sink_and_before_the_recent_window():
    got = middle_key_mask(5, 12, SINK, RECENT, torch.device("cpu"))
    for row, t in enumerate(range(7, 12)):
        for j in range(12):
            assert bool(got[row, j]) == (SINK <= j <= t - RECENT), (t, j)


def brute_force(q, k, v, weights, zero_heads, scaling):
    """One query row, one head at a time, straight from the definition in attention.py."""
    b, h, t, d = q.shape
    hkv, s = k.shape[1], k.shape[2]
    out = torch.zeros(b, t, h, d)
    for bi in range(b):
        for hi in range(h):
            kv = hi // (h // hkv)
            for ti in range(t):
                pos = s - t + ti
                scores, vals = [], []
                for j in range(pos + 1):
                    middle = SINK <= j < pos + 1 - RECENT
                    if middle and zero_heads[kv]:
                        continue
                    key = k[bi, kv, j] * weights[0, kv] if middle else k[bi, kv, j]
                    scores.append(float(q[bi, hi, ti] @ key) * scaling)
                    vals.append(v[bi, kv, j])
                p = torch.softmax(torch.tensor(scores), 0)
                out[bi, ti, hi] = sum(pi * vi for pi, vi in zip(p, vals))
    return out


def test_masked_attention_scores_middle_keys_on_kept_channels_and_zero_heads_skip_them():
    g = torch.Generator().manual_seed(0)
    q = torch.randn(2, 4, 6, 8, generator=g)
    k = torch.randn(2, 2, 14, 8, generator=g)
    v = torch.randn(2, 2, 14, 8, generator=g)
    weights = (torch.rand(1, 2, 8, generator=g) > 0.5).float()
    zero_heads = torch.tensor([[True, False]])
    out = MaskedAttention(weights, SINK, RECENT, zero_heads).attend(Layer(), q, k, v, None, 8 ** -0.5)
    assert torch.allclose(out, brute_force(q, k, v, weights, zero_heads[0], 8 ** -0.5), atol=1e-5)


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_unit_weights_reproduce_the_teacher_bit_for_bit_and_match_plain_sdpa(arch):
    model = tiny_model(arch)
    ids = torch.randint(3, 259, (1, 30), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        plain = model(ids).logits  # the model's own sdpa, before install
        install(model)
        with masked_attention(None, SINK, RECENT):
            teacher = model(ids).logits
        with masked_attention(torch.ones(2, 2, 16), SINK, RECENT):
            ones = model(ids).logits
    assert torch.equal(teacher, ones)
    assert torch.allclose(teacher, plain, atol=1e-5)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_inputs_are_scored_in_float32_and_returned_in_their_dtype(dtype):
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, 4, 6, 8, generator=g) for _ in range(3))
    weights = (torch.rand(1, 2, 8, generator=g) > 0.5).to(dtype)
    zero_heads = torch.tensor([[True, False]])
    half = MaskedAttention(weights, SINK, RECENT, zero_heads).attend(Layer(), q.to(dtype), k[:, :2].to(dtype),
                                                                     v[:, :2].to(dtype), None, 8 ** -0.5)
    exact = brute_force(q.to(dtype).float(), k[:, :2].to(dtype).float(), v[:, :2].to(dtype).float(), weights.float(),
                        zero_heads[0], 8 ** -0.5)
    assert half.dtype == dtype and torch.allclose(half.float(), exact, atol=1e-2)
