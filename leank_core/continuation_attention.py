"""LeanK attention of a few continuation tokens over a long prefilled context, in O(tokens) memory.

Training runs the answer tokens (teacher, then student) after a prompt of up to 128K tokens.
:class:`leank_core.attention.MaskedAttention` defines the semantics by materialising ``[T, S]``
float32 scores and a float32 copy of every key, and autograd keeps both for backward: at 128K
that does not fit a GPU. This module computes exactly the same thing differently:

* the channel weight moves to the query rows, ``q · (k ⊙ w) = (q ⊙ w) · k``, so middle keys are
  never rescaled or copied;
* keys are visited in blocks with an online softmax (flash-attention style); forward saves only
  the query rows, ``w``, the output and each row's log-sum-exp, plus references to the context
  keys/values it read (the KV snapshot itself, not a copy);
* backward recomputes each block's probabilities from the saved log-sum-exp and accumulates the
  gradients of the query rows, of the continuation's own keys/values, and of ``w``.

Semantics (docs/design.md §1, ``leank_core/attention.py``): a query at position ``p`` sees keys
``0..p``; key ``j`` is *middle* iff ``sink <= j < p + 1 - recent``; middle keys are scored with
``(q ⊙ w) · k``, all others with ``q · k``, in float32 (float64 for float64 inputs, which the
gradient checks use); zero heads drop middle keys. ``w = None`` is the teacher (dense scores),
and ``w`` all ones gives bit for bit the teacher's result, as in ``MaskedAttention``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

CHUNK = 32768  # context keys per block: scores of one block are [kv heads, query rows, CHUNK] float32

PLAIN, MIDDLE, MIXED = "plain", "middle", "mixed"  # a block's keys: middle for no query, every query, some


@dataclass(frozen=True)
class Block:
    """Keys ``start:stop`` of the sequence, all scored the same way for every query (``kind``)."""

    start: int
    stop: int
    kind: str


def context_blocks(n_context: int, n_new: int, sink: int, recent: int, chunk: int = CHUNK) -> list[Block]:
    """Split the context keys where their middle-ness changes, then into pieces of at most ``chunk``.

    Queries sit at positions ``n_context .. n_context + n_new - 1``; keys in
    ``[sink, n_context + 1 - recent)`` are middle for every one of them, keys before ``sink``
    for none; only the last ``recent - 1`` context keys (and the new tokens) are mixed.
    """
    all_middle_end = n_context + 1 - recent
    no_middle_from = n_context + n_new - recent
    cuts = sorted({0, n_context, *(min(max(c, 0), n_context) for c in (sink, all_middle_end))})
    blocks = []
    for a, b in zip(cuts, cuts[1:]):
        if b <= sink or a >= no_middle_from:
            kind = PLAIN
        elif a >= sink and b <= all_middle_end:
            kind = MIDDLE
        else:
            kind = MIXED
        blocks += [Block(s, min(s + chunk, b), kind) for s in range(a, b, chunk)]
    return blocks


class _Rows:
    """The query rows of one call and how a block of keys is scored for them.

    Rows are ``[B, H_kv, G * T, D]`` (the ``G`` query heads sharing a KV head, then tokens), so
    one batched matmul scores a whole GQA group against a block of that head's keys.
    """

    def __init__(self, query: torch.Tensor, weights: torch.Tensor | None, zero_heads: torch.Tensor | None,
                 n_context: int, n_kv_heads: int, sink: int, recent: int, scaling: float) -> None:
        b, h, t, d = query.shape
        self.dtype = torch.float64 if query.dtype == torch.float64 else torch.float32
        self.n_new, self.group = t, h // n_kv_heads
        self.q = query.to(self.dtype).reshape(b, n_kv_heads, self.group * t, d)
        self.w = None if weights is None else weights.to(query.device, self.dtype)[None, :, None, :]
        self.qw = None if weights is None else self.q * self.w
        self.zero = None if zero_heads is None else zero_heads.to(query.device)[:, None, None]
        self.sink, self.recent, self.scaling, self.n_context = sink, recent, scaling, n_context
        self.pos_q = torch.arange(n_context, n_context + t, device=query.device).repeat(self.group)[:, None]

    def blocks(self, chunk: int) -> list[Block]:
        """Context blocks, then the new tokens (always mixed: causal, and middle once T > recent).

        The teacher gets the same blocks, all plain, so that unit weights reproduce it bit for bit.
        """
        found = context_blocks(self.n_context, self.n_new, self.sink, self.recent, chunk)
        if self.qw is None and self.zero is None:  # the teacher: middle-ness changes nothing
            found = [Block(b.start, b.stop, PLAIN) for b in found]
        return found + [Block(self.n_context, self.n_context + self.n_new, MIXED)]

    def middle(self, block: Block) -> torch.Tensor:
        """``[G * T, C]`` bool: which of the block's keys are middle keys for each row."""
        pos_k = torch.arange(block.start, block.stop, device=self.q.device)[None, :]
        return (pos_k >= self.sink) & (pos_k < self.pos_q + 1 - self.recent)

    def scores(self, keys: torch.Tensor, block: Block) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Scaled scores ``[B, H_kv, G * T, C]`` (-inf where a key is not attended) of the block's
        ``keys`` (in :attr:`dtype`) and, for a mixed block, its middle-key mask; the operations and
        their order are MaskedAttention's."""
        k = keys.transpose(-1, -2)
        middle = self.middle(block) if block.kind == MIXED else None
        if self.qw is None or block.kind == PLAIN:
            raw = self.q @ k
        elif block.kind == MIDDLE:
            raw = self.qw @ k
        else:
            raw = torch.where(middle, self.qw @ k, self.q @ k)
        scores = raw * self.scaling
        blocked = None
        if block.start >= self.n_context:  # the new tokens: causal among themselves
            pos_k = torch.arange(block.start, block.stop, device=self.q.device)[None, :]
            blocked = pos_k > self.pos_q
        if self.zero is not None and block.kind != PLAIN:
            drop = self.zero if middle is None else self.zero & middle
            blocked = drop if blocked is None else blocked | drop
        if blocked is not None:
            scores = scores.masked_fill(blocked, float("-inf"))
        return scores, middle


