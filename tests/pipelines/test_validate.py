"""Validation job: the gate accepts a harmless mask, rejects a destructive one, never overwrites reports.

These run the real job (Ray workers, generate with LeanKCache) on SmolLM2-135M, the one model
here that actually retrieves from long contexts, so a destructive mask really costs accuracy.
"""

from __future__ import annotations

import pytest
import torch
from transformers import ByT5Tokenizer

from leank_core.model_source import resolve_model
from leank_core.mask import LeanKMask
from leank_core.model_hash import model_hash
from pipelines.validate import evaluate_shard, main as validate, worker_plan
from registry import MaskRegistry, Policy, RegistryError, Status, Suite, generate_key
from registry.signing import SIGNING_KEY_ENV, TRUSTED_KEYS_ENV
from tests.conftest import requires_smollm2, tiny_model

MODEL_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
ARGS = ["--model", "smollm2-135m", "--tasks", "passkey", "niah_single", "--lengths", "512", "--samples", "6"]


@pytest.fixture(scope="module")
def smollm2_hash() -> str:
    return model_hash(resolve_model("smollm2-135m").load())


def trusting_registry(tmp_path, monkeypatch, suite: Suite) -> MaskRegistry:
    """A local registry whose policy (``suite``, default gate) trusts a fresh validator key, which
    $LEANK_SIGNING_KEY points at; private cache and config directories, no pins."""
    for name in ("XDG_CACHE_HOME", "XDG_CONFIG_HOME"):
        monkeypatch.setenv(name, str(tmp_path / name.lower()))
    monkeypatch.delenv(TRUSTED_KEYS_ENV, raising=False)
    signer = generate_key(tmp_path / "validator.key")
    monkeypatch.setenv(SIGNING_KEY_ENV, signer.source)
    registry = MaskRegistry(str(tmp_path / "registry"))
    registry.update_policy(lambda _: Policy(suite=suite, trusted_keys=(signer.public_key,)))
    return registry


@pytest.fixture
def candidate(ray_head, monkeypatch, tmp_path, smollm2_hash):
    """Push an all-kept (keep=True) or all-pruned mask as a candidate; return (registry, ref, validate argv)."""
    monkeypatch.setenv("RAY_ADDRESS", ray_head.address)
    registry = trusting_registry(tmp_path, monkeypatch, Suite(min_samples=1))

    def push(keep: bool):
        mask = LeanKMask(kept=torch.full((30, 3, 64), keep), sink=32, recent=64, align=16,
                         ratio=0.0 if keep else 0.99, model_id=MODEL_ID, model_hash=smollm2_hash)
        ref = registry.push(mask, {"training_config": {"test": True}})
        return registry, ref, ARGS + ["--mask", str(ref), "--registry", registry.url, "--out", str(tmp_path / "out")]

    return push


@pytest.mark.slow
@requires_smollm2
def test_identity_mask_is_accepted_and_revalidation_adds_a_report(candidate, tmp_path):
    registry, ref, argv = candidate(True)
    assert validate(argv) == 0
    assert validate(argv + ["--tasks", "passkey"]) == 0  # re-validating stores a second report
    shown = registry.show(ref.model_id, ref.version)
    assert shown.status == Status.ACCEPTED and len(shown.reports) == 2
    assert all(entry.problem is None for entry in shown.reports)  # signed by the trusted key, bound to @1
    report = shown.reports[0].signed.report
    assert report.passed and report.mask_sha256 == registry.pull(MODEL_ID).sha256()
    assert report.mean["full"] > 0  # the task is solvable, so the gate means something
    assert (tmp_path / "out" / report.mask_sha256[:16] / "accuracy.png").is_file()


@pytest.mark.slow
@requires_smollm2
def test_destructive_mask_is_rejected_and_stays_unpublished(candidate):
    registry, ref, argv = candidate(False)
    assert validate(argv) == 1
    assert registry.show(ref.model_id, ref.version).status == Status.REJECTED
    with pytest.raises(RegistryError, match=f"^{MODEL_ID} has no accepted version yet"):
        registry.pull(MODEL_ID)


