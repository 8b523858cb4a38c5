"""Launch code for the append kernel (``append_jit.py``); same contract as ``reference.append_token_reference``.

One launch per layer and step, ``B * H_kv`` small programs; the position ``n`` is read on the
device, so the launch needs no host sync and is CUDA-graph friendly.
"""

from __future__ import annotations

import torch

from leank_core.kernels.append_jit import leank_append_kernel
from leank_core.kernels.layout import DecodeState, LayerLayout, row_strided


def append_token_triton(key: torch.Tensor, value: torch.Tensor, n: torch.Tensor, state: DecodeState,
                        layout: LayerLayout) -> None:
    """Store ``key``/``value`` ``[B, H_kv, D]`` as token ``n[b]`` of each sequence (see layout.py)."""
    b, hkv, d = key.shape
    state.check_buffers(key.dtype)
    (key, key_row), (value, value_row) = row_strided(key), row_strided(value)
    leank_append_kernel[(b * hkv,)](
        key, value, key_row, value_row, n, state.dense_k, state.dense_v, state.mid_k, state.mid_v,
        layout.counts, layout.k_row, layout.v_slot, layout.kept_idx,
        state.mid_k.shape[1], state.mid_v.shape[1], state.mid_k.shape[-1],
        HKV=hkv, D=d, SINK=layout.sink, RECENT=layout.recent,
        num_warps=1,
    )
