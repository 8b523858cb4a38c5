"""LeanK attention of a few continuation tokens over a long prefilled context, in O(tokens) memory.

Training runs the answer tokens (the student) after a prompt of up to 128K tokens.
:class:`leank_core.attention.MaskedAttention` defines the semantics by materialising ``[T, S]``
float32 scores and a float32 copy of every key, and autograd keeps both for backward: at 128K
that does not fit a GPU. This module computes exactly the same thing differently:

* the channel weight moves to the query rows, ``q · (k ⊙ w) = (q ⊙ w) · k``, and so does the
  softmax scale, so middle keys are never rescaled or copied whole;
* a pass runs 16 tokens through 32 layers eagerly, so each layer does its keys in as few
  kernels as possible (:class:`KeyLayout`): all of them in one block while the scores fit
  :data:`SCORE_BUDGET` (longer contexts: several blocks, combined by an online softmax). The
  block starts with the *edge*, the keys whose scoring depends on the query (the new tokens,
  the sink, the recent window), re-scored with ``q`` where they are not middle keys under
  masks built once per pass, not per layer; the rest, the *bulk*, is middle keys for every
  query and is scored with ``q ⊙ w`` alone;
* scores are kept keys-major (``[keys, rows]``) and the sums over keys (``p @ v`` and the
  query gradient) run as one batched product per :data:`PIECE` keys, then a sum: a single
  product over 32K keys with a ``[rows, D]`` result leaves most of a GPU idle;
* forward saves only the query rows, ``w``, the output and each row's log-sum-exp, plus
  references to the context keys/values it read (the KV snapshot itself, not a copy);
  backward recomputes each block's probabilities from the saved log-sum-exp.

Semantics (docs/design.md §1, ``leank_core/attention.py``): a query at position ``p`` sees keys
``0..p``; key ``j`` is *middle* iff ``sink <= j < p + 1 - recent``; middle keys are scored with
``(q ⊙ w) · k``, all others with ``q · k``, in float32 (float64 for float64 inputs, which the
gradient checks use); zero heads drop middle keys. ``w = None`` is dense attention, and ``w``
all ones gives bit for bit the same result, as in ``MaskedAttention``.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch

PIECE = 1024  # context keys per independent product of a sum over keys (p @ v, the query gradient)
SCORE_BUDGET = 1 << 25  # score elements (float32: 128 MiB) of one bulk block: 8B shapes at 32K fit one block


@dataclass(frozen=True)
class KeyLayout:
    """Which keys each block of a call holds; the same for every layer of a pass (so built once per pass).

    Block ``i`` holds the context keys ``bulk[i]`` (whole pieces, middle keys for every query row),
    block 0 first the *edge*: the ``n_new`` new tokens, the context ranges ``edge_context`` and
    ``pad`` zero keys that make it whole pieces too. ``middle`` and ``blocked`` (causal, and the
    padding) are the edge's masks, keys-major ``[edge keys, rows]``; rows are the ``G`` query heads
    of a KV head, then the tokens.
    """

    n_new: int
    piece: int
    edge_context: tuple[tuple[int, int], ...]
    pad: torch.Tensor  # [1, 1, pad, 1] zeros
    bulk: tuple[tuple[int, int], ...]
    middle: torch.Tensor
    blocked: torch.Tensor


@functools.lru_cache(maxsize=16)
def key_layout(n_context: int, n_new: int, group: int, sink: int, recent: int, piece: int, block: int,
               device: torch.device) -> KeyLayout:
    """The :class:`KeyLayout` of ``n_new`` queries after ``n_context`` keys (``block``: bulk keys per block,
    a multiple of ``piece``). Memoised: every layer of a pass, forward and backward, asks for the same one.
    Built on ``device`` (a copy from the host would wait for the prefill queued before it)."""
    start = min(sink, n_context)
    all_middle_end = max(start, min(n_context, n_context + 1 - recent))
    stop = start + (all_middle_end - start) // piece * piece
    bulk = tuple((a, min(a + block, stop)) for a in range(start, stop, block)) or ((start, start),)
    edge_context = tuple((a, b) for a, b in ((0, start), (stop, n_context)) if b > a)
    ranges = ((n_context, n_context + n_new), *edge_context)
    pos_k = torch.cat([torch.arange(a, b, device=device) for a, b in ranges])[:, None]
    pad = -len(pos_k) % piece
    pos_q = torch.arange(n_context, n_context + n_new, device=device).repeat(group)
    padding = torch.zeros(pad, len(pos_q), dtype=torch.bool, device=device)
    middle = torch.cat([(pos_k >= sink) & (pos_k < pos_q + 1 - recent), padding])
    blocked = torch.cat([pos_k > pos_q, ~padding])
    return KeyLayout(n_new, piece, edge_context, torch.zeros(1, 1, pad, 1, device=device), bulk, middle, blocked)


@dataclass(frozen=True)
class _Rows:
    """The query rows of one call, ``[B, H_kv, G * T, D]`` in the compute dtype, softmax scale folded in."""

    q: torch.Tensor
    qw: torch.Tensor | None  # q ⊙ w: how middle keys are scored (None: dense, they are scored with q)
    zero: torch.Tensor | None  # [1, H_kv, 1, 1] bool: heads that drop middle keys

    @property
    def middle_q(self) -> torch.Tensor:
        return self.q if self.qw is None else self.qw


def _dense(x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``x`` as a contiguous ``dtype`` tensor in one copy (none if it is one): layouts change with the dtype."""
    if x.dtype == dtype and x.is_contiguous():
        return x
    return torch.empty_like(x, dtype=dtype, memory_format=torch.contiguous_format).copy_(x)


