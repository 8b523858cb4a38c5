"""What one Ray Train worker of the mask-learning job does: α under DeepSpeed ZeRO, resumable.

Every worker holds the frozen model (ZeRO-3: built partitioned, each worker keeps 1/N of the
weights; ZeRO-2: a whole copy) and trains only α with :func:`leank_core.training.compute_loss`.
Steps follow :func:`leank_core.training.schedule`: each step's global batch of ``batch_size``
samples is split over the N workers (``batch_size / N`` each, run as DeepSpeed gradient-
accumulation micro-steps) and α's gradient is averaged over the whole batch, so N workers
compute what one worker computes, and what :func:`leank_core.training.learn_mask` computes in
one process, up to the order of float sums. :class:`leank_core.training.ClampedAdam` restarts
at each stage with that stage's learning rate and keeps α in [0, 1].

Resumability: a step's samples are a pure function of (seed, step), and a checkpoint holds α,
the Adam state and the step, so a run restarted from any checkpoint computes exactly what the
uninterrupted run computes. The checkpoint is the worker's own (:func:`alpha_state`), not
DeepSpeed's, whose loader unpickles arbitrary objects: rank 0 writes named tensors and numbers
with a digest (:mod:`pipelines.checkpoint`) and reports the digest with the checkpoint; a resuming
worker verifies the files against it before it loads anything, and loads tensors only
(docs/trust.md, "Checkpoints").
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ray
import ray.train
import ray.train.torch
import torch
from torch import nn
from transformers import PreTrainedModel

from leank_core.adapters import architecture_of
from leank_core.hook import install
from leank_core.kv_snapshot import prefill
from leank_core.mask import LeanKMask
from leank_core.model_hash import hash_weights, model_hash
from leank_core.model_source import ModelSource
from leank_core.training import ClampedAdam, Importance, PlannedStep, TrainConfig, compute_loss, freeze, schedule
from pipelines.checkpoint import State, load_state, save_state, verify_digest, write_digest

MASK_FILE = "mask.safetensors"         # in the final checkpoint: the run is finished
DIGEST_METRIC = "checkpoint_digest"   # reported with every checkpoint (pipelines.checkpoint.write_digest)
ADAM_KEYS = ("exp_avg", "exp_avg_sq")  # ClampedAdam's per-element state, laid out like the master partition
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


@dataclass(frozen=True)
class WorkerPlan:
    """Everything a worker needs; built and checked by the driver before any worker starts."""

    source: ModelSource
    train: TrainConfig
    zero_stage: int
    dtype: str
    checkpoint_every: int
    data: Any  # ray.ObjectRef of a datasets.Dataset with input_ids / answer_ids
    mask_extra: dict[str, Any]


class DistillationModule(nn.Module):
    """The module handed to DeepSpeed: frozen model + α; forward is one sample's distillation loss.

    α is also registered directly on this module because ZeRO-3 gathers a module's own
    parameters around its forward (and again for its backward), so α is whole while the loss
    reads it even when ZeRO partitions it.
    """

    def __init__(self, model: PreTrainedModel, importance: Importance, config: TrainConfig) -> None:
        super().__init__()
        self.model = model
        self.importance = importance
        self.alpha = importance.alpha
        self.config = config

    def forward(self, sample: Mapping[str, Sequence[int]], stage: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        terms = compute_loss(self.model, self.importance, sample, self.config, stage)
        return terms.total, terms.mse, terms.l1  # a tuple: ZeRO-3 hooks backward onto output tensors


def deepspeed_config(zero_stage: int, micro_steps: int) -> dict[str, Any]:
    """One sample per micro-step, ``micro_steps`` per optimizer step, no gradient clipping.

    DeepSpeed divides each micro-step's loss by ``micro_steps`` and averages the gradient over
    workers: the mean over the step's global batch.

    No ``bf16`` section, whatever the model's dtype: DeepSpeed's bf16 mode casts every
    parameter of the module it is given, α included, so the forward pass would read α rounded
    to 8 bits and stage 2 would rank those rounded values (on a tiny bf16 model that moved α by
    up to 0.12 and changed 20 mask entries against ``learn_mask``). The frozen weights keep the
    dtype they were loaded in; only the ZeRO-3 construction is told it (:func:`load_frozen`).
    """
    return {
        "train_micro_batch_size_per_gpu": 1,
        "gradient_accumulation_steps": micro_steps,
        "zero_optimization": {"stage": zero_stage},
        "zero_allow_untested_optimizer": True,  # ClampedAdam is torch's Adam plus a projection
        "steps_per_print": 1 << 30,
    }


def load_frozen(source: ModelSource, zero_stage: int, dtype: str, device: torch.device,
                micro_steps: int) -> PreTrainedModel:
    """The frozen model with the LeanK hook; under ZeRO-3 constructed already partitioned.

    transformers builds the model inside ``deepspeed.zero.Init`` while an ``HfDeepSpeedConfig``
    is alive, so no worker ever holds the whole model: a checkpoint's safetensors shards are
    scattered into the partitions one by one, a shape preset's random weights are initialised
    module by module. That config names the model's dtype (``zero.Init`` creates every weight
    in it), unlike the engine's (:func:`deepspeed_config`).
    """
    from transformers.integrations import HfDeepSpeedConfig

    hf_ds = None
    if zero_stage == 3:
        hf_ds = HfDeepSpeedConfig({**deepspeed_config(zero_stage, micro_steps), "bf16": {"enabled": dtype == "bfloat16"}})
    model = source.load(dtype=DTYPES[dtype], device=device)
    model._leank_hf_ds_config = hf_ds  # keep it alive as long as the model (transformers holds a weakref)
    return install(freeze(model))


def _gathered(model: nn.Module, keep: bool) -> Iterator[tuple[str, torch.Tensor]]:
    """Whole parameters one at a time (a collective: every rank must iterate)."""
    import deepspeed

    for name, p in model.named_parameters():
        with deepspeed.zero.GatheredParameters([p]):
            if keep:
                yield name, p.detach().to("cpu", copy=True)  # the gathered storage is freed on exit


def full_model_hash(model: PreTrainedModel, zero_stage: int, rank: int) -> str:
    """``model_hash`` of the full weights (ZeRO-3 holds placeholders); meaningful on rank 0."""
    if zero_stage != 3:
        return model_hash(model)
    named = _gathered(model, keep=rank == 0)
    if rank == 0:
        return hash_weights(model.config, named)
    for _ in named:  # take part in the gathers
        pass
    return ""


def _full_alpha(alpha: nn.Parameter) -> torch.Tensor:
    """The optimizer's fp32 master of α, whole (a collective under ZeRO)."""
    from deepspeed.utils import safe_get_full_fp32_param

    return safe_get_full_fp32_param(alpha).detach().float().cpu()


