"""LeanKCache: a transformers Cache that stores middle tokens with their head's kept channels only.

Usage::

    leank_core.apply(model, mask)   # checks the mask fits this model, installs the attention hook
    cache = LeanKCache(mask, model.config)
    model.generate(**inputs, **cache_kwargs(model, cache))   # past_key_values= (5.1x) / cache= (5.2x+)

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
step never waits for the GPU.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any

import torch
from transformers import PreTrainedModel
from transformers.cache_utils import Cache, CacheLayerMixin
from transformers.integrations.sdpa_attention import sdpa_attention_forward

from leank_core.adapters import adapter_for
from leank_core.attention import ATTN_IMPLEMENTATION, CacheAttention, install
from leank_core.kernels import DecodeState, LayerLayout, decode_attention
from leank_core.mask import LeanKMask
from leank_core.model_hash import model_hash

GROWTH_CHUNK = 256  # middle-token columns added per reallocation


class LeanKLayer(CacheLayerMixin, CacheAttention):
    """One layer's LeanK storage; ``update`` hands attention back to :meth:`attend`.

    Persistent per-sequence state is ``n`` (real tokens stored, ``[B]`` on the device); the
    sink / ring / middle lengths the kernel reads are derived from it.
    """

    is_sliding = False
    is_compileable = False
    is_croppable = False

    def __init__(self, layer_mask: torch.Tensor, sink: int, recent: int) -> None:
        super().__init__()
        self.layout = LayerLayout.from_mask(layer_mask, sink, recent)
        self.k_src, self.v_heads = _gather_indices(self.layout, layer_mask.shape[-1])
        self.seen = 0  # positions processed, padding included (what generate calls the sequence length)
        self._pending: tuple[torch.Tensor, torch.Tensor] | None = None

    # -- transformers Cache protocol ------------------------------------------------------
    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        self.device, self.dtype = key_states.device, key_states.dtype
        self.layout = self.layout.to(self.device)
        self.k_src, self.v_heads = self.k_src.to(self.device), self.v_heads.to(self.device)
        self.is_initialized = True

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any):
        """Stash the new keys/values; the attention hook then calls :meth:`attend` on this layer."""
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        self._pending = (key_states, value_states)
        return self, self

    def get_seq_length(self) -> int:
        return self.seen

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        return self.seen + query_length, 0

    def get_max_length(self) -> int:
        return -1

    def reset(self) -> None:
        """Forget every token (the layout stays)."""
        self.seen, self._pending = 0, None
        for name in (*_BATCH_TENSORS, "_rows"):
            self.__dict__.pop(name, None)

    def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
        """Beam search: row ``b`` becomes old row ``beam_idx[b]``."""
        self._select_rows(beam_idx)

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        self._select_rows(indices)

    def batch_repeat_interleave(self, repeats: int) -> None:
        if self.seen:
            self._select_rows(torch.arange(self.n.shape[0], device=self.device).repeat_interleave(repeats))

    # -- attention --------------------------------------------------------------------------
    def attend(self, module: torch.nn.Module, query: torch.Tensor, attention_mask: torch.Tensor | None,
               scaling: float) -> torch.Tensor:
        keys, values = self._pending
        self._pending = None
        if self.seen == 0:
            out, _ = sdpa_attention_forward(module, query, keys, values, attention_mask, scaling=scaling)
            self._store_prompt(keys, values, attention_mask)
            return out
        steps = []
        for t in range(query.shape[2]):
            self._append(keys[:, :, t], values[:, :, t])
            steps.append(decode_attention(query[:, :, t].contiguous(), self.state(), self.layout, scaling))
        return torch.stack(steps, dim=1)

    def state(self) -> DecodeState:
        """What the decode kernel reads for this layer now."""
        sink, recent = self.layout.sink, self.layout.recent
        return DecodeState(
            dense_k=self.dense_k,
            dense_v=self.dense_v,
            sink_len=self.n.clamp(max=sink).to(torch.int32),
            recent_len=(self.n - sink).clamp(0, recent).to(torch.int32),
            mid_k=self.mid_k,
            mid_v=self.mid_v,
            mid_len=self._mid_len().to(torch.int32),
        )

    # -- storage ----------------------------------------------------------------------------
    def _store_prompt(self, keys: torch.Tensor, values: torch.Tensor, attention_mask: torch.Tensor | None) -> None:
        """Compact a prefilled prompt into sink / middle / recent (the one place that reads the device)."""
        batch, hkv, length, head_dim = keys.shape
        sink, recent = self.layout.sink, self.layout.recent
        pads = _left_padding(attention_mask, batch, length)
        real = [length - p for p in pads]
        self.max_len = max(real)  # host-side upper bound of n, drives capacity
        self.dense_k = keys.new_zeros(batch, hkv, sink + recent, head_dim)
        self.dense_v = torch.zeros_like(self.dense_k)
        capacity = _chunks(max(1, self.max_len - sink - recent))
        self.mid_k = keys.new_zeros(batch, self.layout.kept_channels, capacity)
        self.mid_v = keys.new_zeros(batch, self.layout.value_heads, capacity, head_dim)
        for b, (pad, n) in enumerate(zip(pads, real)):
            k, v = keys[b, :, pad:], values[b, :, pad:]
            n_sink, first_recent = min(sink, n), max(sink, n - recent)
            self.dense_k[b, :, :n_sink], self.dense_v[b, :, :n_sink] = k[:, :n_sink], v[:, :n_sink]
            slots = sink + (torch.arange(first_recent, n, device=self.device) - sink) % recent
            self.dense_k[b, :, slots], self.dense_v[b, :, slots] = k[:, first_recent:n], v[:, first_recent:n]
            n_mid = first_recent - sink
            if n_mid > 0:
                self.mid_k[b, :, :n_mid] = self._compact_k(k[:, sink:first_recent].transpose(0, 1)).T
                self.mid_v[b, :, :n_mid] = v[self.v_heads, sink:first_recent]
        self.n = torch.tensor(real, device=self.device)
        self._rows = torch.arange(batch, device=self.device)
        self.seen = length

    def _append(self, key: torch.Tensor, value: torch.Tensor) -> None:
        """Add one token per sequence (``[B, H_kv, D]``); a full ring first evicts its slot into the middle.

        The outgoing slot is written to middle column ``mid_len`` unconditionally: while a
        sequence's ring is not full that column is 0 and stays invalid (``mid_len`` remains 0)
        until a real eviction overwrites it, so no per-sequence branch and no host read.
        """
        sink, recent = self.layout.sink, self.layout.recent
        self._grow(max(1, self.max_len + 1 - sink - recent))
        rows, n, col = self._rows, self.n, self._mid_len()
        slot = torch.where(n < sink, n, sink + (n - sink).remainder(recent))
        outgoing_k, outgoing_v = self.dense_k[rows, :, slot], self.dense_v[rows, :, slot]  # [B, H_kv, D]
        self.mid_k[rows, :, col] = self._compact_k(outgoing_k)
        self.mid_v[rows, :, col] = outgoing_v[:, self.v_heads]
        self.dense_k[rows, :, slot], self.dense_v[rows, :, slot] = key, value
        self.n = n + 1
        self.max_len += 1
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

    def _compact_k(self, k: torch.Tensor) -> torch.Tensor:
        """``[..., H_kv, D]`` keys → ``[..., C]`` kept channels in mid_k row order."""
        return k.flatten(-2)[..., self.k_src]

    def _mid_len(self) -> torch.Tensor:
        return (self.n - self.layout.sink - self.layout.recent).clamp(min=0)

    def _select_rows(self, index: torch.Tensor) -> None:
        """Keep / reorder / repeat batch rows (``max_len`` stays a valid upper bound)."""
        if not self.seen:
            return
        index = index.to(self.device)
        for name in _BATCH_TENSORS:
            setattr(self, name, getattr(self, name).index_select(0, index))
        self._rows = torch.arange(index.shape[0], device=self.device)

    # -- accounting -------------------------------------------------------------------------
    def tensors(self) -> list[torch.Tensor]:
        """Every tensor this layer holds: storage, per-sequence lengths and index tables."""
        lay = self.layout
        held = [lay.counts, lay.kept_idx, lay.k_row, lay.v_slot, self.k_src, self.v_heads]
        return held + ([getattr(self, name) for name in _BATCH_TENSORS] + [self._rows] if self.seen else [])


_BATCH_TENSORS = ("dense_k", "dense_v", "mid_k", "mid_v", "n")


def _chunks(columns: int) -> int:
    return -(-columns // GROWTH_CHUNK) * GROWTH_CHUNK


def _gather_indices(layout: LayerLayout, head_dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``k_src``: mid_k row ``r`` holds flattened ``[H_kv * D]`` key channel ``k_src[r]``;
    ``v_heads``: mid_v head slot ``s`` holds KV head ``v_heads[s]``."""
    k_src = torch.empty(layout.kept_channels, dtype=torch.long)
    for h in range(layout.num_kv_heads):
        c, r = int(layout.counts[h]), int(layout.k_row[h])
        k_src[r : r + c] = h * head_dim + layout.kept_idx[h, :c].long()
    v_heads = torch.empty(layout.value_heads, dtype=torch.long)
    for h, slot in enumerate(layout.v_slot.tolist()):
        if slot >= 0:
            v_heads[slot] = h
    return k_src, v_heads


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