def _joined(parts: tuple[torch.Tensor, ...], dtype: torch.dtype) -> torch.Tensor:
    """``parts`` joined along the sequence in the compute dtype: the only copies of the context (one block at a time)."""
    b, h, _, d = parts[0].shape
    out = parts[0].new_empty(b, h, sum(p.shape[2] for p in parts), d, dtype=dtype)
    return torch.cat(parts, 2, out=out)


def _block(rows: _Rows, layout: KeyLayout, context: tuple[torch.Tensor, torch.Tensor],
           new: tuple[torch.Tensor, torch.Tensor], index: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Keys-major scores ``[B, H_kv, C, R]`` of block ``index`` (-inf where not attended), its keys and values."""
    start, stop = layout.bulk[index]
    if index == 0:
        pad = layout.pad.expand(*new[0].shape[:2], -1, new[0].shape[3])
        parts = [(n, *(c[:, :, a:b] for a, b in layout.edge_context), pad, c[:, :, start:stop])
                 for n, c in zip(new, context)]
    else:
        parts = [(c[:, :, start:stop],) for c in context]
    keys, values = (_joined(part, rows.q.dtype) for part in parts)
    scores = keys @ rows.middle_q.mT
    if rows.zero is not None:
        scores.masked_fill_(rows.zero, float("-inf"))
    if index == 0:
        edge = scores[:, :, :layout.middle.shape[0]]  # its keys that are not middle keys: scored with q
        torch.where(layout.middle, edge, keys[:, :, :edge.shape[2]] @ rows.q.mT, out=edge)
        edge.masked_fill_(layout.blocked, float("-inf"))
    return scores, keys, values


def _sum_over_keys(a: torch.Tensor, b: torch.Tensor, piece: int) -> torch.Tensor:
    """``aᵀ @ b`` for keys-major ``a`` ``[B, H_kv, C, R]`` and ``b`` ``[B, H_kv, C, D]``: one product per piece, then a sum."""
    bs, h, c, r = a.shape
    n = c // piece
    return (a.view(bs, h, n, piece, r).mT @ b.view(bs, h, n, piece, -1)).sum(2)


class ContinuationAttention(torch.autograd.Function):
    """Autograd for :func:`continuation_attention`; gradients reach ``query``, ``new_keys``,
    ``new_values`` and ``weights`` (the context snapshot is frozen)."""

    @staticmethod
    def forward(ctx, query, new_keys, new_values, weights, context_keys, context_values, zero_heads,
                sink: int, recent: int, scaling: float, piece: int, budget: int):
        b, h, t, d = query.shape
        hkv = new_keys.shape[1]
        dtype = torch.float64 if query.dtype == torch.float64 else torch.float32
        q = _dense(query, dtype).view(b, hkv, h // hkv * t, d) * scaling
        w = None if weights is None else weights.to(dtype)[None, :, None, :]
        zero = None if zero_heads is None else zero_heads[None, :, None, None]
        rows = _Rows(q, None if w is None else q * w, zero)
        block = max(1, budget // (b * hkv * q.shape[2] * piece)) * piece
        layout = key_layout(context_keys.shape[2], t, h // hkv, sink, recent, piece, block, query.device)
        context, new = (context_keys, context_values), (new_keys, new_values)

        m = total = acc = None  # running max, sum and p @ v of each row (block 0 is finite: a row sees its own token)
        for index in range(len(layout.bulk)):
            scores, _, values = _block(rows, layout, context, new, index)
            block_max = scores.amax(-2, keepdim=True)
            m_new = block_max if m is None else torch.maximum(m, block_max)
            p = scores.sub_(m_new).exp_()
            p_sum, p_v = p.sum(-2, keepdim=True), _sum_over_keys(p, values, piece)
            if m is None:
                total, acc = p_sum, p_v
            else:
                correction = torch.exp(m - m_new)
                total, acc = torch.addcmul(p_sum, total, correction), torch.addcmul(p_v, acc, correction.mT)
            m = m_new
        out = acc / total.mT
        ctx.save_for_backward(rows.q, rows.qw, weights, new_keys, new_values, context_keys, context_values,
                              zero_heads, out, m + torch.log(total))
        ctx.settings = (layout, scaling, query.shape, query.dtype)
        return _dense(out.view(b, h, t, d).transpose(1, 2), query.dtype)  # [B, T, H, D], what o_proj reads

    @staticmethod
    def backward(ctx, grad_out):
        q, qw, weights, new_keys, new_values, context_keys, context_values, zero_heads, out, lse = ctx.saved_tensors
        layout, scaling, query_shape, query_dtype = ctx.settings
        rows = _Rows(q, qw, None if zero_heads is None else zero_heads[None, :, None, None])
        context, new = (context_keys, context_values), (new_keys, new_values)
        d_out = _dense(grad_out.transpose(1, 2), q.dtype).view(out.shape)
        delta = (d_out * out).sum(-1).unsqueeze(-2)
        n = layout.n_new  # the new tokens are block 0's first keys

        d_q = d_qw = None  # gradients of the rows scoring keys with q and with q ⊙ w
        for index in range(len(layout.bulk)):
            scores, keys, values = _block(rows, layout, context, new, index)
            p = scores.sub_(lse).exp_()
            d_scores = (values @ d_out.mT).sub_(delta).mul_(p)  # gradient of the scaled scores, keys-major
            if index == 0:
                d_new_values = p[:, :, :n] @ d_out
                if qw is None:
                    d_new_keys = d_scores[:, :, :n] @ q
                else:  # the edge's plain keys to d_q; d_scores keeps the middle keys'
                    edge = d_scores[:, :, :layout.middle.shape[0]]
                    d_plain = torch.where(layout.middle, 0.0, edge)
                    edge.mul_(layout.middle)
                    d_q = d_plain.mT @ keys[:, :, :edge.shape[2]]
                    d_new_keys = d_plain[:, :, :n] @ q + d_scores[:, :, :n] @ qw
            part = _sum_over_keys(d_scores, keys, layout.piece)
            if qw is None:
                d_q = part if d_q is None else d_q + part
            else:
                d_qw = part if d_qw is None else d_qw + part
        d_weights = None
        if d_qw is not None:
            d_q = torch.addcmul(d_q, d_qw, weights.to(q.dtype)[None, :, None, :])
            d_weights = (q * d_qw).sum((0, 2)).to(weights.dtype)
        d_query = (d_q * scaling).view(query_shape).to(query_dtype)
        return (d_query, d_new_keys.to(new_keys.dtype), d_new_values.to(new_values.dtype), d_weights,
                None, None, None, None, None, None, None, None)


def continuation_attention(
    query: torch.Tensor,
    context: tuple[torch.Tensor, torch.Tensor],
    new: tuple[torch.Tensor, torch.Tensor],
    weights: torch.Tensor | None,
    zero_heads: torch.Tensor | None,
    sink: int,
    recent: int,
    scaling: float,
    piece: int = PIECE,
    budget: int = SCORE_BUDGET,
) -> torch.Tensor:
    """LeanK attention output ``[B, T, H, D]`` for ``query`` ``[B, H, T, D]`` (the last ``T`` positions).

    ``context`` = (keys, values) ``[B, H_kv, S, D]`` of the prefilled prompt (read, never copied
    whole); ``new`` = the ``T`` continuation tokens' own keys/values; ``weights`` ``[H_kv, D]``
    multiplies middle keys channel-wise (None: dense); ``zero_heads`` ``[H_kv]`` bool drops
    middle keys in those heads. ``piece`` and ``budget`` change speed and memory, not results
    (up to float rounding). Batches must not be padded.
    """
    return ContinuationAttention.apply(query, new[0], new[1], weights, context[0], context[1], zero_heads,
                                       sink, recent, scaling, piece, budget)
