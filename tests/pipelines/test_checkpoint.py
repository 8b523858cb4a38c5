"""Checkpoint verification: a digest written at save time refuses any later change; loads never unpickle code."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from pipelines.checkpoint import (
    DIGEST_FILE, STATE_FILE, CheckpointError, load_state, load_tensors, save_state, verify_digest, write_digest,
)


def checkpoint(directory: Path) -> str:
    """A small checkpoint (α and an optimizer state in two files) with its digest."""
    (directory / "sub").mkdir(parents=True)
    torch.save({"alpha": torch.rand(2, 3, 4), "step": 7}, directory / "state.pt")
    torch.save({"exp_avg": torch.zeros(2, 3, 4)}, directory / "sub" / "optim.pt")
    return write_digest(directory)


def test_an_untouched_checkpoint_verifies_and_loads(tmp_path: Path) -> None:
    digest = checkpoint(tmp_path)
    assert verify_digest(tmp_path) == digest == verify_digest(tmp_path, expected=digest)
    assert load_tensors(tmp_path / "state.pt")["step"] == 7


@pytest.mark.parametrize("tamper, needle", [
    (lambda d: (d / "state.pt").write_bytes((d / "state.pt").read_bytes()[:-8]), "state.pt"),
    (lambda d: (d / "sub" / "optim.pt").unlink(), "sub/optim.pt"),
    (lambda d: torch.save({"x": 1}, d / "extra.pt"), "extra.pt"),
    (lambda d: (d / DIGEST_FILE).unlink(), f"no {DIGEST_FILE}"),
    (lambda d: (d / DIGEST_FILE).write_text("[]"), "is damaged"),
])
def test_any_change_after_save_is_refused_in_one_line(tmp_path: Path, tamper, needle: str) -> None:
    checkpoint(tmp_path)
    tamper(tmp_path)
    with pytest.raises(CheckpointError, match=needle) as err:
        verify_digest(tmp_path)
    assert "\n" not in str(err.value)


def test_a_rewritten_digest_file_is_caught_by_the_digest_kept_elsewhere(tmp_path: Path) -> None:
    kept = checkpoint(tmp_path)
    torch.save({"alpha": torch.ones(2, 3, 4), "step": 7}, tmp_path / "state.pt")
    write_digest(tmp_path)  # the storage writer recomputes the digest file too
    with pytest.raises(CheckpointError, match="not the one this run saved"):
        verify_digest(tmp_path, expected=kept)


class WritesMarker:
    """Unpickling this runs code: it creates the directory ``path``."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return (os.mkdir, (str(self.path),))


def state() -> dict[str, torch.Tensor | int | float]:
    """What the learn worker saves: α, Adam's moments and step count, the lr and the step."""
    alpha = torch.rand(2, 3, 4)
    return {"alpha": alpha, "exp_avg": alpha / 7, "exp_avg_sq": alpha / 9, "adam_step": torch.tensor(3.0),
            "lr": 0.05, "step": 6}


def sealed(directory: Path, saved: dict[str, torch.Tensor | int | float]) -> str:
    directory.mkdir(exist_ok=True)
    save_state(directory, saved)
    return write_digest(directory)


def test_a_pickle_that_would_run_code_is_never_unpickled(tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    torch.save({"alpha": torch.zeros(1), "hook": WritesMarker(marker)}, tmp_path / "state.pt")
    with pytest.raises(CheckpointError, match="cannot be loaded as tensors only") as err:
        load_tensors(tmp_path / "state.pt")
    assert "\n" not in str(err.value) and not marker.exists()
    torch.load(tmp_path / "state.pt", weights_only=False)  # the payload is live: a plain unpickling runs it
    assert marker.exists()


def test_a_state_round_trips_and_holds_only_tensors_and_numbers(tmp_path: Path) -> None:
    saved = state()
    digest = sealed(tmp_path, saved)
    loaded = load_state(tmp_path, expected=digest)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([STATE_FILE, DIGEST_FILE])
    assert loaded.keys() == saved.keys()
    for key, value in saved.items():
        assert type(loaded[key]) is type(value)
        assert torch.equal(loaded[key], value) if isinstance(value, torch.Tensor) else loaded[key] == value


@pytest.mark.parametrize("extra", [{"note": "text"}, {"moments": {"exp_avg": torch.zeros(1)}},
                                   {"hook": WritesMarker(Path("never"))}])
def test_saving_anything_but_tensors_and_numbers_is_refused(tmp_path: Path, extra) -> None:
    with pytest.raises(TypeError, match="only named tensors and numbers"):
        save_state(tmp_path, {**state(), **extra})
    assert not (tmp_path / STATE_FILE).exists()


@pytest.mark.parametrize("tamper, needle", [
    (lambda d: torch.save({**state(), "hook": WritesMarker(d.parent / "marker")}, d / STATE_FILE), STATE_FILE),
    (lambda d: torch.save({"x": WritesMarker(d.parent / "marker")}, d / "extra.pkl"), "extra.pkl"),
    (lambda d: (d / STATE_FILE).unlink(), STATE_FILE),
])
def test_a_changed_checkpoint_is_refused_in_one_line_before_anything_is_loaded(tmp_path: Path, tamper, needle: str,
                                                                               monkeypatch) -> None:
    checkpoint = tmp_path / "checkpoint"
    digest = sealed(checkpoint, state())
    tamper(checkpoint)
    loads = []
    monkeypatch.setattr(torch, "load", lambda *a, **k: loads.append(a))
    for expected in (None, digest):
        with pytest.raises(CheckpointError, match=needle) as err:
            load_state(checkpoint, expected)
        assert "\n" not in str(err.value)
    assert loads == [] and not (tmp_path / "marker").exists()


def test_a_rewritten_checkpoint_with_a_fresh_digest_file_still_never_runs_code(tmp_path: Path) -> None:
    """A storage writer who also rewrites the digest file: the digest kept elsewhere refuses it, and
    without one the load itself unpickles nothing but tensors."""
    checkpoint = tmp_path / "checkpoint"
    kept = sealed(checkpoint, state())
    torch.save({**state(), "hook": WritesMarker(tmp_path / "marker")}, checkpoint / STATE_FILE)
    write_digest(checkpoint)
    with pytest.raises(CheckpointError, match="not the one this run saved"):
        load_state(checkpoint, kept)
    with pytest.raises(CheckpointError, match="cannot be loaded as tensors only"):
        load_state(checkpoint)
    assert not (tmp_path / "marker").exists()


@pytest.mark.parametrize("content", [[torch.zeros(1)], {"alpha": torch.zeros(1), "note": "text"},
                                     {"alpha": {"nested": torch.zeros(1)}}])
def test_a_tensors_only_file_holding_other_things_is_refused(tmp_path: Path, content) -> None:
    torch.save(content, tmp_path / STATE_FILE)
    write_digest(tmp_path)
    with pytest.raises(CheckpointError, match="holds more than named tensors and numbers"):
        load_state(tmp_path)
