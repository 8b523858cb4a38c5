"""The LeanK decode engine: static storage, whole-model decode steps replayed from CUDA graphs (see ``engine.py``)."""

from leank_core.engine.engine import LeanKEngine

__all__ = ["LeanKEngine"]
