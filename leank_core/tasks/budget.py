"""Token budgeting: fill a prompt to a target length without tokenizing it over and over.

Every reusable piece of text (filler sentence, word) is tokenized once, pieces are
accumulated by their counts, and the whole prompt is tokenized only to confirm (and, rarely,
adjust) its length. A prompt has between ``length - LENGTH_TOLERANCE`` and ``length`` tokens.
"""

from __future__ import annotations

import itertools
import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from transformers import PreTrainedTokenizerBase

LENGTH_TOLERANCE = 16  # a prompt is at most this many tokens shorter than its target length


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
class PromptParts:
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


def realize(draft: PromptParts, task: str, length: int, counter: TokenCounter, rng: random.Random) -> tuple[str, list[int]]:
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

