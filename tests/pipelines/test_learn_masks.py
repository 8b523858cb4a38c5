"""The mask-learning job: fail-fast argument checks, and (slow) real Ray runs on a private head.

Slow runs use a tiny random Llama saved to disk in several safetensors shards, 2 CPU workers
on gloo, ZeRO-3, a global batch of 2 samples per step:
* the reference run goes through the real ``ray job submit`` CLI and must leave a candidate
  with its provenance in a local registry, hashed on the full (gathered) weights: the shards
  were loaded into the ZeRO-3 partitions intact;
* a run whose worker is SIGKILLed right after the first checkpoint must resume from it (by
  itself, or with ``--resume`` once it has failed) and end with exactly the reference's α and mask;
* a one-worker run must reproduce single-process ``learn_mask`` on the same data, and the
  two-worker reference's α;
* a shape preset (random weights built in ZeRO-3 partitions, token-id data) runs, reports its
  speed and memory metrics and pushes nothing;
* a failed run whose checkpoint was rewritten in storage is refused on ``--resume``, and
  nothing in it is unpickled.

Without Ray, 2 gloo processes check the worker's own checkpoint under ZeRO-2 and ZeRO-3: saved
in stage 2 and put into fresh engines, it continues to exactly the uninterrupted α.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.multiprocessing as mp
from transformers import ByT5Tokenizer

from leank_core.tasks import DataRecipe, make_training_samples
from leank_core.model_source import resolve_model
from leank_core.model_hash import model_hash
from leank_core.training import ClampedAdam, TrainConfig, learn_mask
from pipelines.checkpoint import DIGEST_FILE, STATE_FILE, load_state, save_state, write_digest
from pipelines.learn_masks import build_parser, main, plan
from pipelines.train_worker import alpha_state, deepspeed_config, restore_alpha_state
from registry import MaskRegistry
from tests.conftest import tiny_model
from tests.pipelines.test_checkpoint import WritesMarker
from tests.pipelines.conftest import RAY_CLI

REPO = Path(__file__).resolve().parents[2]
MODEL_ID = "test/tiny-llama"
TRAIN = TrainConfig(ratio=0.5, align=4, sink=4, recent=16, stage1_steps=10, stage2_steps=4, lr=0.1,
                    stage2_lr=0.05, l1=0.06, seed=3, batch_size=2)
RECIPE = DataRecipe(min_length=400, max_length=600, n_samples=8, seed=3)


def job_args(model_dir: Path, tmp: Path, name: str, workers: int = 2) -> list[str]:
    t = TRAIN
    return [
        "--model", str(model_dir), "--model-id", MODEL_ID, "--gpus-per-worker", "0", "--num-workers", str(workers),
        "--zero-stage", "3", "--ratio", str(t.ratio), "--align", str(t.align), "--sink", str(t.sink),
        "--recent", str(t.recent), "--stage1-steps", str(t.stage1_steps), "--stage2-steps", str(t.stage2_steps),
        "--lr", str(t.lr), "--stage2-lr", str(t.stage2_lr), "--l1", str(t.l1), "--seed", str(t.seed),
        "--batch-size", str(t.batch_size),
        "--n-samples", str(RECIPE.n_samples), "--min-length", str(RECIPE.min_length),
        "--max-length", str(RECIPE.max_length), "--checkpoint-every", "2",
        "--registry", str(tmp / "registry"), "--storage-path", str(tmp / "runs"), "--name", name,
    ]


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny Llama (in several safetensors shards, as large checkpoints come) and a byte tokenizer."""
    path = tmp_path_factory.mktemp("tiny-llama")
    tiny_model("llama").save_pretrained(path, max_shard_size="100KB")
    assert len(list(path.glob("model-*-of-*.safetensors"))) > 2
    ByT5Tokenizer(extra_ids=0).save_pretrained(path)
    return path


def pushed(registry: Path) -> list[dict[str, Any]]:
    return [r.to_dict() for r in MaskRegistry(str(registry)).list(MODEL_ID)] if (registry / MODEL_ID).exists() else []


