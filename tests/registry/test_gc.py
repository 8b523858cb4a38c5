"""`leank registry gc`: leftovers of dead writers go, nothing a live push or a version needs is lost.

Interleavings with a concurrent push are played deterministically: a store wrapper runs the
other party at the exact point between two steps.
"""

from __future__ import annotations

import os
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from registry import MaskRegistry
from registry.gc import Sweep, collect_garbage
from registry.layout import mask_key

from .conftest import Backend, make_mask

NOW = timedelta(0)  # grace 0: everything written before this instant is old enough


def orphan(reg: MaskRegistry, tag: int) -> str:
    """A mask object no manifest references: what a push killed before its manifest leaves."""
    mask = make_mask(tag=tag)
    key = mask_key(mask.model_id, mask.sha256())
    assert reg.store.create(key, mask.to_bytes())
    return key


def test_unreferenced_masks_older_than_the_grace_period_are_removed(backend: Backend) -> None:
    reg = MaskRegistry(backend.url)
    reg.push(make_mask(tag=0))
    dead = orphan(reg, tag=1)
    kept = collect_garbage(reg.store)  # default grace: the orphan is too young to tell from a push in flight
    assert kept.masks == () and kept.young == (dead,)
    swept = collect_garbage(reg.store, NOW)
    assert swept.masks == (dead,) and reg.store.get(dead) is None
    assert reg.pull("org/m", 1, allow_unaccepted=True).extra == {"tag": 0}  # referenced: untouched
    assert "removed 0 temp file(s) and 1 unreferenced mask(s)" in swept.summary()


class Interleaved:
    """A store that calls ``hook`` once, just before the first call of ``method`` on a key containing ``part``."""

    def __init__(self, store, method: str, part: str, hook) -> None:
        self.store, self.url, self.method, self.part, self.hook = store, store.url, method, part, hook

    def __getattr__(self, name: str):
        real = getattr(self.store, name)
        if name != self.method:
            return real

        def call(key, *args):
            if self.hook and self.part in key:
                hook, self.hook = self.hook, None
                hook()
            return real(key, *args)

        return call


def test_a_push_in_flight_keeps_its_mask_through_the_grace_period(backend: Backend) -> None:
    """gc runs after the push uploaded its mask, before its manifest exists: the grace period keeps the mask."""
    reg = MaskRegistry(backend.url)
    sweeps = []
    reg.store = Interleaved(reg.store, "create", "manifest.json", lambda: sweeps.append(collect_garbage(reg.store.store)))
    ref = reg.push(make_mask(tag=4))
    assert sweeps[0].young == (mask_key("org/m", make_mask(tag=4).sha256()),) and sweeps[0].masks == ()
    assert reg.pull(ref.model_id, ref.version, allow_unaccepted=True).extra == {"tag": 4}


def test_a_push_reusing_an_old_orphan_survives_a_gc_that_removes_it_first(backend: Backend) -> None:
    """gc removes the old orphan after the push found it but before the manifest: the push puts it back."""
    reg = MaskRegistry(backend.url)
    key = orphan(reg, tag=5)
    sweeps = []
    reg.store = Interleaved(reg.store, "create", "manifest.json", lambda: sweeps.append(collect_garbage(reg.store.store, NOW)))
    ref = reg.push(make_mask(tag=5))
    assert sweeps[0].masks == (key,)  # gc did remove it
    assert reg.pull(ref.model_id, ref.version, allow_unaccepted=True).extra == {"tag": 5}


def test_a_gc_that_removes_an_orphan_a_push_just_referenced_puts_it_back(backend: Backend) -> None:
    """The push completes between gc's listing and its removal: gc sees the new manifest and restores the mask."""
    reg = MaskRegistry(backend.url)
    key = orphan(reg, tag=6)
    pushed = []
    store = Interleaved(reg.store, "delete", key, lambda: pushed.append(MaskRegistry(backend.url).push(make_mask(tag=6))))
    swept = collect_garbage(store, NOW)
    assert pushed and swept.masks == ()
    assert reg.pull("org/m", pushed[0].version, allow_unaccepted=True).extra == {"tag": 6}


def test_a_model_with_a_damaged_manifest_keeps_all_its_masks(backend: Backend) -> None:
    reg = MaskRegistry(backend.url)
    reg.push(make_mask(tag=0))
    dead = orphan(reg, tag=1)
    backend.overwrite("org/m/versions/000001/manifest.json", b"[]")
    swept = collect_garbage(reg.store, NOW)
    assert swept.masks == () and reg.store.get(dead) is not None
    assert swept.kept == ("org/m: org/m/versions/000001/manifest.json is list, not a JSON object",)


