"""Learn a LeanK mask with Ray Train + DeepSpeed ZeRO and push it to the registry as a candidate.

    ray job submit --working-dir . -- python pipelines/learn_masks.py --model M [options]
    python pipelines/learn_masks.py --model M --gpus-per-worker 0 [options]     # local Ray
    leank learn --config job.yaml --ratio 0.6                                    # same thing

One Ray Train worker per GPU (``--gpus-per-worker 0``: CPU workers on gloo) holds the frozen
model under DeepSpeed ZeRO (stage 3 partitions the weights, so a model larger than one
device fits) and trains only the channel importance α on its own shard of the synthetic
data; α's gradient is averaged over workers. Stage 1 then stage 2 run in one job, exactly
as ``leank_core.training.learn_mask`` does them in one process.

Each step's loss is the mean over ``--batch-size`` samples, split evenly over the workers
(gradient accumulation when a worker holds several), so the mask does not depend on
``--num-workers``: one worker and two compute the same α up to the order of float sums.

A shape preset (``--model llama-3.1-8b``, ``qwen2.5-7b``, ``llama-3.1-70b``, ``tiny-llama``) has
random weights, built directly in ZeRO-3 partitions: such a run measures speed and memory
(the last line, ``metrics: {...}``, holds step time, tokens/s, peak GiB per GPU and the
prefill time of one prompt alone); it trains on token-id prompts (``leank_core.token_copy``,
sized by the data recipe's lengths; ``--tasks`` does not apply) and never pushes its mask.

Every ``--checkpoint-every`` steps α, the Adam state and the step go to Ray Train storage; a
failed worker restarts the group from the last checkpoint (up to ``--max-failures`` times),
and ``--resume --name RUN`` continues a run whose driver died. Either way the final mask is
the one an uninterrupted run would give. At the end the mask is pushed to the registry with
the full training configuration and data recipe in its manifest.

Everything is checked before any worker starts (the model's config only, not its weights);
bad input exits 2 with one line.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script (ray job submit -- python pipelines/learn_masks.py)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pyarrow.fs  # noqa: E402

from leank_core.adapters import architecture_of  # noqa: E402
from leank_core.compat import text_config  # noqa: E402
from leank_core.tasks import LENGTH_TOLERANCE, TASKS, DataRecipe, make_training_samples  # noqa: E402
from leank_core.token_copy import token_copy_samples  # noqa: E402
from leank_core.model_source import ModelSource, presets, resolve_model  # noqa: E402
from leank_core.mask import LeanKMask  # noqa: E402
from leank_core.training import TrainConfig  # noqa: E402
from pipelines.config import JobParser, UsageError, finite_float  # noqa: E402
from pipelines.train_worker import DTYPES, MASK_FILE, WorkerPlan, train_loop  # noqa: E402
from pipelines.validate import (  # noqa: E402
    Target, ValidationFailed, ValidationPlan, check_target, exit_code, plan_from_config, validate,
)
from registry import MaskRef, MaskRegistry, RegistryError, check_model_id, redact_text, redact_url  # noqa: E402

RUN_FILE = "leank_run.json"
RUN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,199}")


def _int_at_least(minimum: int):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {value}")
        return value
    return parse


_positive, _non_negative = _int_at_least(1), _int_at_least(0)


def build_parser() -> JobParser:
    p = JobParser(prog="leank learn", description=__doc__, allow_abbrev=False,
                  formatter_class=argparse.RawDescriptionHelpFormatter)
    t, d = TrainConfig, DataRecipe
    m = p.add_argument_group("model")
    m.add_argument("--model", help="smollm2-135m, a .gguf file, a local Hugging Face folder, a hub id, or a shape preset "
                                   f"with random weights for speed/memory runs ({', '.join(presets())}) (required)")
    m.add_argument("--model-id", help="registry id org/name to file the mask under (default: derived from --model)")
    m.add_argument("--dtype", choices=["auto", *DTYPES], default="auto",
                   help="weights and compute dtype (default auto: bfloat16 on GPU workers, float32 on CPU)")
    k = p.add_argument_group("mask and training (docs/design.md §1)")
    k.add_argument("--ratio", type=finite_float(0, 1, low_open=True, high_open=True), default=t.ratio, help="fraction of K channels to prune, in (0, 1) (default %(default)s)")
    k.add_argument("--align", type=int, default=t.align, help="kept channels per head are a multiple of this (default %(default)s)")
    k.add_argument("--sink", type=int, default=t.sink, help="first tokens whose keys stay full (default %(default)s)")
    k.add_argument("--recent", type=int, default=t.recent, help="most recent tokens whose keys stay full (default %(default)s)")
    k.add_argument("--stage1-steps", type=int, default=t.stage1_steps, help="stage-1 steps: continuous α with L1 (default %(default)s)")
    k.add_argument("--stage2-steps", type=int, default=t.stage2_steps, help="stage-2 steps: binary mask, straight-through (default %(default)s)")
    k.add_argument("--lr", type=finite_float(0, low_open=True), default=t.lr, help="stage-1 Adam learning rate (default %(default)s)")
    k.add_argument("--stage2-lr", type=finite_float(0, low_open=True), default=t.stage2_lr, help="stage-2 Adam learning rate (default %(default)s)")
    k.add_argument("--l1", type=finite_float(0), default=t.l1, help="λ, weight of the L1 penalty on α in stage 1 (default %(default)s)")
    k.add_argument("--seed", type=int, default=t.seed, help="seed of the data and of the steps' sample draws (default %(default)s)")
    k.add_argument("--batch-size", type=_positive, default=t.batch_size,
                   help="samples per step (their mean loss), split evenly over the workers: a multiple of "
                        "--num-workers (default %(default)s)"),
    r = p.add_argument_group("data recipe (leank_core.tasks, training split)")
    r.add_argument("--tasks", nargs="+", choices=TASKS, default=list(d.tasks), metavar="TASK",
                   help=f"synthetic tasks, cycled (default: {' '.join(d.tasks)}; choices: {', '.join(TASKS)})")
    r.add_argument("--n-samples", type=_positive, default=d.n_samples, help="training samples in all (default %(default)s)")
    r.add_argument("--min-length", type=int, default=d.min_length, help="shortest context in tokens (default %(default)s)")
    r.add_argument("--max-length", type=int, default=d.max_length, help="longest context in tokens; lengths are log-uniform (default %(default)s)")
    c = p.add_argument_group("cluster, storage, registry")
    c.add_argument("--num-workers", type=_positive, default=1, help="Ray Train workers, one per GPU (default %(default)s)")
    c.add_argument("--gpus-per-worker", type=_non_negative, default=1, help="GPUs per worker; 0 = CPU workers on gloo (default %(default)s)")
    c.add_argument("--zero-stage", type=int, choices=[2, 3], default=3,
                   help="DeepSpeed ZeRO stage: 3 partitions the frozen weights, 2 keeps a copy per worker (default %(default)s)")
    c.add_argument("--registry", help="registry URL: a directory or s3://bucket/prefix (default: $LEANK_REGISTRY or ~/.cache/leank/registry)")
    c.add_argument("--storage-path", default="~/ray_results",
                   help="Ray Train storage for checkpoints: a directory shared by all nodes or s3://... (default %(default)s)")
    c.add_argument("--name", help="run name inside the storage path, needed to --resume (default: leank-<model>-<time>)")
    c.add_argument("--resume", action="store_true", help="continue run --name from its last checkpoint (same options)")
    c.add_argument("--checkpoint-every", type=_positive, default=50, help="checkpoint α and optimizer every N steps (default %(default)s)")
    c.add_argument("--max-failures", type=_non_negative, default=3,
                   help="worker-group restarts from the last checkpoint before the job fails (default %(default)s)")
    c.add_argument("--validate", nargs="?", const="", metavar="VALIDATE_YAML",
                   help="then run the validation job (pipelines/validate.py) on the pushed candidate, optionally with "
                        "its options from a YAML file; the candidate is accepted or rejected and the gate's exit "
                        "status becomes this job's")
    return p


@dataclass(frozen=True)
class Job:
    """A fully checked job: what to train, where it runs, where results go."""

    source: ModelSource
    train: TrainConfig
    recipe: DataRecipe
    dtype: str
    num_workers: int
    gpus_per_worker: int
    zero_stage: int
    registry: MaskRegistry
    run: "RunRecord"
    resume: bool
    checkpoint_every: int
    max_failures: int
    validation: "ValidationPlan | None" = None  # --validate: the gate to run on the pushed candidate

    def identity(self) -> dict[str, Any]:
        """What decides the result: a resumed run must match it exactly."""
        return {"model_id": self.source.model_id, "model_path": self.source.path, "gguf_file": self.source.gguf_file,
                "train": self.train.to_dict(), "data_recipe": self.recipe.to_dict(), "dtype": self.dtype,
                "num_workers": self.num_workers, "zero_stage": self.zero_stage}

    def provenance(self) -> dict[str, Any]:
        """Manifest entries (and mask ``extra``): the full training config and the data recipe."""
        job = {"model": self.source.path, "gguf_file": self.source.gguf_file, "dtype": self.dtype,
               "num_workers": self.num_workers, "gpus_per_worker": self.gpus_per_worker,
               "zero_stage": self.zero_stage, "checkpoint_every": self.checkpoint_every, "run": self.run.name,
               "storage_path": redact_url(self.run.storage_path)}
        synthetic = {"synthetic": True} if self.source.synthetic else {}
        return {"training_config": {**self.train.to_dict(), **job}, "data_recipe": self.recipe.to_dict(), **synthetic}


class RunRecord:
    """``leank_run.json`` in the run's storage directory: the options it started with, and its push.

    It lets a new run refuse to reuse a name (Ray Train would silently resume it), a resumed
    run refuse different options, and a finished run refuse to push twice.
    """

    def __init__(self, storage_path: str, name: str) -> None:
        if "://" not in storage_path:
            storage_path = os.path.abspath(os.path.expanduser(storage_path))
        self.storage_path, self.name = storage_path, name
        try:
            self.fs, root = pyarrow.fs.FileSystem.from_uri(storage_path)
        except (pyarrow.ArrowInvalid, OSError) as e:
            raise UsageError(f"unsupported --storage-path {redact_url(storage_path)!r}: {redact_text(str(e))}") from None
        self.dir = f"{root.rstrip('/')}/{name}"

    def read(self) -> dict[str, Any] | None:
        try:
            with self.fs.open_input_stream(f"{self.dir}/{RUN_FILE}") as f:
                return json.loads(f.read())
        except FileNotFoundError:
            return None

    def write(self, record: dict[str, Any]) -> None:
        self.fs.create_dir(self.dir, recursive=True)
        with self.fs.open_output_stream(f"{self.dir}/{RUN_FILE}") as f:
            f.write(json.dumps(record, indent=1, sort_keys=True).encode())


def plan(argv: list[str]) -> Job:
    """Parse and check everything that can be checked without starting Ray or loading weights."""
    args = build_parser().parse(argv)
    if not args.model:
        raise UsageError("--model is required (or 'model:' in the --config file)")
    source = resolve_model(args.model, args.model_id)
    check_model_id(source.model_id)
    try:
        config = source.config()
    except (OSError, ValueError) as e:
        raise UsageError(f"cannot read the config of model {args.model!r}: {str(e).splitlines()[0]}") from None
    arch = architecture_of(config)
    train = TrainConfig(ratio=args.ratio, align=args.align, sink=args.sink, recent=args.recent,
                        stage1_steps=args.stage1_steps, stage2_steps=args.stage2_steps, lr=args.lr,
                        stage2_lr=args.stage2_lr, l1=args.l1, seed=args.seed, batch_size=args.batch_size)
    train.check(arch.head_dim)
    recipe = DataRecipe(tasks=tuple(args.tasks), min_length=args.min_length, max_length=args.max_length,
                        n_samples=args.n_samples, seed=args.seed)
    _check_lengths(train, recipe, getattr(text_config(config), "max_position_embeddings", None))
    if train.batch_size % args.num_workers:
        raise UsageError(f"--batch-size {train.batch_size} does not split over --num-workers {args.num_workers}: "
                         "use a multiple of --num-workers (each worker runs batch-size / num-workers samples a step)")
    if source.synthetic and args.validate is not None:
        raise UsageError(f"--model {args.model} is a shape preset with random weights: its mask is not pushed, "
                         "so there is nothing to --validate")
    if args.resume and not args.name:
        raise UsageError("--resume needs --name, the run to continue")
    name = args.name or f"leank-{source.model_id.replace('/', '--')}-{datetime.now(timezone.utc):%Y%m%d-%H%M%S}"
    if not RUN_NAME.fullmatch(name):
        raise UsageError(f"--name {name!r} is not a plain directory name (letters, digits, '.', '_', '-')")
    dtype = args.dtype if args.dtype != "auto" else ("bfloat16" if args.gpus_per_worker else "float32")
    job = Job(source, train, recipe, dtype, args.num_workers, args.gpus_per_worker, args.zero_stage,
              MaskRegistry(args.registry), RunRecord(args.storage_path, name), args.resume,
              args.checkpoint_every, args.max_failures, _validation_plan(args.validate, source))
    if job.validation is not None:
        check_target(job.registry, job.validation)  # signing key, margins, suite: before any worker starts
    return job


def _validation_plan(path: str | None, source: ModelSource) -> ValidationPlan | None:
    """The chained validation's plan (checked now, before any worker starts); None without --validate."""
    if path is None:
        return None
    if path and not Path(path).is_file():
        raise UsageError(f"--validate {path}: no such validation config file")
    return plan_from_config(path or None, source)


