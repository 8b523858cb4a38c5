"""Seeded synthetic long-context tasks (RULER-style) as ``datasets.Dataset``.

One generator serves both uses of synthetic data: the *train* split feeds mask learning and
the *eval* split is the held-out benchmark of the validation gate. The splits share task
logic but nothing a model could memorise: each has its own phrasings, haystack text, key and
word vocabularies, and seed stream, so no eval prompt and no (key, value) pair can equal a
training one. The eval split follows RULER's wording (niah, variable tracking, common and
frequent words; passkey in RULER's repeated noise); training uses paraphrases.

Prompts are completion style and end right where the answer starts ("... The pass key is"):
small models retrieve well with plain completions, while chat templates fail beyond ~2K.

Context length is met by token budgeting, not by trial: every reusable piece of text
(filler sentence, word) is tokenized once, pieces are accumulated by their counts, and the
whole prompt is tokenized only to confirm (and, rarely, adjust) its length. A sample's
``input_ids`` has between ``length - LENGTH_TOLERANCE`` and ``length`` tokens.
"""

from __future__ import annotations

import itertools
import math
import random
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from datasets import Dataset, Features, List, Value
from transformers import PreTrainedTokenizerBase

TASKS: tuple[str, ...] = (
    "passkey", "niah_single", "niah_multikey", "niah_multivalue", "niah_multiquery",
    "variable_tracking", "common_words", "frequent_words",
)
TRAIN_TASKS: tuple[str, ...] = ("passkey", "niah_single", "niah_multikey", "niah_multivalue")
SPLITS = ("train", "eval")
LENGTH_TOLERANCE = 16  # a prompt is at most this many tokens shorter than its target length

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
    common: int = 5    # common_words: most common words asked for
    frequent: int = 3  # frequent_words: most frequent coded words asked for

    def __post_init__(self) -> None:
        if min(asdict(self).values()) < 1 or max(asdict(self).values()) > 50:
            raise ValueError(f"every Difficulty field must be in [1, 50], got {asdict(self)}")
        if self.queries > self.needles:
            raise ValueError(f"Difficulty.queries ({self.queries}) cannot exceed needles ({self.needles})")


FEATURES = Features({
    "task": Value("string"), "length": Value("int64"), "index": Value("int64"), "prompt": Value("string"),
    "answers": List(Value("string")), "keys": List(Value("string")),
    "input_ids": List(Value("int64")), "answer_ids": List(Value("int64")),
})


# ---------------------------------------------------------------------------------------
# Split vocabularies: phrasings, haystack families, keys and words (disjoint by construction)
# ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Phrasing:
    """Everything a split says. ``{kind}`` is "number" or "uuid"; ``{kinds}`` its plural."""

    passkey_head: str
    passkey_needle: str
    passkey_question: str
    passkey_key: str
    niah_head: str
    niah_needle: str
    niah_question: str        # one value for one key
    niah_question_all: str    # several values ({keys} may list several keys)
    vt_head: str
    vt_first: str
    vt_link: str
    vt_question: str
    cwe_head: str
    cwe_question: str
    fwe_head: str
    fwe_question: str
    key_words: tuple[tuple[str, ...], tuple[str, ...]]  # niah keys are "first-second"
    var_letters: str                                    # variable_tracking names
    syllables: tuple[str, ...]                          # coded / list words
    passkey_haystack: tuple[str, ...]                   # sentences, or templates with {slots}
    haystack: tuple[str, ...]
    slots: dict[str, tuple[str, ...]] = field(default_factory=dict)


def _syllables(parity: int) -> tuple[str, ...]:
    """Consonant-vowel syllables split by parity: words of the two splits never coincide."""
    return tuple(c + v for i, c in enumerate("bdfgklmnprstvz") for j, v in enumerate("aeiou") if (i + j) % 2 == parity)


