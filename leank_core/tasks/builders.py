"""Task builders: each turns a seeded rng into the :class:`PromptParts` of one sample.

RULER-style families: passkey, needle-in-a-haystack variants, variable tracking (one chain, or
several interleaved chains), common and frequent word extraction, and question answering over
synthetic documents. Builders never size the haystack themselves (``budget.realize`` does).
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Callable, Collection
from dataclasses import asdict, dataclass

from leank_core.tasks.budget import PromptParts, TokenCounter
from leank_core.tasks.families import FamilyPools

TASKS: tuple[str, ...] = (
    "passkey", "niah_single", "niah_multikey", "niah_multivalue", "niah_multiquery",
    "variable_tracking", "common_words", "frequent_words",
    "niah_reworded", "variable_tracking_chains", "qa_documents",
)
TRAIN_TASKS: tuple[str, ...] = ("passkey", "niah_single", "niah_multikey", "niah_multivalue")
ZIPF = 2.0        # frequent_words: word frequencies ~ 1 / rank**ZIPF (as in RULER)


@dataclass(frozen=True)
class Difficulty:
    """How many needles, values and asked words each task has.

    Harder settings make a damaging mask show sooner; the defaults should stay solvable by a
    small model with full attention. Distractor needles share the target's format, so a
    model must match the key, not just spot "a number"; uuids (every other niah_single /
    niah_multikey sample) are harder than numbers.
    """

    needles: int = 4   # keys in niah_multikey (1 asked, the rest distractors) and niah_multiquery
    values: int = 3    # values under the one key of niah_multivalue
    queries: int = 2   # keys asked at once in niah_multiquery
    hops: int = 4      # variable_tracking: one value passed along `hops` assignments
    chains: int = 3    # variable_tracking_chains: chains of `hops` assignments, one asked
    common: int = 5    # common_words: most common words asked for
    frequent: int = 3  # frequent_words: most frequent coded words asked for

    def __post_init__(self) -> None:
        if min(asdict(self).values()) < 1 or max(asdict(self).values()) > 50:
            raise ValueError(f"every Difficulty field must be in [1, 50], got {asdict(self)}")
        if self.queries > self.needles:
            raise ValueError(f"Difficulty.queries ({self.queries}) cannot exceed needles ({self.needles})")



@dataclass(frozen=True)
class TaskInputs(FamilyPools):
    """What a task builder needs besides its rng: the family's wording and pools, and depth stratum."""

    counter: TokenCounter
    difficulty: Difficulty
    index: int
    n: int

    def target_depth(self, rng: random.Random) -> float:
        """Depth of the asked-for needle, stratified by index so a cell spans the context."""
        return ((self.index % self.n) + rng.random()) / self.n

    def items(self, length: int, head: str, tail: str, fmt: str) -> int:
        """Roughly how many list words (each written as ``fmt``) fit around ``head`` and ``tail``."""
        room = length - self.counter.count(head) - self.counter.count(tail)
        sizes = self.counter.counts([fmt.format(w) for w in self.words[:256]])
        return max(1, int(room * len(sizes) / sum(sizes)))


def _number(rng: random.Random, digits: int = 7) -> str:
    return str(rng.randrange(10 ** (digits - 1), 10 ** digits))


def _value(rng: random.Random, kind: str) -> str:
    return _number(rng) if kind == "number" else str(uuid.UUID(int=rng.getrandbits(128), version=4))


def _distinct(rng: random.Random, make: Callable[[], str], n: int, avoid: Collection[str] = ()) -> list[str]:
    out: dict[str, None] = {}
    while len(out) < n:
        item = make()
        if item not in avoid:
            out[item] = None
    return list(out)


def _keys(ctx: TaskInputs, rng: random.Random, n: int) -> list[str]:
    first, second = ctx.phrasing.key_words
    return _distinct(rng, lambda: f"{rng.choice(first)}-{rng.choice(second)}", n)


def _kind(ctx: TaskInputs, task: str) -> str:
    """niah_single / niah_multikey alternate numbers and uuids by index; the others use numbers."""
    return "uuid" if task in ("niah_single", "niah_multikey", "niah_reworded") and ctx.index % 2 else "number"


def _passkey(ctx: TaskInputs, rng: random.Random, task: str, length: int) -> PromptParts:
    p = ctx.phrasing
    value = _number(rng, 5)
    needle = " " + p.passkey_needle.format(value=value)
    return PromptParts(p.passkey_head, [(ctx.target_depth(rng), needle)], "\n\n" + p.passkey_question,
                 [value], [p.passkey_key], ctx.passkey_sentences)


