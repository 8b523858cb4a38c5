"""Llama (and Llama-shaped GGUF models such as SmolLM2): full attention on every layer."""

from leank_core.adapters.base import Architecture


class LlamaArchitecture(Architecture):
    model_types = ("llama",)
