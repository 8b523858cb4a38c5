"""Launch code for the fused LeanK decode kernels (``decode_jit.py``); same contract as the reference.

Per layer and step: one split kernel over ``B * H_kv`` KV heads × (middle splits + dense
splits), then a small log-sum-exp merge over ``B * H`` query heads. The split plan depends
only on static shapes (batch, heads, middle capacity, SM count), never on device lengths, so
a step needs no host sync and is CUDA-graph friendly; slices beyond a sequence's middle
length exit at once. Sizes that change while decoding (capacity, split count, kept rows) are
runtime arguments, so a growing cache does not recompile the kernel per size (Triton's own
divisibility specialisation aside).
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import torch
import triton

from leank_core.kernels.decode_jit import leank_merge_kernel, leank_split_kernel
from leank_core.kernels.layout import DecodeState, LayerLayout

BLOCK_N = 128  # tokens per tile
DENSE_CHUNK = 256  # dense sink + recent slots per split
MIN_CHUNK = 1024  # middle tokens per split, at least (fewer partials to merge)
WAVES = 8  # programs wanted per SM
NUM_WARPS = 4
NUM_STAGES = 2
MERGE_BLOCK = 64  # splits per merge step


class SplitPlan(NamedTuple):
    """How one step's keys are cut into programs: ``n_mid`` middle slices of ``chunk`` tokens, ``n_dense`` dense."""

    n_mid: int
    chunk: int
    n_dense: int

    @property
    def n_splits(self) -> int:
        return self.n_mid + self.n_dense


@functools.lru_cache(maxsize=None)
def _sm_count(device_index: int) -> int:
    return torch.cuda.get_device_properties(device_index).multi_processor_count


def _programs_wanted(device: torch.device) -> int:
    """Programs that fill the GPU a few times over; the interpreter has no SMs, 64 exercises split-K."""
    if device.type == "cuda":
        return WAVES * _sm_count(device.index if device.index is not None else torch.cuda.current_device())
    return 64


def split_plan(batch: int, kv_heads: int, capacity: int, dense_slots: int, device: torch.device) -> SplitPlan:
    """The split plan from static shapes only: enough middle slices that batch 1 still fills the GPU."""
    want = max(1, _programs_wanted(device) // (batch * kv_heads))
    chunk = max(MIN_CHUNK, triton.cdiv(max(capacity, 1), want))
    chunk = triton.cdiv(chunk, BLOCK_N) * BLOCK_N
    return SplitPlan(triton.cdiv(capacity, chunk), chunk, triton.cdiv(dense_slots, DENSE_CHUNK))


def _check(q: torch.Tensor, state: DecodeState, layout: LayerLayout) -> None:
    if layout.counts.device != q.device:
        raise ValueError(f"layout tensors are on {layout.counts.device} but q is on {q.device}; "
                         "move the layout once with layout.to(q.device)")
    for name in ("dense_k", "dense_v", "mid_k", "mid_v"):
        tensor = getattr(state, name)
        if tensor.dtype != q.dtype or not tensor.is_contiguous():
            raise ValueError(f"state.{name} must be a contiguous {q.dtype} tensor (got {tensor.dtype}, "
                             f"contiguous={tensor.is_contiguous()})")


def decode_attention_triton(q: torch.Tensor, state: DecodeState, layout: LayerLayout, scale: float) -> torch.Tensor:
    """Attention output ``[B, H, D]`` for one decode query ``q`` ``[B, H, D]`` (see reference.py)."""
    _check(q, state, layout)
    b, h, d = q.shape
    hkv = layout.num_kv_heads
    group = h // hkv
    cap = state.mid_k.shape[-1]
    dense = state.dense_k.shape[2]
    plan = split_plan(b, hkv, cap, dense, q.device)
    q = q.contiguous()
    part_acc = torch.empty(b * h, plan.n_splits, d, device=q.device, dtype=torch.float32)
    part_ml = torch.empty(b * h, plan.n_splits, 2, device=q.device, dtype=torch.float32)
    leank_split_kernel[(plan.n_splits, b * hkv)](
        q, state.dense_k, state.dense_v, state.mid_k, state.mid_v,
        state.sink_len, state.recent_len, state.mid_len,
        layout.counts, layout.k_row, layout.v_slot, layout.kept_idx,
        part_acc, part_ml,
        scale * math.log2(math.e), plan.chunk, plan.n_mid, plan.n_splits,
        state.mid_k.shape[1], state.mid_v.shape[1], cap,
        HKV=hkv, G=group, D=d, SINK=layout.sink, DENSE=dense,
        DENSE_CHUNK=DENSE_CHUNK, BLOCK_G=max(16, triton.next_power_of_2(group)), BLOCK_N=BLOCK_N,
        num_warps=NUM_WARPS, num_stages=NUM_STAGES,
    )
    out = torch.empty_like(q)
    leank_merge_kernel[(b * h,)](part_acc, part_ml, out, plan.n_splits, BLOCK_S=MERGE_BLOCK, D=d)
    return out
