"""LeanKCache: a transformers Cache that stores middle tokens with their head's kept channels only.

Usage::

    leank_core.apply(model, mask)   # checks the mask fits this model, installs the attention hook
    cache = LeanKCache(mask, model.config)
    model.generate(**inputs, **cache_kwargs(model, cache))   # past_key_values= (5.1x) / cache= (5.2x+)

The cache is an :class:`~leank_core.hook.AttentionMode`: while a forward pass runs with it,
the hook hands every layer's attention call to the cache, which stores that call's keys and
values and attends over its own storage. Memory accounting is ``memory.py``.

Per layer the storage follows ``leank_core/kernels/layout.py``: the sink and the recent ring
stay dense, every token leaving the ring is compacted into ``mid_k`` (kept channels only,
channel-major) and ``mid_v`` (heads that keep at least one channel; zero-count heads store
no middle K or V). The first call (the prompt) attends with ordinary SDPA over the full
prompt keys and is compacted afterwards; every later token evicts its ring slot's outgoing
token into the middle, takes the slot and calls ``leank_core.kernels.decode_attention``. A
later multi-token call (a second ``generate`` on the same cache, chunked prefill) runs token
by token with exactly those decode semantics.

Why no head permutation of the model: the layout orders *storage rows* of ``mid_k`` by kept
count, so each kept-count bucket is already one contiguous block, while queries, KV heads and
``o_proj`` stay in model order; the kernel maps query head ``i`` to KV head ``i // group``
and looks up that head's rows (``k_row``) and value slot (``v_slot``). Permuting the
model's weights would buy nothing the row table does not already give.

Batches may be left-padded: each sequence's first real token is its position 0 for sink /
recent / middle purposes (pad counts are read once from the prompt's attention mask), so a
padded row behaves exactly like its own unpadded run. Every sequence gains one token per
step, so after the prompt the longest length is known on the host: middle capacity grows in
chunks decided from that count, the per-sequence lengths stay on the device, and a decode
step never waits for the GPU. Where each new token goes is the same for every layer, so it
is computed once per step (:class:`Positions`) and each layer only moves its own K/V.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from transformers.cache_utils import Cache, CacheLayerMixin
from transformers.integrations.sdpa_attention import sdpa_attention_forward

from leank_core.hook import ATTN_IMPLEMENTATION, AttentionMode, check_mask_shape
from leank_core.kernels import DecodeState, LayerLayout, decode_attention
from leank_core.kernels.layout import window_lengths
from leank_core.mask import LeanKMask

GROWTH_CHUNK = 256  # middle-token columns added per reallocation


@dataclass(frozen=True)
class TokenPlacement:
    """Where each sequence's new token goes, and the lengths the kernel reads once it is stored."""

    slot: torch.Tensor | None  # [B] dense slot the token takes (None: the prompt)
    slot_offset: torch.Tensor | None  # [B, 1] slot * head_dim: the slot's offset within one head's dense rows
    column: torch.Tensor | None  # [B] middle column that slot's outgoing token moves to
    sink_len: torch.Tensor  # [B] int32, as in DecodeState
    recent_len: torch.Tensor
    mid_len: torch.Tensor
    max_len: int  # host-side upper bound of any sequence's token count after the step

    def tensors(self) -> list[torch.Tensor]:
        parts = (self.slot, self.slot_offset, self.column, self.sink_len, self.recent_len, self.mid_len)
        return [t for t in parts if t is not None]


