"""Triton kernels of the fused LeanK decode attention (launch code: ``decode_launch.py``).

``leank_split_kernel``: program ``(split, b * H_kv + rank)`` takes KV head ``h = work_order[rank]``
of sequence ``b``: each sequence's heads that keep the most channels (the longest programs)
start first and its light ones fill in behind them, the usual order for a short launch tail
(its gain over plain head order was never measured on its own, and one global heaviest-first
order measured within noise: ``benchmarks/results/decode_kernel_tries.txt``); with every
channel kept (the dense twin) this is plain head order. It computes, for the G query heads of
KV head ``h`` of sequence ``b`` (one ``[G, ...]`` tile, so K and V are read once per KV head),
an unnormalised partial softmax (running max ``m`` in log2 units, sum ``l``, weighted values
``acc``) over one slice of that head's keys:

* splits ``0 .. n_mid - 1`` take consecutive slices of the compact middle. Each sequence's
  own middle length is cut into ``n_mid`` equal slices of whole tiles, at least
  ``min_chunk`` tokens each (computed on the device, so a short sequence in a large cache
  still spreads over all its programs and a long one never needs a bigger plan). The head's
  kept count ``c`` is read from a table at run time, so every bucket of the layer (any count,
  0 and D included) runs in the same launch: the query gathered to the kept channels times a
  ``[KC, BLOCK_N]`` tile of channel-major ``mid_k``, ``KC`` the head's tier (32, 64 or D
  rows), whose rows ``>= c`` are predicated off, so only kept rows are read;
* the remaining splits take ``DENSE_CHUNK``-slot slices of the dense sink + recent part with
  full ``q . k`` (split too, so a single sequence's dense part is not one long program).

Memory speed depends on wide (16-byte) loads: a mask that varies along the contiguous axis
with an unknown boundary forces element-wise loads, so the middle loop runs over whole tiles
with no token mask and a single masked tile handles each slice's tail. Dots use
``input_precision="ieee"`` so fp32 caches get fp32 products, not TF32 (no effect on fp16/bf16).

``leank_merge_kernel``: program ``b * H + i`` merges the partials of query head ``i`` with a
log-sum-exp rescale (a small second launch). Lengths are read on the device, so neither kernel needs a host sync.
"""

import triton
import triton.language as tl


@triton.jit
def _online_softmax_step(s, v, m_i, l_i, acc):
    """Fold one tile of log2-scaled scores ``s`` [G, N] and values ``v`` [N, D] into the running state."""
    m_new = tl.maximum(m_i, tl.max(s, 1))
    m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)  # a fully masked tile so far: keep zeros
    p = tl.exp2(s - m_safe[:, None])
    alpha = tl.exp2(m_i - m_safe)
    acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision="ieee")
    l_i = l_i * alpha + tl.sum(p, 1)
    return m_new, l_i, acc


