"""Checkpoint verification: a digest written at save time refuses any later change; loads never unpickle code."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from pipelines.checkpoint import DIGEST_FILE, CheckpointError, load_tensors, verify_digest, write_digest


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


class Exploit:
    def __reduce__(self):
        return (print, ("code ran",))


def test_a_pickle_that_would_run_code_is_not_loaded(tmp_path: Path, capsys) -> None:
    torch.save({"alpha": torch.zeros(1), "hook": Exploit()}, tmp_path / "state.pt")
    with pytest.raises(CheckpointError, match="cannot be loaded as tensors only") as err:
        load_tensors(tmp_path / "state.pt")
    assert "\n" not in str(err.value) and "code ran" not in capsys.readouterr().out