class Positions:
    """Per-sequence token counts, shared by all layers (every layer stores the same tokens).

    The first layer to reach a step computes it (a dozen tiny device ops); the other layers
    reuse it, so each layer's own per-step work is only moving its K/V. A step is dropped
    once every layer has used it, so a multi-token call keeps one step per token until the
    last layer is through.
    """

    def __init__(self, sink: int, recent: int, head_dim: int, num_layers: int) -> None:
        self.sink, self.recent, self.head_dim, self.num_layers = sink, recent, head_dim, num_layers
        self.reset()

    def reset(self) -> None:
        self.seen = 0  # positions the leading layer has processed, padding included
        self._steps: dict[int, list] = {}  # step index -> [TokenPlacement, layers that used it]

    def start(self, attention_mask: torch.Tensor | None, batch: int, length: int, device: torch.device) -> list[int]:
        """Per-sequence left-pad counts of the prompt (read from the device once, by the first layer)."""
        if self.seen == 0:
            self.pads = _left_padding(attention_mask, batch, length)
            self.n = torch.tensor([length - p for p in self.pads], device=device)
            self.rows = torch.arange(batch, device=device)
            self.seen = length
            self.current = self._step(None, None, length - min(self.pads))
        return self.pads

    def step(self, index: int) -> TokenPlacement:
        """The step that stores the token at position ``index`` (a layer's ``seen``)."""
        if index == self.seen:
            n, sink, recent = self.n, self.sink, self.recent
            slot = torch.where(n < sink, n, sink + (n - sink).remainder(recent))
            column = (n - sink - recent).clamp(min=0)
            self.n, self.seen = n + 1, self.seen + 1
            self.current = self._step(slot, column, self.current.max_len + 1)
            self._steps[index] = [self.current, 0]
        entry = self._steps[index]
        entry[1] += 1
        if entry[1] == self.num_layers:
            del self._steps[index]
        return entry[0]

    def select(self, index: torch.Tensor) -> None:
        """Keep / reorder / repeat sequences (between steps; ``max_len`` stays a valid bound)."""
        self.n = self.n.index_select(0, index)
        self.rows = torch.arange(index.shape[0], device=index.device)
        self.current = self._step(None, None, self.current.max_len)

    def _step(self, slot: torch.Tensor | None, column: torch.Tensor | None, max_len: int) -> TokenPlacement:
        n, sink, recent = self.n, self.sink, self.recent
        offset = None if slot is None else (slot * self.head_dim)[:, None]
        return TokenPlacement(slot, offset, column, *window_lengths(n, sink, recent), max_len)

    def tensors(self) -> list[torch.Tensor]:
        if not self.seen:
            return []
        pending = [t for step, _ in self._steps.values() for t in step.tensors()]
        return [self.n, self.rows, *self.current.tensors(), *pending]


