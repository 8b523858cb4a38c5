"""The fused append kernel writes exactly what the PyTorch reference writes, and nothing else (compiled on CUDA
tensors where there is a GPU, in the Triton interpreter elsewhere)."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from leank_core.kernels import append_token
from leank_core.kernels.append_launch import append_token_triton
from leank_core.kernels.layout import DecodeState, LayerLayout
from leank_core.kernels.reference import append_token_reference
from tests.leank_core.kernels.test_decode_launch import (
    BUCKET_LAYOUTS, D, DEVICE, RECENT, SINK, layer_mask, poisoned, random_state,
)

CAP = 40
# tokens already stored per sequence: empty, inside the sink, ring filling, ring just full (first eviction),
# evicting into a later column, evicting into the last middle column
LENGTHS = [0, 2, SINK + 3, SINK + RECENT - 1, SINK + RECENT, SINK + RECENT + 17, SINK + RECENT + CAP - 1]


def cloned(state: DecodeState) -> DecodeState:
    return dataclasses.replace(state, **{name: getattr(state, name).clone()
                                         for name in ("dense_k", "dense_v", "mid_k", "mid_v")})


@pytest.mark.parametrize("counts", BUCKET_LAYOUTS.values(), ids=BUCKET_LAYOUTS.keys())
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_kernel_writes_what_the_reference_writes_and_reads_no_empty_slot(counts, dtype):
    layout = LayerLayout.from_mask(layer_mask(counts), SINK, RECENT).to(DEVICE)
    state = poisoned(random_state(layout, LENGTHS, CAP, dtype), SINK)
    g = torch.Generator().manual_seed(3)
    key, value = (torch.randn(len(LENGTHS), len(counts), D, generator=g).to(DEVICE, dtype) for _ in range(2))
    n = torch.tensor(LENGTHS, device=DEVICE)
    expected, got = cloned(state), cloned(state)
    append_token_reference(key, value, n, expected, layout)
    append_token_triton(key, value, n, got, layout)
    for name in ("dense_k", "dense_v", "mid_k", "mid_v"):
        assert torch.equal(getattr(got, name).isnan(), getattr(expected, name).isnan()), name
        torch.testing.assert_close(getattr(got, name), getattr(expected, name), atol=0, rtol=0, equal_nan=True)


def test_kernel_reads_key_and_value_given_as_column_blocks_of_one_projection():
    """The engine passes k (after RoPE) and v sliced from one stacked q/k/v output: a row stride, read in place."""
    counts = [0, 32, 128]
    layout = LayerLayout.from_mask(layer_mask(counts), SINK, RECENT).to(DEVICE)
    state = random_state(layout, LENGTHS, CAP, torch.float32)
    g = torch.Generator().manual_seed(4)
    rows = torch.randn(len(LENGTHS), 5 * len(counts) * D, generator=g).to(DEVICE)
    _, key, value = rows.split([3 * len(counts) * D, len(counts) * D, len(counts) * D], -1)
    key, value = (part.unflatten(-1, (len(counts), D)) for part in (key, value))
    assert not key.is_contiguous() and not value.is_contiguous()
    n = torch.tensor(LENGTHS, device=DEVICE)
    expected, got = cloned(state), cloned(state)
    append_token_reference(key.contiguous(), value.contiguous(), n, expected, layout)
    append_token_triton(key, value, n, got, layout)
    for name in ("dense_k", "dense_v", "mid_k", "mid_v"):
        assert torch.equal(getattr(got, name), getattr(expected, name)), name


def test_reference_moves_the_outgoing_token_kept_channels_and_stores_the_new_one():
    """The semantics themselves, on one full-ring sequence: the oldest ring token lands in middle column n - S - R."""
    counts = [0, 32, 128]
    layout = LayerLayout.from_mask(layer_mask(counts), SINK, RECENT)
    n = SINK + RECENT + 5
    state = random_state(layout, [n], CAP, torch.float32, device="cpu")
    slot = SINK + (n - SINK) % RECENT
    outgoing_k, outgoing_v = state.dense_k[0, :, slot].clone(), state.dense_v[0, :, slot].clone()
    key, value = torch.randn(1, 3, D), torch.randn(1, 3, D)
    before = cloned(state)
    append_token_reference(key, value, torch.tensor([n]), state, layout)
    column = n - SINK - RECENT
    for h, c in enumerate(counts):
        rows = slice(int(layout.k_row[h]), int(layout.k_row[h]) + c)
        assert torch.equal(state.mid_k[0, rows, column], outgoing_k[h, layout.kept_idx[h, :c].long()])
        if c:
            assert torch.equal(state.mid_v[0, int(layout.v_slot[h]), column], outgoing_v[h])
    assert torch.equal(state.dense_k[0, :, slot], key[0]) and torch.equal(state.dense_v[0, :, slot], value[0])
    untouched = torch.ones(CAP, dtype=torch.bool)
    untouched[column] = False
    assert torch.equal(state.mid_k[..., untouched], before.mid_k[..., untouched])


def test_dispatch_uses_the_reference_on_cpu():
    layout = LayerLayout.from_mask(layer_mask([16, 0]), SINK, RECENT)
    state = random_state(layout, [SINK + RECENT + 2], CAP, torch.float32, device="cpu")
    key, value, n = torch.randn(1, 2, D), torch.randn(1, 2, D), torch.tensor([SINK + RECENT + 2])
    expected, got = cloned(state), cloned(state)
    append_token_reference(key, value, n, expected, layout)
    append_token(key, value, n, got, layout)
    assert all(torch.equal(getattr(got, f), getattr(expected, f)) for f in ("dense_k", "mid_k", "mid_v"))


@pytest.mark.parametrize("sink,recent", [(3, 5), (SINK, RECENT)])
def test_appending_tokens_one_by_one_lays_out_sink_ring_and_middle_as_specified(sink, recent):
    """From empty: the first ``sink`` tokens stay in slots 0.., token t of the ring in slot sink + (t - sink) % recent,
    and every token that left the ring in middle column t - sink (its head's kept channels, V of nonzero heads)."""
    counts, total = [0, 32, 128], sink + recent + 9
    layout = LayerLayout.from_mask(layer_mask(counts), sink, recent)
    state = random_state(layout, [0], CAP, torch.float32, device="cpu")
    g = torch.Generator().manual_seed(4)
    keys, values = torch.randn(total, 3, D, generator=g), torch.randn(total, 3, D, generator=g)
    for t in range(total):
        append_token_reference(keys[t][None], values[t][None], torch.tensor([t]), state, layout)
    assert torch.equal(state.dense_k[0, :, :sink], keys[:sink].transpose(0, 1))
    for t in range(total - recent, total):
        assert torch.equal(state.dense_k[0, :, sink + (t - sink) % recent], keys[t])
        assert torch.equal(state.dense_v[0, :, sink + (t - sink) % recent], values[t])
    for t in range(sink, total - recent):
        for h, c in enumerate(counts):
            rows = slice(int(layout.k_row[h]), int(layout.k_row[h]) + c)
            assert torch.equal(state.mid_k[0, rows, t - sink], keys[t, h, layout.kept_idx[h, :c].long()])
            if c:
                assert torch.equal(state.mid_v[0, int(layout.v_slot[h]), t - sink], values[t, h])


def test_appending_while_the_ring_has_room_writes_nothing_in_the_middle():
    layout = LayerLayout.from_mask(layer_mask([0, 32, 128]), SINK, RECENT)
    lengths = [0, 2, SINK + 3, SINK + RECENT - 1]
    state = random_state(layout, lengths, CAP, torch.float32, device="cpu")  # every slot and column holds data
    before = cloned(state)
    key, value = torch.randn(len(lengths), 3, D), torch.randn(len(lengths), 3, D)
    append_token_reference(key, value, torch.tensor(lengths), state, layout)
    assert torch.equal(state.mid_k, before.mid_k) and torch.equal(state.mid_v, before.mid_v)