@requires_smollm2
def test_bad_arguments_fail_before_any_worker(tmp_path, capsys):
    assert validate(["--model", "smollm2-135m", "--mask", str(tmp_path / "none.safetensors")]) == 2
    assert validate(["--model", "smollm2-135m", "--mask", "x.safetensors", "--lengths", "9000"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 2 and all(line.startswith("leank validate: ") for line in lines)


@pytest.mark.parametrize("cluster_gpus,flags,expected,warns", [
    (4, (None, None), (1, 4), False),       # one worker per GPU
    (4, (0.5, None), (0.5, 8), False),      # fractional GPUs pack more workers
    (4, (1, 2), (1, 2), False),             # explicit values win
    (0, (None, None), (0, 1), True),        # no GPU now: one CPU worker, and a notice
    (0, (1, 8), (1, 8), False),             # autoscaling cluster: explicit GPU workers wait for nodes
])
def test_worker_plan(cluster_gpus, flags, expected, warns, capsys):
    assert worker_plan(cluster_gpus, *flags) == expected
    assert ("no GPU in the Ray cluster" in capsys.readouterr().err) == warns


@pytest.fixture
def judged_registry(tmp_path, monkeypatch):
    """A registry requiring passkey with 2 samples per cell, and one candidate of SmolLM2's shape."""
    registry = trusting_registry(tmp_path, monkeypatch, Suite(tasks=("passkey",), min_samples=2))
    mask = LeanKMask(kept=torch.ones(30, 3, 64, dtype=torch.bool), sink=32, recent=64, align=16, ratio=0.0,
                     model_id=MODEL_ID, model_hash="h")
    ref = registry.push(mask)
    return registry, ARGS + ["--mask", str(ref), "--registry", registry.url, "--out", str(tmp_path / "out"),
                             "--samples", "2"]


@requires_smollm2
@pytest.mark.parametrize("extra, needle", [
    (["--max-mean-drop", "nan"], "argument --max-mean-drop: must be a finite number in [0, 100], got nan"),
    (["--max-cell-drop", "inf"], "must be a finite number"),
    (["--max-cell-drop", "-2"], "must be a finite number"),
    (["--max-mean-drop", "100.5"], "must be a finite number"),
    (["--max-mean-drop", "2"], "--max-mean-drop 2.0 is looser than the registry policy's 1.0"),
    (["--samples", "1"], "passkey@512: 1 of 2 samples"),
    (["--tasks", "niah_single"], "lacks: task passkey"),
])
def test_margins_and_suite_come_from_the_registry_and_bad_ones_stop_before_any_work(
        judged_registry, tmp_path, capsys, extra, needle):
    registry, argv = judged_registry
    assert validate(argv + extra) == 2
    err = capsys.readouterr().err
    assert err.startswith("leank validate: ") and err.count("\n") == 1 and needle in err, err
    assert not (tmp_path / "out").exists() and registry.show(MODEL_ID, 1).reports == ()


@requires_smollm2
def test_a_missing_or_untrusted_signing_key_stops_before_any_work(judged_registry, tmp_path, monkeypatch, capsys):
    registry, argv = judged_registry
    monkeypatch.setenv(SIGNING_KEY_ENV, str(tmp_path / "absent.key"))
    assert validate(argv) == 2
    monkeypatch.setenv(SIGNING_KEY_ENV, generate_key(tmp_path / "stranger.key").source)
    assert validate(argv) == 2
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 2 and "no report-signing key at" in lines[0]
    assert "is not among the registry policy's keys" in lines[1] and "policy set --trust-key ed25519:" in lines[1]
    assert not (tmp_path / "out").exists() and registry.show(MODEL_ID, 1).reports == ()


@requires_smollm2
def test_bad_mask_files_and_config_values_are_one_line_exit_2(tmp_path, capsys):
    data = LeanKMask(kept=torch.ones(30, 3, 64, dtype=torch.bool), sink=32, recent=64, align=16, ratio=0.0).to_bytes()
    (tmp_path / "cut.safetensors").write_bytes(data[:3000])  # head -c 3000 mask.safetensors
    (tmp_path / "job.yaml").write_text("model: 12\n")
    assert validate(["--model", "smollm2-135m", "--mask", str(tmp_path / "cut.safetensors")]) == 2
    assert validate(["--config", str(tmp_path / "job.yaml"), "--mask", "x.safetensors"]) == 2
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 2 and "cannot read mask" in lines[0] and "model must be a string, got 12" in lines[1]


def test_first_use_makes_the_validator_key_which_a_registry_without_policy_trusts(tmp_path, monkeypatch, capsys):
    """No $LEANK_SIGNING_KEY and no key yet: validation makes the default key (0600) and can judge with it."""
    from pipelines.validate import ValidationPlan, check_target
    from registry.signing import default_key_path

    for name in ("XDG_CACHE_HOME", "XDG_CONFIG_HOME"):
        monkeypatch.setenv(name, str(tmp_path / name.lower()))
    for name in (SIGNING_KEY_ENV, TRUSTED_KEYS_ENV):
        monkeypatch.delenv(name, raising=False)
    plan = ValidationPlan(("passkey",), (512,), 2, 0, 0, False, {}, None, None, tmp_path / "out")
    signer, gate = check_target(MaskRegistry(str(tmp_path / "registry")), plan)
    assert signer.source == str(default_key_path()) and (default_key_path().stat().st_mode & 0o077) == 0
    assert "created your report-signing key" in capsys.readouterr().err
    assert check_target(MaskRegistry(str(tmp_path / "registry")), plan)[0].public_key == signer.public_key
    assert gate == Policy().gate


def test_a_later_look_brings_every_earlier_cell_up_to_the_asked_count_with_fresh_samples_numbered_after():
    from dataclasses import replace
    from pathlib import Path
    from types import SimpleNamespace

    from transformers import ByT5Tokenizer

    from pipelines.validate import ValidationPlan, look_samples
    from registry import GatePolicy, PairedSample, ReportEntry
    from registry.gate import judge

    earlier = [PairedSample(task, 1024, i, float(i % 2), float(i % 2 == 0)) for task in ("passkey", "niah_single")
               for i in range(4)]
    verdict = replace(judge(earlier, GatePolicy(), 1), next_look=3, next_samples=16)
    previous = ReportEntry(7, SimpleNamespace(report=SimpleNamespace(pairs=earlier, look=1)), None, verdict)
    plan = ValidationPlan(("common_words",), (2048,), 4, 1234, 8, False, {}, None, None, Path("out"))
    tokenizer = ByT5Tokenizer(extra_ids=0)
    samples, look, kept = look_samples(tokenizer, plan, previous)
    assert look == 3 and kept == earlier
    cells = {(s["task"], s["length"]) for s in samples}
    assert cells == {("passkey", 1024), ("niah_single", 1024)}  # the earlier look's cells, not the plan's
    for cell in cells:
        assert sorted(s["index"] for s in samples if (s["task"], s["length"]) == cell) == list(range(4, 16))
    first_look, _, _ = look_samples(tokenizer, replace(plan, tasks=("passkey",), lengths=(1024,), samples=12), None)
    assert {s["prompt"] for s in first_look}.isdisjoint(s["prompt"] for s in samples)  # fresh samples, own seed


class TinySource:
    """What a worker loads: a tiny random Llama and a byte tokenizer (no files)."""

    def load(self, dtype: torch.dtype = torch.float32, device: str = "cpu"):
        return tiny_model(vocab_size=259).to(dtype)

    def tokenizer(self):
        return ByT5Tokenizer(extra_ids=0)


def test_the_full_run_keeps_every_channel_in_the_masks_own_windows(monkeypatch):
    """A (full, masked) pair differs only in the pruned channels: the full cache runs with the mask's sink and
    recent (the same kernel splits), not as the engine's dense twin, whose rounding flips marginal answers."""
    alpha = torch.rand(2, 2, 16, generator=torch.Generator().manual_seed(0))
    mask = LeanKMask.from_importance(alpha, 0.5, 4, sink=4, recent=8, model_hash=model_hash(TinySource().load()))
    seen = {}

    def record(model, tokenizer, samples, run_mask, extra_tokens, label, batch):
        seen[label] = run_mask
        return []

    monkeypatch.setattr("leank_core.evaluation.evaluate", record)
    sample = {"task": "t", "length": 40, "index": 0, "answers": ["x"], "input_ids": list(range(3, 43)), "answer_ids": [5]}
    evaluate_shard(TinySource(), mask.to_bytes(), [sample], ["full", "masked", "random"], 2, seed=1)
    full = seen["full"]
    assert bool(full.kept.all()) and (full.sink, full.recent, full.kept.shape) == (4, 8, mask.kept.shape)
    assert seen["masked"].sha256() == mask.sha256()
    assert torch.equal(seen["random"].kept_counts(), mask.kept_counts()) and seen["random"].sha256() != mask.sha256()