class LeanKLayer(CacheLayerMixin):
    """One layer's LeanK storage; it stores a call's keys/values while attending (:meth:`attend`)."""

    is_sliding = False
    is_compileable = False
    is_croppable = False

    def __init__(self, layer_mask: torch.Tensor, positions: Positions) -> None:
        super().__init__()
        self.layout = LayerLayout.from_mask(layer_mask, positions.sink, positions.recent)
        self.positions = positions
        self.k_head, self.k_chan, self.v_heads = self.layout.row_sources()
        # Flat offsets into one sequence's dense_k / dense_v ([H_kv * (S + R) * D]) of the kept K channels and of
        # the nonzero heads' V rows at slot 0: adding step.slot_offset gathers a slot's outgoing token in one op.
        d = layer_mask.shape[-1]
        head_stride = (positions.sink + positions.recent) * d
        self.k_flat = self.k_head * head_stride + self.k_chan
        self.v_flat = (self.v_heads[:, None] * head_stride + torch.arange(d)).flatten()
        self.seen = 0  # positions processed, padding included (what generate calls the sequence length)

    # -- transformers Cache protocol ------------------------------------------------------
    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        self.device, self.dtype = key_states.device, key_states.dtype
        self.layout = self.layout.to(self.device)
        self.k_head, self.k_chan, self.v_heads, self.k_flat, self.v_flat = (
            t.to(self.device) for t in (self.k_head, self.k_chan, self.v_heads, self.k_flat, self.v_flat))
        self.is_initialized = True

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any):
        """Pass this call's keys/values through: :meth:`attend` stores them (it needs the query too)."""
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        return key_states, value_states

    def get_seq_length(self) -> int:
        return self.seen

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        return self.seen + query_length, 0

    def get_max_length(self) -> int:
        return -1

    def reset(self) -> None:
        """Forget every token (the layout stays); :meth:`LeanKCache.reset` resets the shared positions."""
        self.seen = 0
        for name in (*_BATCH_TENSORS, "at"):
            self.__dict__.pop(name, None)

    # -- attention --------------------------------------------------------------------------
    def attend(self, module: torch.nn.Module, query: torch.Tensor, keys: torch.Tensor, values: torch.Tensor,
               attention_mask: torch.Tensor | None, scaling: float) -> torch.Tensor:
        """Store this call's ``keys``/``values`` and attend: the prompt with SDPA, then token by token."""
        if self.seen == 0:
            out, _ = sdpa_attention_forward(module, query, keys, values, attention_mask, scaling=scaling)
            self._store_prompt(keys, values, attention_mask)
            return out
        steps = []
        for t in range(query.shape[2]):
            self._append(keys[:, :, t], values[:, :, t], self.positions.step(self.seen))
            steps.append(decode_attention(query[:, :, t].contiguous(), self.state(), self.layout, scaling))
        return torch.stack(steps, dim=1)

    def state(self) -> DecodeState:
        """What the decode kernel reads for this layer now."""
        return DecodeState(self.dense_k, self.dense_v, self.at.sink_len, self.at.recent_len,
                           self.mid_k, self.mid_v, self.at.mid_len)

    # -- storage ----------------------------------------------------------------------------
    def _store_prompt(self, keys: torch.Tensor, values: torch.Tensor, attention_mask: torch.Tensor | None) -> None:
        """Compact a prefilled prompt into sink / middle / recent."""
        batch, hkv, length, head_dim = keys.shape
        sink, recent = self.layout.sink, self.layout.recent
        pads = self.positions.start(attention_mask, batch, length, self.device)
        self.at = self.positions.current
        self.dense_k = keys.new_zeros(batch, hkv, sink + recent, head_dim)
        self.dense_v = torch.zeros_like(self.dense_k)
        capacity = _chunks(max(1, self.at.max_len - sink - recent))
        self.mid_k = keys.new_zeros(batch, self.layout.kept_channels, capacity)
        self.mid_v = keys.new_zeros(batch, self.layout.value_heads, capacity, head_dim)
        for b, pad in enumerate(pads):
            k, v, n = keys[b, :, pad:], values[b, :, pad:], length - pad
            n_sink = min(sink, n)
            first_recent = max(n_sink, n - recent)  # a prompt shorter than the sink has no ring tokens
            self.dense_k[b, :, :n_sink], self.dense_v[b, :, :n_sink] = k[:, :n_sink], v[:, :n_sink]
            slots = sink + (torch.arange(first_recent, n, device=self.device) - sink) % recent
            self.dense_k[b, :, slots], self.dense_v[b, :, slots] = k[:, first_recent:n], v[:, first_recent:n]
            if first_recent > sink:
                self.mid_k[b, :, : first_recent - sink] = k[self.k_head, sink:first_recent, self.k_chan]
                self.mid_v[b, :, : first_recent - sink] = v[self.v_heads, sink:first_recent]
        self.seen = length

    def _append(self, key: torch.Tensor, value: torch.Tensor, step: TokenPlacement) -> None:
        """Store one token per sequence (``[B, H_kv, D]``); a full ring first evicts its slot into the middle.

        The outgoing slot is written to middle column ``step.column`` unconditionally: while a
        sequence's ring is not full that column is 0 and stays invalid (``mid_len`` remains 0)
        until a real eviction overwrites it, so no per-sequence branch and no host read.
        """
        self._grow(max(1, step.max_len - self.layout.sink - self.layout.recent))
        rows, slot, column, batch = self.positions.rows, step.slot, step.column, key.shape[0]
        outgoing_k = self.dense_k.view(batch, -1).gather(1, self.k_flat + step.slot_offset)  # [B, C]
        outgoing_v = self.dense_v.view(batch, -1).gather(1, self.v_flat + step.slot_offset)  # [B, H_nz * D]
        self.mid_k[rows, :, column] = outgoing_k
        self.mid_v[rows, :, column] = outgoing_v.view(batch, *self.mid_v.shape[1::2])
        self.dense_k[rows, :, slot], self.dense_v[rows, :, slot] = key, value
        self.at = step
        self.seen += 1

    def _grow(self, needed: int) -> None:
        """Make room for ``needed`` middle columns, a whole chunk at a time (host-side decision)."""
        capacity = self.mid_k.shape[-1]
        if needed <= capacity:
            return
        mid_k = self.mid_k.new_zeros(*self.mid_k.shape[:-1], _chunks(needed))
        mid_k[..., :capacity] = self.mid_k
        mid_v = self.mid_v.new_zeros(*self.mid_v.shape[:2], _chunks(needed), self.mid_v.shape[-1])
        mid_v[:, :, :capacity] = self.mid_v
        self.mid_k, self.mid_v = mid_k, mid_v

    def select_rows(self, index: torch.Tensor) -> None:
        """Keep / reorder / repeat batch rows, after :meth:`Positions.select` did the same."""
        for name in _BATCH_TENSORS:
            setattr(self, name, getattr(self, name).index_select(0, index))
        self.at = self.positions.current

    # -- accounting -------------------------------------------------------------------------
    def tensors(self) -> list[torch.Tensor]:
        """Every tensor this layer holds: storage, index tables and the lengths it decodes with."""
        held = [*self.layout.tensors(), self.k_head, self.k_chan, self.v_heads, self.k_flat, self.v_flat]
        if self.seen:
            held += [getattr(self, name) for name in _BATCH_TENSORS] + self.at.tensors()
        return held