class LeanKCache(Cache):
    """Hugging Face Cache holding K/V with LeanK compaction (see module docstring)."""

    def __init__(self, mask: LeanKMask, config: Any) -> None:
        shape = adapter_for(config).mask_shape
        if mask.shape != shape:
            raise ValueError(f"mask shape {mask.shape} does not match the model's [layers, kv_heads, head_dim] {shape}")
        if getattr(config, "_attn_implementation", None) != ATTN_IMPLEMENTATION:
            raise ValueError("the model does not use the LeanK attention hook: call leank_core.apply(model, mask) "
                             "before creating a LeanKCache")
        self.mask = mask
        super().__init__(layers=[LeanKLayer(m, mask.sink, mask.recent) for m in mask.mask])

    def nbytes(self) -> int:
        """Bytes of every tensor this cache has allocated (storages counted once)."""
        storages = {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes()
                    for layer in self.layers for t in layer.tensors()}
        return sum(storages.values())

    def memory(self) -> "CacheMemory":
        """Allocated bytes by part, next to what a dense cache would hold (see :class:`CacheMemory`)."""
        parts = dict.fromkeys(("dense_window", "middle_k", "middle_v", "middle_dense", "dense_equivalent"), 0)
        for layer in self.layers:
            if not layer.seen:
                continue
            b, hkv, _, d = layer.dense_k.shape
            item, capacity = layer.dense_k.element_size(), layer.mid_k.shape[-1]
            parts["dense_window"] += layer.dense_k.nbytes + layer.dense_v.nbytes
            parts["middle_k"] += layer.mid_k.nbytes
            parts["middle_v"] += layer.mid_v.nbytes
            parts["middle_dense"] += b * hkv * capacity * d * item
            parts["dense_equivalent"] += 2 * b * hkv * layer.seen * d * item
        return CacheMemory(allocated=self.nbytes(), **parts)