def _master(engine: Any) -> torch.Tensor:
    """This rank's flat fp32 partition of α, the tensor the optimizer steps (α is the engine's only
    trainable parameter, so each ZeRO stage keeps exactly one per rank)."""
    zero = engine.optimizer
    [flat] = zero.fp32_partitioned_groups_flat if engine.zero_optimization_stage() == 3 \
        else zero.single_partition_of_fp32_groups
    return flat


def alpha_state(engine: Any, alpha: nn.Parameter, optimizer: ClampedAdam) -> State:
    """α's fp32 master and its Adam state (moments, step count, learning rate), whole (a collective).

    DeepSpeed's ``safe_get_full_optimizer_state`` is not used: under ZeRO-2 it reads views that
    DeepSpeed links to Adam's state tensors once, after the first step, so after
    :meth:`ClampedAdam.restart` (stage 2) it returns stage 1's last state. Each moment, laid out
    like the master partition, is instead gathered through the master's own slot by
    ``safe_get_full_fp32_param``, DeepSpeed's map from partitions to the whole α.
    """
    flat = _master(engine)
    adam = optimizer.state[flat]
    master = flat.detach().clone()
    state: State = {"alpha": _full_alpha(alpha)}
    for key in ADAM_KEYS:
        flat.data.copy_(adam[key])
        state[key] = _full_alpha(alpha)
    flat.data.copy_(master)
    return {**state, "adam_step": adam["step"].detach().cpu().clone(), "lr": optimizer.param_groups[0]["lr"]}


def restore_alpha_state(engine: Any, alpha: nn.Parameter, optimizer: ClampedAdam, state: State) -> None:
    """Put an :func:`alpha_state` into a fresh engine (a collective): the optimizer's master, the
    model's copy of α that the forward pass reads, Adam's state and learning rate."""
    import deepspeed
    from deepspeed.utils import safe_set_full_fp32_param

    flat = _master(engine)
    adam = {"step": state["adam_step"].clone()}
    for key in ADAM_KEYS:
        safe_set_full_fp32_param(alpha, state[key].to(flat.device))
        adam[key] = flat.detach().clone()
    safe_set_full_fp32_param(alpha, state["alpha"].to(flat.device))
    optimizer.state[flat] = adam
    for group in optimizer.param_groups:
        group["lr"] = state["lr"]
    with deepspeed.zero.GatheredParameters([alpha], modifier_rank=0):
        alpha.data.copy_(state["alpha"])