_TRAIN_HAYSTACK = (
    "The {adj} {animal} {verb} near the {place}.",
    "In {season} the {animal}s {verb} along the {place}.",
    "Every {time}, a {adj} {animal} {verb} by the {place}.",
    "Old farmers say the {place} is {adj} in {season}.",
    "Nobody knew why the {animal} {verb} so often.",
    "A {adj} wind moved over the {place}.",
    "Rain fell.", "Birds sang.", "It was calm.", "Time passed slowly.",
)
_TRAIN_SLOTS = {
    "adj": ("quiet", "green", "muddy", "golden", "sleepy", "wild", "tall", "gentle", "dusty", "bright", "cold", "warm"),
    "animal": ("goat", "sparrow", "fox", "heron", "rabbit", "mule", "badger", "trout", "owl", "pony", "lamb", "crow"),
    "verb": ("rested", "wandered", "grazed", "waited", "drank", "hid", "slept", "ran", "stood", "called"),
    "place": ("meadow", "riverbank", "orchard", "hillside", "barn", "pond", "valley", "hedge", "field", "creek"),
    "season": ("spring", "summer", "autumn", "winter"),
    "time": ("morning", "evening", "dawn", "dusk", "night"),
}
_EVAL_ESSAY = (
    "The {adj} {thing} was sold at the {venue} for a fair price.",
    "On {day} the {team} met at the {venue} to discuss the {thing}.",
    "According to the {team}, the new {thing} seemed {adj}.",
    "Most {team}s agree that a {adj} {thing} is worth the effort.",
    "The {venue} closed early because the {thing} had arrived {adj}.",
    "Founders often learn this too late.",
    "Prices rose.", "Nothing changed.", "The shops opened.", "Work went on.",
)
_EVAL_SLOTS = {
    "adj": ("expensive", "modern", "broken", "useful", "strange", "popular", "costly", "simple", "rare", "heavy", "clever", "cheap"),
    "thing": ("laptop", "printer", "contract", "startup", "invoice", "engine", "website", "ticket", "product", "gadget"),
    "venue": ("market", "office", "station", "library", "factory", "harbor", "mall", "bank", "studio", "warehouse"),
    "team": ("investor", "engineer", "banker", "designer", "manager", "clerk", "founder", "lawyer"),
    "day": ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday"),
}
_RULER_NOISE = (
    "The grass is green.", "The sky is blue.", "The sun is yellow.", "Here we go.", "There and back again.",
)

