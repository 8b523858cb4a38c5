"""model_hash: deterministic, dtype/reload independent, sensitive to any weight or shape change."""

from __future__ import annotations

import copy
import gc
import hashlib
import sys
import weakref
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from leank_core.model_hash import ARCH_FIELDS, IN_FLIGHT, _tensor_digest, hash_weights, model_hash
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


def test_every_weight_changes_the_hash_final_norm_included():
    """A mask must never follow a fine-tune: one changed value in any parameter gives another digest."""
    a = tiny_model(seed=1)
    before = model_hash(a)
    names = [name for name, _ in a.named_parameters()]
    assert "model.norm.weight" in names and "lm_head.weight" in names
    for name, p in a.named_parameters():
        with torch.no_grad():
            p.view(-1)[-1] += 0.5  # the last element: every chunk of the tensor is hashed, not just its start
        assert model_hash(a) != before, name
        with torch.no_grad():
            p.view(-1)[-1] -= 0.5
    assert model_hash(a) == before


def test_changes_below_bfloat16_resolution_do_not_change_the_hash():
    """The documented rounding: fp32 noise under bf16 resolution (a reload in another dtype) hashes the same."""
    a = tiny_model(seed=1)
    before = model_hash(a)
    with torch.no_grad():
        a.model.norm.weight.add_(1e-5)  # the norm starts at ones: 1 + 1e-5 rounds to 1 in bf16
    assert model_hash(a) == before


@pytest.mark.parametrize("field", ARCH_FIELDS)
def test_every_hashed_config_field_changes_the_hash(field):
    a = tiny_model(seed=1)
    params = list(a.named_parameters())
    other = copy.deepcopy(a.config)
    setattr(other, field, changed(getattr(a.config, field, None)))
    assert hash_weights(a.config, params) != hash_weights(other, params)


def changed(value):
    """Another valid value of the same type (configs check the types of their fields)."""
    if isinstance(value, bool):
        return not value
    if isinstance(value, (int, float)):
        return value * 2 + 1
    if isinstance(value, str):
        return value + "-other"
    if isinstance(value, dict):
        return {**value, "rope_theta": 1234.0}
    return 64  # absent (None): set


@pytest.mark.parametrize("field,value", [("_attn_implementation", "eager"), ("use_cache", False),
                                         ("pad_token_id", 7), ("dtype", torch.bfloat16)])
def test_settings_that_do_not_change_the_weights_do_not_change_the_hash(field, value):
    a = tiny_model(seed=1)
    params = list(a.named_parameters())
    other = copy.deepcopy(a.config)
    setattr(other, field, value)
    assert hash_weights(a.config, params) == hash_weights(other, params)


def test_a_parameters_name_and_shape_are_hashed_with_its_values():
    w = torch.arange(12.0)
    config = tiny_model(seed=1).config
    digests = {hash_weights(config, [("w", w)]), hash_weights(config, [("v", w)]),
               hash_weights(config, [("w", w.view(3, 4))]), hash_weights(config, [("w", w.view(4, 3))])}
    assert len(digests) == 4


def test_integer_and_bool_tensors_hash_their_own_values():
    config = tiny_model(seed=1).config
    ints = torch.tensor([1, 2, 3])
    flags = torch.tensor([True, False, True])
    base = hash_weights(config, [("i", ints), ("b", flags)])
    assert base == hash_weights(config, [("i", ints.clone()), ("b", flags.clone())])
    assert base != hash_weights(config, [("i", torch.tensor([1, 2, 4])), ("b", flags)])
    assert base != hash_weights(config, [("i", ints), ("b", torch.tensor([True, True, True]))])
    for a, b in [(2**40, 2**40 + 1), (1, 257)]:  # not rounded like floats, not narrowed to bytes
        assert hash_weights(config, [("i", torch.tensor([a]))]) != hash_weights(config, [("i", torch.tensor([b]))])


def test_chunked_streaming_hashes_what_one_chunk_would(monkeypatch):
    a = tiny_model(seed=1)
    whole = model_hash(a)
    # every tensor in several chunks, the last one partial
    monkeypatch.setattr(sys.modules["leank_core.model_hash"], "CHUNK_ELEMS", 7)
    assert model_hash(a) == whole
    with torch.no_grad():
        a.model.norm.weight[-1] += 0.5
    assert model_hash(a) != whole


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


def test_a_tensors_digest_is_its_name_shape_and_canonical_bfloat16_bits():
    """The documented format, by hand: 1.0 and -2.0 are 0x3F80 and 0xC000 in bf16 (little-endian)."""
    expected = hashlib.sha256(b"w" + b"[2]" + bytes.fromhex("803f00c0")).digest()
    assert _tensor_digest("w", torch.tensor([1.0, -2.0], dtype=torch.float64)) == expected
    ints = hashlib.sha256(b"i" + b"[1]" + (257).to_bytes(8, "little")).digest()
    assert _tensor_digest("i", torch.tensor([257])) == ints  # int64 bytes as they are, not narrowed


def test_the_config_part_is_its_content_whatever_its_key_order_or_value_types():
    params = [("w", torch.ones(2))]
    a = SimpleNamespace(model_type="llama", rope_parameters={"rope_type": "default", "rope_theta": 1e4})
    b = SimpleNamespace(model_type="llama", rope_parameters={"rope_theta": 1e4, "rope_type": "default"})
    assert hash_weights(a, params) == hash_weights(b, params)
    # values JSON cannot hold are hashed by their text; nested configs by their content (to_dict)
    assert hash_weights(SimpleNamespace(model_type=Path("a")), params) != hash_weights(
        SimpleNamespace(model_type=Path("b")), params)

    class Nested:
        def __init__(self, theta):
            self.theta = theta

        def to_dict(self):
            return {"theta": self.theta}

    assert hash_weights(SimpleNamespace(rope_parameters=Nested(1.0)), params) == hash_weights(
        SimpleNamespace(rope_parameters=Nested(1.0)), params)  # two objects, one content
    assert hash_weights(SimpleNamespace(rope_parameters=Nested(1.0)), params) != hash_weights(
        SimpleNamespace(rope_parameters=Nested(2.0)), params)
