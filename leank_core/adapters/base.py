"""What LeanK needs to know about a model architecture: its attention shapes, and whether it fits.

LeanK hooks attention where queries and keys are post-RoPE and the KV cache has been
updated: in transformers 5.x that is the ``AttentionInterface`` call every supported
decoder makes (``attention_interface(module, q, k, v, mask, scaling=...)``). An
:class:`Architecture` says whether a family makes that call with full (not sliding-window)
attention on every layer, and gives the shape numbers the mask must match.
"""

from __future__ import annotations

from typing import Any, ClassVar

from leank_core.compat import text_config

ARCHITECTURES: dict[str, type["Architecture"]] = {}


class Architecture:
    """Shape numbers and support checks for one architecture family."""

    model_types: ClassVar[tuple[str, ...]] = ()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for model_type in cls.model_types:
            ARCHITECTURES[model_type] = cls

    def __init__(self, config: Any) -> None:
        self.config = text_config(config)
        self.check()

    @property
    def num_layers(self) -> int:
        return self.config.num_hidden_layers

    @property
    def num_heads(self) -> int:
        return self.config.num_attention_heads

    @property
    def num_kv_heads(self) -> int:
        return getattr(self.config, "num_key_value_heads", None) or self.num_heads

    @property
    def head_dim(self) -> int:
        return getattr(self.config, "head_dim", None) or self.config.hidden_size // self.num_heads

    @property
    def mask_shape(self) -> tuple[int, int, int]:
        return (self.num_layers, self.num_kv_heads, self.head_dim)

    def check(self) -> None:
        """Raise ValueError if this configuration cannot run LeanK (e.g. sliding windows)."""
        layer_types = getattr(self.config, "layer_types", None) or []
        if any(t != "full_attention" for t in layer_types):
            raise ValueError(
                f"{self.config.model_type} with sliding-window layers is not supported: LeanK needs full attention"
            )


def architecture_of(config_or_model: Any) -> Architecture:
    """The Architecture of a model or config; a one-line error for unsupported ones."""
    config = text_config(config_or_model)
    model_type = getattr(config, "model_type", None)
    if model_type not in ARCHITECTURES:
        raise ValueError(
            f"unsupported architecture {model_type!r}: LeanK supports {', '.join(sorted(ARCHITECTURES))}"
        )
    return ARCHITECTURES[model_type](config)