PHRASINGS: dict[str, Phrasing] = {
    "train": Phrasing(
        passkey_head="A secret access key is written somewhere in the notes below. Find it and keep it in mind.\n\n",
        passkey_needle="The access key is {value}. Keep it in mind: the access key is {value}.",
        passkey_question="What is the access key? The access key is",
        passkey_key="access key",
        niah_head="Some {kinds} are stored in the notes below, each under a name. Remember them.\n\n",
        niah_needle="The {kind} stored under {key} is {value}.",
        niah_question="Which {kind} is stored under {key}? The {kind} stored under {key} is",
        niah_question_all="Which {kinds} are stored under {keys}? The {kinds} stored under {keys} are",
        vt_head="Follow the assignments hidden in the notes below.\n\n",
        vt_first="Set {name} to {value}",
        vt_link="Set {name} to {prev}",
        vt_question="Which variables end up holding {value}? The {n} variables holding {value} are:",
        cwe_head="Here is a list of words; some of them are repeated many times.\n\nWords:",
        cwe_question="Which {n} words occur most often in the list? The {n} words that occur most often are:",
        fwe_head="Here is a text in a secret code; count how often each coded word is used.\n\nCode:",
        fwe_question="Which {n} coded words are used most often in the text? The {n} most used coded words are:",
        key_words=(
            ("amber", "brave", "calm", "dizzy", "eager", "fuzzy", "giddy", "happy", "icy", "jolly", "kind", "lucky",
             "merry", "noble", "odd", "proud", "rapid", "shy", "tidy", "vivid"),
            ("acorn", "beetle", "cedar", "daisy", "elm", "finch", "gecko", "hazel", "iris", "juniper", "koala",
             "lily", "maple", "newt", "otter", "poppy", "quail", "robin", "spruce", "tulip"),
        ),
        var_letters="abcdefghijklmnopqrstuvwxyz",
        syllables=_syllables(0),
        passkey_haystack=_TRAIN_HAYSTACK,
        haystack=_TRAIN_HAYSTACK,
        slots=_TRAIN_SLOTS,
    ),
    "eval": Phrasing(
        passkey_head=("There is an important info hidden inside a lot of irrelevant text. Find it and memorize it. "
                      "I will quiz you about the important information there.\n\n"),
        passkey_needle="The pass key is {value}. Remember it. {value} is the pass key.",
        passkey_question="What is the pass key? The pass key is",
        passkey_key="pass key",
        niah_head=("Some special magic {kinds} are hidden within the following text. Make sure to memorize it. "
                   "I will quiz you about the {kinds} afterwards.\n\n"),
        niah_needle="One of the special magic {kinds} for {key} is: {value}.",
        niah_question=("What is the special magic {kind} for {key} mentioned in the provided text? "
                       "The special magic {kind} for {key} mentioned in the provided text is"),
        niah_question_all=("What are all the special magic {kinds} for {keys} mentioned in the provided text? "
                           "The special magic {kinds} for {keys} mentioned in the provided text are"),
        vt_head="Memorize and track the chain(s) of variable assignment hidden in the following text.\n\n",
        vt_first="VAR {name} = {value}",
        vt_link="VAR {name} = VAR {prev}",
        vt_question=("Question: Find all variables that are assigned the value {value} in the text above. "
                     "Answer: According to the chain(s) of variable assignment in the text above, "
                     "{n} variables are assigned the value {value}, they are:"),
        cwe_head=("Below is a list of words. In these words, some appear more often than others. "
                  "Memorize the ones that appear most often.\n\n"),
        cwe_question=("Question: What are the {n} most common words in the above list? "
                      "Answer: The top {n} words that appear most often in the list are:"),
        fwe_head=("Read the following coded text and track the frequency of each coded word. "
                  "Find the {n} most frequently appeared coded words.\n\n"),
        fwe_question=("Question: What are the {n} most frequently appeared words in the above coded text? "
                      "Answer: According to the coded text above, the {n} most frequently appeared words are:"),
        key_words=(
            ("ancient", "bitter", "crimson", "distant", "elegant", "fragile", "grumpy", "hollow", "ivory", "jagged",
             "lavish", "mellow", "nervous", "opaque", "placid", "rustic", "solemn", "tender", "vacant", "wistful"),
            ("anchor", "basket", "candle", "drawer", "engine", "faucet", "goblet", "helmet", "kettle", "ladder",
             "mirror", "napkin", "pillow", "quiver", "saddle", "teapot", "violin", "wallet", "zipper", "bucket"),
        ),
        var_letters="ABCDEFGHIJKLMNOPQRSTUVWXYZ",
        syllables=_syllables(1),
        passkey_haystack=_RULER_NOISE,
        haystack=_EVAL_ESSAY,
        slots=_EVAL_SLOTS,
    ),
}

POOL_SENTENCES = 512   # haystack sentences per family, drawn from the templates once per split
POOL_WORDS = 4096      # coded / list words per split


def _sentences(templates: tuple[str, ...], slots: dict[str, tuple[str, ...]], name: str) -> tuple[str, ...]:
    """A fixed pool of distinct filler sentences (fixed templates appear as they are)."""
    rng = random.Random(f"leank-pool/{name}")
    pool = {t for t in templates if "{" not in t}
    templated = [t for t in templates if "{" in t]
    for _ in range(20 * POOL_SENTENCES):
        if len(pool) >= POOL_SENTENCES or not templated:
            break
        pool.add(rng.choice(templated).format(**{k: rng.choice(v) for k, v in slots.items()}))
    return tuple(sorted(pool))


def _words(syllables: tuple[str, ...], name: str) -> tuple[str, ...]:
    rng = random.Random(f"leank-pool/{name}")
    words: dict[str, None] = {}
    while len(words) < POOL_WORDS:
        words["".join(rng.choice(syllables) for _ in range(3))] = None
    return tuple(words)


