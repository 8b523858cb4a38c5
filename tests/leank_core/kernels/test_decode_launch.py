"""The fused Triton decode kernel computes what the PyTorch reference computes, reading no empty slot.

On a GPU machine the kernels run compiled on CUDA tensors; elsewhere in the Triton interpreter.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

from leank_core.kernels import decode_attention
from leank_core.kernels.layout import DecodeState, LayerLayout
from leank_core.kernels.reference import decode_attention_reference, dense_slot_valid
from leank_core.kernels import decode_launch
from leank_core.kernels.decode_launch import decode_attention_triton, split_plan

SINK, RECENT, D = 4, 8, 128
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def layer_mask(counts: list[int], seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    mask = torch.zeros(len(counts), D, dtype=torch.bool)
    for h, c in enumerate(counts):
        mask[h, torch.randperm(D, generator=g)[:c]] = True
    return mask


def random_state(layout: LayerLayout, lengths: list[int], cap: int, dtype, seed: int = 0,
                 device: str = DEVICE) -> DecodeState:
    """A cache state holding ``lengths[b]`` tokens per sequence, on ``device``."""
    g = torch.Generator().manual_seed(seed)
    b, hkv, sink, recent = len(lengths), layout.num_kv_heads, layout.sink, layout.recent
    n = torch.tensor(lengths)

    def rand(*shape):
        return torch.randn(*shape, generator=g).to(dtype)

    parts = dict(
        dense_k=rand(b, hkv, sink + recent, D), dense_v=rand(b, hkv, sink + recent, D),
        sink_len=n.clamp(max=sink).int(), recent_len=(n - sink).clamp(0, recent).int(),
        mid_k=rand(b, layout.kept_channels, cap), mid_v=rand(b, layout.value_heads, cap, D),
        mid_len=(n - sink - recent).clamp(min=0).int(),
    )
    return DecodeState(**{name: t.to(device) for name, t in parts.items()})


def poisoned(state: DecodeState, sink: int) -> DecodeState:
    """The same state with NaN in every slot and column that holds no token: any read of one shows in the output."""
    dense_k, dense_v, mid_k, mid_v = (t.clone() for t in (state.dense_k, state.dense_v, state.mid_k, state.mid_v))
    empty = ~dense_slot_valid(state, sink)[:, None, :, None].expand_as(dense_k)
    dense_k[empty] = float("nan")
    dense_v[empty] = float("nan")
    for i, m in enumerate(state.mid_len.tolist()):
        mid_k[i, :, m:] = float("nan")
        mid_v[i, :, m:] = float("nan")
    return DecodeState(dense_k, dense_v, state.sink_len, state.recent_len, mid_k, mid_v, state.mid_len)


def assert_kernel_matches_reference(counts, lengths, cap, group=2, dtype=torch.float32, sink=SINK, recent=RECENT,
                                    config=decode_launch.CONFIG):
    layout = LayerLayout.from_mask(layer_mask(counts), sink, recent).to(DEVICE)
    state = random_state(layout, lengths, cap, dtype)
    q = torch.randn(len(lengths), group * len(counts), D, generator=torch.Generator().manual_seed(1)).to(DEVICE, dtype)
    ref = decode_attention_reference(q, state, layout, D**-0.5)
    out = decode_attention_triton(q, poisoned(state, sink), layout, D**-0.5, config)
    tol = 1e-5 if dtype == torch.float32 else 2e-3
    torch.testing.assert_close(out.float(), ref.float(), atol=tol, rtol=tol)


BUCKET_LAYOUTS = {
    "mixed buckets with zero and all-kept heads": [0, 32, 128, 64, 0, 16, 96, 128, 48],
    "single bucket": [64, 64, 64, 64],
    "all heads kept": [128, 128],
    "all heads zero": [0, 0, 0],
}


@pytest.mark.parametrize("counts", BUCKET_LAYOUTS.values(), ids=BUCKET_LAYOUTS.keys())
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_kernel_equals_reference_for_bucket_layouts(counts, dtype):
    assert_kernel_matches_reference(counts, [SINK + RECENT + 300, SINK + RECENT + 7], cap=320, dtype=dtype)


@pytest.mark.parametrize(
    "lengths",
    [[1, 3, SINK, SINK + 5], [SINK + RECENT, SINK + RECENT + 1, 2, SINK + RECENT + 700]],
    ids=["shorter than sink+recent (mid_len 0, ring or sink not full)", "ragged around the boundary"],
)
@pytest.mark.parametrize("group", [1, 3])
def test_kernel_equals_reference_for_ragged_lengths_and_gqa_groups(lengths, group):
    assert_kernel_matches_reference([0, 32, 112], lengths, cap=768, group=group)


def test_kernel_equals_reference_across_many_middle_and_dense_splits():
    """Ragged middles over one-tile slices (whole tiles and a masked tail), several dense slices, more
    slices than one merge block (small chunk and merge block so the interpreter stays fast), and a short
    sequence beside a long one: each is cut into the plan's slices by its own length."""
    small = decode_launch.CONFIG._replace(min_chunk=decode_launch.CONFIG.block_n, merge_block=4)
    sink, recent, cap = 64, 2 * small.dense_chunk - 64 + 5, 20 * small.block_n
    plan = decode_launch.split_plan(2, 2, cap, sink + recent, torch.device("cpu"), small)
    assert plan.n_mid > 2 * small.merge_block and plan.n_dense > 2
    lengths = [sink + recent + cap - 37, sink + recent + 3 * small.block_n + 5]
    assert_kernel_matches_reference([16, 128], lengths, cap=cap, sink=sink, recent=recent, config=small)


