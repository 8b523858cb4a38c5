"""The gate's own error rates: how often it accepts, rejects or cannot decide, per kind of mask.

    python scripts/gate_error_rates.py --seeds 1000 --out results/gate/error_rates.json --markdown
    python scripts/gate_error_rates.py --pairs pairs.jsonl --out $OUT/real_rates.json   # real scores

Simulated scorer: 4 tasks x 4 lengths with per-cell full-cache accuracies like SmolLM2's
(results/smollm2), niah_multiquery scored as a fraction of 2 answers. Masks:

* identity     masked = full on every sample;
* identity_noisy  no true loss, a tenth of ``--flip-rate`` of answers differ both ways (a keep-all
               mask whose bf16 numerics change an occasional answer);
* no_drop      no true loss, but a fraction ``--flip-rate`` of answers differ, as many gained as lost
               (the learned 70 % mask on SmolLM2 changed 3–6 % of samples);
* random_70    a random mask of the same kept counts: an answer survives with probability
               ``--random-keep`` (SmolLM2: full ~54, random 2–5 points);
* task_drop_10 no_drop plus a one-sided 10-point loss on niah_single at 2K–8K (what a new
               user saw on an outside retrieval task); its true mean drop is beyond the margin too;
* mean_drop_2  no_drop plus a one-sided 2-point loss in every cell where the full cache scores.

Each suite also scores a random_70 run as the baseline. ``fixed`` judges one look of n samples per
cell; ``sequential`` follows the verdict's plan (cumulative samples, doubling, at most the policy's
looks). With ``--pairs`` (JSONL of registry.gate.PairedSample fields from a real run) the same
rates are estimated by resampling suites, with replacement, from each cell's real pairs. Rates
carry Wilson 95 % intervals over seeds. Method and reading: docs/gate.md.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from registry.gate import GatePolicy, PairedSample, judge  # noqa: E402

TASKS = ("passkey", "niah_single", "niah_multikey", "niah_multiquery")
LENGTHS = (1024, 2048, 4096, 8192)
ANSWERS = {"niah_multiquery": 2}  # answers per sample; the others 1
# Full-cache accuracy (%) per task at 1K/2K/4K/8K: the two GPU sessions of results/smollm2 averaged.
BASE = {"passkey": (42, 0, 21, 62), "niah_single": (92, 100, 58, 67),
        "niah_multikey": (67, 33, 29, 54), "niah_multiquery": (52, 54, 60, 31)}
SIZES = (2, 4, 8, 64, 128, 256)
SEQUENTIAL_FIRST = (4, 64)
DECISIONS = ("accepted", "rejected", "undecided")

Answer = Callable[[random.Random, float, tuple[str, int]], tuple[int, int]]  # -> (full, masked) of one answer


class Scorer:
    """Draws (full, masked, random) scores of one simulated sample for one kind of mask."""

    def __init__(self, flip_rate: float, random_keep: float):
        self.flip, self.keep = flip_rate, random_keep

    def swaps(self, a: float) -> float:
        """Probability of each of (1, 0) and (0, 1): half the flip rate, as far as the cell allows."""
        return min(self.flip / 2, a, 1 - a)

    def no_drop(self, rng: random.Random, a: float, cell: tuple[str, int]) -> tuple[int, int]:
        full = int(rng.random() < a)
        s = self.swaps(a)
        swap = rng.random() < (s / a if full else s / (1 - a)) if 0 < a < 1 else False
        return full, full ^ swap

    def lossy(self, cells: Callable[[tuple[str, int]], float]) -> Answer:
        """no_drop plus a one-sided loss of ``cells(cell)`` (a fraction) where both runs were right."""
        def answer(rng: random.Random, a: float, cell: tuple[str, int]) -> tuple[int, int]:
            full, masked = self.no_drop(rng, a, cell)
            both = a - self.swaps(a)
            if full and masked and both > 0 and rng.random() < min(1.0, cells(cell) / both):
                masked = 0
            return full, masked
        return answer

    def true_drop(self, cells: Callable[[tuple[str, int]], float], a: float, cell: tuple[str, int]) -> float:
        both = a - self.swaps(a)
        return both * min(1.0, cells(cell) / both) if both > 0 else 0.0

    def scenarios(self) -> dict[str, tuple[Answer, Callable[[float, tuple[str, int]], float]]]:
        """name -> (one answer's draw, the cell's true drop as a fraction)."""
        task_drop = lambda cell: 0.10 if cell[0] == "niah_single" and cell[1] >= 2048 else 0.0  # noqa: E731
        mean_drop = lambda cell: 0.02  # noqa: E731
        return {
            "identity": (lambda rng, a, cell: (lambda f: (f, f))(int(rng.random() < a)), lambda a, cell: 0.0),
            "identity_noisy": (Scorer(self.flip / 10, self.keep).no_drop, lambda a, cell: 0.0),
            "no_drop": (self.no_drop, lambda a, cell: 0.0),
            "random_70": (self.random_answer, lambda a, cell: a * (1 - self.keep)),
            "task_drop_10": (self.lossy(task_drop), lambda a, cell: self.true_drop(task_drop, a, cell)),
            "mean_drop_2": (self.lossy(mean_drop), lambda a, cell: self.true_drop(mean_drop, a, cell)),
        }

    def random_answer(self, rng: random.Random, a: float, cell: tuple[str, int]) -> tuple[int, int]:
        full = int(rng.random() < a)
        return full, full & (rng.random() < self.keep)

    def suite(self, answer: Answer, n: int, rng: random.Random) -> list[PairedSample]:
        """n samples per cell; each has the scenario's masked score and a random-mask baseline score."""
        out = []
        for task in TASKS:
            for j, length in enumerate(LENGTHS):
                a, q = BASE[task][j] / 100, ANSWERS.get(task, 1)
                for i in range(n):
                    pairs = [answer(rng, a, (task, length)) for _ in range(q)]
                    kept = [full & (rng.random() < self.keep) for full, _ in pairs]
                    out.append(PairedSample(task, length, i, sum(f for f, _ in pairs) / q,
                                            sum(m for _, m in pairs) / q, sum(kept) / q))
        return out


