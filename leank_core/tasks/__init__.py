"""Seeded synthetic long-context tasks (RULER-style) as ``datasets.Dataset``.

One room per concern: ``phrasings`` (what each split says), ``families`` (the eval split's
several wordings), ``budget`` (sizing a prompt to a token length), ``builders`` (one function
per task family), ``generate`` (samples of a split), ``cache`` (generated sets on disk),
``eval_data`` (users' own sets) and ``recipe`` (the training recipe stored in a mask's manifest).
"""

from leank_core.tasks.budget import LENGTH_TOLERANCE
from leank_core.tasks.builders import TASKS, TRAIN_TASKS, Difficulty
from leank_core.tasks.cache import cached_samples
from leank_core.tasks.eval_data import load_eval_data
from leank_core.tasks.families import FAMILIES, FAMILY_TASKS
from leank_core.tasks.generate import FEATURES, SPLITS, SampleGenerator, make_samples
from leank_core.tasks.recipe import DataRecipe, make_training_samples

__all__ = [
    "FAMILIES", "FAMILY_TASKS", "FEATURES", "LENGTH_TOLERANCE", "SPLITS", "TASKS", "TRAIN_TASKS", "DataRecipe",
    "Difficulty", "SampleGenerator", "cached_samples", "load_eval_data", "make_samples", "make_training_samples",
]