def test_the_kernel_launches_heads_heaviest_first():
    """work_order lists every KV head once, by descending kept count (ties in head order): each sequence's longest
    programs start first and its light ones fill in behind them; all heads kept leaves plain head order."""
    counts = BUCKET_LAYOUTS["mixed buckets with zero and all-kept heads"]
    order = LayerLayout.from_mask(layer_mask(counts), SINK, RECENT).work_order.tolist()
    assert sorted(order) == list(range(len(counts)))
    assert [counts[h] for h in order] == sorted(counts, reverse=True)
    assert order[:2] == [2, 7] and order[-2:] == [0, 4]
    assert LayerLayout.from_mask(layer_mask([128] * 4), SINK, RECENT).work_order.tolist() == [0, 1, 2, 3]


def test_split_plan_depends_only_on_static_shapes_and_never_cuts_below_the_minimum_chunk():
    config = decode_launch.CONFIG
    for batch, cap in [(1, 100_000), (16, 100_000), (1, 0), (3, 257)]:
        plan = split_plan(batch, 8, cap, 1152, torch.device("cpu"))
        assert plan.n_mid == min(-(-cap // config.min_chunk), max(1, 64 // (batch * 8)))
        assert plan.n_dense * config.dense_chunk >= 1152


def test_deep_pipelines_only_for_long_slices_and_fewer_stages_for_wide_elements():
    config = decode_launch.CONFIG._replace(num_stages=4, deep_tiles=16, block_n=128, min_chunk=256)
    # Off the GPU the plan asks for 64 programs: 8 middle slices for each of 8 heads.
    short = split_plan(1, 8, 8 * 256, 1152, torch.device("cpu"), config)
    long = split_plan(1, 8, 8 * 160 * 128, 1152, torch.device("cpu"), config)
    assert (short.slice_tiles, long.slice_tiles) == (2, 160)
    assert config.stages_for(2, short.slice_tiles) == 2
    assert config.stages_for(2, long.slice_tiles) == 4
    assert config.stages_for(4, long.slice_tiles) == 2  # fp32 tiles take twice the shared memory
    assert split_plan(1, 8, 0, 1152, torch.device("cpu"), config).slice_tiles == 0  # an empty middle plans no slice


def test_a_minimum_chunk_that_is_not_whole_tiles_is_refused():
    layout = LayerLayout.from_mask(layer_mask([8, 16]), SINK, RECENT)
    state = random_state(layout, [SINK + RECENT + 10], cap=64, dtype=torch.float32)
    bad = decode_launch.CONFIG._replace(min_chunk=decode_launch.CONFIG.block_n + 1)
    with pytest.raises(ValueError, match="multiple of block_n"):
        decode_attention_triton(torch.randn(1, 2, D, device=DEVICE), state, layout.to(DEVICE), 1.0, bad)


def test_layout_on_another_device_is_refused_with_a_clear_error():
    layout = LayerLayout.from_mask(layer_mask([8, 16]), SINK, RECENT)
    state = random_state(layout, [SINK + RECENT + 10], cap=64, dtype=torch.float32)
    q = torch.randn(1, 2, D, device=DEVICE)
    with pytest.raises(ValueError, match="layout.to"):
        decode_attention_triton(q, state, layout.to("meta"), 1.0)


def test_dispatch_uses_the_reference_on_cpu():
    layout = LayerLayout.from_mask(layer_mask([8, 16]), SINK, RECENT)
    state = random_state(layout, [SINK + RECENT + 10], cap=64, dtype=torch.float32, device="cpu")
    q = torch.randn(1, 4, D)
    assert torch.equal(decode_attention(q, state, layout, 0.5), decode_attention_reference(q, state, layout, 0.5))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_reference_returns_the_query_dtype(dtype):
    layout = LayerLayout.from_mask(layer_mask([16, 0]), SINK, RECENT)
    state = random_state(layout, [SINK + RECENT + 3], 8, dtype, device="cpu")
    q = torch.randn(1, 4, D).to(dtype)
    exact = decode_attention_reference(q.float(), dataclasses.replace(
        state, **{n: getattr(state, n).float() for n in ("dense_k", "dense_v", "mid_k", "mid_v")}), layout, 0.1)
    out = decode_attention_reference(q, state, layout, 0.1)
    assert out.dtype == dtype and torch.allclose(out.float(), exact, atol=1e-2)