def _check_lengths(train: TrainConfig, recipe: DataRecipe, max_positions: int | None) -> None:
    if max_positions and recipe.max_length > max_positions:
        raise UsageError(f"--max-length {recipe.max_length} exceeds the model's {max_positions} positions")
    shortest = recipe.min_length - LENGTH_TOLERANCE
    if shortest <= train.sink + train.recent:
        raise UsageError(f"--min-length {recipe.min_length} leaves no middle tokens with --sink {train.sink} and "
                         f"--recent {train.recent}; use --min-length > {train.sink + train.recent + LENGTH_TOLERANCE}")


def check_run(job: Job) -> bool:
    """Refuse name clashes and changed options; True if the run already finished and pushed."""
    record = job.run.read()
    where = f"{job.run.storage_path}/{job.run.name}"
    if record is None:
        if job.resume:
            raise UsageError(f"no run to resume at {where}; check --name and --storage-path")
        return False
    if not job.resume:
        raise UsageError(f"run {where} already exists; pass --resume to continue it or choose another --name")
    changed = sorted(k for k in job.identity() if record["identity"].get(k) != job.identity()[k])
    if changed:
        raise UsageError(f"run {where} was started with other {', '.join(changed)}; resume with the same options")
    if "pushed" in record:
        print(f"run {job.run.name} already finished and pushed {record['pushed']}")
        return True
    return False


