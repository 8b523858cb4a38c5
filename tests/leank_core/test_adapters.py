"""Architecture adapters: shape numbers for supported models, one-line errors otherwise."""

from __future__ import annotations

import pytest
from transformers import GPT2Config, LlamaConfig, MistralConfig, Qwen2Config

from leank_core.adapters import architecture_of
from tests.conftest import tiny_model


@pytest.mark.parametrize("arch", ["llama", "qwen2", "mistral"])
def test_supported_architectures_give_the_mask_shape(arch):
    model = tiny_model(arch)
    assert architecture_of(model).mask_shape == (2, 2, 16)
    assert architecture_of(model.config).num_heads == 4


def test_unsupported_architecture_names_the_supported_ones():
    with pytest.raises(ValueError, match=r"unsupported architecture 'gpt2'.*llama.*mistral.*qwen2"):
        architecture_of(GPT2Config())


@pytest.mark.parametrize(
    "config",
    [
        Qwen2Config(use_sliding_window=True, sliding_window=128, max_window_layers=0),
        MistralConfig(sliding_window=4096, max_position_embeddings=32768),
    ],
)
def test_sliding_window_models_are_refused(config):
    with pytest.raises(ValueError, match="sliding"):
        architecture_of(config)


def test_default_head_dim_is_derived():
    assert architecture_of(LlamaConfig(hidden_size=256, num_attention_heads=4)).head_dim == 64