@dataclass(frozen=True)
class CacheMemory:
    """Bytes of a LeanKCache. ``middle_dense`` is what dense K (or V, the same size) would take
    for the same middle columns; ``dense_equivalent`` what a DynamicCache holds for the same
    tokens (K and V, padding included, as DynamicCache stores it)."""

    allocated: int
    dense_window: int
    middle_k: int
    middle_v: int
    middle_dense: int
    dense_equivalent: int

    @property
    def k_saving(self) -> float:
        """Fraction of middle-token K bytes saved."""
        return 1 - self.middle_k / self.middle_dense if self.middle_dense else 0.0

    @property
    def v_saving(self) -> float:
        """Fraction of middle-token V bytes saved (zero-count heads)."""
        return 1 - self.middle_v / self.middle_dense if self.middle_dense else 0.0


def memory_report(cache: LeanKCache) -> str:
    """Two lines: K and V saving on middle tokens, and the whole cache against a dense one."""
    m = cache.memory()
    return (f"middle tokens: K {1 - m.k_saving:.1%} of dense ({m.k_saving:.1%} saved), "
            f"V {1 - m.v_saving:.1%} of dense ({m.v_saving:.1%} saved)\n"
            f"cache: {m.allocated / 2**20:.2f} MiB allocated vs {m.dense_equivalent / 2**20:.2f} MiB "
            f"for a dense cache of the same tokens")


def cache_kwargs(model: PreTrainedModel, cache: Cache) -> dict[str, Cache]:
    """``generate``/forward keyword for a cache: ``cache`` from transformers 5.2x on, ``past_key_values`` before."""
    name = "cache" if "cache" in inspect.signature(model.base_model.forward).parameters else "past_key_values"
    return {name: cache}


def apply(model: PreTrainedModel, mask: LeanKMask, allow_hash_mismatch: bool = False) -> PreTrainedModel:
    """Check that ``mask`` belongs to ``model`` and install the LeanK attention hook.

    Afterwards ``model.generate(..., past_key_values=LeanKCache(mask, model.config))`` decodes
    with the mask; without a LeanKCache the model behaves exactly as before.
    """
    shape = adapter_for(model).mask_shape
    if mask.shape != shape:
        raise ValueError(f"mask shape {mask.shape} does not match this model's {shape}: it was learned for another architecture")
    if not allow_hash_mismatch:
        actual = model_hash(model)
        if mask.model_hash != actual:
            raise ValueError(f"mask was learned for model hash {mask.model_hash[:16] or '(none)'}, this model is "
                             f"{actual[:16]}; pass allow_hash_mismatch=True only if you know the weights are equivalent")
    return install(model)