def training_data(source: ModelSource, recipe: DataRecipe) -> Any:
    """The training set: the recipe's text tasks, or token-copy prompts for a shape preset (no tokenizer)."""
    if source.synthetic:
        return token_copy_samples(text_config(source.config()).vocab_size, recipe.lengths(), recipe.seed)
    return make_training_samples(source.tokenizer(), recipe).select_columns(["input_ids", "answer_ids"])


def fit(job: Job, dataset: Any) -> tuple[LeanKMask, dict[str, Any]]:
    """Run the Ray Train job; returns the mask rank 0 reported at the end and the final metrics."""
    import ray
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    if job.gpus_per_worker and ray.cluster_resources().get("GPU", 0) < job.num_workers * job.gpus_per_worker:
        print(f"note: the cluster has {ray.cluster_resources().get('GPU', 0):.0f} GPUs now; the job waits for "
              f"{job.num_workers * job.gpus_per_worker} (autoscaling), or use --gpus-per-worker 0 for CPU workers")
    worker_plan = WorkerPlan(job.source, job.train, job.zero_stage, job.dtype, job.checkpoint_every,
                       ray.put(dataset), job.provenance())
    trainer = TorchTrainer(
        train_loop,
        train_loop_config={"plan": worker_plan},
        torch_config=TorchConfig(backend="nccl" if job.gpus_per_worker else "gloo"),
        scaling_config=ScalingConfig(num_workers=job.num_workers, use_gpu=bool(job.gpus_per_worker),
                                     resources_per_worker={"CPU": 1, "GPU": job.gpus_per_worker}),
        run_config=RunConfig(name=job.run.name, storage_path=job.run.storage_path,
                             checkpoint_config=CheckpointConfig(num_to_keep=2),
                             failure_config=FailureConfig(max_failures=job.max_failures)),
    )
    result = trainer.fit()
    with result.checkpoint.as_directory() as d:
        return LeanKMask.load(Path(d) / MASK_FILE), dict(result.metrics)


