"""The engine's K/V storage: every layer's buffers preallocated once for ``max_batch`` × ``max_len``.

Per layer the buffers follow ``leank_core/kernels/layout.py`` (dense sink + recent ring,
channel-major compact middle K grouped by kept-count tier, middle V only for heads that keep
channels), with room for ``max_batch`` sequences of up to ``max_len`` tokens. Nothing is
allocated or resized after construction, so a decode step always sees the same addresses
(a CUDA graph can replay it). Row ``b`` holds sequence ``b`` of the current batch; its token
count ``n[b]`` lives on the device and is the only per-sequence state a step reads.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from leank_core.kernels.layout import DecodeState, LayerLayout, window_lengths

MIDDLE_ALIGN = 128  # middle columns are allocated in whole kernel tiles (aligned, vector-width rows)


@dataclass
class LayerStore:
    """One layer's layout and buffers (first axis: batch row)."""

    layout: LayerLayout
    dense_k: torch.Tensor  # [max_batch, H_kv, S + R, D]
    dense_v: torch.Tensor
    mid_k: torch.Tensor  # [max_batch, C, capacity]
    mid_v: torch.Tensor  # [max_batch, H_nz, capacity, D]

    def state(self, batch: int, lengths: tuple[torch.Tensor, torch.Tensor, torch.Tensor]) -> DecodeState:
        """The first ``batch`` rows as the kernels read them, with ``window_lengths`` of those rows."""
        sink_len, recent_len, mid_len = lengths
        return DecodeState(self.dense_k[:batch], self.dense_v[:batch], sink_len, recent_len,
                           self.mid_k[:batch], self.mid_v[:batch], mid_len)


def middle_capacity(max_len: int, sink: int, recent: int) -> int:
    """Middle columns needed for sequences of up to ``max_len`` tokens, in whole tiles."""
    needed = max(0, max_len - sink - recent)
    return -(-needed // MIDDLE_ALIGN) * MIDDLE_ALIGN


def bytes_per_sequence(layer_masks: torch.Tensor, sink: int, recent: int, max_len: int, element_size: int) -> int:
    """Bytes one batch row of an :class:`EngineCache` occupies (for capacity planning without allocating)."""
    _, hkv, d = layer_masks.shape
    capacity = middle_capacity(max_len, sink, recent)
    counts = layer_masks.sum(-1)
    per_layer = 2 * hkv * (sink + recent) * d + capacity * (counts.sum(-1) + (counts > 0).sum(-1) * d)
    return int(per_layer.sum()) * element_size


class EngineCache:
    """All layers' :class:`LayerStore` plus the per-sequence token counts ``n`` (int64, on the device)."""

    def __init__(self, layer_masks: torch.Tensor, sink: int, recent: int, max_batch: int, max_len: int,
                 dtype: torch.dtype, device: torch.device) -> None:
        self.sink, self.recent, self.max_batch, self.max_len = sink, recent, max_batch, max_len
        self.capacity = middle_capacity(max_len, sink, recent)
        self.n = torch.zeros(max_batch, dtype=torch.int64, device=device)
        _, hkv, d = layer_masks.shape
        self.layers = []
        for layer_mask in layer_masks:
            layout = LayerLayout.from_mask(layer_mask, sink, recent).to(device)
            dense = (max_batch, hkv, sink + recent, d)
            self.layers.append(LayerStore(
                layout=layout,
                dense_k=torch.zeros(dense, dtype=dtype, device=device),
                dense_v=torch.zeros(dense, dtype=dtype, device=device),
                mid_k=torch.zeros(max_batch, layout.kept_channels, self.capacity, dtype=dtype, device=device),
                mid_v=torch.zeros(max_batch, layout.value_heads, self.capacity, d, dtype=dtype, device=device),
            ))

    def lengths(self, batch: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``window_lengths`` of the first ``batch`` rows once the token at position ``n`` is stored."""
        return window_lengths(self.n[:batch] + 1, self.sink, self.recent)

    def set_lengths(self, lengths: torch.Tensor) -> None:
        """Rows ``0 .. len(lengths) - 1`` now hold that many tokens each (what their buffers must already contain).

        Prefill calls this after writing a batch's prompts; benchmarks call it after filling the
        buffers with random K/V (decode speed does not depend on the values).
        """
        if lengths.numel() > self.max_batch or int(lengths.max()) > self.max_len:
            raise ValueError(f"{lengths.numel()} sequences of up to {int(lengths.max())} tokens do not fit an engine "
                             f"built for max_batch={self.max_batch}, max_len={self.max_len}")
        self.n[: lengths.numel()] = lengths.to(self.n.device)

    def store_prompt(self, layer: int, row: int, keys: torch.Tensor, values: torch.Tensor) -> None:
        """Write one sequence's prefilled ``[H_kv, N, D]`` keys/values of one layer into row ``row``:
        the first ``sink`` tokens, the last ``recent`` in their ring slots, the rest compacted into the middle."""
        store, sink, recent = self.layers[layer], self.sink, self.recent
        n = keys.shape[1]
        n_sink, first_recent = min(sink, n), max(sink, n - recent)
        store.dense_k[row, :, :n_sink], store.dense_v[row, :, :n_sink] = keys[:, :n_sink], values[:, :n_sink]
        slots = sink + (torch.arange(first_recent, n, device=keys.device) - sink) % recent
        store.dense_k[row, :, slots], store.dense_v[row, :, slots] = keys[:, first_recent:], values[:, first_recent:]
        if first_recent > sink:
            row_head, row_channel, value_head = store.layout.row_sources()
            store.mid_k[row, :, : first_recent - sink] = keys[row_head, sink:first_recent, row_channel]
            store.mid_v[row, :, : first_recent - sink] = values[value_head, sink:first_recent]

    def nbytes(self) -> int:
        """Bytes of every buffer (layouts and lengths included)."""
        held = [self.n] + [t for s in self.layers for t in (s.dense_k, s.dense_v, s.mid_k, s.mid_v)]
        held += [t for s in self.layers for t in s.layout.tensors()]
        return sum(t.nbytes for t in held)