def wilson(successes: int, total: int, z: float = 1.959964) -> list[float]:
    """Wilson score 95 % interval of a rate (valid at 0 and 100 %)."""
    p = successes / total
    centre = (p + z * z / (2 * total)) / (1 + z * z / total)
    half = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / (1 + z * z / total)
    return [round(max(0.0, centre - half), 5), round(min(1.0, centre + half), 5)]


def tally(decisions: Sequence[str], mattered: Sequence[bool], seeds: int) -> dict:
    counts = Counter(decisions)
    out = {d: counts[d] for d in DECISIONS}
    out |= {f"{d}_rate": counts[d] / seeds for d in DECISIONS}
    out |= {f"{d}_ci95": wilson(counts[d], seeds) for d in DECISIONS}
    out["learning_mattered_rate"] = sum(mattered) / seeds
    return out


def first_look(make: Callable[[int, random.Random], list[PairedSample]], sizes: Sequence[int], seeds: int,
               policy: GatePolicy, tag: str) -> list[dict]:
    rows = []
    for n in sizes:
        verdicts = [judge(make(n, random.Random(f"{tag}/{n}/{seed}")), policy) for seed in range(seeds)]
        rows.append({"n_per_cell": n, **tally([v.decision for v in verdicts],
                                              [v.baseline is not None and v.baseline.learning_mattered for v in verdicts], seeds)})
    return rows


