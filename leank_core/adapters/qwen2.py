"""Qwen2 / Qwen2.5: supported when ``use_sliding_window`` is off (the released default)."""

from leank_core.adapters.base import Architecture


class Qwen2Architecture(Architecture):
    model_types = ("qwen2",)

    def check(self) -> None:
        if getattr(self.config, "use_sliding_window", False):
            raise ValueError("qwen2 with use_sliding_window=True is not supported: LeanK needs full attention")
        super().check()