def _niah(ctx: TaskInputs, rng: random.Random, task: str, length: int) -> PromptParts:
    p, kind, d = ctx.phrasing, _kind(ctx, task), ctx.difficulty
    n_keys = {"niah_single": 1, "niah_multivalue": 1}.get(task, d.needles)
    n_values = d.values if task == "niah_multivalue" else 1
    keys = _keys(ctx, rng, n_keys)
    values = _distinct(rng, lambda: _value(rng, kind), n_keys * n_values)
    pairs = [(keys[i // n_values], v) for i, v in enumerate(values)]
    depths = [ctx.target_depth(rng)] + [rng.random() for _ in pairs[1:]]
    fmt = dict(kind=kind, kinds=kind + "s")
    fixed = [(d, " " + p.niah_needle.format(key=k, value=v, **fmt)) for d, (k, v) in zip(depths, pairs)]
    if task == "niah_multivalue":
        asked = keys
        answers = [v for _, (_, v) in sorted(zip(depths, pairs))]  # in order of appearance
    elif task == "niah_multiquery":
        asked = rng.sample(keys, d.queries)
        answers = [dict(pairs)[k] for k in asked]
    else:
        asked, answers = keys[:1], values[:1]
    if len(answers) == 1:
        question = p.niah_question.format(key=asked[0], **fmt)
    else:
        question = p.niah_question_all.format(keys=", ".join(asked), **fmt)
    return PromptParts(p.niah_head.format(**fmt), fixed, "\n\n" + question, answers, asked, ctx.sentences)


def _variable_tracking(ctx: TaskInputs, rng: random.Random, task: str, length: int) -> PromptParts:
    """One chain (``variable_tracking``) or ``chains`` interleaved ones, the first of them asked."""
    p, d = ctx.phrasing, ctx.difficulty
    chains, fixed, values, names = [], [], [], []
    for _ in range(d.chains if task == "variable_tracking_chains" else 1):
        value = _distinct(rng, lambda: _number(rng, 5), 1, values)[0]
        chain = _distinct(rng, lambda: "".join(rng.choices(p.var_letters, k=5)), d.hops + 1, names)
        steps = [p.vt_first.format(name=chain[0], value=value)]
        steps += [p.vt_link.format(name=b, prev=a) for a, b in zip(chain, chain[1:])]
        depths = sorted(rng.random() for _ in steps)  # a chain is stated in order
        fixed += [(depth, f" {s}.") for depth, s in zip(depths, steps)]
        chains.append(chain)
        values.append(value)
        names += chain
    question = p.vt_question.format(value=values[0], n=len(chains[0]))
    return PromptParts(p.vt_head, fixed, "\n\n" + question, chains[0], values[:1], ctx.passkey_sentences)


def _common_words(ctx: TaskInputs, rng: random.Random, task: str, length: int) -> PromptParts:
    """``common`` words repeated ``reps`` times among distractors that each appear fewer times."""
    p, k = ctx.phrasing, ctx.difficulty.common
    vocab = list(ctx.words)
    rng.shuffle(vocab)
    answers, distractors = vocab[:k], vocab[k:]
    question = p.cwe_question.format(n=k)
    reps = max(2, round(0.3 * ctx.items(length, p.cwe_head, question, " {},") / k))  # answers fill ~30%
    fixed = [(rng.random(), f" {w},") for w in answers for _ in range(reps)]
    return PromptParts(p.cwe_head, fixed, "\n\n" + question, answers, [], [f" {w}," for w in distractors], cap=reps - 1)


def _frequent_words(ctx: TaskInputs, rng: random.Random, task: str, length: int) -> PromptParts:
    """Coded text with Zipf word frequencies; the ``frequent`` top words have strictly larger counts."""
    p, k = ctx.phrasing, ctx.difficulty.frequent
    vocab = list(ctx.words)
    rng.shuffle(vocab)
    question = p.fwe_question.format(n=k)
    items = ctx.items(length, p.fwe_head, question, " {}")
    zipf = [1 / r ** ZIPF for r in range(1, len(vocab) + 1)]
    total = sum(zipf)
    counts: list[int] = []
    for w in zipf[:k][::-1]:  # from the k-th word up: strictly increasing
        counts.insert(0, max(round(items * w / total), counts[0] + 1 if counts else 2))
    answers = vocab[:k]
    fixed = [(rng.random(), f" {w}") for w, c in zip(answers, counts) for _ in range(c)]
    return PromptParts(p.fwe_head.format(n=k), fixed, "\n\n" + question, answers, [],
                 [f" {w}" for w in vocab[k:]], weights=zipf[k:], cap=counts[-1] - 1)


def _qa_documents(ctx: TaskInputs, rng: random.Random, task: str, length: int) -> PromptParts:
    """Short documents about made-up people; the question asks one fact from one of them.

    Every document states every attribute (with different values), so the answer is found
    only by matching the person. Distractor documents are the filler, each used once; filler
    sentences are never drawn, only used to close the last gap (documents are too coarse).
    """
    p = ctx.phrasing
    word = lambda: rng.choice(ctx.words).capitalize()  # noqa: E731 - made-up words of the split's syllables
    n_docs = max(8, length // 16)  # more than fit: sizes differ by tokenizer, budget.realize picks
    people = _distinct(rng, lambda: f"{word()} {word()}", n_docs + 1)
    asked = rng.randrange(len(p.qa_facts))
    answer = word()
    answers = [answer] + [_distinct(rng, word, 1, (answer,))[0] for _ in range(n_docs)]  # only the target has it

    def document(name: str, answer: str) -> str:
        facts = [fact.format(name=name, value=answer if a == asked else word()) for a, fact in enumerate(p.qa_facts)]
        body = facts + [s.strip() for s in rng.sample(ctx.sentences, 2)]
        rng.shuffle(body)
        return p.qa_document.format(title=name, body=" ".join(body))

    target = document(people[0], answers[0])
    pool = [document(name, answer) for name, answer in zip(people[1:], answers[1:])]
    question = p.qa_questions[asked].format(name=people[0])
    return PromptParts(p.qa_head, [(ctx.target_depth(rng), target)], "\n\n" + question, answers[:1], people[:1],
                       pool + list(ctx.sentences), weights=[1.0] * len(pool) + [0.0] * len(ctx.sentences), cap=1)


BUILDERS: dict[str, Callable[[TaskInputs, random.Random, str, int], PromptParts]] = {
    "passkey": _passkey, "niah_single": _niah, "niah_multikey": _niah, "niah_multivalue": _niah,
    "niah_multiquery": _niah, "variable_tracking": _variable_tracking,
    "common_words": _common_words, "frequent_words": _frequent_words,
    "niah_reworded": _niah, "variable_tracking_chains": _variable_tracking, "qa_documents": _qa_documents,
}