# --- fails fast ---------------------------------------------------------------------------

BAD = {
    "ratio out of range": (["--ratio", "1.5"], "ratio"),
    "align not dividing head_dim 16": (["--align", "5"], "align"),
    "model max positions": (["--max-length", "4096"], "positions"),
    "no middle tokens": (["--min-length", "300", "--max-length", "400", "--recent", "300"], "middle"),
    "batch not split evenly over workers": (["--batch-size", "3", "--num-workers", "2"], "multiple of --num-workers"),
    "validating a shape preset's mask": (["--model", "tiny-llama", "--validate"], "nothing to --validate"),
    "zero stage 1": (["--zero-stage", "1"], "zero-stage"),
    "zero workers": (["--num-workers", "0"], "num-workers"),
    "resume without name": (["--resume"], "--name"),
    "run name leaving the storage path": (["--name", "../elsewhere"], "plain directory name"),
    "unknown flag": (["--learning-rate", "3"], "unrecognized"),
    "missing validation config": (["--validate", "no-such-validate.yaml"], "no such validation config"),
}


@pytest.mark.parametrize("case", BAD, ids=list(BAD))
def test_bad_arguments_exit_2_with_one_line_before_ray(case: str, tiny_dir: Path, tmp_path: Path, capsys) -> None:
    import ray

    extra, needle = BAD[case]
    args = ["--model", str(tiny_dir), "--min-length", "400", "--max-length", "600", "--gpus-per-worker", "0",
            "--registry", str(tmp_path / "registry"), "--storage-path", str(tmp_path / "runs"), *extra]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("leank learn: ") and "\n" not in err and needle in err, err
    assert not ray.is_initialized()
    assert not (tmp_path / "registry").exists() and not (tmp_path / "runs").exists()


@pytest.mark.parametrize("args, needle", [
    (["--model", "no-such-model"], "unknown model"),
    ([], "--model is required"),
])
def test_bad_model_exits_2(args: list[str], needle: str, capsys) -> None:
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert needle in err and "\n" not in err


@pytest.mark.parametrize("yaml_text, needle", [
    ("learning_rate: 0.1\n", "unknown key 'learning_rate'"),
    ("ratio: high\n", "bad value for ratio"),
    ("tasks: passkey\n", "must be a list"),
    ("zero-stage: 1\n", "must be one of 2, 3"),
    ("- just\n- a list\n", "must be a mapping"),
])
def test_bad_config_file_exits_2(yaml_text: str, needle: str, tiny_dir: Path, tmp_path: Path, capsys) -> None:
    config = tmp_path / "job.yaml"
    config.write_text(yaml_text)
    assert main(["--model", str(tiny_dir), "--config", str(config)]) == 2
    err = capsys.readouterr().err.strip()
    assert needle in err and "\n" not in err, err


def test_config_file_sets_options_and_flags_override_it(tiny_dir: Path, tmp_path: Path) -> None:
    config = tmp_path / "job.yaml"
    config.write_text(f"model: {tiny_dir}\nratio: 0.25\nalign: 8\nstage1-steps: 7\ntasks: [passkey]\n"
                      f"min_length: 400\nmax_length: 500\ngpus-per-worker: 0\nstorage-path: {tmp_path}\n")
    job = plan(["--config", str(config), "--align", "4"])
    assert (job.train.ratio, job.train.align, job.train.stage1_steps) == (0.25, 4, 7)
    assert job.recipe.tasks == ("passkey",) and (job.recipe.min_length, job.recipe.max_length) == (400, 500)
    assert job.dtype == "float32" and job.num_workers == 1


def test_help_documents_every_option(capsys) -> None:
    assert main(["--help"]) == 0
    text = capsys.readouterr().out
    for action in build_parser()._actions:
        assert action.help, action.dest
        assert action.option_strings[-1] in text


# --- real Ray runs ------------------------------------------------------------------------