def _block_kv(block: Block, context: tuple[torch.Tensor, torch.Tensor], new: tuple[torch.Tensor, torch.Tensor],
              dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """The block's keys and values in the compute dtype: the only per-block copies (one block at a time)."""
    n_context = context[0].shape[2]
    keys, values = new if block.start >= n_context else (
        context[0][:, :, block.start:block.stop], context[1][:, :, block.start:block.stop])
    return keys.to(dtype), values.to(dtype)


class ContinuationAttention(torch.autograd.Function):
    """Autograd for :func:`continuation_attention`; gradients reach ``query``, ``new_keys``,
    ``new_values`` and ``weights`` (the context snapshot is frozen)."""

    @staticmethod
    def forward(ctx, query, new_keys, new_values, weights, context_keys, context_values, zero_heads,
                sink: int, recent: int, scaling: float, chunk: int):
        n_context = context_keys.shape[2]
        rows = _Rows(query, weights, zero_heads, n_context, new_keys.shape[1], sink, recent, scaling)
        b, hkv, r, d = rows.q.shape
        m = rows.q.new_full((b, hkv, r), float("-inf"))
        total = rows.q.new_zeros((b, hkv, r))
        acc = rows.q.new_zeros((b, hkv, r, new_values.shape[-1]))
        for block in rows.blocks(chunk):
            keys, values = _block_kv(block, (context_keys, context_values), (new_keys, new_values), rows.dtype)
            scores, _ = rows.scores(keys, block)
            m_new = torch.maximum(m, scores.amax(-1))
            m_safe = m_new.masked_fill(m_new == float("-inf"), 0.0)  # a row may have no key in this block yet
            p = torch.exp(scores - m_safe[..., None])
            correction = torch.exp(m - m_safe)
            total = total * correction + p.sum(-1)
            acc = acc * correction[..., None] + p @ values
            m = m_new
        out = acc / total[..., None]  # every row attends at least to its own token: total > 0
        lse = m + torch.log(total)
        ctx.save_for_backward(query, new_keys, new_values, weights, context_keys, context_values, zero_heads, out, lse)
        ctx.settings = (sink, recent, scaling, chunk)
        return out.reshape(*query.shape[:3], -1).to(query.dtype)

    @staticmethod
    def backward(ctx, grad_out):
        query, new_keys, new_values, weights, context_keys, context_values, zero_heads, out, lse = ctx.saved_tensors
        sink, recent, scaling, chunk = ctx.settings
        n_context = context_keys.shape[2]
        rows = _Rows(query, weights, zero_heads, n_context, new_keys.shape[1], sink, recent, scaling)
        d_out = grad_out.to(rows.dtype).reshape(out.shape)
        delta = (d_out * out).sum(-1, keepdim=True)
        dq_plain = torch.zeros_like(rows.q)
        dq_middle = None if rows.qw is None else torch.zeros_like(rows.q)
        d_new_keys = d_new_values = None
        for block in rows.blocks(chunk):
            k, v = _block_kv(block, (context_keys, context_values), (new_keys, new_values), rows.dtype)
            scores, middle = rows.scores(k, block)
            p = torch.exp(scores - lse[..., None])
            d_raw = p * (d_out @ v.transpose(-1, -2) - delta) * scaling  # gradient of the unscaled scores
            if rows.qw is None or block.kind == PLAIN:
                d_plain, d_middle = d_raw, None
            elif block.kind == MIDDLE:
                d_plain, d_middle = None, d_raw
            else:
                d_middle = d_raw.masked_fill(~middle, 0.0)
                d_plain = d_raw - d_middle
            if d_plain is not None:
                dq_plain += d_plain @ k
            if d_middle is not None:
                dq_middle += d_middle @ k
            if block.start >= n_context:
                d_new_keys = _sum_terms((d_plain, rows.q), (d_middle, rows.qw))
                d_new_values = p.transpose(-1, -2) @ d_out
        d_query = dq_plain if dq_middle is None else dq_plain + dq_middle * rows.w
        d_weights = None if dq_middle is None else (rows.q * dq_middle).sum((0, 2)).to(weights.dtype)
        return (d_query.reshape(query.shape).to(query.dtype), d_new_keys.to(new_keys.dtype),
                d_new_values.to(new_values.dtype), d_weights, None, None, None, None, None, None, None)


def _sum_terms(*terms: tuple[torch.Tensor | None, torch.Tensor | None]) -> torch.Tensor:
    """``Σ a.T @ b`` over the pairs whose ``a`` is present: a key's gradient from the rows scoring it."""
    return sum(a.transpose(-1, -2) @ b for a, b in terms if a is not None)


def continuation_attention(
    query: torch.Tensor,
    context: tuple[torch.Tensor, torch.Tensor],
    new: tuple[torch.Tensor, torch.Tensor],
    weights: torch.Tensor | None,
    zero_heads: torch.Tensor | None,
    sink: int,
    recent: int,
    scaling: float,
    chunk: int = CHUNK,
) -> torch.Tensor:
    """LeanK attention output ``[B, T, H, D]`` for ``query`` ``[B, H, T, D]`` (the last ``T`` positions).

    ``context`` = (keys, values) ``[B, H_kv, S, D]`` of the prefilled prompt (read, never copied
    whole); ``new`` = the ``T`` continuation tokens' own keys/values; ``weights`` ``[H_kv, D]``
    multiplies middle keys channel-wise (None: dense); ``zero_heads`` ``[H_kv]`` bool drops
    middle keys in those heads. Batches must not be padded.
    """
    out = ContinuationAttention.apply(query, new[0], new[1], weights, context[0], context[1], zero_heads,
                                      sink, recent, scaling, chunk)
    return out.transpose(1, 2)
