"""The training data recipe: what a mask was learned on, stored in its manifest to reproduce it."""

from __future__ import annotations

import math
import random
from dataclasses import asdict, dataclass
from typing import Any

from datasets import Dataset
from transformers import PreTrainedTokenizerBase

from leank_core.tasks.builders import TRAIN_TASKS, Difficulty
from leank_core.tasks.generate import FEATURES, SampleGenerator, check_tasks_and_lengths


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
        check_tasks_and_lengths(self.tasks, [self.min_length, self.max_length])
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

    Same columns as :func:`make_samples`. Data-parallel training draws each step's batch from the
    whole set and splits it over the workers (``leank_core.training.schedule``).
    """
    gen = SampleGenerator(tokenizer, "train", recipe.difficulty)
    tasks = recipe.tasks
    rows = [gen.sample(tasks[i % len(tasks)], length, i, recipe.n_samples, recipe.seed)
            for i, length in enumerate(recipe.lengths())]
    return Dataset.from_list(rows, features=FEATURES)
