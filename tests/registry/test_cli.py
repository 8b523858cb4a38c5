"""`leank registry ...` smoke tests, in process, on both backends."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from leank_core.mask import LeanKMask
from registry import MaskRef, MaskRegistry
from registry.cli import main

from .conftest import Backend, make_mask, report_for


def cli(backend: Backend, *argv: str) -> int:
    return main(["--registry", backend.url, *argv])


def test_push_list_show(backend: Backend, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path = make_mask().save(tmp_path / "m.safetensors")
    (tmp_path / "manifest.json").write_text(json.dumps({"data_recipe": "r1"}))
    assert cli(backend, "push", str(path), "--manifest", str(tmp_path / "manifest.json")) == 0
    assert "pushed org/m@1 (candidate)" in capsys.readouterr().out
    assert cli(backend, "list", "org/m") == 0
    assert "org/m@1  candidate" in capsys.readouterr().out
    assert cli(backend, "show", "org/m@1") == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["status"] == "candidate" and shown["manifest"]["data_recipe"] == "r1"


def test_registry_option_is_also_taken_after_the_subcommand(backend: Backend, tmp_path: Path,
                                                            capsys: pytest.CaptureFixture) -> None:
    path = make_mask().save(tmp_path / "m.safetensors")
    assert main(["push", str(path), "--registry", backend.url]) == 0
    assert main(["list", "org/m", "--registry", backend.url]) == 0
    assert "org/m@1  candidate" in capsys.readouterr().out
    assert MaskRegistry(backend.url).list("org/m")[0].version == 1


def test_pull_prints_cache_path_or_writes_out(backend: Backend, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    reg = MaskRegistry(backend.url)
    mask = make_mask()
    ref = reg.push(mask)
    reg.judge(ref, report_for(reg, ref))
    assert cli(backend, "pull", "org/m", "--model-hash", "abc") == 0
    cached = Path(capsys.readouterr().out.strip())
    assert cached.read_bytes() == mask.to_bytes()
    out = tmp_path / "out" / "mask.safetensors"
    assert cli(backend, "pull", "org/m", "--version", "1", "--out", str(out)) == 0
    assert LeanKMask.load(out).sha256() == mask.sha256()


def test_pull_of_a_candidate_is_refused_with_exit_1(backend: Backend, capsys: pytest.CaptureFixture) -> None:
    MaskRegistry(backend.url).push(make_mask())
    assert cli(backend, "pull", "org/m", "--version", "1") == 1
    err = capsys.readouterr().err
    assert "candidate, not accepted" in err and err.count("\n") == 1


def test_import_reference_creates_a_candidate(backend: Backend, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    ref_mask = torch.zeros(2, 2, 32)
    ref_mask[:, :, :16] = 1
    torch.save(ref_mask, tmp_path / "ref.pt")
    assert cli(backend, "import-reference", str(tmp_path / "ref.pt"), "--model-id", "org/ref",
               "--model-hash", "h1", "--sink", "4", "--recent", "8") == 0
    assert "imported org/ref@1 (candidate)" in capsys.readouterr().out
    pulled = MaskRegistry(backend.url).pull("org/ref", 1, model_hash="h1", allow_unaccepted=True)
    assert (pulled.align, pulled.sink, pulled.recent, pulled.ratio) == (16, 4, 8, 0.5)
    assert MaskRegistry(backend.url).resolve(MaskRef("org/ref")) == MaskRef("org/ref", "h1", 1)


@pytest.mark.parametrize("argv, code, message", [
    (["list", "org/none"], 1, "no masks for model id 'org/none'"),
    (["list", "../etc"], 2, "invalid model id"),
    (["show", "org/m@x"], 2, "invalid mask reference"),
    (["push", "/nonexistent/m.safetensors"], 2, "mask file not found"),
    (["show", "org/m@1"], 1, "org/m@1 does not exist"),
    (["pull", "org/m"], 1, "no masks for model id 'org/m'"),
    (["import-reference", "/nonexistent.pt", "--model-id", "org/m", "--model-hash", "h"], 2, "cannot read reference mask"),
])
def test_errors_are_one_line_with_exit_code(backend: Backend, capsys: pytest.CaptureFixture,
                                            argv: list[str], code: int, message: str) -> None:
    assert cli(backend, *argv) == code
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_push_with_a_broken_manifest_file_is_one_line(backend: Backend, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture) -> None:
    path = make_mask().save(tmp_path / "m.safetensors")
    for name, text in [("bad.json", "{not json"), ("list.json", "[1, 2]")]:
        (tmp_path / name).write_text(text)
        assert cli(backend, "push", str(path), "--manifest", str(tmp_path / name)) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and ("not valid JSON" in err or "must be a JSON object" in err)


def test_there_is_no_accept_command() -> None:
    with pytest.raises(SystemExit):
        main(["accept", "org/m@1", "1"])
