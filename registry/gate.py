"""The acceptance gate's decision rule: a paired, sequential test on per-sample scores.

Every eval prompt is scored under the full cache and under the mask (optionally also under a
random mask with the same kept counts). The verdict is a pure, deterministic function of those
pairs and a :class:`GatePolicy`, written with the standard library only, so the registry can
re-derive it anywhere from a report's samples. The method, its error budget and its measured
error rates are in docs/gate.md; in short:

* drop = full − masked per sample, in accuracy points; a cell is one task × length; the mean
  drop is the mean of the cell means (as the report's tables show it).
* One-sided Student-t bounds (Welch–Satterthwaite for the mean over cells).
* Accept when the mean's upper bound <= ``mean_margin`` and every cell's upper bound <=
  ``cell_margin``: an intersection-union test, so each bound is at the look's whole alpha.
* Reject when the mean's lower bound > ``mean_margin`` or some cell's lower bound >
  ``cell_margin``, Bonferroni-corrected (half the look's alpha for the mean, the other half
  shared by the cells): one noisy cell does not reject a good mask.
* Otherwise undecided, with the look to run next and the samples per cell it needs.
* Sequential: at most ``looks`` looks of cumulative samples, each doubling every cell; look j
  spends half of the error budget left (the last look all of it), for each kind of error.
"""

from __future__ import annotations

import functools
import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, fields, replace
from statistics import NormalDist
from typing import Any

VERDICT_FORMAT = "leank-gate-verdict/1"
METHOD = "paired-t: IUT accept, Bonferroni reject, alpha halved per look, samples doubling per look"
DECISIONS = ("accepted", "rejected", "undecided")
STATUSES = ("within", "beyond", "open")  # a hypothesis: shown within its margin, shown beyond it, neither
TOLERANCE = 1e-9  # points: bounds this close to a margin count as on it (float rounding of scores)
MAX_SAMPLES = 10**7  # per cell; a plan needing more is reported as "no plan decides this"
WORST_SD = 100.0  # points: the largest standard deviation of a difference of two [0, 1] scores
RUNS = ("full", "masked", "random")


# ---------------------------------------------------------------- distributions (stdlib only)

def _betainc(a: float, b: float, x: float) -> float:
    """Regularized incomplete beta I_x(a, b) by Lentz's continued fraction."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    if x > (a + 1.0) / (a + b + 2.0):
        return 1.0 - _betainc(b, a, 1.0 - x)
    log_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    tiny = 1e-300
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    f = d
    for m in range(1, 100_000):
        for numerator in (m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
                          -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))):
            d = 1.0 + numerator * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + numerator / c
            c = c if abs(c) > tiny else tiny
            f *= c * d
        if abs(c * d - 1.0) < 1e-15:
            break
    return math.exp(log_front) * f / a


def t_cdf(t: float, df: float) -> float:
    """P(T <= t) for Student's t with ``df`` (> 0, not necessarily whole) degrees of freedom."""
    tail = 0.5 * _betainc(df / 2.0, 0.5, df / (df + t * t))
    return 1.0 - tail if t >= 0 else tail


@functools.lru_cache(maxsize=4096)
def t_quantile(p: float, df: float) -> float:
    """The ``p`` quantile (0.5 <= p < 1) of Student's t, by bisection on :func:`t_cdf` (deterministic)."""
    if not 0.5 <= p < 1.0 or not df > 0:
        raise ValueError(f"t_quantile needs 0.5 <= p < 1 and df > 0, got p={p}, df={df}")
    df = min(df, 1e7)  # beyond this t equals the normal to ~1e-7; keeps the fraction short
    lo, hi = 0.0, 1.0
    while t_cdf(hi, df) < p:
        lo, hi = hi, 2.0 * hi
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if mid in (lo, hi):
            break
        lo, hi = (mid, hi) if t_cdf(mid, df) < p else (lo, mid)
    return hi


def samples_needed(estimate: float, sd: float, margin: float, alpha: float, power: float) -> int | None:
    """Samples (per cell) for a one-sided level-``alpha`` bound to land on the side of ``margin``
    where ``estimate`` lies with probability ``power``, if the true drop is ``estimate`` and the
    per-sample standard deviation is ``sd`` (all in points; normal approximation).

    ``None`` when the estimate sits on the margin: no sample size decides that.
    """
    gap = abs(margin - estimate)
    if gap <= TOLERANCE:
        return None
    z = NormalDist()
    n = math.ceil(((z.inv_cdf(1.0 - alpha) + z.inv_cdf(power)) * sd / gap) ** 2)
    return max(2, n) if n <= MAX_SAMPLES else None


