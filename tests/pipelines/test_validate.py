"""Validation job: the gate accepts a harmless mask, rejects a destructive one, never overwrites reports.

These run the real job (Ray workers, generate with LeanKCache) on SmolLM2-135M, the one model
here that actually retrieves from long contexts, so a destructive mask really costs accuracy.
"""

from __future__ import annotations

import pytest
import torch

from leank_core.model_source import resolve_model
from leank_core.mask import LeanKMask
from leank_core.model_hash import model_hash
from pipelines.validate import main as validate, worker_plan
from registry import MaskRegistry, RegistryError, Status
from tests.conftest import requires_smollm2

MODEL_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
ARGS = ["--model", "smollm2-135m", "--tasks", "passkey", "niah_single", "--lengths", "512", "--samples", "1"]


@pytest.fixture(scope="module")
def smollm2_hash() -> str:
    return model_hash(resolve_model("smollm2-135m").load())


@pytest.fixture
def candidate(ray_head, monkeypatch, tmp_path, smollm2_hash):
    """Push an all-kept (keep=True) or all-pruned mask as a candidate; return (registry, ref, validate argv)."""
    monkeypatch.setenv("RAY_ADDRESS", ray_head.address)
    registry = MaskRegistry(str(tmp_path / "registry"))

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
    report = shown.reports[0][1]
    assert report.passed and report.mask_sha256 == registry.pull(MODEL_ID).sha256()
    assert report.mean["full"] > 0  # the task is solvable, so the gate means something
    assert (tmp_path / "out" / report.mask_sha256[:16] / "accuracy.png").is_file()


@pytest.mark.slow
@requires_smollm2
def test_destructive_mask_is_rejected_and_stays_unpublished(candidate):
    registry, ref, argv = candidate(False)
    assert validate(argv) == 1
    assert registry.show(ref.model_id, ref.version).status == Status.REJECTED
    with pytest.raises(RegistryError):
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