# ---------------------------------------------------------------------------------------
# Token budgeting
# ---------------------------------------------------------------------------------------

class TokenCounter:
    """Token counts of text pieces under one tokenizer; each distinct piece is tokenized once.

    A piece carries its own leading separator (" word", " Sentence."), so the count of a
    concatenation is close to the sum of counts; the full prompt is tokenized only to check.
    """

    def __init__(self, tokenizer: PreTrainedTokenizerBase):
        self.tokenizer = tokenizer
        self.bos = [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []
        self._counts: dict[str, int] = {}

    def ids(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"]

    def prompt_ids(self, text: str) -> list[int]:
        return self.bos + self.ids(text)

    def count(self, piece: str) -> int:
        return self.counts([piece])[0]

    def counts(self, pieces: Sequence[str]) -> list[int]:
        new = list(dict.fromkeys(p for p in pieces if p not in self._counts))
        if new:
            encoded = self.tokenizer(new, add_special_tokens=False, verbose=False)["input_ids"]
            self._counts.update(zip(new, map(len, encoded)))
        return [self._counts[p] for p in pieces]


class Filler:
    """Draws removable context pieces from a pool without changing the answer.

    ``cap`` bounds how often one piece may appear (distractor words must stay rarer than the
    answer words); ``weights`` skews draws (Zipf for coded text).
    """

    def __init__(self, pool: Sequence[str], counter: TokenCounter, rng: random.Random,
                 weights: Sequence[float] | None = None, cap: int | None = None):
        self.pool, self.rng, self.cap = list(pool), rng, cap
        self.cum = None if weights is None else list(itertools.accumulate(weights))
        self.sizes = dict(zip(self.pool, counter.counts(self.pool)))
        self.by_size = sorted(self.pool, key=self.sizes.__getitem__, reverse=True)
        self.used: Counter[str] = Counter()

    def allowed(self, piece: str) -> bool:
        return self.cap is None or self.used[piece] < self.cap

    def draw(self) -> str | None:
        for _ in range(64):
            piece = self.rng.choices(self.pool, cum_weights=self.cum)[0]
            if self.allowed(piece):
                return piece
        return None

    def fitting(self, room: int) -> str | None:
        """The largest allowed piece that fits in ``room`` tokens (closes the last gap)."""
        return next((p for p in self.by_size if self.sizes[p] <= room and self.allowed(p)), None)

    def fill(self, room: int) -> list[str]:
        """Pieces totalling at most ``room`` tokens, leaving less than the smallest piece free."""
        pieces = []
        while (piece := self.draw()) is not None and self.sizes[piece] <= room:
            pieces.append(self._take(piece))
            room -= self.sizes[piece]
        while (piece := self.fitting(room)) is not None:
            pieces.append(self._take(piece))
            room -= self.sizes[piece]
        return pieces

    def drop(self, pieces: list[str], excess: int) -> None:
        """Remove pieces from the end until at least ``excess`` tokens are gone."""
        while excess > 0 and pieces:
            piece = pieces.pop()
            self.used[piece] -= 1
            excess -= self.sizes[piece]

    def _take(self, piece: str) -> str:
        self.used[piece] += 1
        return piece


@dataclass
class Draft:
    """A sample before its haystack is sized: fixed pieces at relative depths, filler around them."""

    head: str
    fixed: list[tuple[float, str]]   # (depth in [0, 1], piece): needles or answer-word copies
    tail: str
    answers: list[str]
    keys: list[str]
    pool: Sequence[str]
    weights: Sequence[float] | None = None
    cap: int | None = None

    def compose(self, filler: list[str]) -> str:
        placed = sorted((round(depth * len(filler)), i) for i, (depth, _) in enumerate(self.fixed))
        parts, j = [self.head], 0
        for pos in range(len(filler) + 1):
            while j < len(placed) and placed[j][0] == pos:
                parts.append(self.fixed[placed[j][1]][1])
                j += 1
            if pos < len(filler):
                parts.append(filler[pos])
        parts.append(self.tail)
        return "".join(parts)


def realize(draft: Draft, task: str, length: int, counter: TokenCounter, rng: random.Random) -> tuple[str, list[int]]:
    """Fill ``draft`` to ``length`` tokens: budget by piece counts, then confirm on the prompt."""
    fixed = len(counter.prompt_ids(draft.head)) + counter.count(draft.tail) + sum(counter.counts([p for _, p in draft.fixed]))
    if fixed + LENGTH_TOLERANCE > length:
        raise ValueError(f"length {length} is too short for task {task!r}: its fixed text takes {fixed} tokens; use >= {fixed + 64}")
    filler = Filler(draft.pool, counter, rng, draft.weights, draft.cap)
    pieces = filler.fill(length - fixed)
    for _ in range(6):
        prompt = draft.compose(pieces)
        ids = counter.prompt_ids(prompt)
        gap = length - len(ids)
        if 0 <= gap <= LENGTH_TOLERANCE:
            break
        if gap < 0:
            filler.drop(pieces, -gap)
        else:
            pieces += filler.fill(gap)
    else:
        raise RuntimeError(f"could not fit task {task!r} to {length} tokens (last try: {len(ids)}); please report this tokenizer")
    return prompt, ids


# ---------------------------------------------------------------------------------------
# Tasks: each builds a Draft from a seeded rng
# ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Context:
    """What a task builder needs besides its rng: the split's wording and pools, and depth stratum."""

    phrasing: Phrasing
    sentences: tuple[str, ...]
    passkey_sentences: tuple[str, ...]
    words: tuple[str, ...]
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


def _distinct(rng: random.Random, make: Callable[[], str], n: int) -> list[str]:
    out: dict[str, None] = {}
    while len(out) < n:
        out[make()] = None
    return list(out)


def _keys(ctx: Context, rng: random.Random, n: int) -> list[str]:
    first, second = ctx.phrasing.key_words
    return _distinct(rng, lambda: f"{rng.choice(first)}-{rng.choice(second)}", n)


def _kind(ctx: Context, task: str) -> str:
    """niah_single / niah_multikey alternate numbers and uuids by index; the others use numbers."""
    return "uuid" if task in ("niah_single", "niah_multikey") and ctx.index % 2 else "number"


def _passkey(ctx: Context, rng: random.Random, task: str, length: int) -> Draft:
    p = ctx.phrasing
    value = _number(rng, 5)
    needle = " " + p.passkey_needle.format(value=value)
    return Draft(p.passkey_head, [(ctx.target_depth(rng), needle)], "\n\n" + p.passkey_question,
                 [value], [p.passkey_key], ctx.passkey_sentences)


def _niah(ctx: Context, rng: random.Random, task: str, length: int) -> Draft:
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
    return Draft(p.niah_head.format(**fmt), fixed, "\n\n" + question, answers, asked, ctx.sentences)


def _variable_tracking(ctx: Context, rng: random.Random, task: str, length: int) -> Draft:
    p = ctx.phrasing
    value = _number(rng, 5)
    names = _distinct(rng, lambda: "".join(rng.choices(p.var_letters, k=5)), ctx.difficulty.hops + 1)
    steps = [p.vt_first.format(name=names[0], value=value)]
    steps += [p.vt_link.format(name=b, prev=a) for a, b in zip(names, names[1:])]
    depths = sorted(rng.random() for _ in steps)  # a chain is stated in order
    fixed = [(d, f" {s}.") for d, s in zip(depths, steps)]
    question = p.vt_question.format(value=value, n=len(names))
    return Draft(p.vt_head, fixed, "\n\n" + question, names, [value], ctx.passkey_sentences)


def _common_words(ctx: Context, rng: random.Random, task: str, length: int) -> Draft:
    """``common`` words repeated ``reps`` times among distractors that each appear fewer times."""
    p, k = ctx.phrasing, ctx.difficulty.common
    vocab = list(ctx.words)
    rng.shuffle(vocab)
    answers, distractors = vocab[:k], vocab[k:]
    question = p.cwe_question.format(n=k)
    reps = max(2, round(0.3 * ctx.items(length, p.cwe_head, question, " {},") / k))  # answers fill ~30%
    fixed = [(rng.random(), f" {w},") for w in answers for _ in range(reps)]
    return Draft(p.cwe_head, fixed, "\n\n" + question, answers, [], [f" {w}," for w in distractors], cap=reps - 1)


def _frequent_words(ctx: Context, rng: random.Random, task: str, length: int) -> Draft:
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
    return Draft(p.fwe_head.format(n=k), fixed, "\n\n" + question, answers, [],
                 [f" {w}" for w in vocab[k:]], weights=zipf[k:], cap=counts[-1] - 1)


_BUILDERS: dict[str, Callable[[Context, random.Random, str, int], Draft]] = {
    "passkey": _passkey, "niah_single": _niah, "niah_multikey": _niah, "niah_multivalue": _niah,
    "niah_multiquery": _niah, "variable_tracking": _variable_tracking,
    "common_words": _common_words, "frequent_words": _frequent_words,
}


# ---------------------------------------------------------------------------------------
# Public API
# ---------------------------------------------------------------------------------------

class _Generator:
    """Samples of one split under one tokenizer; pools are built and tokenized once."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase, split: str, difficulty: Difficulty):
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}: use 'train' or 'eval'")
        self.split, self.counter, self.difficulty = split, TokenCounter(tokenizer), difficulty
        p = PHRASINGS[split]
        self.phrasing = p
        self.sentences = tuple(" " + s for s in _sentences(p.haystack, p.slots, f"{split}/haystack"))
        self.passkey_sentences = tuple(" " + s for s in _sentences(p.passkey_haystack, p.slots, f"{split}/passkey"))
        self.words = _words(p.syllables, f"{split}/words")

    def sample(self, task: str, length: int, index: int, n: int, seed: int) -> dict[str, Any]:
        rng = random.Random(f"leank-data/{self.split}/{seed}/{task}/{length}/{index}")
        ctx = Context(self.phrasing, self.sentences, self.passkey_sentences, self.words, self.counter, self.difficulty, index, n)
        draft = _BUILDERS[task](ctx, rng, task, length)
        prompt, ids = realize(draft, task, length, self.counter, rng)
        return {
            "task": task, "length": length, "index": index, "prompt": prompt,
            "answers": draft.answers, "keys": draft.keys, "input_ids": ids,
            "answer_ids": self.counter.ids(" " + ", ".join(draft.answers) + "."),
        }


def _check(tasks: Sequence[str], lengths: Sequence[int]) -> None:
    for task in tasks:
        if task not in TASKS:
            raise ValueError(f"unknown task {task!r}: choose from {', '.join(TASKS)}")
    for length in lengths:
        if isinstance(length, bool) or not isinstance(length, int) or length <= 0:
            raise ValueError(f"bad length {length!r}: lengths are positive token counts (int)")


def make_samples(
    tokenizer: PreTrainedTokenizerBase,
    split: Literal["train", "eval"],
    tasks: Sequence[str],
    lengths: Sequence[int],
    n_per_cell: int,
    seed: int,
    *,
    difficulty: Difficulty = Difficulty(),
) -> Dataset:
    """``n_per_cell`` samples for every task x length, deterministic in (split, seed).

    Columns: ``task``, ``length`` (target tokens), ``index`` (within the cell), ``prompt``
    (instructions + haystack + question, ending where the answer starts), ``answers`` (the
    expected strings, scored with :func:`score`), ``keys`` (what the question asks about:
    niah keys, the passkey's name, the tracked value; empty for word-frequency tasks),
    ``input_ids`` (the prompt tokenized with ``add_special_tokens=False``, prefixed by
    ``tokenizer.bos_token_id`` when the tokenizer has one; ``length - LENGTH_TOLERANCE <=
    len(input_ids) <= length``) and ``answer_ids`` (the gold continuation
    ``" " + ", ".join(answers) + "."``, no special tokens).
    Each sample has its own rng keyed by (split, seed, task, length, index), so a cell does
    not change when other tasks or lengths are added; the asked needle's depth is stratified
    over the cell (sample ``i`` of ``n_per_cell`` sits in the ``i``-th slice of the context),
    so changing ``n_per_cell`` moves needles. ``difficulty`` sets needle and answer counts.
    """
    _check(tasks, lengths)
    if n_per_cell < 1:
        raise ValueError(f"n_per_cell must be >= 1, got {n_per_cell}")
    gen = _Generator(tokenizer, split, difficulty)
    rows = [gen.sample(t, length, i, n_per_cell, seed) for t in tasks for length in lengths for i in range(n_per_cell)]
    return Dataset.from_list(rows, features=FEATURES)


def score(prediction: str, answers: Sequence[str]) -> float:
    """RULER's string_match_all: the fraction of expected strings found in ``prediction`` (case-insensitive)."""
    if not answers:
        raise ValueError("score needs at least one expected answer")
    text = prediction.lower()
    return sum(a.lower() in text for a in answers) / len(answers)


@dataclass(frozen=True)
class DataRecipe:
    """How training samples are made; stored in the mask manifest so a mask can be reproduced."""

    tasks: tuple[str, ...] = TRAIN_TASKS
    min_length: int = 1024
    max_length: int = 4096
    n_samples: int = 256
    seed: int = 0
    difficulty: Difficulty = Difficulty()

    def __post_init__(self) -> None:
        object.__setattr__(self, "tasks", tuple(self.tasks))
        if isinstance(self.difficulty, dict):  # as read back from JSON
            unknown = set(self.difficulty) - set(Difficulty.__dataclass_fields__)
            if unknown:
                raise ValueError(f"unknown Difficulty fields {sorted(unknown)}: expected {sorted(Difficulty.__dataclass_fields__)}")
            object.__setattr__(self, "difficulty", Difficulty(**self.difficulty))
        _check(self.tasks, [self.min_length, self.max_length])
        if not self.tasks:
            raise ValueError("DataRecipe.tasks is empty: name at least one of " + ", ".join(TRAIN_TASKS))
        if self.min_length > self.max_length:
            raise ValueError(f"min_length {self.min_length} > max_length {self.max_length}")
        if self.n_samples < 1:
            raise ValueError(f"n_samples must be >= 1, got {self.n_samples}")

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "tasks": list(self.tasks)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "DataRecipe":
        unknown = set(data) - {f for f in cls.__dataclass_fields__}
        if unknown:
            raise ValueError(f"unknown DataRecipe fields {sorted(unknown)}: expected {sorted(cls.__dataclass_fields__)}")
        return cls(**data)

    def lengths(self) -> list[int]:
        """Per-sample target lengths, log-uniform in [min_length, max_length] (seeded)."""
        rng = random.Random(f"leank-recipe/{self.seed}")
        lo, hi = math.log(self.min_length), math.log(self.max_length)
        return [min(self.max_length, max(self.min_length, round(math.exp(rng.uniform(lo, hi))))) for _ in range(self.n_samples)]


def make_training_samples(tokenizer: PreTrainedTokenizerBase, recipe: DataRecipe) -> Dataset:
    """The training set of ``recipe`` (split "train"): tasks cycled, lengths log-uniform.

    Same columns as :func:`make_samples`. For data-parallel training give each worker
    ``dataset.shard(num_shards=world_size, index=rank)`` (``datasets.Dataset.shard``).
    """
    gen = _Generator(tokenizer, "train", recipe.difficulty)
    tasks = recipe.tasks
    rows = [gen.sample(tasks[i % len(tasks)], length, i, recipe.n_samples, recipe.seed)
            for i, length in enumerate(recipe.lengths())]
    return Dataset.from_list(rows, features=FEATURES)
