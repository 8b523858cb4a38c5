"""Shape presets: published configs with random weights, built where asked, the same every time."""

from __future__ import annotations

import pytest
import torch

from leank_core.adapters import architecture_of
from leank_core.model_source import presets, resolve_model


def test_presets_have_the_published_shapes():
    assert {"llama-3.1-8b", "qwen2.5-7b", "llama-3.1-70b", "tiny-llama"} <= set(presets())
    shapes = {name: architecture_of(resolve_model(name).config()).mask_shape for name in presets()}
    assert shapes["llama-3.1-8b"] == (32, 8, 128) and shapes["qwen2.5-7b"] == (28, 4, 128)
    c = resolve_model("llama-3.1-70b").config()
    assert (c.num_hidden_layers, c.num_attention_heads, c.num_key_value_heads, c.hidden_size, c.intermediate_size,
            c.vocab_size) == (80, 64, 8, 8192, 28672, 128256)


def test_a_preset_builds_random_weights_in_the_dtype_the_same_every_time_without_touching_the_global_rng():
    source = resolve_model("tiny-llama")
    assert source.synthetic and source.model_id == "synthetic/tiny-llama"
    state = torch.random.get_rng_state()
    a, b = source.load(dtype=torch.bfloat16), source.load(dtype=torch.bfloat16)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert all(p.dtype == torch.bfloat16 for p in a.parameters())
    weights = a.model.layers[0].self_attn.q_proj.weight
    assert torch.equal(weights, b.model.layers[0].self_attn.q_proj.weight) and weights.std() > 0


def test_a_preset_has_no_tokenizer_and_a_model_id_can_be_overridden():
    with pytest.raises(ValueError, match="token-id data"):
        resolve_model("tiny-llama").tokenizer()
    assert resolve_model("tiny-llama", "scratch/tiny").model_id == "scratch/tiny"
    assert resolve_model("tiny-llama", "scratch/tiny").synthetic