_BATCH_TENSORS = ("dense_k", "dense_v", "mid_k", "mid_v")


def _chunks(columns: int) -> int:
    return -(-columns // GROWTH_CHUNK) * GROWTH_CHUNK


def _left_padding(attention_mask: torch.Tensor | None, batch: int, length: int) -> list[int]:
    """Per-sequence count of left-pad positions, read from the last query row of the prompt's mask."""
    if attention_mask is None:
        return [0] * batch
    last = attention_mask[:, 0, -1, -length:]
    allowed = last if last.dtype == torch.bool else last == 0
    count = allowed.sum(-1)
    pads = length - count
    if bool(((count == 0) | (allowed.int().argmax(-1) != pads)).any()):
        raise ValueError("LeanKCache needs left-padded prompts with at least one token each: "
                         "set tokenizer.padding_side = 'left'")
    return pads.tolist()


class LeanKCache(Cache, AttentionMode):
    """Hugging Face Cache holding K/V with LeanK compaction (see module docstring)."""

    def __init__(self, mask: LeanKMask, config: Any) -> None:
        shape = check_mask_shape(mask, config)
        if getattr(config, "_attn_implementation", None) != ATTN_IMPLEMENTATION:
            raise ValueError("the model does not use the LeanK attention hook: call leank_core.apply(model, mask) "
                             "before creating a LeanKCache")
        self.mask = mask
        self.positions = Positions(mask.sink, mask.recent, shape[-1], shape[0])
        super().__init__(layers=[LeanKLayer(m, self.positions) for m in mask.kept])

    def reset(self) -> None:
        self.positions.reset()
        super().reset()

    def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
        """Beam search: row ``b`` becomes old row ``beam_idx[b]``."""
        self.batch_select_indices(beam_idx)

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        if self.positions.seen:
            indices = indices.to(self.positions.n.device)
            self.positions.select(indices)
            for layer in self.layers:
                layer.select_rows(indices)

    def batch_repeat_interleave(self, repeats: int) -> None:
        if self.positions.seen:
            self.batch_select_indices(self.positions.rows.repeat_interleave(repeats))

    def attend(self, module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
               attention_mask: torch.Tensor | None, scaling: float) -> torch.Tensor:
        return self.layers[module.layer_idx].attend(module, query, key, value, attention_mask, scaling)
