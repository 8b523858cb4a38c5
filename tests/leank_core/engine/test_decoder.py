"""The engine's Decoder leaves the model it runs working as before, and refuses models it cannot compute."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM

from leank_core.engine.decoder import Decoder
from tests.conftest import tiny_model


def test_the_model_forward_and_save_pretrained_are_unchanged_by_the_engine_decoder(tmp_path):
    model = tiny_model()
    ids = torch.randint(0, model.config.vocab_size, (2, 7), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = model(ids).logits
        Decoder(model)
        torch.testing.assert_close(model(ids).logits, expected)
    model.save_pretrained(tmp_path)
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path)
    with torch.no_grad():
        torch.testing.assert_close(reloaded(ids).logits, expected)


def test_a_model_whose_mlp_is_not_silu_gated_is_refused_with_one_line():
    with pytest.raises(ValueError, match="hidden_act='gelu' is not the SiLU-gated MLP"):
        Decoder(tiny_model(hidden_act="gelu"))