@triton.jit
def _middle_slice(q_rows, g_ok, idx_ptr, count, k_rows, v_tok, length, CAP, qk_scale, m_i, l_i, acc,
                  KC: tl.constexpr, D: tl.constexpr, BLOCK_N: tl.constexpr):
    """One head's slice of compact middle tokens, K tiles ``[KC, BLOCK_N]`` (``KC >= count``).

    Row i of the head's mid_k block holds channel ``idx[i]``; the query is gathered to match,
    and rows ``>= count`` are zero in q and never loaded, so one ``[G, KC] x [KC, N]`` dot
    serves every kept count up to ``KC``.
    """
    offs_c = tl.arange(0, KC)
    offs_d = tl.arange(0, D)
    offs_n = tl.arange(0, BLOCK_N)
    c_ok = offs_c < count
    idx = tl.load(idx_ptr + offs_c, mask=c_ok, other=0)
    qk = tl.load(q_rows[:, None] + idx[None, :], mask=g_ok[:, None] & c_ok[None, :], other=0.0)
    k_tile = k_rows + offs_c[:, None] * CAP + offs_n[None, :]
    v_tile = v_tok + offs_n[:, None] * D + offs_d[None, :]
    n_full = length // BLOCK_N
    for i in range(0, n_full):
        k = tl.load(k_tile + i * BLOCK_N, mask=c_ok[:, None], other=0.0)
        v = tl.load(v_tile + i * BLOCK_N * D)
        s = tl.dot(qk, k, input_precision="ieee") * qk_scale
        m_i, l_i, acc = _online_softmax_step(s, v, m_i, l_i, acc)
    if n_full * BLOCK_N < length:
        valid = n_full * BLOCK_N + offs_n < length
        k = tl.load(k_tile + n_full * BLOCK_N, mask=c_ok[:, None] & valid[None, :], other=0.0)
        v = tl.load(v_tile + n_full * BLOCK_N * D, mask=valid[:, None], other=0.0)
        s = tl.where(valid[None, :], tl.dot(qk, k, input_precision="ieee") * qk_scale, float("-inf"))
        m_i, l_i, acc = _online_softmax_step(s, v, m_i, l_i, acc)
    return m_i, l_i, acc


@triton.jit
def leank_split_kernel(
    q_ptr, dense_k_ptr, dense_v_ptr, mid_k_ptr, mid_v_ptr,
    sink_len_ptr, recent_len_ptr, mid_len_ptr,
    counts_ptr, k_row_ptr, v_slot_ptr, kept_idx_ptr, work_order_ptr,
    part_acc_ptr, part_ml_ptr,
    qk_scale, min_chunk, n_mid, n_splits, C, HNZ, CAP,
    HKV: tl.constexpr, G: tl.constexpr, D: tl.constexpr, SINK: tl.constexpr, DENSE: tl.constexpr,
    DENSE_CHUNK: tl.constexpr, BLOCK_G: tl.constexpr, BLOCK_N: tl.constexpr,
):
    split = tl.program_id(0)
    bh = tl.program_id(1)
    b = bh // HKV
    h = tl.load(work_order_ptr + bh % HKV)
    offs_g = tl.arange(0, BLOCK_G)
    offs_d = tl.arange(0, D)
    offs_n = tl.arange(0, BLOCK_N)
    g_ok = offs_g < G
    q_rows = q_ptr + (b * HKV * G + h * G + offs_g) * D

    m_i = tl.full([BLOCK_G], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_G], tl.float32)
    acc = tl.zeros([BLOCK_G, D], tl.float32)

    if split < n_mid:
        count = tl.load(counts_ptr + h)
        mid_len = tl.load(mid_len_ptr + b)
        chunk = tl.maximum(tl.cdiv(tl.cdiv(mid_len, n_mid), BLOCK_N) * BLOCK_N, min_chunk)
        start = tl.multiple_of(split * chunk, BLOCK_N)
        length = tl.minimum(mid_len - start, chunk)
        if (count > 0) & (length > 0):
            idx_ptr = kept_idx_ptr + h * D
            k_rows = mid_k_ptr + (b.to(tl.int64) * C + tl.load(k_row_ptr + h)) * CAP + start
            v_tok = mid_v_ptr + ((b.to(tl.int64) * HNZ + tl.load(v_slot_ptr + h)) * CAP + start) * D
            # K tiles only as tall as the head's tier (32, 64 or D rows): fewer predicated-off
            # rows to issue, same code for every count within a tier.
            if (D > 64) & (count <= 32):
                m_i, l_i, acc = _middle_slice(q_rows, g_ok, idx_ptr, count, k_rows, v_tok, length, CAP, qk_scale,
                                              m_i, l_i, acc, 32, D, BLOCK_N)
            elif (D > 64) & (count <= 64):
                m_i, l_i, acc = _middle_slice(q_rows, g_ok, idx_ptr, count, k_rows, v_tok, length, CAP, qk_scale,
                                              m_i, l_i, acc, 64, D, BLOCK_N)
            else:
                m_i, l_i, acc = _middle_slice(q_rows, g_ok, idx_ptr, count, k_rows, v_tok, length, CAP, qk_scale,
                                              m_i, l_i, acc, D, D, BLOCK_N)
    else:
        # Dense part: sink slots [0, SINK) and the recent ring [SINK, DENSE), full keys.
        q = tl.load(q_rows[:, None] + offs_d[None, :], mask=g_ok[:, None], other=0.0)
        sink_len = tl.load(sink_len_ptr + b)
        recent_len = tl.load(recent_len_ptr + b)
        kv_base = (b * HKV + h) * DENSE * D
        first = (split - n_mid) * DENSE_CHUNK
        for n0 in range(first, tl.minimum(first + DENSE_CHUNK, DENSE), BLOCK_N):
            slots = n0 + offs_n
            valid = ((slots < SINK) & (slots < sink_len)) | ((slots >= SINK) & (slots - SINK < recent_len))
            valid = valid & (slots < DENSE)
            kv_off = kv_base + slots[:, None] * D + offs_d[None, :]
            k = tl.load(dense_k_ptr + kv_off, mask=valid[:, None], other=0.0)
            v = tl.load(dense_v_ptr + kv_off, mask=valid[:, None], other=0.0)
            s = tl.where(valid[None, :], tl.dot(q, tl.trans(k), input_precision="ieee") * qk_scale, float("-inf"))
            m_i, l_i, acc = _online_softmax_step(s, v, m_i, l_i, acc)

    # Partials, query-head major: [B * H, n_splits, D] and [B * H, n_splits, 2] (m, l). A slice
    # with no token (l == 0) writes only m = -inf; the merge never reads its acc.
    rows = b * HKV * G + h * G + offs_g
    slot = rows * n_splits + split
    tl.store(part_ml_ptr + slot * 2, m_i, mask=g_ok)
    tl.store(part_ml_ptr + slot * 2 + 1, l_i, mask=g_ok)
    tl.store(part_acc_ptr + slot[:, None] * D + offs_d[None, :], acc, mask=g_ok[:, None] & (l_i[:, None] > 0))


