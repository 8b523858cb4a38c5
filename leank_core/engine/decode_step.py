"""One decode step of the whole model: one new token per sequence through every layer, no host sync.

The token fed to sequence ``b`` is its ``n[b]``-th (0-based): it gets RoPE position
``n[b]``, is stored in the engine's cache (the append kernel moves a full ring's outgoing
token into the compact middle first), and its query attends over the sequence's sink,
compact middle and recent ring (the decode kernel). Per layer that is: residual add + RMSNorm,
q/k/v projections, RoPE, append, attention, ``o_proj``, residual add + RMSNorm, ``mlp`` —
the decoder layer's own arithmetic with the residual adds folded into the norms. Lengths
are computed once per step on the device and shared by all layers. Shapes are static for a
given batch (bucket), which is what lets the engine capture the step in a CUDA graph.
"""

from __future__ import annotations

import torch

from leank_core.engine.decoder import Decoder
from leank_core.engine.storage import EngineCache
from leank_core.kernels import append_token, decode_attention, residual_rms_norm, rope


def decode_logits(decoder: Decoder, cache: EngineCache, tokens: torch.Tensor) -> torch.Tensor:
    """float32 logits ``[B, V]`` after feeding ``tokens`` ``[B]`` to cache rows ``0 .. B-1`` (which store them)."""
    batch = tokens.shape[0]
    n = cache.n[:batch]
    x, (cos, sin) = decoder.embed_and_rope(tokens[:, None], n[:, None])
    residual, cos, sin = x[:, 0], cos[:, 0], sin[:, 0]
    lengths = cache.lengths(batch)
    delta = None
    for index, (layer, store) in enumerate(zip(decoder.layers, cache.layers)):
        attn = layer.self_attn
        residual, h = residual_rms_norm(residual, delta, *decoder.norm_args(layer.input_layernorm))
        q, k, v = decoder.project_qkv(index, h)
        q, k = rope(q, k, cos, sin)
        state = store.state(batch, lengths)
        append_token(k, v, n, state, store.layout)
        attended = decode_attention(q, state, store.layout, attn.scaling)
        residual, h = residual_rms_norm(residual, attn.o_proj(attended.view(batch, -1)),
                                        *decoder.norm_args(layer.post_attention_layernorm))
        delta = decoder.mlp(index, h)
    _, h = residual_rms_norm(residual, delta, *decoder.norm_args(decoder.norm))
    return decoder.lm_head(h).float()
