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

Appending token ``n`` (0-based, counting the sequence's own tokens) writes it to dense slot
``n`` if ``n < S`` else ``S + (n - S) % R``. Once the ring is full (``n >= S + R``) that
slot's outgoing token ``n - R`` first moves to middle column ``n - S - R``: its kept K
channels into the head's ``mid_k`` rows, its V into the head's ``mid_v`` slot (nothing for
zero-count heads). ``LayerLayout.row_sources`` says where each ``mid_k`` row and ``mid_v``
slot comes from, for code that moves whole blocks of tokens at once.
Query heads are in model order; query head ``i`` belongs to KV head ``i // (H / H_kv)``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch


# LayerLayout's tensor fields, one list for tensors() and to(): a table added to the layout is then both moved
# to the kernels' device and counted in a cache's bytes.
_TABLES = ("counts", "kept_idx", "k_row", "v_slot", "work_order")


@dataclass(frozen=True)
class LayerLayout:
    """Static per-layer description derived once from the mask (see module docstring)."""

    counts: torch.Tensor  # [H_kv] int32
    kept_idx: torch.Tensor  # [H_kv, D] int32, first counts[h] entries valid (ascending), rest 0
    k_row: torch.Tensor  # [H_kv] int32, first row of head h in mid_k
    v_slot: torch.Tensor  # [H_kv] int32, index into mid_v's head axis, -1 for zero-count heads
    work_order: torch.Tensor  # [H_kv] int32, the heads by descending kept count (the decode kernel's launch order)
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
                buckets.setdefault(c, (row, []))[1].append(h)
            row += c
        return cls(
            counts=counts.to(torch.int32),
            kept_idx=kept_idx,
            k_row=k_row,
            v_slot=v_slot,
            work_order=torch.tensor(sorted(range(hkv), key=lambda h: (-int(counts[h]), h)), dtype=torch.int32),
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

    def row_sources(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """int64 ``(row_head, row_channel, value_head)`` on the layout's device: ``mid_k`` row ``r`` holds channel
        ``row_channel[r]`` of KV head ``row_head[r]``; ``mid_v`` slot ``s`` holds head ``value_head[s]``'s V."""
        counts, k_row, kept_idx = self.counts.tolist(), self.k_row.tolist(), self.kept_idx.long()
        row_head = torch.empty(self.kept_channels, dtype=torch.int64, device=self.counts.device)
        row_channel = torch.empty_like(row_head)
        for h, (c, r) in enumerate(zip(counts, k_row)):
            row_head[r : r + c] = h
            row_channel[r : r + c] = kept_idx[h, :c]
        value_head = torch.empty(self.value_heads, dtype=torch.int64, device=self.counts.device)
        for h, slot in enumerate(self.v_slot.tolist()):
            if slot >= 0:
                value_head[slot] = h
        return row_head, row_channel, value_head

    def tensors(self) -> tuple[torch.Tensor, ...]:
        """Every index table of the layout (what a cache holding it counts in its bytes)."""
        return tuple(getattr(self, name) for name in _TABLES)

    def to(self, device: torch.device | str) -> "LayerLayout":
        return replace(self, **{name: getattr(self, name).to(device) for name in _TABLES})


def window_lengths(n: torch.Tensor, sink: int, recent: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``sink_len``, ``recent_len``, ``mid_len`` (int32) of sequences holding ``n`` tokens each."""
    return (n.clamp(max=sink).to(torch.int32), (n - sink).clamp(0, recent).to(torch.int32),
            (n - sink - recent).clamp(min=0).to(torch.int32))


def row_strided(x: torch.Tensor) -> tuple[torch.Tensor, int]:
    """``x`` ``[B, H, D]`` with heads contiguous within each sequence's row (a copy only if they are not), and the
    row stride the kernels take: q/k/v sliced from one stacked projection are read in place."""
    if x.stride(2) != 1 or x.stride(1) != x.shape[2]:
        x = x.contiguous()
    return x, x.stride(0)


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

    def check_buffers(self, dtype: torch.dtype) -> None:
        """Kernels index the four buffers with flat offsets: each must be contiguous and of the query's dtype."""
        for name in ("dense_k", "dense_v", "mid_k", "mid_v"):
            tensor = getattr(self, name)
            if tensor.dtype != dtype or not tensor.is_contiguous():
                raise ValueError(f"state.{name} must be a contiguous {dtype} tensor (got {tensor.dtype}, "
                                 f"contiguous={tensor.is_contiguous()})")
