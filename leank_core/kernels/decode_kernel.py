"""Triton kernels of the fused LeanK decode attention (launch code: ``triton_decode.py``).

``leank_split_kernel``: program ``(b * H_kv + h, split)`` computes, for the G query heads of
KV head ``h`` of sequence ``b``, an unnormalised partial softmax (running max ``m``, sum ``l``,
weighted values ``acc``) over one slice of that head's keys:

* splits ``0 .. n_mid - 1`` take consecutive ``chunk``-token slices of the compact middle;
  the head's kept count ``c`` is read from a table at run time, so every bucket of the layer
  (any count, including 0 and D) runs in the same launch: scores are accumulated over
  ``ceil(c / KT)`` channel tiles, each a gathered ``[G, KT]`` slice of the query times a
  contiguous ``[KT, BLOCK_N]`` tile of channel-major ``mid_k``;
* the last split takes the dense sink + recent slots with full ``q . k``.

``leank_merge_kernel``: program ``b * H + i`` merges the partials of query head ``i`` with a
log-sum-exp rescale. Lengths are read on the device, so neither kernel needs a host sync.
"""

import triton
import triton.language as tl


@triton.jit
def leank_split_kernel(
    q_ptr, dense_k_ptr, dense_v_ptr, mid_k_ptr, mid_v_ptr,
    sink_len_ptr, recent_len_ptr, mid_len_ptr,
    counts_ptr, k_row_ptr, v_slot_ptr, kept_idx_ptr,
    part_acc_ptr, part_ml_ptr,
    scale, chunk,
    HKV: tl.constexpr, G: tl.constexpr, D: tl.constexpr, SINK: tl.constexpr, DENSE: tl.constexpr,
    C: tl.constexpr, CAP, HNZ: tl.constexpr, N_SPLITS: tl.constexpr,
    KT: tl.constexpr, BLOCK_G: tl.constexpr, BLOCK_N: tl.constexpr,
):
    bh = tl.program_id(0)
    split = tl.program_id(1)
    b = bh // HKV
    h = bh % HKV
    offs_g = tl.arange(0, BLOCK_G)
    offs_d = tl.arange(0, D)
    offs_n = tl.arange(0, BLOCK_N)
    g_ok = offs_g < G
    q_base = q_ptr + (b * HKV * G + h * G) * D
    log2e = 1.4426950408889634
    qk_scale = scale * log2e

    m_i = tl.full([BLOCK_G], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_G], tl.float32)
    acc = tl.zeros([BLOCK_G, D], tl.float32)

    if split == N_SPLITS - 1:
        # Dense part: sink slots [0, SINK) and the recent ring [SINK, DENSE), full keys.
        q = tl.load(q_base + offs_g[:, None] * D + offs_d[None, :], mask=g_ok[:, None], other=0.0)
        sink_len = tl.load(sink_len_ptr + b)
        recent_len = tl.load(recent_len_ptr + b)
        kv_base = (b * HKV + h) * DENSE * D
        for n0 in range(0, DENSE, BLOCK_N):
            slots = n0 + offs_n
            valid = ((slots < SINK) & (slots < sink_len)) | ((slots >= SINK) & (slots - SINK < recent_len))
            valid = valid & (slots < DENSE)
            k = tl.load(dense_k_ptr + kv_base + slots[None, :] * D + offs_d[:, None], mask=valid[None, :], other=0.0)
            s = tl.dot(q, k) * qk_scale
            s = tl.where(valid[None, :], s, float("-inf"))
            m_new = tl.maximum(m_i, tl.max(s, 1))
            m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
            p = tl.exp2(s - m_safe[:, None])
            alpha = tl.exp2(m_i - m_safe)
            v = tl.load(dense_v_ptr + kv_base + slots[:, None] * D + offs_d[None, :], mask=valid[:, None], other=0.0)
            acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v)
            l_i = l_i * alpha + tl.sum(p, 1)
            m_i = m_new
    else:
        count = tl.load(counts_ptr + h)
        mid_len = tl.load(mid_len_ptr + b)
        start = split * chunk
        end = tl.minimum(start + chunk, mid_len)
        if count > 0:
            k_row = tl.load(k_row_ptr + h)
            v_slot = tl.load(v_slot_ptr + h)
            offs_a = tl.arange(0, KT)
            k_base = mid_k_ptr + (b * C + k_row) * CAP
            v_base = mid_v_ptr + ((b * HNZ + v_slot) * CAP) * D
            for n0 in range(start, end, BLOCK_N):
                toks = n0 + offs_n
                valid = toks < end
                s = tl.zeros([BLOCK_G, BLOCK_N], tl.float32)
                for c0 in range(0, count, KT):
                    c_ok = c0 + offs_a < count
                    idx = tl.load(kept_idx_ptr + h * D + c0 + offs_a, mask=c_ok, other=0)
                    qc = tl.load(q_base + offs_g[:, None] * D + idx[None, :], mask=g_ok[:, None] & c_ok[None, :],
                                 other=0.0)
                    kc = tl.load(k_base + (c0 + offs_a)[:, None] * CAP + toks[None, :],
                                 mask=c_ok[:, None] & valid[None, :], other=0.0)
                    s += tl.dot(qc, kc)
                s = tl.where(valid[None, :], s * qk_scale, float("-inf"))
                m_new = tl.maximum(m_i, tl.max(s, 1))
                m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
                p = tl.exp2(s - m_safe[:, None])
                alpha = tl.exp2(m_i - m_safe)
                v = tl.load(v_base + toks[:, None] * D + offs_d[None, :], mask=valid[:, None], other=0.0)
                acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v)
                l_i = l_i * alpha + tl.sum(p, 1)
                m_i = m_new

    # Partials, query-head major: [B * H, N_SPLITS, D] and [B * H, N_SPLITS, 2] (m in log2 units, l).
    rows = b * HKV * G + h * G + offs_g
    tl.store(part_acc_ptr + (rows[:, None] * N_SPLITS + split) * D + offs_d[None, :], acc, mask=g_ok[:, None])
    tl.store(part_ml_ptr + (rows * N_SPLITS + split) * 2, m_i, mask=g_ok)
    tl.store(part_ml_ptr + (rows * N_SPLITS + split) * 2 + 1, l_i, mask=g_ok)


@triton.jit
def leank_merge_kernel(part_acc_ptr, part_ml_ptr, out_ptr, N_SPLITS: tl.constexpr, BLOCK_S: tl.constexpr,
                       D: tl.constexpr):
    row = tl.program_id(0)
    offs_s = tl.arange(0, BLOCK_S)
    offs_d = tl.arange(0, D)
    s_ok = offs_s < N_SPLITS
    m = tl.load(part_ml_ptr + (row * N_SPLITS + offs_s) * 2, mask=s_ok, other=float("-inf"))
    l = tl.load(part_ml_ptr + (row * N_SPLITS + offs_s) * 2 + 1, mask=s_ok, other=0.0)
    m_max = tl.max(m, 0)
    w = tl.where(s_ok & (m > float("-inf")), tl.exp2(m - m_max), 0.0)
    acc = tl.load(part_acc_ptr + (row * N_SPLITS + offs_s[:, None]) * D + offs_d[None, :], mask=s_ok[:, None], other=0.0)
    out = tl.sum(acc * w[:, None], 0) / tl.sum(l * w, 0)
    tl.store(out_ptr + row * D + offs_d, out.to(out_ptr.dtype.element_ty))