class Meter:
    """Per-step loss terms and throughput over the global batch (all workers), and the run's totals.

    Every step gives a log line; Ray Train gets the means since the last report, sent with
    each checkpoint: a report waits for the controller's next poll (2 s by default, see
    ``RAY_TRAIN_HEALTH_CHECK_INTERVAL_S``), which would dominate short steps if sent every step.
    :meth:`totals` gives what a systems record needs over all steps of this process's run but
    the first (it includes one-time set-up such as kernel selection and ZeRO-3's first gathers).
    """

    def __init__(self, device: torch.device, world: int, resumed_from: int) -> None:
        self.device, self.world, self.resumed_from = device, world, resumed_from
        self.window: list[dict[str, float]] = []
        self.run: list[dict[str, float]] = []

    def start(self) -> None:
        """Begin a step: its clock, and this worker's sums of loss terms and tokens."""
        self.began, self.sums = time.perf_counter(), [0.0, 0.0, 0.0, 0.0]

    def add(self, terms: Sequence[torch.Tensor], sample: Mapping[str, Sequence[int]]) -> None:
        tokens = len(sample["input_ids"]) + 2 * len(sample["answer_ids"])  # prefill, teacher, student
        self.sums = [a + b for a, b in zip(self.sums, [t.item() for t in terms] + [tokens])]

    def step(self, step: PlannedStep, alpha: torch.Tensor) -> dict[str, float]:
        """End a step (a collective: every worker calls it) and return its metrics."""
        _synchronize(self.device)
        values = torch.tensor([*self.sums, time.perf_counter() - self.began], device=self.device, dtype=torch.float64)
        torch.distributed.all_reduce(values)
        total, mse, l1, tokens, seconds = values.tolist()
        batch = len(step.samples)
        m = {"stage": step.stage, "step": step.index + 1, "loss": total / batch, "mse": mse / batch, "l1": l1 / batch,
             "alpha_sparsity": float((alpha < 0.5).float().mean()),  # channels α has pushed below 0.5
             "tokens": tokens, "step_time_s": seconds / self.world}
        if self.device.type == "cuda":
            peak = torch.tensor([torch.cuda.max_memory_allocated(self.device) / 2**30], device=self.device)
            torch.distributed.all_reduce(peak, op=torch.distributed.ReduceOp.MAX)
            m["peak_memory_gib"] = peak.item()  # the fullest worker's
        self.window.append(m)
        self.run.append(m)
        return m

    def summary(self) -> dict[str, float]:
        """Means over the steps since the last summary (stage, step, sparsity, memory: the latest)."""
        w, self.window = self.window, []
        if not w:
            return {"resumed_from_step": self.resumed_from}
        seconds = sum(m["step_time_s"] for m in w)
        last = {k: w[-1][k] for k in ("stage", "step", "alpha_sparsity", "peak_memory_gib") if k in w[-1]}
        return {**last,
                **{k: sum(m[k] for m in w) / len(w) for k in ("loss", "mse", "l1", "step_time_s")},
                "tokens_per_s": sum(m["tokens"] for m in w) / seconds, "resumed_from_step": self.resumed_from}

    def totals(self) -> dict[str, float]:
        """``timed_steps``, ``step_s`` (mean), ``tokens_per_s`` and ``peak_gib_per_gpu`` over this run's steps
        after its first (all of them if there is only one)."""
        timed = self.run[1:] or self.run
        if not timed:
            return {}
        seconds = sum(m["step_time_s"] for m in timed)
        out = {"timed_steps": len(timed), "step_s": seconds / len(timed),
               "tokens_per_s": sum(m["tokens"] for m in timed) / seconds}
        if "peak_memory_gib" in timed[-1]:
            out["peak_gib_per_gpu"] = max(m["peak_memory_gib"] for m in self.run)
        return out


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def prefill_seconds(model: PreTrainedModel, sample: Mapping[str, Sequence[int]], device: torch.device) -> float:
    """Wall time of the no-grad prefill of ``sample``'s prompt alone (what a step spends before its two passes)."""
    ids = torch.tensor([list(sample["input_ids"])], device=device)
    _synchronize(device)
    began = time.perf_counter()
    prefill(model, ids)
    _synchronize(device)
    return time.perf_counter() - began


def progress_line(m: Mapping[str, float], total_steps: int) -> str:
    memory = f" peak {m['peak_memory_gib']:.2f} GiB" if "peak_memory_gib" in m else ""
    return (f"[leank learn] stage {m['stage']:.0f} step {m['step']:.0f}/{total_steps} loss {m['loss']:.4g} "
            f"mse {m['mse']:.4g} l1 {m['l1']:.3f} alpha<0.5 {m['alpha_sparsity']:.3f} "
            f"{m['tokens'] / m['step_time_s']:.0f} tok/s {m['step_time_s']:.2f} s/step{memory}")


def _reported_digest(checkpoint: ray.train.Checkpoint) -> str | None:
    """The digest rank 0 reported with ``checkpoint``: held by Ray Train's controller in memory
    while the job runs (a new driver, ``--resume``, reads it back from the run's storage)."""
    for reported in ray.train.get_all_reported_checkpoints():
        if reported.checkpoint.path == checkpoint.path:
            return reported.metrics.get(DIGEST_METRIC)
    return None


