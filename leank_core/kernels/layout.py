"""Storage layout of one layer's LeanK KV cache: the contract between the cache and the kernels.

Per layer and per decode step the attention reads three parts:

``dense_k``, ``dense_v``  ``[B, H_kv, S + R, D]``
    Slots ``[0, S)`` hold the first ``sink`` tokens of each sequence; slots ``[S, S + R)``
    are a ring holding its last ``recent`` tokens (token ``j >= S`` lives in slot
    ``S + (j - S) % R``). Slot validity per sequence: sink slot ``i`` iff ``i < sink_len[b]``;
    ring slot ``S + i`` iff ``i < recent_len[b]`` (once the ring is full every slot is valid;
    before that the first ``recent_len`` slots are filled).

``mid_k``  ``[B, C, cap]`` with ``C = sum(counts)``
    Compact middle keys, stored *channel-major* (K transposed): head ``h`` owns rows
    ``k_row[h] .. k_row[h] + counts[h]``; row ``k_row[h] + i`` holds channel
    ``kept_idx[h, i]`` of the head's middle keys, one column per middle token. Heads are
    laid out in ascending order of kept count, so each kept-count bucket is one contiguous
    row block (a dense ``[n_heads, c, cap]`` view) and each head's tile is contiguous along
    tokens. No head permutation of the model is needed.

``mid_v``  ``[B, H_nz, cap, D]``
    Middle values of the heads with ``counts > 0`` (``v_slot[h]``; ``-1`` for zero heads,
    which store no middle K or V at all).

``mid_len``  ``[B]`` int32: valid middle tokens per sequence (columns ``< mid_len[b]``).

All per-sequence lengths live on the device, so a decode step needs no host sync.
Query heads are in model order; query head ``i`` belongs to KV head ``i // (H / H_kv)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class LayerLayout:
    """Static per-layer description derived once from the mask (see module docstring)."""

    counts: torch.Tensor  # [H_kv] int32
    kept_idx: torch.Tensor  # [H_kv, D] int32, first counts[h] entries valid (ascending), rest 0
    k_row: torch.Tensor  # [H_kv] int32, first row of head h in mid_k
    v_slot: torch.Tensor  # [H_kv] int32, index into mid_v's head axis, -1 for zero-count heads
    sink: int
    recent: int
    buckets: tuple[tuple[int, int, tuple[int, ...]], ...]  # (count, first row, heads) for count > 0

    @classmethod
    def from_mask(cls, layer_mask: torch.Tensor, sink: int, recent: int) -> "LayerLayout":
        """Build the layout for one layer's ``[H_kv, D]`` boolean mask."""
        hkv, d = layer_mask.shape
        counts = layer_mask.sum(-1).to(torch.int64)
        kept_idx = torch.zeros(hkv, d, dtype=torch.int32)
        for h in range(hkv):
            idx = layer_mask[h].nonzero().flatten()
            kept_idx[h, : idx.numel()] = idx.to(torch.int32)
        order = sorted(range(hkv), key=lambda h: (int(counts[h]), h))
        k_row = torch.zeros(hkv, dtype=torch.int32)
        v_slot = torch.full((hkv,), -1, dtype=torch.int32)
        row, slot, buckets = 0, 0, {}
        for h in order:
            c = int(counts[h])
            k_row[h] = row
            if c > 0:
                v_slot[h] = slot
                slot += 1
                first_row, heads = buckets.setdefault(c, (row, []))
                heads.append(h)
            row += c
        return cls(
            counts=counts.to(torch.int32),
            kept_idx=kept_idx,
            k_row=k_row,
            v_slot=v_slot,
            sink=sink,
            recent=recent,
            buckets=tuple((c, r, tuple(hs)) for c, (r, hs) in sorted(buckets.items())),
        )

    @property
    def num_kv_heads(self) -> int:
        return self.counts.numel()

    @property
    def kept_channels(self) -> int:
        """Rows of ``mid_k`` (sum of kept counts)."""
        return int(self.counts.sum())

    @property
    def value_heads(self) -> int:
        """Heads of ``mid_v`` (heads with a nonzero kept count)."""
        return int((self.counts > 0).sum())

    def to(self, device: torch.device | str) -> "LayerLayout":
        return LayerLayout(
            counts=self.counts.to(device),
            kept_idx=self.kept_idx.to(device),
            k_row=self.k_row.to(device),
            v_slot=self.v_slot.to(device),
            sink=self.sink,
            recent=self.recent,
            buckets=self.buckets,
        )


@dataclass
class DecodeState:
    """The tensors one decode step reads for one layer (see module docstring for shapes)."""

    dense_k: torch.Tensor
    dense_v: torch.Tensor
    sink_len: torch.Tensor  # [B] int32
    recent_len: torch.Tensor  # [B] int32
    mid_k: torch.Tensor
    mid_v: torch.Tensor
    mid_len: torch.Tensor  # [B] int32