@pytest.fixture(scope="session")
def reference(ray_head, tiny_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """An uninterrupted 2-worker ZeRO-3 run submitted with the real ``ray job submit`` CLI."""
    from ray.job_submission import JobStatus, JobSubmissionClient

    tmp = tmp_path_factory.mktemp("reference")
    job_id = f"leank-test-{uuid.uuid4().hex[:8]}"
    start = time.monotonic()
    subprocess.run(
        [*RAY_CLI, "job", "submit", "--address", ray_head.dashboard_url, "--submission-id", job_id,
         "--working-dir", str(REPO), "--no-wait", "--", sys.executable, "pipelines/learn_masks.py",
         *job_args(tiny_dir, tmp, "reference")],
        check=True, capture_output=True, timeout=120,
    )
    client = JobSubmissionClient(ray_head.dashboard_url)
    terminal = {JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED}
    while (status := client.get_job_status(job_id)) not in terminal and time.monotonic() - start < 600:
        time.sleep(1)
    logs = client.get_job_logs(job_id)
    return {"status": status, "logs": logs, "tmp": tmp, "seconds": time.monotonic() - start}


def _mask(tmp: Path, version: int = 1):
    return MaskRegistry(str(tmp / "registry")).pull(MODEL_ID, version, allow_unaccepted=True)


@pytest.mark.slow
def test_job_submit_pushes_candidate_with_provenance(reference: dict[str, Any]) -> None:
    from ray.job_submission import JobStatus

    assert reference["status"] == JobStatus.SUCCEEDED, reference["logs"][-3000:]
    [entry] = pushed(reference["tmp"] / "registry")
    assert entry["status"] == "candidate"
    manifest = MaskRegistry(str(reference["tmp"] / "registry")).show(MODEL_ID, 1).manifest.to_dict()
    config = manifest["training_config"]
    assert {k: config[k] for k in TRAIN.to_dict()} == TRAIN.to_dict()
    assert (config["num_workers"], config["zero_stage"], config["dtype"]) == (2, 3, "float32")
    assert DataRecipe.from_dict(manifest["data_recipe"]) == RECIPE
    assert manifest["training_metrics"]["step"] == TRAIN.stage1_steps + TRAIN.stage2_steps
    assert manifest["training_metrics"]["resumed_from_step"] == 0
    logs = reference["logs"]
    assert f"pushed candidate {MODEL_ID}@1" in logs and "kept K channels per head" in logs
    assert "[leank learn] stage 2 step 14/14" in logs


@pytest.mark.slow
def test_zero3_hash_of_gathered_weights_equals_plain_hash(reference: dict[str, Any]) -> None:
    assert _mask(reference["tmp"]).model_hash == model_hash(tiny_model("llama"))


@pytest.mark.slow
def test_finished_run_is_not_started_again_or_pushed_twice(reference: dict[str, Any], tiny_dir: Path, capsys) -> None:
    args = job_args(tiny_dir, reference["tmp"], "reference")
    assert main(args) == 2
    assert "already exists" in capsys.readouterr().err
    assert main([*args, "--resume"]) == 0
    assert "already finished" in capsys.readouterr().out
    assert main([*args, "--resume", "--ratio", "0.25"]) == 2
    assert "other train" in capsys.readouterr().err
    assert len(pushed(reference["tmp"] / "registry")) == 1


def _kill_a_worker_after_first_checkpoint(dashboard_url: str, run_dir: Path, out: dict[str, Any]) -> None:
    """SIGKILL one Ray Train worker process as soon as the run has registered a checkpoint."""
    from ray.util.state import list_actors

    deadline = time.monotonic() + 300
    pids: list[int] = []
    while len(pids) < 2 and time.monotonic() < deadline:
        actors = list_actors(address=dashboard_url, filters=[("class_name", "=", "RayTrainWorker"), ("state", "=", "ALIVE")])
        pids = sorted(a.pid for a in actors)
        time.sleep(0.2)
    while not (run_dir / "checkpoint_manager_snapshot.json").exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    if pids and time.monotonic() < deadline:
        os.kill(pids[0], signal.SIGKILL)
        out["killed"] = pids[0]


def _start_killer(ray_head, run_dir: Path) -> tuple[threading.Thread, dict[str, Any]]:
    killed: dict[str, Any] = {}
    killer = threading.Thread(target=_kill_a_worker_after_first_checkpoint,
                              args=(ray_head.dashboard_url, run_dir, killed), daemon=True)
    killer.start()
    return killer, killed


def _fail_after_first_checkpoint(ray_head, tiny_dir: Path, tmp_path: Path, name: str) -> list[str]:
    """Run job ``name`` with no restarts left and SIGKILL a worker after its first checkpoint: it exits 1.
    Returns the job's arguments."""
    args = job_args(tiny_dir, tmp_path, name)
    killer, killed = _start_killer(ray_head, tmp_path / "runs" / name)
    assert main([*args, "--max-failures", "0"]) == 1
    killer.join(timeout=5)
    assert "killed" in killed, "no worker was killed"
    return args


def _assert_resumed_to_reference(tmp: Path, reference: dict[str, Any]) -> None:
    manifest = MaskRegistry(str(tmp / "registry")).show(MODEL_ID, 1).manifest.to_dict()
    assert manifest["training_metrics"]["resumed_from_step"] > 0
    resumed, uninterrupted = _mask(tmp), _mask(reference["tmp"])
    assert torch.equal(resumed.importance, uninterrupted.importance)
    assert torch.equal(resumed.kept, uninterrupted.kept)


@pytest.mark.slow
def test_killed_worker_resumes_to_the_uninterrupted_mask(ray_head, reference, tiny_dir: Path, tmp_path: Path,
                                                         monkeypatch) -> None:
    """FailureConfig restarts the worker group from the last checkpoint, within the same job."""
    monkeypatch.setenv("RAY_ADDRESS", ray_head.address)
    killer, killed = _start_killer(ray_head, tmp_path / "runs" / "killed")
    assert main(job_args(tiny_dir, tmp_path, "killed")) == 0
    killer.join(timeout=5)
    assert "killed" in killed, "no worker was killed"
    _assert_resumed_to_reference(tmp_path, reference)


@pytest.mark.slow
def test_failed_job_exits_1_pushes_nothing_and_resume_finishes_it(ray_head, reference, tiny_dir: Path,
                                                                   tmp_path: Path, monkeypatch, capsys) -> None:
    """With no restarts left the job fails; ``--resume`` (a new driver) continues from storage."""
    monkeypatch.setenv("RAY_ADDRESS", ray_head.address)
    args = _fail_after_first_checkpoint(ray_head, tiny_dir, tmp_path, "failed")
    assert "training failed" in capsys.readouterr().err
    assert pushed(tmp_path / "registry") == []
    assert main([*args, "--resume"]) == 0
    _assert_resumed_to_reference(tmp_path, reference)


@pytest.mark.slow
@pytest.mark.parametrize("dtype,zero", [("float32", "3"), ("bfloat16", "2"), ("bfloat16", "3")])
def test_one_worker_job_matches_single_process_learn_mask(dtype: str, zero: str, ray_head, tiny_dir: Path,
                                                          tmp_path: Path, monkeypatch) -> None:
    """Same α and mask as ``learn_mask`` on a model of the same dtype: under bf16 too, α trains in fp32."""
    monkeypatch.setenv("RAY_ADDRESS", ray_head.address)
    assert main([*job_args(tiny_dir, tmp_path, "one", workers=1), "--dtype", dtype, "--zero-stage", zero]) == 0
    source = resolve_model(str(tiny_dir), MODEL_ID)
    data = make_training_samples(source.tokenizer(), RECIPE)
    expected = learn_mask(source.load(dtype=getattr(torch, dtype)), data, TRAIN, MODEL_ID, progress=False)
    got = _mask(tmp_path)
    # DeepSpeed accumulates the batch's gradients in its own buffers: stage 1 (10 steps of 2 samples) agrees to
    # 1e-8; stage 2's last-bit differences Adam turns into up to 1e-5 on α after the 14 steps here.
    torch.testing.assert_close(got.importance, expected.importance, rtol=0, atol=3e-5)
    assert torch.equal(got.kept, expected.kept)
    assert got.model_hash == expected.model_hash


@pytest.mark.slow
def test_two_workers_learn_what_one_worker_learns(reference, ray_head, tiny_dir: Path, tmp_path: Path,
                                                  monkeypatch) -> None:
    """The same global batch per step, split over 2 workers or accumulated by 1: the same α and mask."""
    monkeypatch.setenv("RAY_ADDRESS", ray_head.address)
    assert main(job_args(tiny_dir, tmp_path, "one-of-two", workers=1)) == 0
    one, two = _mask(tmp_path), _mask(reference["tmp"])
    torch.testing.assert_close(one.importance, two.importance, rtol=0, atol=1e-5)  # float sums in another order
    assert torch.equal(one.kept, two.kept)


@pytest.mark.slow
def test_shape_preset_measures_speed_and_memory_and_pushes_nothing(ray_head, tmp_path: Path, monkeypatch,
                                                                   capsys) -> None:
    monkeypatch.setenv("RAY_ADDRESS", ray_head.address)
    args = ["--model", "tiny-llama", "--gpus-per-worker", "0", "--num-workers", "1", "--zero-stage", "3",
            "--align", "4", "--sink", "4", "--recent", "16", "--stage1-steps", "2", "--stage2-steps", "1",
            "--n-samples", "2", "--min-length", "300", "--max-length", "300", "--registry", str(tmp_path / "registry"),
            "--storage-path", str(tmp_path / "runs"), "--name", "preset"]
    assert main(args) == 0
    out = capsys.readouterr().out
    [line] = [line for line in out.splitlines() if line.startswith("metrics: ")]
    metrics = json.loads(line.removeprefix("metrics: "))
    assert metrics["timed_steps"] == 2 and metrics["step"] == 3
    assert metrics["step_s"] > 0 and metrics["prefill_s"] > 0
    assert metrics["tokens_per_s"] == pytest.approx((300 + 2 * 16) / metrics["step_s"])
    assert "mask is not pushed" in out and not (tmp_path / "registry").exists()


@pytest.mark.slow
def test_resume_refuses_a_checkpoint_rewritten_in_storage(ray_head, tiny_dir: Path, tmp_path: Path, monkeypatch,
                                                          capsys) -> None:
    """The run's checkpoints hold named tensors and numbers only. Rewritten in storage (the state file
    carrying a pickle that would run code, the digest file recomputed), they are refused by the digest
    Ray Train kept with them: the resumed job fails, the payload never runs, nothing is pushed."""
    monkeypatch.setenv("RAY_ADDRESS", ray_head.address)
    args = _fail_after_first_checkpoint(ray_head, tiny_dir, tmp_path, "rewritten")
    checkpoints = [p for p in (tmp_path / "runs" / "rewritten").glob("checkpoint_*") if p.is_dir()]
    assert checkpoints
    marker = tmp_path / "marker"
    for checkpoint in checkpoints:
        assert sorted(p.name for p in checkpoint.iterdir()) == sorted([DIGEST_FILE, STATE_FILE])
        state = load_state(checkpoint)  # tensors and numbers only, or it raises
        assert set(state) == {"alpha", "exp_avg", "exp_avg_sq", "adam_step", "lr", "step"}
        torch.save({**state, "hook": WritesMarker(marker)}, checkpoint / STATE_FILE)
        write_digest(checkpoint)
    capsys.readouterr()
    assert main([*args, "--resume", "--max-failures", "0"]) == 1
    [line] = [line for line in capsys.readouterr().err.splitlines() if line.startswith("leank learn: ")]
    # whichever worker reaches the check first reports it; every rank loads the same checkpoint
    assert re.search(r"training failed: rank \d+: checkpoint .* is not the one this run saved", line), line
    assert not marker.exists()
    assert pushed(tmp_path / "registry") == []

# --- the worker's own checkpoint under ZeRO, without Ray -----------------------------------

LRS = {0: 0.05, 3: 0.02}  # the steps that restart ClampedAdam (two stages), and their learning rates


class AlphaLoss(torch.nn.Module):
    """α beside a frozen layer; the loss is quadratic in α, so a wrong α, moment, step count or lr
    after a restore changes the steps that follow."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.frozen = torch.nn.Linear(8, 8).requires_grad_(False)
        self.alpha = torch.nn.Parameter(torch.rand(3, 2, 7))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor]:
        return (((self.frozen(x).mean(0)[:7] - self.alpha) ** 2).sum(),)


def _engine(stage: int) -> tuple[Any, AlphaLoss, Any]:
    import deepspeed

    module = AlphaLoss()
    optimizer = ClampedAdam([module.alpha], lr=LRS[0])
    engine, *_ = deepspeed.initialize(model=module, optimizer=optimizer, config=deepspeed_config(stage, 1),
                                      dist_init_required=False)
    return engine, module, optimizer


def _train(engine: Any, optimizer: Any, steps: range, rank: int) -> None:
    for i in steps:
        if i in LRS:
            optimizer.restart(LRS[i])
        loss, = engine(torch.randn(4, 8, generator=torch.Generator().manual_seed(10 * i + rank)))
        engine.backward(loss)
        engine.step()


def _resume_worker(rank: int, stage: int, port: int, directory: str) -> None:
    """Rank ``rank`` of 2: an uninterrupted run of 6 steps, and one saved after step 4 (stage 2) and
    continued in a fresh engine; rank 0 writes both final α (master and the model's copy)."""
    os.environ.update(DS_ACCELERATOR="cpu", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE="2", LOCAL_RANK=str(rank))
    os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(Path.home() / ".cache" / "leank" / "torch_extensions"))
    import deepspeed  # after DS_ACCELERATOR: DeepSpeed picks its accelerator on import
    from deepspeed.utils import safe_get_full_fp32_param

    torch.distributed.init_process_group("gloo", rank=rank, world_size=2)
    deepspeed.init_distributed("gloo")
    engine, module, optimizer = _engine(stage)
    _train(engine, optimizer, range(6), rank)
    uninterrupted = safe_get_full_fp32_param(module.alpha)
    engine, module, optimizer = _engine(stage)
    _train(engine, optimizer, range(4), rank)
    saved = {**alpha_state(engine, module.alpha, optimizer), "step": 4}
    checkpoint = Path(directory) / "checkpoint"
    if rank == 0:
        checkpoint.mkdir()
        save_state(checkpoint, saved)
        write_digest(checkpoint)
    torch.distributed.barrier()
    engine, module, optimizer = _engine(stage)
    restore_alpha_state(engine, module.alpha, optimizer, load_state(checkpoint))
    _train(engine, optimizer, range(4, 6), rank)
    resumed = safe_get_full_fp32_param(module.alpha)
    with deepspeed.zero.GatheredParameters([module.alpha]):
        model_copy = module.alpha.detach().clone()
    if rank == 0:
        torch.save({"uninterrupted": uninterrupted, "resumed": resumed, "model_copy": model_copy,
                    "saved": saved["alpha"]}, Path(directory) / "result.pt")
    torch.distributed.destroy_process_group()


@pytest.mark.slow
@pytest.mark.parametrize("stage", [2, 3])
def test_worker_checkpoint_resumes_exactly_under_zero(stage: int, tmp_path: Path) -> None:
    """α, Adam's moments, step count and lr saved in stage 2 (after DeepSpeed's own optimizer-state
    views went stale under ZeRO-2) and restored into fresh engines on 2 ranks: bit-identical α."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ctx = mp.get_context("spawn")
    workers = [ctx.Process(target=_resume_worker, args=(rank, stage, port, str(tmp_path))) for rank in range(2)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(timeout=600)
        if w.is_alive():
            w.kill()
    assert [w.exitcode for w in workers] == [0, 0]
    result = torch.load(tmp_path / "result.pt", weights_only=True)
    assert not torch.equal(result["saved"], result["uninterrupted"])  # the resumed steps moved α
    assert torch.equal(result["resumed"], result["uninterrupted"])
    assert torch.equal(result["model_copy"], result["resumed"])
