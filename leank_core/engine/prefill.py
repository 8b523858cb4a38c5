"""Prompt prefill straight into the engine's layout, one sequence at a time, in chunks.

The prompt attends densely (ordinary causal attention over all its tokens: what training
assumed and what ``LeanKCache`` does, compacting only after the prompt). Layer by layer,
the sequence's tokens pass in ``chunk``-token pieces over a dense scratch K/V of that one
layer and sequence; the layer's K/V is then compacted into the engine's storage. So a
128K prompt needs one layer's dense K/V of one sequence and its hidden states, never
``B × 128K`` dense K/V of every layer.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.nn.attention.bias import causal_lower_right

from leank_core.engine.decoder import Decoder
from leank_core.engine.storage import EngineCache


def causal_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scaling: float) -> torch.Tensor:
    """Causal attention of the last ``T`` positions (``q`` ``[1, H, T, D]``) over all ``E >= T`` keys ``[1, H_kv, E, D]``.

    K/V heads are repeated for the query groups rather than passed with ``enable_gqa``, which not
    every SDPA backend takes (a fallback to the math backend would materialise ``T × E`` scores);
    the lower-right causal bias lets flash / memory-efficient kernels handle ``T < E``.
    """
    group = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(group, 1), v.repeat_interleave(group, 1)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=causal_lower_right(q.shape[2], k.shape[2]),
                                          scale=scaling)


def prefill_sequence(decoder: Decoder, cache: EngineCache, row: int, ids: torch.Tensor, chunk: int) -> torch.Tensor:
    """Store prompt ``ids`` ``[N]`` in cache row ``row``; float32 logits ``[V]`` of its next token.

    The caller sets the row's length (``EngineCache.set_lengths``) once every row is stored.
    """
    n = ids.shape[0]
    x, (cos, sin) = decoder.embed_and_rope(ids[None], torch.arange(n, device=ids.device)[None])
    for index, layer in enumerate(decoder.layers):
        keys = x.new_empty(1, decoder.kv_heads, n, decoder.head_dim)
        values = torch.empty_like(keys)
        for start in range(0, n, chunk):
            end = min(n, start + chunk)
            part = x[:, start:end]
            q, k, v = decoder.qkv(index, part, (cos[:, start:end], sin[:, start:end]))
            keys[:, :, start:end], values[:, :, start:end] = k, v
            attended = causal_attention(q, keys[:, :, :end], values[:, :, :end], layer.self_attn.scaling)
            x[:, start:end] = decoder.finish(index, part, attended.transpose(1, 2).reshape(1, end - start, -1))
        cache.store_prompt(index, row, keys[0], values[0])
    return decoder.logits(x[:, -1])[0]
