"""The memory-efficient continuation attention computes MaskedAttention's semantics, forward and backward."""

from __future__ import annotations

import pytest
import torch

from leank_core.attention import MaskedAttention
from leank_core.attention import middle_key_mask
from leank_core.continuation_attention import continuation_attention, key_layout


class Layer(torch.nn.Module):
    layer_idx = 0


def inputs(n_context: int, n_new: int, dtype: torch.dtype, seed: int = 0, heads: int = 4, kv_heads: int = 2, d: int = 8):
    g = torch.Generator().manual_seed(seed)
    rand = lambda *shape: torch.randn(*shape, generator=g, dtype=torch.float64).to(dtype)  # noqa: E731
    q = rand(2, heads, n_new, d)
    context = (rand(2, kv_heads, n_context, d), rand(2, kv_heads, n_context, d))
    new = (rand(2, kv_heads, n_new, d), rand(2, kv_heads, n_new, d))
    weights = torch.rand(kv_heads, d, generator=g, dtype=torch.float64).to(dtype)
    return q, context, new, weights


# (context, new tokens, sink, recent, zero heads): long contexts, the exact sink+recent boundary, a context
# shorter than sink+recent, more new tokens than the recent window (new tokens become middle keys).
CASES = {
    "long": (23, 3, 3, 4, None),
    "long, zero head": (23, 3, 3, 4, [True, False]),
    "context = sink + recent": (7, 3, 3, 4, [False, True]),
    "context shorter than sink + recent": (4, 2, 3, 4, [True, False]),
    "new tokens reach the middle": (9, 7, 2, 2, [False, True]),
    "no sink": (15, 4, 0, 3, [True, True]),
}


def reference(q, context, new, weights, zero, sink, recent, scaling):
    """MaskedAttention over the whole (context + new) sequence, in the inputs' dtype."""
    keys, values = torch.cat([context[0], new[0]], 2), torch.cat([context[1], new[1]], 2)
    zero_heads = None if zero is None else zero[None]
    w = None if weights is None else weights[None]
    return MaskedAttention(w, sink, recent, zero_heads).attend(Layer(), q, keys, values, None, scaling)


# (keys per piece, score budget): bulk blocks of two keys; one bulk block of pieces of two keys and a
# remainder; pieces longer than any context (everything in the edge block).
SPLITS = {"many blocks": (1, 48), "one block": (2, 10**6), "edge only": (64, 10**6)}


@pytest.mark.parametrize("case", CASES, ids=list(CASES))
@pytest.mark.parametrize("split", SPLITS, ids=list(SPLITS))
def test_forward_and_gradients_equal_masked_attention(case, split):
    n_context, n_new, sink, recent, zero = CASES[case]
    zero = None if zero is None else torch.tensor(zero)
    q, context, new, weights = inputs(n_context, n_new, torch.float32)
    leaves = [t.clone().requires_grad_() for t in (q, new[0], new[1], weights)]
    piece, budget = SPLITS[split]
    got = continuation_attention(leaves[0], context, (leaves[1], leaves[2]), leaves[3], zero, sink, recent, 0.3,
                                 piece=piece, budget=budget)
    ref_leaves = [t.clone().requires_grad_() for t in (q, new[0], new[1], weights)]
    want = reference(ref_leaves[0], context, (ref_leaves[1], ref_leaves[2]), ref_leaves[3], zero, sink, recent, 0.3)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    upstream = torch.randn(got.shape, generator=torch.Generator().manual_seed(5))
    (got * upstream).sum().backward()
    (want * upstream).sum().backward()
    for name, a, b in zip(("query", "new keys", "new values", "weights"), leaves, ref_leaves):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-4, atol=1e-5, msg=name)


@pytest.mark.parametrize("case", ["long, zero head", "context shorter than sink + recent", "new tokens reach the middle"])
def test_gradients_pass_a_float64_gradient_check(case):
    n_context, n_new, sink, recent, zero = CASES[case]
    q, context, new, weights = inputs(n_context, n_new, torch.float64, seed=1, heads=2, kv_heads=2, d=4)
    zero = torch.tensor(zero)

    def f(q, k, v, w):
        return continuation_attention(q, context, (k, v), w, zero, sink, recent, 0.5, piece=2, budget=20)

    assert torch.autograd.gradcheck(f, tuple(t.requires_grad_() for t in (q, *new, weights)))


def test_teacher_is_dense_attention_and_unit_weights_reproduce_it_bit_for_bit():
    q, context, new, _ = inputs(20, 4, torch.float32)
    teacher = continuation_attention(q, context, new, None, None, 3, 4, 0.3, piece=2, budget=100)
    ones = continuation_attention(q, context, new, torch.ones(2, 8), None, 3, 4, 0.3, piece=2, budget=100)
    assert torch.equal(teacher, ones)
    keys, values = (torch.cat([c, n], 2).repeat_interleave(2, 1) for c, n in zip(context, new))
    causal = torch.ones(4, 24, dtype=torch.bool).tril(20)
    dense = torch.nn.functional.scaled_dot_product_attention(q, keys, values, attn_mask=causal, scale=0.3)
    torch.testing.assert_close(teacher, dense.transpose(1, 2), rtol=1e-5, atol=1e-6)


def test_bfloat16_inputs_are_scored_in_float32_and_return_bfloat16():
    q, context, new, weights = inputs(30, 3, torch.bfloat16)
    got = continuation_attention(q, context, new, weights, None, 3, 4, 0.3, piece=4, budget=200)
    want = reference(*(t.float() for t in (q,)), tuple(t.float() for t in context), tuple(t.float() for t in new),
                     weights.float(), None, 3, 4, 0.3)
    assert got.dtype == torch.bfloat16
    torch.testing.assert_close(got.float(), want, rtol=1e-2, atol=1e-2)


@pytest.mark.parametrize("case", CASES, ids=list(CASES))
def test_layout_visits_every_key_once_and_bulk_keys_are_middle_for_every_query(case):
    n_context, n_new, sink, recent, _ = CASES[case]
    group, piece, block = 2, 2, 4
    layout = key_layout(n_context, n_new, group, sink, recent, piece, block, torch.device("cpu"))
    bulk = [j for a, b in layout.bulk for j in range(a, b)]
    edge = [j for a, b in layout.edge_context for j in range(a, b)]
    assert sorted(bulk + edge) == list(range(n_context))
    assert all((b - a) % piece == 0 and b - a <= block for a, b in layout.bulk)
    n_edge, pad = n_new + len(edge), layout.pad.shape[2]
    assert (n_edge + pad) % piece == 0 and pad < piece and not layout.pad.any()
    middle = middle_key_mask(n_new, n_context + n_new, sink, recent, torch.device("cpu")).repeat(group, 1)
    causal = torch.ones(n_new, n_context + n_new, dtype=torch.bool).tril(n_context).repeat(group, 1)
    assert bool(middle[:, bulk].all())
    edge_keys = list(range(n_context, n_context + n_new)) + edge  # the new tokens come first in the edge
    assert torch.equal(layout.middle[:n_edge], middle[:, edge_keys].T)
    assert torch.equal(layout.blocked[:n_edge], ~causal[:, edge_keys].T) and bool(layout.blocked[n_edge:].all())
