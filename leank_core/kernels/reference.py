"""PyTorch references of the Triton kernels (decode attention, token append, residual RMS norm, RoPE, SiLU gate):
the CPU path and the test oracle.

Decode attention (identical to the Triton kernel): for each sequence ``b`` and query head ``i`` of
KV head ``h``, one softmax over the valid dense slots (sink + recent ring, full ``q . k``)
and, if ``counts[h] > 0``, the first ``mid_len[b]`` middle tokens scored with the query
gathered to the head's kept channels. Scores and softmax in float32; output in q's dtype.
Token append: as described in ``layout.py``. Residual RMS norm and RoPE: the decode-step arithmetic
of the Llama-family decoder layer (see ``norm_rope_jit.py``); SiLU gate: its MLP's activation
(``activation_jit.py``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from leank_core.kernels.layout import DecodeState, LayerLayout


def dense_slot_valid(state: DecodeState, sink: int) -> torch.Tensor:
    """``[B, S + R]`` bool: which dense slots hold a token of each sequence."""
    slots = torch.arange(state.dense_k.shape[2], device=state.dense_k.device)
    in_sink = (slots < sink) & (slots < state.sink_len[:, None])
    in_ring = (slots >= sink) & (slots - sink < state.recent_len[:, None])
    return in_sink | in_ring


def decode_attention_reference(
    q: torch.Tensor, state: DecodeState, layout: LayerLayout, scale: float
) -> torch.Tensor:
    """Attention output ``[B, H, D]`` for one decode query ``q`` ``[B, H, D]``."""
    b, h, d = q.shape
    hkv = layout.num_kv_heads
    g = h // hkv
    cap = state.mid_k.shape[-1]
    qg = q.float().view(b, hkv, g, d)

    s_dense = torch.einsum("bhgd,bhsd->bhgs", qg, state.dense_k.float()) * scale
    s_dense = s_dense.masked_fill(~dense_slot_valid(state, layout.sink)[:, None, None, :], float("-inf"))

    s_mid = q.new_full((b, hkv, g, cap), float("-inf"), dtype=torch.float32)
    for count, row, heads in layout.buckets:
        hs = list(heads)
        idx = layout.kept_idx[hs, :count].long().to(q.device)  # [nb, c]
        q_kept = torch.gather(qg[:, hs], -1, idx[None, :, None, :].expand(b, -1, g, -1))
        k_kept = state.mid_k[:, row : row + len(hs) * count].float().view(b, len(hs), count, cap)
        s_mid[:, hs] = torch.einsum("bhgc,bhcn->bhgn", q_kept, k_kept) * scale
    valid_mid = torch.arange(cap, device=q.device)[None, :] < state.mid_len[:, None]
    s_mid = s_mid.masked_fill(~valid_mid[:, None, None, :], float("-inf"))

    probs = torch.softmax(torch.cat([s_dense, s_mid], dim=-1), dim=-1)
    p_dense, p_mid = probs.split([s_dense.shape[-1], cap], dim=-1)
    out = torch.einsum("bhgs,bhsd->bhgd", p_dense, state.dense_v.float())
    nz = [hh for _, _, heads in layout.buckets for hh in heads]
    if nz:
        slots = layout.v_slot[nz].long().to(q.device)
        mid_v = state.mid_v[:, slots].float()  # [B, n_nz, cap, D]
        out[:, nz] += torch.einsum("bhgn,bhnd->bhgd", p_mid[:, nz], mid_v)
    return out.reshape(b, h, d).to(q.dtype)



def append_token_reference(key: torch.Tensor, value: torch.Tensor, n: torch.Tensor, state: DecodeState,
                           layout: LayerLayout) -> None:
    """Store ``key``/``value`` ``[B, H_kv, D]`` as token ``n[b]`` of each sequence, in place (see layout.py).

    Where the ring is full, the slot's outgoing token first moves to middle column ``n - S - R``
    (kept K channels, V of nonzero heads); nothing else in the middle is written.
    """
    sink, recent = layout.sink, layout.recent
    slot = torch.where(n < sink, n, sink + (n - sink).remainder(recent))
    row_head, row_channel, value_head = layout.row_sources()
    for b in (n >= sink + recent).nonzero().flatten().tolist():
        column, s = int(n[b]) - sink - recent, int(slot[b])
        state.mid_k[b, :, column] = state.dense_k[b, row_head, s, row_channel]
        state.mid_v[b, :, column] = state.dense_v[b, value_head, s]
    rows = torch.arange(key.shape[0], device=key.device)
    state.dense_k[rows, :, slot] = key
    state.dense_v[rows, :, slot] = value


def residual_rms_norm_reference(residual: torch.Tensor, delta: torch.Tensor | None, weight: torch.Tensor,
                                eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """``(s, norm(s))`` for ``s = residual + delta`` (or ``residual``): the residual add of a decoder layer
    followed by the Llama-family RMSNorm, op for op as transformers computes them."""
    total = residual if delta is None else residual + delta
    h = total.to(torch.float32)
    h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps)
    return total, weight * h.to(total.dtype)


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def rope_reference(q: torch.Tensor, k: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Rotate-half RoPE of one token per sequence (``q`` ``[B, H, D]``, ``k`` ``[B, H_kv, D]``, ``cos``/``sin``
    ``[B, D]``), op for op as the Llama-family ``apply_rotary_pos_emb`` computes it."""
    c, s = cos[:, None], sin[:, None]
    return q * c + _rotate_half(q) * s, k * c + _rotate_half(k) * s


def silu_mul_reference(gate_up: torch.Tensor) -> torch.Tensor:
    """``silu(gate) * up`` of ``gate_up`` ``[..., 2 * I]`` (gate first): the Llama-family MLP's
    ``act_fn(gate_proj(x)) * up_proj(x)`` for a stacked gate/up projection, op for op."""
    gate, up = gate_up.chunk(2, -1)
    return F.silu(gate) * up