@triton.jit
def leank_merge_kernel(part_acc_ptr, part_ml_ptr, out_ptr, n_splits, BLOCK_S: tl.constexpr, D: tl.constexpr):
    """One pass over the splits in ``BLOCK_S`` blocks with a running max (any split count, no recompile when
    it changes, no spills); slices with no token (``l == 0``) cost only their ``m, l`` load."""
    row = tl.program_id(0)
    offs_s = tl.arange(0, BLOCK_S)
    offs_d = tl.arange(0, D)
    ml_row = part_ml_ptr + row * n_splits * 2
    m_run = tl.full((), float("-inf"), tl.float32)
    l_run = tl.full((), 0.0, tl.float32)
    acc = tl.zeros([D], tl.float32)
    for s0 in range(0, n_splits, BLOCK_S):
        s_ok = s0 + offs_s < n_splits
        l = tl.load(ml_row + (s0 + offs_s) * 2 + 1, mask=s_ok, other=0.0)
        used = l > 0
        m = tl.where(used, tl.load(ml_row + (s0 + offs_s) * 2, mask=s_ok, other=0.0), float("-inf"))
        part = tl.load(part_acc_ptr + (row * n_splits + s0 + offs_s[:, None]) * D + offs_d[None, :],
                       mask=used[:, None], other=0.0)
        m_new = tl.maximum(m_run, tl.max(m, 0))
        m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
        w = tl.exp2(m - m_safe)  # 0 for unused slices
        alpha = tl.exp2(m_run - m_safe)
        acc = acc * alpha + tl.sum(part * w[:, None], 0)
        l_run = l_run * alpha + tl.sum(l * w, 0)
        m_run = m_new
    tl.store(out_ptr + row * D + offs_d, (acc / l_run).to(out_ptr.dtype.element_ty))
