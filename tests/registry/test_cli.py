"""`leank registry ...` smoke tests, in process, on both backends."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from leank_core.mask import LeanKMask
from registry import MaskRef, MaskRegistry, load_signer
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


def test_there_is_no_accept_command(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["accept", "org/m@1", "1"])
    assert exit_.value.code == 2 and "invalid choice: 'accept'" in capsys.readouterr().err


def test_keygen_policy_set_and_validate_flow(bare_backend: Backend, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """An owner makes a key, trusts it in a fresh registry; reports signed with it then accept."""
    key = tmp_path / "validator.key"
    assert main(["keygen", "--out", str(key)]) == 0
    out = capsys.readouterr().out
    public = out.split("public key: ")[1].split()[0]
    assert str(key) in out and public.startswith("ed25519:")
    assert main(["keygen", "--out", str(key)]) == 2  # never overwritten
    assert "exists" in capsys.readouterr().err
    assert cli(bare_backend, "policy", "show") == 0
    assert json.loads(capsys.readouterr().out)["trusted_keys"] == []
    assert cli(bare_backend, "policy", "set", "--trust-key", public, "--min-samples", "2", "--max-cell-drop", "3") == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["trusted_keys"] == [public] and shown["suite"]["min_samples"] == 2
    assert (shown["gate"]["mean_margin"], shown["gate"]["cell_margin"]) == (1.0, 3.0)
    reg = MaskRegistry(bare_backend.url)
    ref = reg.push(make_mask())
    assert reg.judge(ref, report_for(reg, ref, signer=load_signer(key))).status.value == "accepted"
    assert cli(bare_backend, "policy", "set", "--untrust-key", public) == 0
    assert json.loads(capsys.readouterr().out)["trusted_keys"] == []
    assert cli(bare_backend, "pull", "org/m") == 1
    assert "no accepted version" in capsys.readouterr().err


def run_cli(backend: Backend, *argv: str) -> int:
    """The exit code, whether main returns it or argparse exits with it."""
    try:
        return cli(backend, *argv)
    except SystemExit as e:
        return int(e.code)


@pytest.mark.parametrize("argv, needle", [
    (["policy", "set", "--max-mean-drop", "nan"], "gate mean_margin must be a number of accuracy points"),
    (["policy", "set", "--max-cell-drop", "inf"], "gate cell_margin must be a number of accuracy points"),
    (["policy", "set", "--max-cell-drop=-1"], "accuracy points in [0, 100], got -1.0"),
    (["policy", "set", "--max-cell-drop", "1000"], "accuracy points in [0, 100], got 1000.0"),
    (["policy", "set", "--trust-key", "ssh-ed25519 AAAA"], "not an Ed25519 public key"),
    (["policy", "set", "--tasks", "no_such_task"], "unknown tasks no_such_task"),
    (["policy", "set", "--min-samples", "0"], "min_samples must be an integer >= 1"),
    (["policy", "set"], "nothing to change"),
    (["gc", "--grace-hours", "nan"], "must be a finite number"),
])
def test_bad_policy_and_gc_input_is_one_line_exit_2_and_nothing_is_written(
        backend: Backend, capsys: pytest.CaptureFixture, argv: list[str], needle: str) -> None:
    before = MaskRegistry(backend.url).store.list("_registry/policy/")
    assert run_cli(backend, *argv) == 2
    err = capsys.readouterr().err
    assert needle in err and err.count("\n") == 1, err
    assert MaskRegistry(backend.url).store.list("_registry/policy/") == before


def test_push_of_a_truncated_mask_file_is_one_line_exit_2_and_writes_nothing(
        backend: Backend, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    good = make_mask().to_bytes()
    for cut in (3, 40, len(good) // 2, len(good) - 1):  # `head -c N mask.safetensors`
        path = tmp_path / f"cut{cut}.safetensors"
        path.write_bytes(good[:cut])
        assert cli(backend, "push", str(path)) == 2
        err = capsys.readouterr().err
        assert err.startswith("leank registry: cannot read mask") and err.count("\n") == 1, err
    assert cli(backend, "list", "org/m") == 1  # no version was created
    assert MaskRegistry(backend.url).store.list("org/m/") == []


def test_gc_command_removes_orphans_older_than_the_grace(backend: Backend, capsys: pytest.CaptureFixture) -> None:
    reg = MaskRegistry(backend.url)
    mask = make_mask(tag=8)
    assert reg.store.create(f"org/m/masks/{mask.sha256()}.safetensors", mask.to_bytes())
    assert cli(backend, "gc") == 0
    assert "kept 1 unreferenced mask(s) younger than the grace period" in capsys.readouterr().out
    assert cli(backend, "gc", "--grace-hours", "0") == 0
    assert f"removed org/m/masks/{mask.sha256()}.safetensors" in capsys.readouterr().out


def test_show_marks_each_report_trusted_or_not(backend: Backend, capsys: pytest.CaptureFixture) -> None:
    reg = MaskRegistry(backend.url)
    ref = reg.push(make_mask())
    reg.judge(ref, report_for(reg, ref))
    backend.overwrite("org/m/versions/000001/reports/0002.json", b"{}")
    assert cli(backend, "show", "org/m@1") == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["status"] == "accepted" and [r["trusted"] for r in shown["reports"]] == [True, False]
    assert shown["reports"][0]["signed_by"] == load_signer().public_key
