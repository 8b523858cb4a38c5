"""Launch code for the fused LeanK decode kernels (``decode_kernel.py``); same contract as the reference.

Two launches per layer and step: the split kernel over ``B * H_kv`` heads × (middle splits
+ 1 dense split), then the log-sum-exp merge over ``B * H`` query heads. The number of
middle splits depends only on static shapes (the middle capacity, the SM count), never on
device lengths, so a step is CUDA-graph friendly and needs no host sync; splits beyond a
sequence's middle length exit immediately.
"""

from __future__ import annotations

import functools

import torch
import triton

from leank_core.kernels.decode_kernel import leank_merge_kernel, leank_split_kernel
from leank_core.kernels.layout import DecodeState, LayerLayout

BLOCK_N = 64
MIN_CHUNK = 256  # middle tokens per split, at least (amortises the partial write + merge)


@functools.lru_cache(maxsize=None)
def _sm_count(device_index: int) -> int:
    return torch.cuda.get_device_properties(device_index).multi_processor_count


def _programs_wanted(device: torch.device) -> int:
    """Enough programs to fill the GPU a few times over (a fixed small number when interpreting)."""
    if device.type == "cuda":
        return 4 * _sm_count(device.index if device.index is not None else torch.cuda.current_device())
    return 8


def middle_splits(batch: int, kv_heads: int, capacity: int, device: torch.device) -> tuple[int, int]:
    """(number of middle splits, tokens per split) from static shapes only."""
    if capacity == 0:
        return 1, MIN_CHUNK
    want = max(1, _programs_wanted(device) // (batch * kv_heads))
    chunk = max(MIN_CHUNK, triton.cdiv(capacity, want))
    chunk = triton.cdiv(chunk, BLOCK_N) * BLOCK_N
    return triton.cdiv(capacity, chunk), chunk


def channel_tile(layout: LayerLayout) -> int:
    """Channels per score tile: 32 when every kept count allows it (fewer, fuller dots), else 16."""
    return 32 if all(count % 32 == 0 for count, _, _ in layout.buckets) else 16


def decode_attention_triton(q: torch.Tensor, state: DecodeState, layout: LayerLayout, scale: float) -> torch.Tensor:
    """Attention output ``[B, H, D]`` for one decode query ``q`` ``[B, H, D]`` (see reference.py)."""
    b, h, d = q.shape
    hkv = layout.num_kv_heads
    group = h // hkv
    cap = state.mid_k.shape[-1]
    n_mid, chunk = middle_splits(b, hkv, cap, q.device)
    n_splits = n_mid + 1
    q = q.contiguous()
    part_acc = torch.empty(b * h, n_splits, d, device=q.device, dtype=torch.float32)
    part_ml = torch.empty(b * h, n_splits, 2, device=q.device, dtype=torch.float32)
    leank_split_kernel[(b * hkv, n_splits)](
        q, state.dense_k, state.dense_v, state.mid_k, state.mid_v,
        state.sink_len, state.recent_len, state.mid_len,
        layout.counts, layout.k_row, layout.v_slot, layout.kept_idx,
        part_acc, part_ml,
        scale, chunk,
        HKV=hkv, G=group, D=d, SINK=layout.sink, DENSE=state.dense_k.shape[2],
        C=max(state.mid_k.shape[1], 1), CAP=cap, HNZ=max(state.mid_v.shape[1], 1), N_SPLITS=n_splits,
        KT=channel_tile(layout), BLOCK_G=max(16, triton.next_power_of_2(group)), BLOCK_N=BLOCK_N,
        num_warps=4,
    )
    out = torch.empty_like(q)
    leank_merge_kernel[(b * h,)](part_acc, part_ml, out, N_SPLITS=n_splits,
                                 BLOCK_S=triton.next_power_of_2(n_splits), D=d)
    return out