def sequential(make: Callable[[int, random.Random], list[PairedSample]], first: int, seeds: int,
               policy: GatePolicy, tag: str) -> dict:
    """Follow each verdict's plan: draw the largest suite once, judge its first n * 2**(look-1) per cell."""
    decisions, mattered, used, looks = [], [], [], []
    largest = first * 2 ** (policy.looks - 1)
    for seed in range(seeds):
        suite = make(largest, random.Random(f"{tag}/seq{first}/{seed}"))
        look = 1
        while True:
            n = first * 2 ** (look - 1)
            verdict = judge([s for s in suite if s.index < n], policy, look)
            if verdict.decision != "undecided" or verdict.next_look is None:
                break
            look = verdict.next_look
        decisions.append(verdict.decision)
        mattered.append(verdict.baseline is not None and verdict.baseline.learning_mattered)
        used.append(n)
        looks.append(look)
    return {"first_n_per_cell": first, "max_n_per_cell": largest, **tally(decisions, mattered, seeds),
            "mean_n_per_cell": sum(used) / seeds, "mean_looks": sum(looks) / seeds}


def simulate(args: argparse.Namespace, policy: GatePolicy) -> dict:
    scorer = Scorer(args.flip_rate, args.random_keep)
    out: dict = {"scenarios": {}, "fixed": [], "sequential": []}
    scenarios = scorer.scenarios()
    unknown = set(args.scenarios or ()) - set(scenarios)
    if unknown:
        raise ValueError(f"unknown scenario {sorted(unknown)[0]!r}: choose from {', '.join(scenarios)}")
    for name, (answer, drop) in scenarios.items():
        if args.scenarios and name not in args.scenarios:
            continue
        cells = {f"{t}@{n}": 100 * drop(BASE[t][j] / 100, (t, n)) for t in TASKS for j, n in enumerate(LENGTHS)}
        out["scenarios"][name] = {"true_mean_drop": round(sum(cells.values()) / len(cells), 4),
                                  "true_max_cell_drop": round(max(cells.values()), 4)}
        make = lambda n, rng, answer=answer: scorer.suite(answer, n, rng)  # noqa: E731
        started = time.perf_counter()
        out["fixed"] += [{"scenario": name, **row} for row in first_look(make, args.sizes, args.seeds, policy, name)]
        out["sequential"] += [{"scenario": name, **sequential(make, first, args.seeds, policy, name)}
                              for first in args.sequential_first]
        print(f"{name}: {time.perf_counter() - started:.1f} s", file=sys.stderr)
    return out


def load_pairs(path: Path) -> dict[tuple[str, int], list[PairedSample]]:
    cells: dict[tuple[str, int], list[PairedSample]] = defaultdict(list)
    with path.open() as f:
        for number, line in enumerate(f, 1):
            if line.strip():
                try:
                    sample = PairedSample.from_dict(json.loads(line))
                except (json.JSONDecodeError, ValueError, TypeError) as e:
                    raise ValueError(f"{path}:{number}: {e}") from None
                cells[sample.cell].append(sample)
    if not cells:
        raise ValueError(f"{path} holds no paired samples")
    return dict(sorted(cells.items()))


def resample(cells: dict[tuple[str, int], list[PairedSample]], run: str) -> Callable[[int, random.Random], list[PairedSample]]:
    """Suites drawn with replacement from real pairs; ``run`` picks what plays the mask."""
    def make(n: int, rng: random.Random) -> list[PairedSample]:
        out = []
        for (task, length), pool in cells.items():
            for i in range(n):
                s = rng.choice(pool)
                masked = {"masked": s.masked, "random": s.random, "identity": s.full}[run]
                out.append(PairedSample(task, length, i, s.full, masked, s.random if run == "masked" else None))
        return out
    return make


def real(args: argparse.Namespace, policy: GatePolicy) -> dict:
    cells = load_pairs(args.pairs)
    runs = ["masked", "identity"] + (["random"] if all(s.random is not None for c in cells.values() for s in c) else [])
    out: dict = {"file": str(args.pairs), "cells": {f"{t}@{n}": len(p) for (t, n), p in cells.items()},
                 "fixed": [], "sequential": []}
    for run in runs:
        make = resample(cells, run)
        out["fixed"] += [{"scenario": run, **row} for row in first_look(make, args.sizes, args.seeds, policy, f"real/{run}")]
        out["sequential"] += [{"scenario": run, **sequential(make, first, args.seeds, policy, f"real/{run}")}
                              for first in args.sequential_first]
    return out


