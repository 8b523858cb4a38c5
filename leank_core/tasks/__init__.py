"""Seeded synthetic long-context tasks (RULER-style) as ``datasets.Dataset``.

One room per concern: ``phrasings`` (what each split says), ``budget`` (sizing a prompt to a
token length), ``builders`` (one function per task family), ``generate`` (samples of a split)
and ``recipe`` (the training recipe stored in a mask's manifest).
"""

from leank_core.tasks.budget import LENGTH_TOLERANCE
from leank_core.tasks.builders import TASKS, TRAIN_TASKS, Difficulty
from leank_core.tasks.generate import FEATURES, SPLITS, SampleGenerator, make_samples
from leank_core.tasks.recipe import DataRecipe, make_training_samples

__all__ = [
    "FEATURES", "LENGTH_TOLERANCE", "SPLITS", "TASKS", "TRAIN_TASKS", "DataRecipe", "Difficulty",
    "SampleGenerator", "make_samples", "make_training_samples",
]
