"""``leank registry gc``: remove what dead writers left behind, never what a live one needs.

Two kinds of leftovers exist: temp files of a local store's killed writers, and mask objects
no manifest references (a push that died between uploading the mask and claiming a version
number). Both are removed only once older than a grace period. Why that is safe next to
concurrent pushes:

* a push uploads its mask and then writes its manifest within seconds, so a mask object
  younger than the grace period may belong to a push in flight and is kept;
* a push that reuses an existing (old, unreferenced) mask object writes its manifest and
  then creates the object again if it is gone; gc, after removing an object, lists the
  manifests again and puts the object back if one now references it. Whichever of the two
  acts last sees the other's write, so a referenced mask is never lost.

A model id with a damaged manifest keeps all its masks (the damaged one may reference any).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from . import layout
from .records import DamagedRecord, Manifest
from .store import ObjectStore, Sweepable

DEFAULT_GRACE = timedelta(hours=24)


@dataclass(frozen=True)
class Sweep:
    """What one gc run did."""

    temp_files: tuple[str, ...]
    masks: tuple[str, ...]  # unreferenced mask objects removed
    young: tuple[str, ...]  # unreferenced but within the grace period: kept
    kept: tuple[str, ...]   # model ids whose masks were all kept, and why

    def summary(self) -> str:
        lines = [f"removed {len(self.temp_files)} temp file(s) and {len(self.masks)} unreferenced mask(s); "
                 f"kept {len(self.young)} unreferenced mask(s) younger than the grace period"]
        lines += [f"removed {key}" for key in (*self.temp_files, *self.masks)]
        lines += [f"kept all masks of {why}" for why in self.kept]
        return "\n".join(lines)


def collect_garbage(store: Sweepable, grace: timedelta = DEFAULT_GRACE) -> Sweep:
    """Remove temp files and unreferenced mask objects older than ``grace`` from ``store``."""
    if grace < timedelta(0):
        raise ValueError("the grace period must be >= 0")
    cutoff = datetime.now(timezone.utc) - grace
    temp = store.sweep_temp(cutoff)
    listing = store.list_modified("")
    referenced, damaged = _references(store, [key for key, _ in listing])
    removed, young = [], []
    for key, written in listing:
        found = layout.MASK.fullmatch(key)
        if not found or key in referenced or found.group("model_id") in damaged:
            continue
        if written > cutoff:
            young.append(key)
            continue
        data = store.get(key)
        store.delete(key)
        if data is not None and key in _references(store, store.list(f"{found.group('model_id')}/versions/"))[0]:
            store.create(key, data)  # a push referenced it meanwhile: put it back
        else:
            removed.append(key)
    return Sweep(tuple(temp), tuple(removed), tuple(young), tuple(f"{m}: {why}" for m, why in sorted(damaged.items())))


def _references(store: ObjectStore, keys: list[str]) -> tuple[set[str], dict[str, str]]:
    """Mask keys referenced by the manifests among ``keys``, and model ids with a damaged manifest (why)."""
    referenced: set[str] = set()
    damaged: dict[str, str] = {}
    for key in keys:
        found = layout.MANIFEST.fullmatch(key)
        data = store.get(key) if found else None
        if data is None:
            continue
        try:
            referenced.add(Manifest.from_json(data, key).mask_key)
        except DamagedRecord as e:
            damaged[found.group("model_id")] = str(e)
    return referenced, damaged