def markdown(result: dict) -> str:
    lines = ["| mask | n / cell | accepted | rejected | undecided |", "|---|---|---|---|---|"]
    pct = lambda row, d: f"{100 * row[d + '_rate']:.1f} %"  # noqa: E731
    for row in result["fixed"]:
        lines.append(f"| {row['scenario']} | {row['n_per_cell']} | {pct(row, 'accepted')} | {pct(row, 'rejected')} "
                     f"| {pct(row, 'undecided')} |")
    lines += ["", "| mask | plan (n / cell) | accepted | rejected | undecided | mean n / cell |", "|---|---|---|---|---|---|"]
    for row in result["sequential"]:
        lines.append(f"| {row['scenario']} | {row['first_n_per_cell']}→{row['max_n_per_cell']} | {pct(row, 'accepted')} "
                     f"| {pct(row, 'rejected')} | {pct(row, 'undecided')} | {row['mean_n_per_cell']:.0f} |")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, default=200, help="simulated suites per mask and size (>= 100 for the docs)")
    p.add_argument("--sizes", type=int, nargs="+", default=list(SIZES), help="samples per cell judged at one look")
    p.add_argument("--sequential-first", type=int, nargs="+", default=list(SEQUENTIAL_FIRST),
                   help="first-look samples per cell of the sequential runs")
    p.add_argument("--flip-rate", type=float, default=0.05, help="no_drop: fraction of answers that differ")
    p.add_argument("--random-keep", type=float, default=0.1, help="random_70: chance an answer survives")
    p.add_argument("--scenarios", nargs="+", help="simulated masks to study (default: all)")
    p.add_argument("--mean-margin", type=float, default=GatePolicy.mean_margin, help="policy: mean margin (points)")
    p.add_argument("--cell-margin", type=float, default=GatePolicy.cell_margin, help="policy: cell margin (points)")
    p.add_argument("--looks", type=int, default=GatePolicy.looks, help="policy: looks of the sequential plan")
    p.add_argument("--pairs", type=Path, help="JSONL of real PairedSample rows: resample them instead of simulating")
    p.add_argument("--out", type=Path, required=True, help="where the JSON result is written")
    p.add_argument("--markdown", action="store_true", help="also print the tables of docs/gate.md")
    return p


def check(args: argparse.Namespace) -> None:
    if args.seeds < 1 or min(args.sizes) < 1 or min(args.sequential_first) < 1:
        raise ValueError("--seeds, --sizes and --sequential-first must be >= 1")
    if not (0 <= args.flip_rate <= 1 and 0 <= args.random_keep <= 1):
        raise ValueError("--flip-rate and --random-keep must be in [0, 1]")
    if args.pairs is not None and not args.pairs.is_file():
        raise ValueError(f"--pairs {args.pairs}: no such file")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        policy = GatePolicy(mean_margin=args.mean_margin, cell_margin=args.cell_margin, looks=args.looks)
        check(args)
        started = time.perf_counter()
        body = real(args, policy) if args.pairs else simulate(args, policy)
    except ValueError as e:
        print(f"gate_error_rates: {e}", file=sys.stderr)
        return 2
    result = {"what": "the gate's decision rates over seeded suites (docs/gate.md)",
              "command": "python scripts/gate_error_rates.py " + " ".join(sys.argv[1:] if argv is None else argv),
              "policy": policy.to_dict(), "seeds": args.seeds, "tasks": TASKS, "lengths": LENGTHS,
              "base_accuracy": BASE, "flip_rate": args.flip_rate, "random_keep": args.random_keep,
              **body, "wall_s": round(time.perf_counter() - started, 1)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    if args.markdown:
        print(markdown(result))
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
