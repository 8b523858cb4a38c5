"""LeanKCache: a transformers Cache that stores middle tokens with their head's kept channels only.

Usage::

    leank_core.apply(model, mask)   # checks the mask fits this model, installs the attention hook
    model.generate(**inputs, past_key_values=LeanKCache(mask, model.config))

Per layer the storage follows ``leank_core/kernels/layout.py``: the sink and the recent ring
stay dense, every token leaving the ring is compacted into ``mid_k`` (kept channels only,
channel-major) and ``mid_v`` (heads that keep at least one channel). The prompt is prefilled
with ordinary SDPA over its full keys and compacted afterwards; each decode step evicts the
ring's oldest token into the middle, writes the new token and calls
``leank_core.kernels.decode_attention``.

No head permutation of the model is needed: the layout orders *storage* rows by kept count
(so each bucket is a contiguous block) while queries stay in model order; the kernel maps
query head ``i`` to KV head ``i // group`` and looks up that head's rows.

Batches may be left-padded: each sequence's first real token is its position 0 for sink /
recent / middle purposes, so a padded row behaves exactly like its own unpadded run. Every
sequence gains one token per decode step, so all lengths are known on the host after prefill;
the per-sequence length tensors are still updated on the device, so a step never waits for the
GPU, and capacity grows in chunks decided from host-side counts.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import PreTrainedModel
from transformers.cache_utils import Cache, CacheLayerMixin
from transformers.integrations.sdpa_attention import sdpa_attention_forward

from leank_core.adapters import adapter_for
from leank_core.attention import CacheAttention, install
from leank_core.kernels import DecodeState, LayerLayout, decode_attention
from leank_core.mask import LeanKMask
from leank_core.model_hash import model_hash

GROWTH_CHUNK = 256  # middle-token columns added per reallocation


class LeanKLayer(CacheLayerMixin, CacheAttention):
    """One layer's LeanK storage; ``update`` hands attention back to :meth:`attend`."""

    is_sliding = False
    is_compileable = False
    is_croppable = False

    def __init__(self, layer_mask: torch.Tensor, sink: int, recent: int) -> None:
        super().__init__()
        self.layout = lay = LayerLayout.from_mask(layer_mask, sink, recent)
        head_dim = layer_mask.shape[-1]
        # Gather indices into keys flattened to [H_kv * D]: mid_k row r holds k_src[r].
        self.k_src = torch.empty(lay.kept_channels, dtype=torch.long)
        for h in range(lay.num_kv_heads):
            c, r = int(lay.counts[h]), int(lay.k_row[h])
            self.k_src[r : r + c] = h * head_dim + lay.kept_idx[h, :c].long()
        # mid_v head slot s holds KV head v_heads[s].
        self.v_heads = torch.empty(lay.value_heads, dtype=torch.long)
        for h, slot in enumerate(lay.v_slot.tolist()):
            if slot >= 0:
                self.v_heads[slot] = h
        self.seen = 0  # positions processed, padding included (what generate calls seq length)
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

    # -- attention --------------------------------------------------------------------------
    def attend(self, module: torch.nn.Module, query: torch.Tensor, attention_mask: torch.Tensor | None,
               scaling: float) -> torch.Tensor:
        keys, values = self._pending
        self._pending = None
        if self.seen == 0:
            out, _ = sdpa_attention_forward(module, query, keys, values, attention_mask, scaling=scaling)
            self._store_prompt(keys, values, attention_mask)
            return out
        if query.shape[2] != 1:
            raise NotImplementedError("LeanKCache decodes one token per step after the prompt (as generate does)")
        self._append(keys[:, :, 0], values[:, :, 0])
        out = decode_attention(query[:, :, 0], self._state(), self.layout, scaling)
        return out.unsqueeze(1)

    # -- storage ----------------------------------------------------------------------------
    def _allocate(self, batch: int, head_dim: int, capacity: int) -> None:
        lay, dev, dt = self.layout, self.device, self.dtype
        self.dense_k = torch.zeros(batch, lay.num_kv_heads, lay.sink + lay.recent, head_dim, device=dev, dtype=dt)
        self.dense_v = torch.zeros_like(self.dense_k)
        self.mid_k = torch.zeros(batch, lay.kept_channels, capacity, device=dev, dtype=dt)
        self.mid_v = torch.zeros(batch, lay.value_heads, capacity, head_dim, device=dev, dtype=dt)

    def _ensure_capacity(self, needed: int) -> None:
        """Grow the middle buffers by whole chunks (host-side decision, no device read)."""
        capacity = self.mid_k.shape[-1]
        if needed <= capacity:
            return
        new = -(-needed // GROWTH_CHUNK) * GROWTH_CHUNK
        mid_k = self.mid_k.new_zeros(*self.mid_k.shape[:-1], new)
        mid_k[..., :capacity] = self.mid_k
        mid_v = self.mid_v.new_zeros(self.mid_v.shape[0], self.mid_v.shape[1], new, self.mid_v.shape[-1])
        mid_v[:, :, :capacity] = self.mid_v
        self.mid_k, self.mid_v = mid_k, mid_v

    def _store_prompt(self, keys: torch.Tensor, values: torch.Tensor, attention_mask: torch.Tensor | None) -> None:
        """Compact a prefilled prompt into sink / middle / recent (the one place that may sync)."""
        batch, _, length, head_dim = keys.shape
        sink, recent = self.layout.sink, self.layout.recent
        pads = _left_padding(attention_mask, batch, length)
        real = [length - p for p in pads]
        self.max_len = max(real)
        self._allocate(batch, head_dim, -(-(max(0, self.max_len - sink - recent) + 1) // GROWTH_CHUNK) * GROWTH_CHUNK)
        for b, (pad, n) in enumerate(zip(pads, real)):
            k, v = keys[b, :, pad:], values[b, :, pad:]
            n_sink = min(sink, n)
            self.dense_k[b, :, :n_sink], self.dense_v[b, :, :n_sink] = k[:, :n_sink], v[:, :n_sink]
            first_recent = max(sink, n - recent)
            slots = sink + (torch.arange(first_recent, n, device=self.device) - sink) % recent
            self.dense_k[b, :, slots], self.dense_v[b, :, slots] = k[:, first_recent:n], v[:, first_recent:n]
            n_mid = max(0, first_recent - sink)
            if n_mid:
                self.mid_k[b, :, :n_mid] = self._compact_k(k[:, sink:first_recent].transpose(0, 1)).transpose(0, 1)
                self.mid_v[b, :, :n_mid] = v[self.v_heads, sink:first_recent]
        self.n = torch.tensor(real, device=self.device, dtype=torch.int64)
        self.seen = length
        self._set_lengths()

    def _compact_k(self, k: torch.Tensor) -> torch.Tensor:
        """``[..., H_kv, D]`` keys → ``[..., C]`` kept channels in mid_k row order."""
        return k.flatten(-2)[..., self.k_src]

    def _append(self, key: torch.Tensor, value: torch.Tensor) -> None:
        """Add one token per sequence: evict the ring's oldest into the middle where the ring is full."""
        sink, recent = self.layout.sink, self.layout.recent
        self.max_len += 1
        self._ensure_capacity(max(0, self.max_len - sink - recent) + 1)
        batch = torch.arange(key.shape[0], device=self.device)
        n = self.n
        slot = torch.where(n < sink, n, sink + (n - sink).remainder(recent))
        evict = (n >= sink + recent)[:, None]
        col = self.mid_len.long()
        old_k, old_v = self.dense_k[batch, :, slot], self.dense_v[batch, :, slot]  # [B, H_kv, D]
        rows = torch.arange(self.mid_k.shape[1], device=self.device)
        cur_k = self.mid_k[batch[:, None], rows[None, :], col[:, None]]
        self.mid_k[batch[:, None], rows[None, :], col[:, None]] = torch.where(evict, self._compact_k(old_k), cur_k)
        heads = torch.arange(self.mid_v.shape[1], device=self.device)
        cur_v = self.mid_v[batch[:, None], heads[None, :], col[:, None]]
        self.mid_v[batch[:, None], heads[None, :], col[:, None]] = torch.where(
            evict[:, :, None], old_v[:, self.v_heads], cur_v)
        self.dense_k[batch, :, slot] = key
        self.dense_v[batch, :, slot] = value
        self.n = n + 1
        self.seen += 1
        self._set_lengths()

    def _set_lengths(self) -> None:
        sink, recent = self.layout.sink, self.layout.recent
        self.sink_len = self.n.clamp(max=sink).to(torch.int32)
        self.recent_len = (self.n - sink).clamp(0, recent).to(torch.int32)
        self.mid_len = (self.n - sink - recent).clamp(min=0).to(torch.int32)

    def _state(self) -> DecodeState:
        return DecodeState(self.dense_k, self.dense_v, self.sink_len, self.recent_len,
                           self.mid_k, self.mid_v, self.mid_len)

    # -- accounting -------------------------------------------------------------------------
    def tensors(self) -> list[torch.Tensor]:
        if self.seen == 0:
            return []
        return [self.dense_k, self.dense_v, self.mid_k, self.mid_v, self.n, self.sink_len, self.recent_len,
                self.mid_len]


def _left_padding(attention_mask: torch.Tensor | None, batch: int, length: int) -> list[int]:
    """Per-sequence count of left-pad positions, read from the last query row of the mask."""
    if attention_mask is None:
        return [0] * batch
    last = attention_mask[:, 0, -1, -length:]
    allowed = last if last.dtype == torch.bool else last == 0
    return (~allowed).sum(-1).tolist()


class LeanKCache(Cache):
    """Hugging Face Cache holding K/V with LeanK compaction (see module docstring)."""

    def __init__(self, mask: LeanKMask, config: Any) -> None:
        shape = adapter_for(config).mask_shape
        if mask.shape != shape:
            raise ValueError(f"mask shape {mask.shape} does not match the model's [layers, kv_heads, head_dim] {shape}")
        self.mask = mask
        super().__init__(layers=[LeanKLayer(m, mask.sink, mask.recent) for m in mask.mask])

    def nbytes(self) -> int:
        """Bytes of every tensor this cache has allocated."""
        return sum(t.untyped_storage().nbytes() for layer in self.layers for t in layer.tensors())

    def memory(self) -> dict[str, int]:
        """Allocated bytes by part, and what a dense cache holding the same tokens would take."""
        parts = {"dense_kv": 0, "middle_k": 0, "middle_v": 0, "dense_equivalent_middle_k": 0,
                 "dense_equivalent": 0}
        for layer in self.layers:
            if layer.seen == 0:
                continue
            b, hkv, _, d = layer.dense_k.shape
            item, cap = layer.dense_k.element_size(), layer.mid_k.shape[-1]
            parts["dense_kv"] += layer.dense_k.nbytes + layer.dense_v.nbytes
            parts["middle_k"] += layer.mid_k.nbytes
            parts["middle_v"] += layer.mid_v.nbytes
            parts["dense_equivalent_middle_k"] += b * hkv * cap * d * item
            parts["dense_equivalent"] += 2 * b * hkv * layer.seen * d * item
        parts["allocated"] = self.nbytes()
        return parts


def memory_report(cache: LeanKCache) -> str:
    """One line: K and V saving on middle tokens, and total allocated vs a dense cache."""
    m = cache.memory()
    dense_mid = max(m["dense_equivalent_middle_k"], 1)
    return (f"middle K stored {m['middle_k'] / dense_mid:.1%} of dense ({1 - m['middle_k'] / dense_mid:.1%} saved), "
            f"middle V stored {m['middle_v'] / dense_mid:.1%} ({1 - m['middle_v'] / dense_mid:.1%} saved); "
            f"cache {m['allocated'] / 2**20:.1f} MiB allocated vs {m['dense_equivalent'] / 2**20:.1f} MiB dense")


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
