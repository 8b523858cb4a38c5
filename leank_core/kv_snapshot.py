"""The prompt's keys/values, prefilled once into preallocated tensors and read by later passes in place.

A training step prefills the prompt once (no gradient), the answer tokens riding along in the
last forward (:func:`prefill_through`: the dense teacher), and then runs the answer tokens again
over the prompt's snapshot (the student). Memory must stay at weights + one KV snapshot +
O(answer tokens), so:

* :func:`prefill` runs the prompt in chunks through the model's own attention path, and every
  layer's keys/values are written straight into one preallocated ``[B, H_kv, S, D]`` tensor
  (a ``DynamicCache`` would ``cat`` a new copy per chunk); each chunk attends over the snapshot
  so far with SDPA and a lower-right causal mask (flash attention on GPU);
* :class:`ContinuationCache` hands a pass the snapshot by reference and keeps only the pass's
  own new tokens; attention goes to :func:`leank_core.continuation_attention.continuation_attention`
  with the pass's LeanK semantics (teacher: dense; student: α or the binary mask).

Both caches are attention modes (:class:`~leank_core.hook.AttentionMode`): passed to the base
model's forward, they receive every ``"leank"`` attention call of that pass (the model needs
the hook, ``leank_core.hook.install``). They apply their own causal masks, so they report
square mask sizes and transformers builds no ``[T, S]`` mask (2 GiB of booleans for a 16K
chunk at 128K).
Batches must not be padded (training runs one sample per forward).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch.nn.attention.bias import causal_lower_right
from transformers import PreTrainedModel
from transformers.cache_utils import Cache, CacheLayerMixin

from leank_core.compat import forward_with_cache, text_config
from leank_core.continuation_attention import continuation_attention
from leank_core.hook import AttentionMode

PREFILL_CHUNK = 32768  # prompt tokens per forward: every chunk re-reads (under ZeRO-3 re-gathers) all weights


@dataclass(frozen=True)
class KVSnapshot:
    """Per layer (keys, values) ``[B, H_kv, S, D]`` of a prefilled prompt, shared read-only by later passes."""

    layers: tuple[tuple[torch.Tensor, torch.Tensor], ...]

    @property
    def length(self) -> int:
        return self.layers[0][0].shape[2]


class _SelfMaskedLayer(CacheLayerMixin):
    """Cache-protocol pieces shared by the two layers (their cache attends with its own masks)."""

    is_sliding = False
    is_compileable = False
    is_croppable = False

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        return query_length, 0  # square: transformers then skips building a mask that attend never reads

    def get_max_length(self) -> int:
        return -1


class _PrefillLayer(_SelfMaskedLayer):
    """Writes each chunk's keys/values into the layer's preallocated snapshot tensors."""

    def __init__(self, length: int) -> None:
        super().__init__()
        self.length, self.filled = length, 0

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        b, hkv, _, d = key_states.shape
        self.keys = key_states.new_empty(b, hkv, self.length, d)
        self.values = value_states.new_empty(b, hkv, self.length, value_states.shape[-1])
        self.is_initialized = True

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any):
        """Store the chunk; return views of everything stored so far (no copy)."""
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        n = key_states.shape[2]
        self.keys[:, :, self.filled:self.filled + n] = key_states
        self.values[:, :, self.filled:self.filled + n] = value_states
        self.filled += n
        return self.keys[:, :, :self.filled], self.values[:, :, :self.filled]

    def get_seq_length(self) -> int:
        return self.filled


class _PrefillCache(Cache, AttentionMode):
    """Chunked prefill: each chunk attends over the snapshot so far, lower-right causal."""

    def __init__(self, num_layers: int, length: int) -> None:
        super().__init__(layers=[_PrefillLayer(length) for _ in range(num_layers)])

    def attend(self, module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
               attention_mask: torch.Tensor | None, scaling: float) -> torch.Tensor:
        n, s = query.shape[2], key.shape[2]
        causal = {"is_causal": True} if n == s else {"attn_mask": causal_lower_right(n, s)}
        out = F.scaled_dot_product_attention(query, key, value, scale=scaling,
                                             enable_gqa=query.shape[1] != key.shape[1], **causal)
        return out.transpose(1, 2)


@torch.no_grad()
def prefill(model: PreTrainedModel, input_ids: torch.Tensor, chunk: int = PREFILL_CHUNK) -> KVSnapshot:
    """Run the prompt ``[B, S]`` with ordinary full causal attention, ``chunk`` tokens per forward."""
    return prefill_through(model, input_ids, input_ids[:, :0], chunk)[0]


@torch.no_grad()
def prefill_through(model: PreTrainedModel, input_ids: torch.Tensor, continuation_ids: torch.Tensor,
                    chunk: int = PREFILL_CHUNK) -> tuple[KVSnapshot, torch.Tensor]:
    """:func:`prefill` the prompt with ``continuation_ids`` ``[B, T]`` run after it in its last forward.

    Returns the prompt's snapshot (views of the first ``S`` positions: the continuation's keys and
    values are stored beside them, never read by later passes) and the continuation's final hidden
    states ``[B, T, hidden]`` under dense attention: what a separate dense pass over the snapshot
    computes, for 16 answer tokens at no cost beside a 32K-token chunk.
    """
    n, t = input_ids.shape[1], continuation_ids.shape[1]
    cache = _PrefillCache(text_config(model).num_hidden_layers, n + t)
    ids = torch.cat([input_ids, continuation_ids], 1)
    starts = range(0, max(n, 1), chunk)
    for start, stop in zip(starts, [*starts[1:], n + t]):
        hidden = forward_with_cache(model.base_model, ids[:, start:stop], cache).last_hidden_state
    snapshot = KVSnapshot(tuple((layer.keys[:, :, :n], layer.values[:, :, :n]) for layer in cache.layers))
    return snapshot, hidden[:, hidden.shape[1] - t:]


class _ContinuationLayer(_SelfMaskedLayer):
    """One layer of a pass: the snapshot by reference plus this pass's new tokens."""

    def __init__(self, context: tuple[torch.Tensor, torch.Tensor], weights: torch.Tensor | None,
                 zero_heads: torch.Tensor | None) -> None:
        super().__init__()
        self.context, self.weights, self.zero_heads = context, weights, zero_heads
        self.new: tuple[torch.Tensor, torch.Tensor] | None = None
        self.is_initialized = True

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        pass  # nothing to allocate: the snapshot exists and new tokens are kept as given

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any):
        """Keep the pass's own tokens beside the snapshot; attention receives them alone."""
        if self.new is not None:
            raise RuntimeError("a ContinuationCache serves one forward pass; make a new one per pass")
        self.new = (key_states, value_states)
        return key_states, value_states

    def get_seq_length(self) -> int:
        return self.context[0].shape[2] + (0 if self.new is None else self.new[0].shape[2])


