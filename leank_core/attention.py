"""The masked-attention semantics shared by training and inference (the hook is ``hook.py``).

Within a :func:`masked_attention` context (training, reference forwards) every ``"leank"``
attention call computes its query rows with LeanK semantics (:class:`MaskedAttention`).

LeanK semantics for a query at position ``t`` (0-based, keys ``0..t``): key ``j`` is a
*middle* key iff ``sink <= j < t + 1 - recent``. Middle keys are scored with the channel
weights (``q . (k * w)``); every other key with full ``q . k``. In heads flagged as zero
heads, middle keys are dropped entirely (they would all score 0 and only dilute the
softmax), which is what lets the cache store no V for them.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch

from leank_core.hook import AttentionMode, active_mode


def middle_key_mask(n_queries: int, n_keys: int, sink: int, recent: int, device: torch.device) -> torch.Tensor:
    """``[T, S]`` bool: which keys are middle keys for the last ``T`` query positions of ``S``."""
    pos_q = torch.arange(n_keys - n_queries, n_keys, device=device).unsqueeze(1)
    pos_k = torch.arange(n_keys, device=device).unsqueeze(0)
    return (pos_k >= sink) & (pos_k < pos_q + 1 - recent)


@dataclass
class MaskedAttention(AttentionMode):
    """LeanK attention for query rows that attend over an uncompressed key sequence.

    ``weights[l]`` (``[H_kv, D]``) multiplies middle keys channel-wise: learnable alpha in
    stage 1, the (straight-through) binary mask in stage 2 and for reference forwards.
    ``zero_heads[l]`` (``[H_kv]`` bool, optional) marks heads that drop middle tokens.
    Scores are computed in float32 so that ``weights == 1`` reproduces dense attention
    bit for bit (the teacher runs this same function with ``weights=None``).
    Sequences must not be padded (training and reference forwards use batch 1).
    """

    weights: torch.Tensor | None
    sink: int
    recent: int
    zero_heads: torch.Tensor | None = None

    def attend(self, module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
               attention_mask: torch.Tensor | None, scaling: float) -> torch.Tensor:
        b, h, t, d = query.shape
        hkv, s = key.shape[1], key.shape[2]
        q = query.float().view(b, hkv, h // hkv, t, d)
        k = key.float().unsqueeze(2).transpose(-1, -2)  # [B, Hkv, 1, D, S]
        scores = q @ k
        middle = middle_key_mask(t, s, self.sink, self.recent, query.device)
        if self.weights is not None:
            w = self.weights[module.layer_idx].to(query.device, torch.float32)
            scores = torch.where(middle, (q * w[None, :, None, None, :]) @ k, scores)
        scores = scores * scaling
        allowed = _causal(t, s, query.device)
        if self.zero_heads is not None:
            zero = self.zero_heads[module.layer_idx].to(query.device)
            allowed = allowed & ~(middle & zero[:, None, None, None])
        scores = scores.masked_fill(~allowed, float("-inf"))
        probs = torch.softmax(scores, dim=-1)
        out = probs @ value.float().unsqueeze(2)  # [B, Hkv, G, T, D]
        return out.reshape(b, h, t, d).transpose(1, 2).to(query.dtype)


def _causal(n_queries: int, n_keys: int, device: torch.device) -> torch.Tensor:
    pos_q = torch.arange(n_keys - n_queries, n_keys, device=device).unsqueeze(1)
    return torch.arange(n_keys, device=device).unsqueeze(0) <= pos_q


@contextmanager
def masked_attention(
    weights: torch.Tensor | None, sink: int, recent: int, zero_heads: torch.Tensor | None = None
) -> Iterator[MaskedAttention]:
    """Within this context, every ``"leank"`` attention call uses LeanK semantics."""
    with active_mode(MaskedAttention(weights, sink, recent, zero_heads)) as mode:
        yield mode