# ---------------------------------------------------------------- inputs

def _score(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
        raise ValueError(f"{what} must be a number in [0, 1], got {value!r}")
    return float(value)


@dataclass(frozen=True)
class PairedSample:
    """One eval prompt scored under each run (scores in [0, 1]; ``random`` only with a baseline)."""

    task: str
    length: int
    index: int
    full: float
    masked: float
    random: float | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.task, str) or not self.task:
            raise ValueError(f"a sample's task must be a non-empty string, got {self.task!r}")
        for name in ("length", "index"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < (1 if name == "length" else 0):
                raise ValueError(f"a sample's {name} must be an integer >= {1 if name == 'length' else 0}, got {value!r}")
        where = f"{self.task}@{self.length}#{self.index}"
        for run in RUNS:
            value = getattr(self, run)
            if value is not None or run != "random":
                object.__setattr__(self, run, _score(value, f"sample {where}: score {run!r}"))

    @property
    def cell(self) -> tuple[str, int]:
        return self.task, self.length

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "PairedSample":
        return cls(**_known_fields(cls, data, optional={"random"}))


def paired_samples(rows: Iterable[Mapping[str, Any]]) -> list[PairedSample]:
    """Join per-run score rows (``run``, ``task``, ``length``, ``index``, ``score``, as
    ``leank_core.evaluation.evaluate`` writes them) into pairs; every prompt needs a full and a
    masked row, and either all prompts or none have a random row."""
    by_key: dict[tuple[str, int, int], dict[str, float]] = defaultdict(dict)
    for row in rows:
        run, key = row["run"], (row["task"], row["length"], row["index"])
        if run not in RUNS:
            raise ValueError(f"unknown run {run!r} in a score row: expected one of {', '.join(RUNS)}")
        if run in by_key[key]:
            raise ValueError(f"two {run!r} scores for {key[0]}@{key[1]}#{key[2]}: a prompt is scored once per run")
        by_key[key][run] = row["score"]
    samples = []
    for (task, length, index), scores in sorted(by_key.items()):
        missing = {"full", "masked"} - set(scores)
        if missing:
            raise ValueError(f"{task}@{length}#{index} has no {sorted(missing)[0]!r} score: every prompt needs full and masked")
        samples.append(PairedSample(task, length, index, scores["full"], scores["masked"], scores.get("random")))
    _check_samples(samples)
    return samples


def _check_samples(samples: Sequence[PairedSample]) -> None:
    if not samples:
        raise ValueError("the gate needs at least one paired sample")
    if not all(isinstance(s, PairedSample) for s in samples):
        raise ValueError("the gate takes PairedSample objects (see registry.gate.paired_samples)")
    keys = [(s.task, s.length, s.index) for s in samples]
    if len(set(keys)) != len(keys):
        dup = next(k for k in keys if keys.count(k) > 1)
        raise ValueError(f"sample {dup[0]}@{dup[1]}#{dup[2]} appears twice: each prompt is one pair")
    with_random = {s.random is not None for s in samples}
    if len(with_random) > 1:
        raise ValueError("some samples have a random-baseline score and some do not: give it for all or none")


# ---------------------------------------------------------------- policy

@dataclass(frozen=True)
class GatePolicy:
    """Margins in accuracy points; ``confidence`` bounds each kind of error (false accept, false
    reject) over all ``looks`` of a sequential validation; ``power`` sizes the next look."""

    mean_margin: float = 1.0
    cell_margin: float = 5.0
    confidence: float = 0.95
    looks: int = 4
    power: float = 0.9

    def __post_init__(self) -> None:
        for name in ("mean_margin", "cell_margin"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 100.0:
                raise ValueError(f"gate {name} must be a number of accuracy points in [0, 100], got {value!r}")
        for name in ("confidence", "power"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.5 <= value < 1.0:
                raise ValueError(f"gate {name} must be a number in [0.5, 1), got {value!r}")
        if isinstance(self.looks, bool) or not isinstance(self.looks, int) or not 1 <= self.looks <= 20:
            raise ValueError(f"gate looks must be an integer in [1, 20], got {self.looks!r}")

    def alpha(self, look: int) -> float:
        """Error probability spent at ``look``, for false accepts and again for false rejects:
        each look spends half of what is left, the last look all of it."""
        total = 1.0 - self.confidence
        return total / 2**look if look < self.looks else total / 2 ** (self.looks - 1)

    def strictest(self, other: "GatePolicy") -> "GatePolicy":
        """What holds when both must pass: the smaller margins and the higher confidence (this
        policy's looks and power: the plan belongs to whoever owns the policy)."""
        return replace(self, mean_margin=min(self.mean_margin, other.mean_margin),
                       cell_margin=min(self.cell_margin, other.cell_margin),
                       confidence=max(self.confidence, other.confidence))

    def looser_than(self, other: "GatePolicy") -> list[str]:
        """The fields in which this policy lets more through than ``other``."""
        looser = [name for name in ("mean_margin", "cell_margin") if getattr(self, name) > getattr(other, name)]
        return looser + (["confidence"] if self.confidence < other.confidence else [])

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "GatePolicy":
        return cls(**_known_fields(cls, data, optional={f.name for f in fields(cls)}))


# ---------------------------------------------------------------- verdict

@dataclass(frozen=True)
class Estimate:
    """One hypothesis: the mean over cells (``task`` and ``length`` None) or one cell.

    Accuracies and the drop (full − masked) in points; ``upper`` / ``lower`` are the one-sided
    bounds the decision used (None: too few samples to bound); ``samples_needed`` per cell.
    """

    task: str | None
    length: int | None
    n: int
    full: float
    masked: float
    random: float | None
    drop: float
    upper: float | None
    lower: float | None
    status: str
    samples_needed: int | None = None

    def __post_init__(self) -> None:
        if (self.task is None) != (self.length is None):
            raise ValueError("an estimate has both task and length (a cell) or neither (the mean)")
        if self.status not in STATUSES:
            raise ValueError(f"estimate status must be one of {', '.join(STATUSES)}, got {self.status!r}")
        _check_number(self.n, "estimate n", integer=True, minimum=1)
        _check_number(self.samples_needed, "estimate samples_needed", integer=True, minimum=1, optional=True)
        for name in ("full", "masked", "random", "drop", "upper", "lower"):
            _check_number(getattr(self, name), f"estimate {name}", optional=name in ("random", "upper", "lower"))


@dataclass(frozen=True)
class Baseline:
    """Learned versus the same-count random mask: ``gain`` = masked − random (points), its
    one-sided lower bound, and whether that bound is above 0 (learning mattered)."""

    gain: float
    lower: float | None
    learning_mattered: bool

    def __post_init__(self) -> None:
        _check_number(self.gain, "baseline gain")
        _check_number(self.lower, "baseline lower", optional=True)
        if not isinstance(self.learning_mattered, bool):
            raise ValueError("baseline learning_mattered must be true or false")


@dataclass(frozen=True)
class Verdict:
    """The gate's decision and everything it rests on; JSON round-trips through to_dict/from_dict.

    When undecided: ``samples_needed`` per cell is what the power calculation expects to decide
    (None: an estimate sits on its margin); ``next_look`` / ``next_samples`` (per cell, all
    samples so far included) say what to run next (None after the plan's last look).
    """

    decision: str
    reasons: tuple[str, ...]
    mean: Estimate
    cells: tuple[Estimate, ...]
    baseline: Baseline | None
    samples_needed: int | None
    next_look: int | None
    next_samples: int | None
    method: dict[str, Any]
    format: str = VERDICT_FORMAT

    def __post_init__(self) -> None:
        if self.format != VERDICT_FORMAT:
            raise ValueError(f"not a {VERDICT_FORMAT} verdict (format {self.format!r})")
        if self.decision not in DECISIONS:
            raise ValueError(f"verdict decision must be one of {', '.join(DECISIONS)}, got {self.decision!r}")
        if not isinstance(self.reasons, tuple) or not all(isinstance(r, str) for r in self.reasons):
            raise ValueError("verdict reasons must be a list of strings")
        if not isinstance(self.mean, Estimate) or self.mean.task is not None:
            raise ValueError("verdict mean must be the estimate over all cells")
        if not self.cells or not all(isinstance(c, Estimate) and c.task is not None for c in self.cells):
            raise ValueError("verdict cells must be a non-empty list of cell estimates")
        if self.baseline is not None and not isinstance(self.baseline, Baseline):
            raise ValueError("verdict baseline must be a baseline comparison or null")
        _check_number(self.samples_needed, "verdict samples_needed", integer=True, minimum=1, optional=True)
        _check_number(self.next_look, "verdict next_look", integer=True, minimum=2, optional=True)
        _check_number(self.next_samples, "verdict next_samples", integer=True, minimum=2, optional=True)
        if (self.next_look is None) != (self.next_samples is None):
            raise ValueError("verdict next_look and next_samples come together")
        if not isinstance(self.method, dict) or not isinstance(self.method.get("name"), str):
            raise ValueError("verdict method must be an object with a name")

    @property
    def accepted(self) -> bool:
        return self.decision == "accepted"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)  # every number is finite, so plain JSON holds it (tuples as lists)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Verdict":
        data = _known_fields(cls, data, optional={"format"})
        try:
            mean = Estimate(**_known_fields(Estimate, data["mean"]))
            cells = tuple(Estimate(**_known_fields(Estimate, c)) for c in data["cells"])
            baseline = None if data["baseline"] is None else Baseline(**_known_fields(Baseline, data["baseline"]))
            reasons = tuple(data["reasons"])
        except TypeError as e:
            raise ValueError(f"verdict has a part of the wrong shape: {e}") from None
        return cls(**{**data, "mean": mean, "cells": cells, "baseline": baseline, "reasons": reasons})

    def summary(self) -> str:
        """One line for a terminal."""
        m = self.mean
        bound = "unbounded" if m.upper is None else f"upper bound {m.upper:.2f}"
        return f"{self.decision}: mean drop {m.drop:.2f} points ({bound}); " + "; ".join(self.reasons)


def _known_fields(cls: type, data: Any, optional: set[str] = frozenset()) -> dict[str, Any]:
    if not isinstance(data, Mapping):
        raise ValueError(f"{cls.__name__} must be a JSON object, got {type(data).__name__}")
    names = {f.name for f in fields(cls)}
    unknown, missing = set(data) - names, names - set(data) - set(optional)
    if unknown or missing:
        raise ValueError(f"{cls.__name__}: unknown fields {sorted(unknown)}, missing fields {sorted(missing)}")
    return dict(data)


def _check_number(value: Any, what: str, *, integer: bool = False, minimum: float | None = None,
                  optional: bool = False) -> None:
    if value is None and optional:
        return
    kinds = (int,) if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds) or not math.isfinite(value) or (
            minimum is not None and value < minimum):
        raise ValueError(f"{what} must be a finite {'integer' if integer else 'number'}"
                         f"{'' if minimum is None else f' >= {minimum}'}, got {value!r}")


# ---------------------------------------------------------------- the rule

@dataclass(frozen=True)
class _Diffs:
    """Per-sample differences of one cell, in points: mean, sample variance (None if n < 2)."""

    n: int
    mean: float
    var: float | None

    @classmethod
    def of(cls, values: Sequence[float]) -> "_Diffs":
        n = len(values)
        mean = math.fsum(values) / n
        var = math.fsum((v - mean) ** 2 for v in values) / (n - 1) if n > 1 else None
        return cls(n, mean, var)


def _width(var_of_mean: float | None, df: float | None, alpha: float) -> float | None:
    """Half-width of a one-sided level-``alpha`` t bound; 0 when the differences do not vary."""
    if var_of_mean is None:
        return None
    return 0.0 if var_of_mean == 0.0 else t_quantile(1.0 - alpha, df) * math.sqrt(var_of_mean)


def _stratified(cells: Sequence[_Diffs]) -> tuple[float, float | None, float | None]:
    """Mean of the cell means, its variance, and Welch–Satterthwaite degrees of freedom."""
    k = len(cells)
    mean = math.fsum(c.mean for c in cells) / k
    if any(c.var is None for c in cells):
        return mean, None, None
    parts = [c.var / c.n for c in cells]
    total = math.fsum(parts)
    df = total**2 / math.fsum(p * p / (c.n - 1) for p, c in zip(parts, cells)) if total > 0 else None
    return mean, total / (k * k), df


def _status(upper: float | None, lower: float | None, margin: float) -> str:
    if upper is not None and upper <= margin + TOLERANCE:
        return "within"
    if lower is not None and lower > margin + TOLERANCE:
        return "beyond"
    return "open"


def _mean(values: Iterable[float]) -> float:
    values = list(values)
    return 100.0 * math.fsum(values) / len(values)


def judge(samples: Sequence[PairedSample], policy: GatePolicy = GatePolicy(), look: int = 1) -> Verdict:
    """The verdict on ``samples`` at ``look`` of the policy's plan.

    Look 1 is a mask version's first evaluation, with any number of samples per cell chosen
    before seeing results. An undecided verdict names the ``next_look``; that evaluation must
    hold the earlier samples plus new ones, ``next_samples`` per cell in all (each cell doubled
    once per look advanced). Looks may be skipped, never repeated (docs/gate.md).
    """
    if isinstance(look, bool) or not isinstance(look, int) or not 1 <= look <= policy.looks:
        raise ValueError(f"look must be an integer in [1, {policy.looks}] (the policy's looks), got {look!r}")
    _check_samples(samples)
    by_cell: dict[tuple[str, int], list[PairedSample]] = defaultdict(list)
    for s in sorted(samples, key=lambda s: (s.task, s.length, s.index)):
        by_cell[s.cell].append(s)
    levels = _Levels.at(policy, look, len(by_cell))
    diffs = [_Diffs.of([100.0 * (s.full - s.masked) for s in rows]) for rows in by_cell.values()]
    cells = [_estimate(cell, rows, d.mean, None if d.var is None else d.var / d.n, d.n - 1,
                       levels.accept, levels.reject_cell, policy.cell_margin)
             for (cell, rows), d in zip(by_cell.items(), diffs)]
    drop, var_of_mean, df = _stratified(diffs)
    mean = _estimate(None, [s for rows in by_cell.values() for s in rows], drop, var_of_mean, df,
                     levels.accept, levels.reject_mean, policy.mean_margin)
    over_cells = {run: math.fsum(getattr(c, run) for c in cells) / len(cells)  # as the tables show it
                  for run in RUNS if getattr(mean, run) is not None}
    mean = _replace(mean, **over_cells)

    statuses = [mean.status] + [c.status for c in cells]
    decision = ("accepted" if all(s == "within" for s in statuses)
                else "rejected" if "beyond" in statuses else "undecided")
    scale, next_look = _plan(policy, look, mean, cells, diffs) if decision == "undecided" else (None, None)
    if scale is not None:
        cells = [_replace(c, samples_needed=c.n * scale) for c in cells]
        mean = _replace(mean, samples_needed=max(c.samples_needed for c in cells))
    next_samples = None if next_look is None else max(c.n for c in cells) * 2 ** (next_look - look)
    baseline = _baseline(by_cell, levels.accept) if cells[0].random is not None else None
    method = {"name": METHOD, "look": look, **policy.to_dict(), "alpha_accept": levels.accept,
              "alpha_reject_mean": levels.reject_mean, "alpha_reject_cell": levels.reject_cell}
    reasons = _reasons(decision, mean, cells, baseline, policy, look, next_look, next_samples)
    return Verdict(decision=decision, reasons=tuple(reasons), mean=mean, cells=tuple(cells), baseline=baseline,
                   samples_needed=mean.samples_needed, next_look=next_look, next_samples=next_samples, method=method)


@dataclass(frozen=True)
class _Levels:
    """One look's error levels: every accept bound at the look's alpha (intersection-union);
    reject bounds Bonferroni-split, half to the mean and half shared by the cells."""

    accept: float
    reject_mean: float
    reject_cell: float

    @classmethod
    def at(cls, policy: GatePolicy, look: int, cells: int) -> "_Levels":
        alpha = policy.alpha(look)
        return cls(alpha, alpha / 2, alpha / (2 * cells))


def _estimate(cell: tuple[str, int] | None, rows: Sequence[PairedSample], drop: float, var_of_mean: float | None,
              df: float | None, alpha_accept: float, alpha_reject: float, margin: float) -> Estimate:
    up, down = _width(var_of_mean, df, alpha_accept), _width(var_of_mean, df, alpha_reject)
    upper = None if up is None else drop + up
    lower = None if down is None else drop - down
    return Estimate(task=cell and cell[0], length=cell and cell[1], n=len(rows),
                    full=_mean(s.full for s in rows), masked=_mean(s.masked for s in rows),
                    random=None if rows[0].random is None else _mean(s.random for s in rows),
                    drop=drop, upper=upper, lower=lower, status=_status(upper, lower, margin))


def _replace(e: Estimate, **changes: Any) -> Estimate:
    return Estimate(**{**asdict(e), **changes})


def _plan(policy: GatePolicy, look: int, mean: Estimate, cells: Sequence[Estimate], diffs: Sequence[_Diffs]
          ) -> tuple[int | None, int | None]:
    """(growth of every cell the power calculation asks for, the look to run next).

    The next look is the first later one whose size (each cell doubled per look) is expected to
    decide every open hypothesis with the policy's power, at that look's levels; else the last.
    A hypothesis is expected to be decided at the smaller of two sizes, both with the observed
    variance: where a lossless mask (drop 0) would be accepted, and, if its estimate is beyond
    the margin, where a drop equal to the estimate would be rejected. (Planning only on a noisy
    estimate near the margin asks for absurd sizes.) The growth is None when no size decides one.
    """
    sds = [WORST_SD if d.var is None else math.sqrt(d.var) for d in diffs]
    k, n_min = len(cells), min(c.n for c in cells)
    # the mean's variance at n_min per cell, written as one per-cell sd: sum(var_c * n_min / n_c) / k^2
    mean_sd = math.sqrt(math.fsum(sd * sd * n_min / c.n for sd, c in zip(sds, cells))) / k
    open_ = [(mean, mean_sd, n_min, policy.mean_margin, "reject_mean")] * (mean.status == "open")
    open_ += [(c, sd, c.n, policy.cell_margin, "reject_cell") for c, sd in zip(cells, sds) if c.status == "open"]

    def growth(target: int) -> float | None:
        levels, worst = _Levels.at(policy, target, k), 1.0
        for e, sd, n, margin, reject in open_:
            sizes = [samples_needed(0.0, sd, margin, levels.accept, policy.power)]
            if e.drop > margin:
                sizes.append(samples_needed(e.drop, sd, margin, getattr(levels, reject), policy.power))
            sizes = [size for size in sizes if size is not None]
            if not sizes:
                return None
            worst = max(worst, min(sizes) / n)
        return worst

    for target in range(look + 1, policy.looks + 1):
        g = growth(target)
        if g is None:
            return None, target
        if g <= 2 ** (target - look):
            return 2 ** (target - look), target
    g = growth(policy.looks)
    scale = None if g is None else 2 ** max(1, math.ceil(math.log2(g)))
    return scale, (policy.looks if look < policy.looks else None)


def _baseline(by_cell: Mapping[tuple[str, int], Sequence[PairedSample]], alpha: float) -> Baseline:
    gains = [_Diffs.of([100.0 * (s.masked - s.random) for s in rows]) for rows in by_cell.values()]
    gain, var_of_mean, df = _stratified(gains)
    width = _width(var_of_mean, df, alpha)
    lower = None if width is None else gain - width
    return Baseline(gain=gain, lower=lower, learning_mattered=lower is not None and lower > TOLERANCE)


def _name(e: Estimate) -> str:
    return "mean" if e.task is None else f"{e.task}@{e.length}"


def _bound(value: float | None) -> str:
    return "unbounded (a cell has 1 sample)" if value is None else f"{value:.2f}"


def _reasons(decision: str, mean: Estimate, cells: Sequence[Estimate], baseline: Baseline | None,
             policy: GatePolicy, look: int, next_look: int | None, next_samples: int | None) -> list[str]:
    out = []
    if decision == "accepted":
        out.append(f"mean drop {mean.drop:.2f} points, upper bound {_bound(mean.upper)} <= {policy.mean_margin:g}; "
                   f"every cell's upper bound <= {policy.cell_margin:g}")
    for e in [mean, *cells]:
        margin = policy.mean_margin if e.task is None else policy.cell_margin
        if e.status == "beyond":
            out.append(f"{_name(e)} drop {e.drop:.2f} points, lower bound {_bound(e.lower)} > {margin:g}")
        elif e.status == "open" and decision == "undecided":
            out.append(f"{_name(e)} drop {e.drop:.2f} points, upper bound {_bound(e.upper)} > {margin:g} "
                       f"and lower bound {_bound(e.lower)} <= {margin:g}: not decided")
    if decision == "undecided":
        needed = mean.samples_needed
        expected = ("with a margin of 0 no sample size is expected to decide" if needed is None
                    else f"about {needed} samples per cell are expected to decide")
        if next_look is None:
            out.append(f"look {look} was the plan's last: not accepted ({expected})")
        else:
            out.append(f"continue at look {next_look} of {policy.looks} with {next_samples} samples per cell ({expected})")
    if baseline is not None and not baseline.learning_mattered:
        out.append(f"learning did not matter: the learned mask is not significantly better than a random mask "
                   f"with the same kept counts (gain {baseline.gain:.2f} points, lower bound {_bound(baseline.lower)})")
    return out