class ContinuationCache(Cache, AttentionMode):
    """The cache of one pass over a :class:`KVSnapshot` with LeanK semantics.

    ``weights`` ``[L, H_kv, D]`` multiplies middle keys (None: dense, the teacher);
    ``zero_heads`` ``[L, H_kv]`` bool drops middle keys in those heads. Each layer's rows are
    moved to that layer's snapshot device (a mask loaded on the CPU serves a model on a GPU, or
    spread over several, as ``LeanKCache`` does); the move keeps the gradient to ``weights``.
    """

    def __init__(self, snapshot: KVSnapshot, weights: torch.Tensor | None, sink: int, recent: int,
                 zero_heads: torch.Tensor | None = None) -> None:
        def row(t: torch.Tensor | None, i: int, device: torch.device) -> torch.Tensor | None:
            return None if t is None else t[i].to(device)

        super().__init__(layers=[
            _ContinuationLayer(kv, row(weights, i, kv[0].device), row(zero_heads, i, kv[0].device))
            for i, kv in enumerate(snapshot.layers)])
        self.sink, self.recent = sink, recent

    def attend(self, module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
               attention_mask: torch.Tensor | None, scaling: float) -> torch.Tensor:
        layer = self.layers[module.layer_idx]
        return continuation_attention(query, layer.context, (key, value), layer.weights, layer.zero_heads,
                                      self.sink, self.recent, scaling)