def push_candidate(job: Job, mask: LeanKMask, metrics: dict[str, Any]) -> MaskRef:
    """Push the candidate (provenance + final metrics), record it in the run, print where it is."""
    ref = job.registry.push(mask, {**job.provenance(), "training_metrics": metrics})
    job.run.write({**job.run.read(), "pushed": str(ref)})
    location = job.registry.location(job.registry.manifest(ref))
    histogram = ", ".join(f"{count}: {heads}" for count, heads in sorted(mask.histogram().items()))
    print(f"pushed candidate {ref}\nmask: {location}\n"
          f"kept K channels per head -> number of heads: {histogram}\n"
          f"K kept {mask.k_fraction_kept:.1%}, V kept {mask.v_fraction_kept:.1%} (middle tokens)")
    return ref


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        job = plan(argv)
        if check_run(job):
            return 0
        dataset = training_data(job.source, job.recipe)
    except SystemExit as e:  # --help
        return int(e.code or 0)
    except (ValueError, RuntimeError, OSError) as e:
        print(f"leank learn: {e}", file=sys.stderr)
        return 2
    import ray

    started = not ray.is_initialized()
    if started:
        ray.init()  # joins RAY_ADDRESS (ray job submit, a running cluster) or starts a local Ray
    try:
        if job.run.read() is None:
            job.run.write({"identity": job.identity(), "created": datetime.now(timezone.utc).isoformat()})
        mask, metrics = fit(job, dataset)
        print("metrics: " + json.dumps(metrics, sort_keys=True))
        if job.source.synthetic:
            print(f"{job.source.model_id} has random weights (a speed and memory run): its mask is not pushed")
            return 0
        ref = push_candidate(job, mask, metrics)
    except ray.train.TrainingFailedError as e:
        print(f"leank learn: training failed: {str(e).splitlines()[0]}", file=sys.stderr)
        return 1
    finally:
        if started:
            ray.shutdown()
    if job.validation is None:
        return 0
    candidate = job.registry.pull(ref.model_id, ref.version, allow_unaccepted=True)
    try:
        _, judgement = validate(job.source, candidate, job.validation, Target(job.registry, ref))
    except (ValidationFailed, RegistryError, ValueError) as e:
        print(f"leank learn: validation: {e}", file=sys.stderr)
        return 1
    return exit_code(judgement)


if __name__ == "__main__":
    sys.exit(main())
