"""Memory accounting of a LeanKCache: what it has allocated, by part, against a dense cache.

Kept apart from the cache's storage code because it answers a different question (how much,
not where): the validation report, ``benchmarks/cache_memory.py`` and users' logs read it.
The figure counts every tensor the cache holds (storage, index tables, the lengths a decode
step reads), each storage once, so it equals what was really allocated.
"""

from __future__ import annotations

from dataclasses import dataclass

from leank_core.cache import LeanKCache

PARTS = ("dense_window", "middle_k", "middle_v", "middle_dense", "dense_equivalent")


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


def allocated_bytes(cache: LeanKCache) -> int:
    """Bytes of every tensor ``cache`` has allocated (storages counted once)."""
    held = [t for layer in cache.layers for t in layer.tensors()] + cache.positions.tensors()
    return sum({t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in held}.values())


def cache_memory(cache: LeanKCache) -> CacheMemory:
    """Allocated bytes by part, next to what a dense cache would hold (see :class:`CacheMemory`)."""
    parts = dict.fromkeys(PARTS, 0)
    for layer in cache.layers:
        if not layer.seen:
            continue
        b, hkv, _, d = layer.dense_k.shape
        item, capacity = layer.dense_k.element_size(), layer.mid_k.shape[-1]
        parts["dense_window"] += layer.dense_k.nbytes + layer.dense_v.nbytes
        parts["middle_k"] += layer.mid_k.nbytes
        parts["middle_v"] += layer.mid_v.nbytes
        parts["middle_dense"] += b * hkv * capacity * d * item
        parts["dense_equivalent"] += 2 * b * hkv * layer.seen * d * item
    return CacheMemory(allocated=allocated_bytes(cache), **parts)


def memory_report(cache: LeanKCache) -> str:
    """Two lines: K and V saving on middle tokens, and the whole cache against a dense one."""
    m = cache_memory(cache)
    return (f"middle tokens: K {1 - m.k_saving:.1%} of dense ({m.k_saving:.1%} saved), "
            f"V {1 - m.v_saving:.1%} of dense ({m.v_saving:.1%} saved)\n"
            f"cache: {m.allocated / 2**20:.2f} MiB allocated vs {m.dense_equivalent / 2**20:.2f} MiB "
            f"for a dense cache of the same tokens")
