"""One decode step of the whole model: one new token per sequence through every layer, no host sync.

The token fed to sequence ``b`` is its ``n[b]``-th (0-based): it gets RoPE position
``n[b]``, is stored in the engine's cache (the append kernel moves a full ring's outgoing
token into the compact middle first), and its query attends over the sequence's sink,
compact middle and recent ring (the decode kernel). Lengths are computed once per step on
the device and shared by all layers. Everything here has static shapes for a given batch
(bucket), which is what lets the engine capture the step in a CUDA graph.
"""

from __future__ import annotations

import torch

from leank_core.engine.decoder import Decoder
from leank_core.engine.storage import EngineCache
from leank_core.kernels import append_token, decode_attention


def decode_logits(decoder: Decoder, cache: EngineCache, tokens: torch.Tensor) -> torch.Tensor:
    """float32 logits ``[B, V]`` after feeding ``tokens`` ``[B]`` to cache rows ``0 .. B-1`` (which store them)."""
    batch = tokens.shape[0]
    n = cache.n[:batch]
    x, rope = decoder.embed_and_rope(tokens[:, None], n[:, None])
    lengths = cache.lengths(batch)
    for layer, store in zip(decoder.layers, cache.layers):
        q, k, v = decoder.qkv(layer, x, rope)
        state = store.state(batch, lengths)
        append_token(k[:, :, 0], v[:, :, 0], n, state, store.layout)
        attended = decode_attention(q[:, :, 0], state, store.layout, layer.self_attn.scaling)
        x = decoder.finish(layer, x, attended.view(batch, 1, -1))
    return decoder.logits(x[:, 0])