def _restore(engine: Any, alpha: nn.Parameter, optimizer: ClampedAdam, rank: int) -> int | None:
    """The step to continue from (0 for a new run), or None if the run already finished.

    Nothing in the checkpoint is read before its files match the digest reported at save.
    """
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is None:
        return 0
    expected = _reported_digest(checkpoint)
    with checkpoint.as_directory() as d:
        if (Path(d) / MASK_FILE).exists():
            verify_digest(d, expected)
            return None
        state = load_state(d, expected)
    restore_alpha_state(engine, alpha, optimizer, state)
    if rank == 0:
        kept = "the one reported at save" if expected else "its digest file only (none was reported)"
        _log(f"[leank learn] resumed from the checkpoint at step {state['step']}, its files checked against {kept}")
    return int(state["step"])


def _report(metrics: dict[str, float], write: Callable[[Path], Any] | None = None) -> None:
    """``ray.train.report`` (every rank must call it); ``write`` fills this rank's checkpoint files,
    whose digest is reported with them (:data:`DIGEST_METRIC`)."""
    if write is None:
        ray.train.report(metrics)
        return
    with tempfile.TemporaryDirectory(prefix="leank-ckpt-") as d:
        write(Path(d))
        digest = write_digest(d)
        ray.train.report({**metrics, DIGEST_METRIC: digest}, checkpoint=ray.train.Checkpoint.from_directory(d))


def _log(line: str) -> None:
    """One line in the job log (Ray Train's patched ``print`` would write it twice)."""
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def train_loop(loop_config: dict[str, WorkerPlan]) -> None:
    """Ray Train entry point (``train_loop_config={"plan": WorkerPlan}``)."""
    plan = loop_config["plan"]
    device = ray.train.torch.get_device()
    if device.type == "cpu":
        os.environ["DS_ACCELERATOR"] = "cpu"  # read when DeepSpeed first picks its accelerator
    import deepspeed

    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    config = plan.train
    micro_steps = config.batch_size // world  # the driver checked that world divides batch_size
    model = load_frozen(plan.source, plan.zero_stage, plan.dtype, device, micro_steps)
    importance = Importance(architecture_of(model).mask_shape).to(device)
    optimizer = ClampedAdam(importance.parameters(), lr=config.lr)
    engine, *_ = deepspeed.initialize(model=DistillationModule(model, importance, config), optimizer=optimizer,
                                      config=deepspeed_config(plan.zero_stage, micro_steps), dist_init_required=False)
    start = _restore(engine, importance.alpha, optimizer, rank)
    if start is None:
        return
    dataset = ray.get(plan.data)
    steps = schedule(config, len(dataset))
    meter = Meter(device, world, resumed_from=start)
    for step in steps[start:]:
        if step.starts_stage:
            optimizer.restart(step.lr)
        meter.start()
        for index in step.share(rank, world):
            sample = dataset[index]
            terms = engine(sample, step.stage)
            engine.backward(terms[0])
            engine.step()  # an optimizer step after the last micro-step of the batch
            meter.add(terms, sample)
        m = meter.step(step, _full_alpha(importance.alpha))
        if rank == 0:
            _log(progress_line(m, len(steps)))
        done = step.index + 1
        if done % plan.checkpoint_every == 0 and done < len(steps):  # the last step's checkpoint is the mask
            state = {**alpha_state(engine, importance.alpha, optimizer), "step": done}  # collective
            _report(meter.summary(), (lambda d, s=state: save_state(d, s)) if rank == 0 else None)
    metrics = {**meter.summary(), **meter.totals()}
    if steps:  # every worker times its last prompt (a collective under ZeRO-3)
        last = dataset[steps[-1].share(rank, world)[-1]]
        seconds = torch.tensor([prefill_seconds(model, last, device)], device=device, dtype=torch.float64)
        torch.distributed.all_reduce(seconds)
        metrics["prefill_s"] = seconds.item() / world
    _finish(plan, model, importance, rank, metrics)


def _finish(plan: WorkerPlan, model: PreTrainedModel, importance: Importance, rank: int,
            metrics: dict[str, float]) -> None:
    """Rank 0 builds the mask (hash of the full weights; none for a shape preset's random ones)
    and reports it in the final checkpoint."""
    config = plan.train
    alpha = _full_alpha(importance.alpha)
    digest = "" if plan.source.synthetic else full_model_hash(model, plan.zero_stage, rank)  # collective
    if rank != 0:
        _report(metrics)
        return
    mask = LeanKMask.from_importance(alpha, config.ratio, config.align, config.sink, config.recent,
                                     model_id=plan.source.model_id, model_hash=digest, extra=plan.mask_extra)
    _report(metrics, lambda d: mask.save(d / MASK_FILE))
