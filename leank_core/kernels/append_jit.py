"""Triton kernel that appends one decoded token per sequence to a layer's LeanK cache (launch: ``append_launch.py``).

``leank_append_kernel``: program ``b * H_kv + h`` stores KV head ``h`` of sequence ``b``'s new
token at dense slot ``slot(n)`` (``n`` = the sequence's tokens so far, read on the device).
If the ring is full, the token leaving that slot first moves into middle column
``n - S - R``: its kept K channels into the head's channel-major ``mid_k`` rows, its V into
the head's ``mid_v`` slot, nothing for a zero-count head (layout: ``layout.py``). A barrier
separates reading the outgoing token from overwriting its slot, because different threads
of the program touch the same slot in the two phases. The new key and value are read with a
row stride per sequence (``layout.row_strided``).
"""

import triton
import triton.language as tl


@triton.jit
def leank_append_kernel(
    key_ptr, value_ptr, key_row, value_row, n_ptr, dense_k_ptr, dense_v_ptr, mid_k_ptr, mid_v_ptr,
    counts_ptr, k_row_ptr, v_slot_ptr, kept_idx_ptr,
    C, HNZ, CAP,
    HKV: tl.constexpr, D: tl.constexpr, SINK: tl.constexpr, RECENT: tl.constexpr,
):
    bh = tl.program_id(0)
    b = bh // HKV
    h = bh % HKV
    offs = tl.arange(0, D)
    n = tl.load(n_ptr + b).to(tl.int64)
    slot = tl.where(n < SINK, n, SINK + (n - SINK) % RECENT)
    dense_row = (bh.to(tl.int64) * (SINK + RECENT) + slot) * D
    if n >= SINK + RECENT:
        column = n - SINK - RECENT
        count = tl.load(counts_ptr + h)
        kept = offs < count
        idx = tl.load(kept_idx_ptr + h * D + offs, mask=kept, other=0)
        outgoing_k = tl.load(dense_k_ptr + dense_row + idx, mask=kept)
        rows = b.to(tl.int64) * C + tl.load(k_row_ptr + h) + offs
        tl.store(mid_k_ptr + rows * CAP + column, outgoing_k, mask=kept)
        v_slot = tl.load(v_slot_ptr + h)
        if v_slot >= 0:
            outgoing_v = tl.load(dense_v_ptr + dense_row + offs)
            tl.store(mid_v_ptr + ((b.to(tl.int64) * HNZ + v_slot) * CAP + column) * D + offs, outgoing_v)
    tl.debug_barrier()
    tl.store(dense_k_ptr + dense_row + offs, tl.load(key_ptr + b * key_row + h * D + offs))
    tl.store(dense_v_ptr + dense_row + offs, tl.load(value_ptr + b * value_row + h * D + offs))
