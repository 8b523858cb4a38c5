"""model_hash: deterministic, dtype/reload independent, sensitive to any weight or shape change."""

from __future__ import annotations

import copy
import gc
import weakref

import pytest
import torch

from leank_core.model_hash import IN_FLIGHT, hash_weights, model_hash
from tests.conftest import tiny_model


def test_hash_is_stable_across_rebuilds_and_dtypes(tmp_path):
    a = tiny_model(seed=1)
    b = tiny_model(seed=1)
    assert model_hash(a) == model_hash(b)
    assert model_hash(copy.deepcopy(a).to(torch.float64)) == model_hash(a)
    assert model_hash(copy.deepcopy(a).to(torch.bfloat16)) == model_hash(a)  # GPU bf16 == CPU fp32 load
    a.save_pretrained(tmp_path)
    reloaded = type(a).from_pretrained(tmp_path)
    assert model_hash(reloaded) == model_hash(a)


def test_any_weight_change_changes_the_hash():
    a = tiny_model(seed=1)
    before = model_hash(a)
    with torch.no_grad():
        a.model.layers[1].self_attn.k_proj.weight[3, 5] += 1e-3
    assert model_hash(a) != before


def test_architecture_fields_are_covered():
    a = tiny_model(seed=1)
    params = list(a.named_parameters())
    other = copy.deepcopy(a.config)
    other.rms_norm_eps = 1e-3
    assert hash_weights(a.config, params) != hash_weights(other, params)


def test_hash_streams_named_tensors_in_any_order():
    a = tiny_model(seed=1)
    assert hash_weights(a.config, reversed(list(a.named_parameters()))) == model_hash(a)


def test_hash_holds_a_bounded_number_of_streamed_tensors():
    """A gathered ZeRO-3 stream is hashed without keeping every tensor alive at once."""
    a = tiny_model(seed=1)
    alive: list[weakref.ref] = []
    most = 0

    def stream():
        nonlocal most
        for name, p in a.named_parameters():
            gc.collect()
            most = max(most, sum(r() is not None for r in alive))
            copy_ = p.detach().clone()  # what a gather hands over: a fresh tensor per parameter
            alive.append(weakref.ref(copy_))
            yield name, copy_
            del copy_

    assert hash_weights(a.config, stream()) == model_hash(a)
    assert len(alive) > IN_FLIGHT + 2
    assert most <= IN_FLIGHT


@pytest.mark.parametrize("stored", [torch.bfloat16, torch.float16])
def test_every_load_of_a_half_precision_checkpoint_hashes_alike(tmp_path, stored):
    """fp16, bf16 and fp32 loads of one bf16- or fp16-stored checkpoint hash the same, also for values
    fp16 holds only as subnormals (< 2^-14) or not at all (> 65504: bf16 only)."""
    model = tiny_model(seed=1)
    with torch.no_grad():
        w = model.model.layers[0].self_attn.k_proj.weight
        w[0, :4] = torch.tensor([3e-6, -7e-8, 1e-9, 5e-5])
        if stored is torch.bfloat16:
            w[1, 0] = 1e5
    model.to(stored).save_pretrained(tmp_path)
    hashes = {dtype: model_hash(type(model).from_pretrained(tmp_path, dtype=dtype))
              for dtype in (torch.float16, torch.bfloat16, torch.float32)}
    assert len(set(hashes.values())) == 1, hashes
