"""Launch code for the fused LeanK decode kernels (``decode_jit.py``); same contract as the reference.

Per layer and step: one split kernel over ``B * H_kv`` KV heads (each sequence's heaviest
first) × (middle splits + dense splits), then a small log-sum-exp merge over ``B * H`` query
heads. The split plan depends only on static shapes (batch, heads, middle capacity, SM
count), never on device lengths, so a step needs no host sync and is CUDA-graph friendly;
each sequence's middle is cut into the plan's slices on the device, and slices beyond a
sequence's middle length exit at once.
Sizes that change while decoding (capacity, split count, kept rows) are runtime arguments,
so a growing cache does not recompile the kernel per size (Triton's own divisibility
specialisation aside).

The tile and split choices live in one :class:`DecodeConfig`; ``benchmarks/decode_attention.py
--sweep`` times alternatives on the GPU, and the winner becomes :data:`CONFIG`
(``benchmarks/results/decode_sweep.md``: 256-token minimum slices, four pipeline stages where
slices are long).
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import torch
import triton

from leank_core.kernels.decode_jit import leank_merge_kernel, leank_split_kernel
from leank_core.kernels.layout import DecodeState, LayerLayout


class DecodeConfig(NamedTuple):
    """Tile sizes and split plan of the decode kernel (all multiples as the kernel needs them)."""

    block_n: int = 128  # tokens per tile
    min_chunk: int = 256  # middle tokens per split, at least (a multiple of block_n): fewer partials to merge
    dense_chunk: int = 256  # dense sink + recent slots per split
    waves: int = 8  # programs wanted per SM
    num_warps: int = 4
    num_stages: int = 4  # for 16-bit caches and slices of >= deep_tiles tiles; otherwise fewer (stages_for)
    deep_tiles: int = 16  # middle-slice tiles from which the deep pipeline pays
    merge_block: int = 64  # splits per merge step

    def stages_for(self, element_size: int, slice_tiles: int) -> int:
        """Pipeline stages for ``element_size``-byte caches whose middle slices span ``slice_tiles`` tiles.

        A deep pipeline only pays when each program walks many tiles: on the H200 four stages
        gained 2-3% where slices span >= 16 tiles and lost up to 15% at 2-8 tiles, where the
        prologue's loads are mostly predicated off and the shared memory it takes costs occupancy
        (``benchmarks/results/decode_sweep.md``, ``decode_attention_stages4.md``), so short slices
        keep two. fp32 tiles take twice the shared memory of 16-bit ones, so half the stages.
        """
        stages = self.num_stages if slice_tiles >= self.deep_tiles else 2
        return max(2, stages * 2 // element_size)

    def describe(self) -> str:
        return ",".join(f"{k}={v}" for k, v in self._asdict().items())


CONFIG = DecodeConfig()


class SplitPlan(NamedTuple):
    """How one step's keys are cut into programs: ``n_mid`` middle slices per sequence, ``n_dense`` dense ones;
    a full middle's slice spans ``slice_tiles`` tiles."""

    n_mid: int
    n_dense: int
    slice_tiles: int

    @property
    def n_splits(self) -> int:
        return self.n_mid + self.n_dense


@functools.lru_cache(maxsize=None)
def _sm_count(device_index: int) -> int:
    return torch.cuda.get_device_properties(device_index).multi_processor_count


def _programs_wanted(device: torch.device, config: DecodeConfig) -> int:
    """Programs that fill the GPU a few times over; the interpreter has no SMs, 64 exercises split-K."""
    if device.type == "cuda":
        return config.waves * _sm_count(device.index if device.index is not None else torch.cuda.current_device())
    return 64


def split_plan(batch: int, kv_heads: int, capacity: int, dense_slots: int, device: torch.device,
               config: DecodeConfig = CONFIG) -> SplitPlan:
    """The split plan from static shapes only: enough middle slices that batch 1 still fills the GPU,
    no more than a full middle of ``capacity`` tokens can use at ``min_chunk`` tokens per slice."""
    want = max(1, _programs_wanted(device, config) // (batch * kv_heads))
    n_mid = min(triton.cdiv(capacity, config.min_chunk), want)
    return SplitPlan(n_mid, triton.cdiv(dense_slots, config.dense_chunk),
                     triton.cdiv(triton.cdiv(capacity, max(n_mid, 1)), config.block_n))


def _check(q: torch.Tensor, state: DecodeState, layout: LayerLayout, config: DecodeConfig) -> None:
    if layout.counts.device != q.device:
        raise ValueError(f"layout tensors are on {layout.counts.device} but q is on {q.device}; "
                         "move the layout once with layout.to(q.device)")
    state.check_buffers(q.dtype)
    if config.min_chunk % config.block_n:
        raise ValueError(f"min_chunk={config.min_chunk} must be a multiple of block_n={config.block_n}")


def decode_attention_triton(q: torch.Tensor, state: DecodeState, layout: LayerLayout, scale: float,
                            config: DecodeConfig = CONFIG) -> torch.Tensor:
    """Attention output ``[B, H, D]`` for one decode query ``q`` ``[B, H, D]`` (see reference.py)."""
    _check(q, state, layout, config)
    b, h, d = q.shape
    hkv = layout.num_kv_heads
    group = h // hkv
    cap = state.mid_k.shape[-1]
    dense = state.dense_k.shape[2]
    plan = split_plan(b, hkv, cap, dense, q.device, config)
    q = q.contiguous()
    part_acc = torch.empty(b * h, plan.n_splits, d, device=q.device, dtype=torch.float32)
    part_ml = torch.empty(b * h, plan.n_splits, 2, device=q.device, dtype=torch.float32)
    leank_split_kernel[(plan.n_splits, b * hkv)](
        q, state.dense_k, state.dense_v, state.mid_k, state.mid_v,
        state.sink_len, state.recent_len, state.mid_len,
        layout.counts, layout.k_row, layout.v_slot, layout.kept_idx, layout.work_order,
        part_acc, part_ml,
        scale * math.log2(math.e), config.min_chunk, plan.n_mid, plan.n_splits,
        state.mid_k.shape[1], state.mid_v.shape[1], cap,
        HKV=hkv, G=group, D=d, SINK=layout.sink, DENSE=dense,
        DENSE_CHUNK=config.dense_chunk, BLOCK_G=max(16, triton.next_power_of_2(group)), BLOCK_N=config.block_n,
        num_warps=config.num_warps, num_stages=config.stages_for(q.element_size(), plan.slice_tiles),
    )
    out = torch.empty_like(q)
    leank_merge_kernel[(b * h,)](part_acc, part_ml, out, plan.n_splits, BLOCK_S=config.merge_block, D=d)
    return out