def test_dead_writers_temp_files_are_removed_once_old(tmp_path: Path) -> None:
    reg = MaskRegistry(str(tmp_path / "registry"))
    reg.push(make_mask())
    folder = tmp_path / "registry" / "org" / "m" / "versions" / "000002"
    folder.mkdir(parents=True)
    old, young = folder / ".manifest.json.aaaa.tmp", folder / ".manifest.json.bbbb.tmp"
    old.write_bytes(b"half")
    young.write_bytes(b"half")
    day_ago = time.time() - 2 * 86400
    os.utime(old, (day_ago, day_ago))
    swept = collect_garbage(reg.store)
    assert swept.temp_files == ("org/m/versions/000002/.manifest.json.aaaa.tmp",)
    assert not old.exists() and young.exists()
    assert [r.version for r in reg.list("org/m")] == [1]


def test_a_negative_grace_period_is_refused(backend: Backend) -> None:
    with pytest.raises(ValueError, match=r"^the grace period must be >= 0$"):
        collect_garbage(MaskRegistry(backend.url).store, timedelta(hours=-1))


def test_the_summary_is_a_count_line_then_one_line_per_removal_and_per_kept_model() -> None:
    swept = Sweep(temp_files=("org/m/.t.tmp",), masks=("org/m/masks/a", "org/m/masks/b"), young=("org/m/masks/c",),
                  kept=("org/n: damaged",))
    assert swept.summary().splitlines() == [
        "removed 1 temp file(s) and 2 unreferenced mask(s); kept 1 unreferenced mask(s) younger than the grace period",
        "removed org/m/.t.tmp", "removed org/m/masks/a", "removed org/m/masks/b", "kept all masks of org/n: damaged"]


def aged(tmp_path: Path, key: str, seconds: int) -> datetime:
    """Set the local object ``key``'s write time to ``seconds`` after the epoch; return that time."""
    os.utime(tmp_path / "registry" / key, (seconds, seconds))
    return datetime.fromtimestamp(seconds, timezone.utc)


def test_a_young_orphan_does_not_stop_the_sweep_of_older_ones(tmp_path: Path) -> None:
    """Each orphan is judged by its own age: one inside the grace period is kept, the ones after it still go."""
    reg = MaskRegistry(str(tmp_path / "registry"))
    first, second = sorted([orphan(reg, tag=1), orphan(reg, tag=2)])  # gc visits keys in this order
    aged(tmp_path, second, int(time.time()) - 2 * 86400)
    swept = collect_garbage(reg.store, timedelta(hours=1))
    assert swept.young == (first,) and swept.masks == (second,)
    assert reg.store.get(first) is not None and reg.store.get(second) is None


def test_an_orphan_exactly_as_old_as_the_grace_period_is_removed(tmp_path: Path, monkeypatch) -> None:
    """The grace period is how long a push may take between its mask and its manifest: once it has
    passed (age >= grace) the orphan goes. The clock is frozen at that instant to hit the boundary."""
    reg = MaskRegistry(str(tmp_path / "registry"))
    key = orphan(reg, tag=1)
    grace = timedelta(hours=1)
    at = aged(tmp_path, key, int(time.time()) - 86400) + grace

    class Frozen(datetime):
        @classmethod
        def now(cls, tz=None):
            return at

    monkeypatch.setattr("registry.gc.datetime", Frozen)
    swept = collect_garbage(reg.store, grace)
    assert swept.masks == (key,) and swept.young == ()


class Reads:
    """A store that records the keys read after the first delete."""

    def __init__(self, store) -> None:
        self.store, self.deleted, self.read = store, False, []

    def __getattr__(self, name: str):
        return getattr(self.store, name)

    def delete(self, key: str) -> None:
        self.deleted = True
        self.store.delete(key)

    def get(self, key: str):
        if self.deleted:
            self.read.append(key)
        return self.store.get(key)


def test_after_removing_an_orphan_gc_rereads_only_that_models_manifests(backend: Backend) -> None:
    """The re-check that puts back a mask a push just referenced reads the manifests of the mask's
    own model only (only they can reference it), so a removal costs one model's versions, not the registry's."""
    reg = MaskRegistry(backend.url)
    reg.push(make_mask(tag=0))
    reg.push(make_mask(model_id="org/n", tag=0))
    dead = orphan(reg, tag=1)
    store = Reads(reg.store)
    assert collect_garbage(store, NOW).masks == (dead,)
    assert store.read == ["org/m/versions/000001/manifest.json"]
