"""Mistral: supported when the sliding window is off or covers the whole context."""

from leank_core.adapters.base import Architecture


class MistralArchitecture(Architecture):
    model_types = ("mistral",)

    def check(self) -> None:
        window = getattr(self.config, "sliding_window", None)
        if window is not None and window < self.config.max_position_embeddings:
            raise ValueError(
                f"mistral with sliding_window={window} is not supported: LeanK needs full attention "
                "(set config.sliding_window=None for checkpoints trained without it)"
            )
        super().check()
