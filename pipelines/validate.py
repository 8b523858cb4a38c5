"""Validation job and accuracy gate: full cache vs LeanKCache on held-out long-context tasks.

    ray job submit --working-dir . -- python pipelines/validate.py --model M --mask org/name@3
    python pipelines/validate.py --model smollm2-135m --mask mask.safetensors   # local Ray

Samples come from the *eval* split of ``leank_core.tasks`` (templates, haystacks and seeds
disjoint from training). They are sharded over Ray workers (one per GPU; CPU workers
locally); each worker runs every sample with the full cache (``mask.keep_all()``: every
channel, the mask's own windows, so a pair differs only in the pruned channels) and with the
mask (and, with ``--baseline random``, with a random mask of the same kept counts). The report (JSON + PNG)
is written locally and, for a registry mask, signed with the validator's key
(``$LEANK_SIGNING_KEY``, made by ``leank registry keygen``) and attached to that exact
version, which the registry then accepts or rejects under its own policy: the gate margins
and required suite are the registry's (``leank registry policy show``); margins given here
may only be stricter.

The gate is a paired statistical test (docs/gate.md): accept when the drop's upper
confidence bounds are within the margins, reject when its lower bounds are beyond them,
otherwise undecided. An undecided registry version is continued by running this again: the
next look of its sequential plan keeps every earlier sample and adds fresh ones (the number
per cell the registry's verdict asked for). Exit status: 0 accepted, 1 rejected, 3 undecided
(more samples needed), 2 bad input — so CI can gate on it.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections import Counter
from dataclasses import asdict, dataclass, replace
from pathlib import Path

if __package__ in (None, ""):  # run as a script (ray job submit -- python pipelines/validate.py)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from leank_core.compat import text_config  # noqa: E402
from leank_core.tasks import TASKS, cached_samples, load_eval_data, make_samples  # noqa: E402
from leank_core.model_source import ModelSource, resolve_model  # noqa: E402
from leank_core.mask import LeanKMask  # noqa: E402
from pipelines.config import JobParser, UsageError, finite_float  # noqa: E402
from pipelines.plot import plot_report  # noqa: E402
from registry import (  # noqa: E402
    GatePolicy, Judgement, MaskRef, MaskRegistry, PairedSample, RegistryError, Report, ReportEntry, Signer,
    SignedReport, Status, load_signer, parse_ref,
)
from registry.policy import Policy  # noqa: E402
from registry.report import MAX_MARGIN  # noqa: E402

DEFAULT_LENGTHS = (1024, 2048)
EXIT = {"accepted": 0, "rejected": 1, "undecided": 3}


def build_parser() -> JobParser:
    p = JobParser(prog="leank validate", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", help="smollm2-135m, a .gguf file, a local HF folder or a hub id (required)")
    p.add_argument("--mask", help="registry ref org/name[@version] or a mask .safetensors file (required)")
    p.add_argument("--registry", default=None, help="registry URL (local dir or s3://bucket/prefix); default: embedded store")
    p.add_argument("--lengths", type=int, nargs="+", default=list(DEFAULT_LENGTHS), help="context lengths in tokens")
    p.add_argument("--tasks", nargs="+", default=list(TASKS), choices=TASKS, metavar="TASK",
                   help=f"tasks to run (default all: {', '.join(TASKS)})")
    p.add_argument("--samples", type=int, default=4, help="samples per task x length cell at the first look (a later "
                   "look of an undecided registry version takes the number its verdict asked for)")
    p.add_argument("--eval-data", type=Path, default=None, metavar="FILE",
                   help="your own eval set instead of the generated tasks: .jsonl or .parquet with fields prompt, "
                        "answer (string or list), task, length (one look: it cannot grow)")
    p.add_argument("--batch-size", type=int, default=None,
                   help="samples decoded together per worker (default 32 on a GPU, 4 on CPU)")
    p.add_argument("--seed", type=int, default=1234, help="evaluation seed (the eval split never equals training)")
    p.add_argument("--extra-tokens", type=int, default=8,
                   help="greedy tokens generated per sample beyond the gold answer's length")
    p.add_argument("--baseline", choices=["random"], default=None,
                   help="also evaluate a random mask with the same kept counts (what learning is worth)")
    margin = finite_float(0, MAX_MARGIN)
    p.add_argument("--max-mean-drop", type=margin, default=None,
                   help="gate: allowed drop of mean accuracy in points (default: the registry policy's; for a file "
                        f"{GatePolicy.mean_margin}); for a registry mask only a stricter value is allowed")
    p.add_argument("--max-cell-drop", type=margin, default=None,
                   help="gate: allowed drop of any task x length cell in points (default: the registry policy's; for "
                        f"a file {GatePolicy.cell_margin}); for a registry mask only a stricter value is allowed")
    p.add_argument("--num-workers", type=int, default=None, help="Ray workers (default: one per GPU, else 1)")
    p.add_argument("--gpus-per-worker", type=float, default=None, help="GPUs per worker (default 1 if the cluster has GPUs)")
    p.add_argument("--out", type=Path, default=Path("runs/validate"), help="where the report JSON/PNG are written")
    return p


@dataclass(frozen=True)
class ValidationPlan:
    """A checked validation run: what to evaluate, how to judge it, where it runs and writes."""

    tasks: tuple[str, ...]
    lengths: tuple[int, ...]
    samples: int
    seed: int
    extra_tokens: int
    baseline: bool
    margins: dict[str, float]  # gate margins the caller gave (GatePolicy field -> points); the rest: policy / defaults
    num_workers: int | None
    gpus_per_worker: float | None
    out: Path
    batch_size: int | None = None
    eval_data: Path | None = None

    @property
    def runs(self) -> list[str]:
        return ["full", "masked"] + (["random"] if self.baseline else [])

    def gate(self, policy: Policy | None) -> GatePolicy:
        """The gate this run judges with: the registry ``policy``'s (the default gate for a file)
        with the caller's margins; UsageError if one of them is looser than the policy's."""
        base = policy.gate if policy is not None else GatePolicy()
        gate = replace(base, **self.margins)
        looser = gate.looser_than(base)
        if policy is not None and looser:
            raise UsageError(", ".join(f"--{FLAGS[name]} {getattr(gate, name)} is looser than the registry "
                                       f"policy's {getattr(base, name)}" for name in looser)
                             + "; only stricter margins may be given (leank registry policy show)")
        return gate


def plan_from_args(args: argparse.Namespace, source: ModelSource) -> ValidationPlan:
    """Check the options (one line on failure, before any worker starts) and freeze them."""
    if args.samples < 1 or args.extra_tokens < 0:
        raise UsageError("--samples must be >= 1 and --extra-tokens >= 0")
    if min(args.lengths) < 64:
        raise UsageError("--lengths must be >= 64 tokens")
    window = text_config(source.config()).max_position_embeddings
    if max(args.lengths) + 64 > window:
        raise UsageError(f"--lengths up to {max(args.lengths)} leave no room to generate in the model window {window}")
    if args.batch_size is not None and args.batch_size < 1:
        raise UsageError(f"--batch-size must be >= 1, got {args.batch_size}")
    if args.eval_data is not None and not args.eval_data.is_file():
        raise UsageError(f"--eval-data {args.eval_data}: no such file")
    margins = {field: value for field, flag in FLAGS.items() if (value := getattr(args, flag.replace("-", "_"))) is not None}
    return ValidationPlan(tuple(args.tasks), tuple(args.lengths), args.samples, args.seed, args.extra_tokens,
                          args.baseline is not None, margins, args.num_workers, args.gpus_per_worker, args.out,
                          args.batch_size, args.eval_data)


FLAGS = {"mean_margin": "max-mean-drop", "cell_margin": "max-cell-drop"}  # GatePolicy field -> the flag that sets it


def plan_from_config(path: str | None, source: ModelSource) -> ValidationPlan:
    """The plan of a validation YAML (``leank learn --validate FILE``); defaults where it is silent."""
    args = build_parser().parse(["--config", path] if path else [])
    return plan_from_args(args, source)


@dataclass(frozen=True)
class Target:
    """A registry version under validation: its report is judged there."""

    registry: MaskRegistry
    ref: MaskRef


def check_target(registry: MaskRegistry, plan: ValidationPlan) -> tuple[Signer, GatePolicy]:
    """What judging in ``registry`` needs, checked before any work: the validator's signing key
    (trusted by the registry), the gate (policy margins, caller's only stricter), and a plan
    covering the policy's required suite. One-line ValueError/UsageError otherwise."""
    trust = registry.trust()
    policy = trust.require()
    gate = plan.gate(policy)
    missing = policy.suite.missing({(t, n): plan.samples for t in plan.tasks for n in plan.lengths})
    if missing:
        suite = policy.suite
        raise UsageError(f"registry {registry.store.url} requires tasks {list(suite.tasks) or 'any'}, lengths "
                         f"{list(suite.lengths) or 'any'}, >= {suite.min_samples} samples per cell; this plan lacks: "
                         f"{'; '.join(missing)}")
    signer = load_signer(create=True)
    if signer.public_key not in registry.trust().keys:  # again: a key made just now is this reader's own
        raise UsageError(f"the signing key {signer.source} ({signer.public_key}) is not among {trust.whose} of "
                         f"registry {registry.store.url}; its owner runs: leank registry policy set --trust-key "
                         f"{signer.public_key}")
    return signer, gate


def load_mask(spec: str, registry_url: str | None) -> tuple[LeanKMask, Target | None]:
    """A mask file, or a registry ref (candidates allowed: validating them is the point)."""
    if Path(spec).is_file() or spec.endswith(".safetensors"):
        return LeanKMask.load(spec), None
    registry = MaskRegistry(registry_url)
    ref = registry.resolve(parse_ref(spec))
    return registry.pull(ref.model_id, version=ref.version, allow_unaccepted=True), Target(registry, ref)


def evaluate_shard(source: ModelSource, mask_bytes: bytes, samples: list[dict], runs: list[str],
                   extra_tokens: int, seed: int, batch_size: int | None = None) -> tuple[list[dict], dict]:
    """Worker body: every run on every sample of this shard (batched through the decode engine);
    memory of the largest masked sample under ``generate`` with a LeanKCache."""
    import torch

    from leank_core.evaluation import evaluate, generate_one
    from leank_core.hook import apply
    from leank_core.memory import cache_memory

    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    model = source.load(dtype=dtype, device=device)
    tokenizer = source.tokenizer()
    mask = LeanKMask.from_bytes(mask_bytes)
    apply(model, mask)
    masks = {"full": mask.keep_all(), "masked": mask, "random": mask.random_like(seed)}
    rows = []
    batch = batch_size or (32 if device == "cuda" else 4)
    for run in runs:
        rows += evaluate(model, tokenizer, samples, masks[run], extra_tokens, run, batch)
    longest = max(samples, key=lambda s: len(s["input_ids"]))
    tokens, _, cache = generate_one(model, longest["input_ids"], mask, len(longest["answer_ids"]) + extra_tokens)
    memory = cache_memory(cache)
    return rows, {"tokens": len(longest["input_ids"]) + len(tokens), "k_saving": memory.k_saving,
                  "v_saving": memory.v_saving, **asdict(memory)}


def worker_plan(cluster_gpus: float, gpus_per_worker: float | None, num_workers: int | None) -> tuple[float, int]:
    """GPUs per worker and worker count: given values win; else one worker per GPU in the cluster now.

    A cluster with no GPU at this moment (also an autoscaling one whose GPU nodes are not up
    yet) gets one CPU worker, and the job says so on stderr, since that is rarely what a GPU
    cluster's user meant.
    """
    if gpus_per_worker is None:
        gpus_per_worker = 1 if cluster_gpus else 0
        if not cluster_gpus:
            print("leank validate: no GPU in the Ray cluster now, so the workers run on CPU; pass "
                  "--gpus-per-worker 1 --num-workers N to wait for GPU nodes", file=sys.stderr)
    workers = num_workers or (int(cluster_gpus // gpus_per_worker) if gpus_per_worker else 1)
    return gpus_per_worker, workers


def run_sharded(plan: ValidationPlan, source: ModelSource, mask: LeanKMask, samples: list[dict]) -> tuple[list[dict], dict]:
    import ray

    started = not ray.is_initialized()
    if started:
        ray.init()  # RAY_ADDRESS (set by ray job submit) or a new local Ray
    per_worker, workers = worker_plan(ray.cluster_resources().get("GPU", 0), plan.gpus_per_worker, plan.num_workers)
    task = ray.remote(num_gpus=per_worker, num_cpus=1)(evaluate_shard)
    shards = [samples[i::workers] for i in range(workers) if samples[i::workers]]
    futures = [task.remote(source, mask.to_bytes(), shard, plan.runs, plan.extra_tokens, plan.seed, plan.batch_size)
               for shard in shards]
    rows, memories = [], []
    try:
        for shard_rows, memory in ray.get(futures):
            rows += shard_rows
            memories.append(memory)
    finally:
        if started:
            ray.shutdown()
    return rows, max(memories, key=lambda m: m["tokens"])


def validate(source: ModelSource, mask: LeanKMask, plan: ValidationPlan,
             target: Target | None = None) -> tuple[Report, Judgement | None]:
    """Evaluate full vs masked (vs random), write the report, and have the registry judge ``target``.

    Raises ``UsageError``/``ValueError`` (before any work) when the target cannot be judged
    (:func:`check_target`), ``ValidationFailed`` for a worker's error, ``RegistryError`` for
    registry trouble.
    """
    signer, gate = check_target(target.registry, plan) if target else (None, plan.gate(None))
    manifest = target.registry.manifest(target.ref) if target else None
    previous = target.registry.previous_look(target.ref) if target else None
    tokenizer = source.tokenizer()
    samples, look, earlier = look_samples(tokenizer, plan, previous)
    if earlier:  # a later look repeats the runs of the earlier ones (a baseline on some samples only would not pair)
        plan = replace(plan, baseline=earlier[0].random is not None)
    sha = mask.sha256()  # the identity the report and the registry decision refer to
    print(f"validating {mask.model_id or source.model_id} mask {sha[:12]}, look {look}: {len(samples)} new samples "
          f"(+{len(earlier)} kept from earlier looks) x {plan.runs}")
    try:
        rows, memory = run_sharded(plan, source, mask, samples)
    except Exception as e:  # noqa: BLE001 - a worker's error (e.g. mask for another model) as one line
        cause = getattr(e, "cause", None) or e
        raise ValidationFailed(f"{type(cause).__name__}: {str(cause).splitlines()[-1] if str(cause) else ''}") from None
    settings = {**{k: list(v) if isinstance(v, tuple) else v for k, v in asdict(plan).items() if k != "margins"},
                "model": source.model_id, "out": str(plan.out)}
    report = Report.build(rows, sha, mask.model_id, mask.model_hash, gate, memory=memory, settings=settings,
                          version=manifest and manifest.version, manifest_sha256=manifest.sha256() if manifest else "",
                          look=look, earlier=earlier)
    out = plan.out / sha[:16]
    path = report.save(out / "report.json")
    plot_report(report, out / "accuracy.png")
    print(f"report: {path}\n{report.summary()}")
    if target is None:
        return report, None
    judgement = target.registry.judge(target.ref, SignedReport.sign(report, signer))
    verdict = judgement.verdict
    if judgement.status != Status.CANDIDATE:
        note = "" if judgement.decided_now else " (decided earlier; decisions are final)"
    elif verdict.next_look is not None:
        note = f" (undecided: validate again to run look {verdict.next_look} with {verdict.next_samples} samples per cell)"
    else:
        note = " (undecided after the plan's last look: push the mask again for a fresh plan)"
    print(f"{target.ref}: {judgement.status.value}{note}; report {judgement.report_id}, registry verdict: "
          f"{verdict.summary()}")
    return report, judgement


def look_samples(tokenizer, plan: ValidationPlan, previous: ReportEntry | None
                 ) -> tuple[list[dict], int, list[PairedSample]]:
    """This look's new samples, its number, and the pairs kept from earlier looks.

    The first look takes ``plan.samples`` per cell (or the user's eval set); a later look of an
    undecided version brings every cell of the earlier look up to the number the registry's
    verdict asked for, with fresh samples (their own seed) numbered after the earlier ones.
    """
    if plan.eval_data is not None:
        if previous is not None:
            raise UsageError("--eval-data is one fixed set: it cannot continue this version's undecided look; "
                             "validate with the generated tasks, or push the mask again for a fresh plan")
        return load_eval_data(plan.eval_data, tokenizer).to_list(), 1, []
    if previous is None:
        return cached_samples(tokenizer, "eval", plan.tasks, plan.lengths, plan.samples, plan.seed).to_list(), 1, []
    verdict, earlier = previous.verdict, previous.signed.report.pairs
    if verdict.next_look is None:
        raise UsageError(f"this version's sequential plan is used up (look {previous.signed.report.look} was its last "
                         "and stayed undecided); push the mask again for a fresh plan")
    have = Counter(p.cell for p in earlier)
    tasks, lengths = sorted({t for t, _ in have}), sorted({n for _, n in have})
    add = verdict.next_samples - min(have.values())
    seed = plan.seed + 100_003 * (verdict.next_look - 1)  # each look its own fresh samples
    fresh = make_samples(tokenizer, "eval", tasks, lengths, add, seed).to_list()
    for sample in fresh:
        sample["index"] += have[(sample["task"], sample["length"])]
    return fresh, verdict.next_look, list(earlier)


class ValidationFailed(RuntimeError):
    """A validation worker failed (one line: the cause's type and last message line)."""


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        args = build_parser().parse(sys.argv[1:] if argv is None else argv)
        if not args.model:
            raise UsageError("--model is required (smollm2-135m, a .gguf file, a local folder or a hub id)")
        if not args.mask:
            raise UsageError("--mask is required (a registry ref org/name[@version] or a mask file)")
        source = resolve_model(args.model)
        plan = plan_from_args(args, source)
        mask, target = load_mask(args.mask, args.registry)
    except (ValueError, FileNotFoundError, RuntimeError) as e:
        print(f"leank validate: {e}", file=sys.stderr)
        return 2
    try:
        report, judgement = validate(source, mask, plan, target)
    except RegistryError as e:  # unreachable store, damaged version ...
        print(f"leank validate: {e}", file=sys.stderr)
        return 1
    except (ValidationFailed, ValueError) as e:  # a worker's error; a target that cannot be judged (no work done)
        print(f"leank validate: {e}", file=sys.stderr)
        return 2
    return exit_code(judgement) if judgement is not None else EXIT[report.verdict.decision]


def exit_code(judgement: Judgement) -> int:
    """The job's exit status for the registry's judgement: its version's status, not the report's verdict."""
    return EXIT[{Status.ACCEPTED: "accepted", Status.REJECTED: "rejected"}.get(judgement.status, "undecided")]


if __name__ == "__main__":
    sys.exit(main())
