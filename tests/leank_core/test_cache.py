"""LeanKCache: generate() with the mask equals the training-side forward, and saves real memory."""

from __future__ import annotations

import pytest
import torch

from leank_core.cache import LeanKCache, apply, memory_report
from leank_core.mask import LeanKMask
from leank_core.model_hash import model_hash
from leank_core.training import continuation_hidden, prefill
from tests.conftest import tiny_model

SINK, RECENT = 4, 8


def peaked_model(arch: str = "llama", dtype: torch.dtype = torch.float32):
    """A tiny model whose attention is not uniform, so masks really change the logits."""
    model = tiny_model(arch)
    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.q_proj.weight.mul_(10)
            layer.self_attn.k_proj.weight.mul_(10)
    return model.to(dtype)


def identity_mask(model) -> LeanKMask:
    return LeanKMask(mask=torch.ones(2, 2, 16, dtype=torch.bool), sink=SINK, recent=RECENT, align=4, ratio=0.0,
                     model_hash=model_hash(model))


def random_mask(model, seed=0) -> LeanKMask:
    """Heads with 0, some, and all 16 channels kept."""
    alpha = torch.rand(2, 2, 16, generator=torch.Generator().manual_seed(seed))
    alpha[0, 0] = 0.0
    alpha[1, 1] = 1.0
    mask = LeanKMask.from_importance(alpha, 0.5, 4, SINK, RECENT, model_hash=model_hash(model))
    counts = mask.kept_counts()
    assert counts[0, 0] == 0 and counts[1, 1] == 16
    return mask


def generate(model, ids, mask=None, new=30, attention_mask=None):
    cache = LeanKCache(mask, model.config) if mask is not None else None
    out = model.generate(ids, attention_mask=attention_mask, max_new_tokens=new, min_new_tokens=new, do_sample=False,
                         past_key_values=cache, output_logits=True, return_dict_in_generate=True,
                         pad_token_id=0)
    return out.sequences[:, ids.shape[1]:], torch.stack(out.logits, 1), cache


def prompt(n, seed=1, batch=1):
    return torch.randint(3, 259, (batch, n), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("arch", ["llama", "qwen2", "mistral"])
def test_identity_mask_generates_exactly_what_the_dynamic_cache_does(arch):
    model = peaked_model(arch)
    mask = identity_mask(model)
    apply(model, mask)
    ids = prompt(30)
    tokens, logits, _ = generate(model, ids)
    lean_tokens, lean_logits, _ = generate(model, ids, mask)
    assert torch.equal(tokens, lean_tokens)
    assert torch.allclose(logits, lean_logits, atol=1e-4)


@pytest.mark.parametrize("prompt_len", [5, SINK + RECENT, SINK + RECENT + 1, 40])
def test_decode_logits_equal_the_training_side_masked_forward(prompt_len):
    """Short prompts, the exact sink+recent boundary and long ones; 30 tokens cross into the middle."""
    model = peaked_model()
    mask = random_mask(model)
    apply(model, mask)
    ids = prompt(prompt_len)
    tokens, logits, _ = generate(model, ids, mask)
    with torch.no_grad():
        h = continuation_hidden(model, prefill(model, ids), tokens[:, :-1], mask.mask.float(), SINK, RECENT,
                                mask.kept_counts() == 0)
        oracle = model.lm_head(h)
    assert torch.allclose(logits[:, 1:], oracle, atol=1e-4)
    # and the mask matters on this model: the full cache decodes different logits
    _, full_logits, _ = generate(model, ids)
    assert not torch.allclose(full_logits, logits, atol=1e-3)


def test_left_padded_batch_rows_equal_their_own_unpadded_runs():
    model = peaked_model()
    mask = random_mask(model, seed=2)
    apply(model, mask)
    lengths = [25, 17, 6]
    rows = [prompt(n, seed=10 + i)[0] for i, n in enumerate(lengths)]
    width = max(lengths)
    ids = torch.zeros(len(rows), width, dtype=torch.long)
    attn = torch.zeros_like(ids)
    for i, r in enumerate(rows):
        ids[i, width - len(r):] = r
        attn[i, width - len(r):] = 1
    batch_tokens, batch_logits, _ = generate(model, ids, mask, new=20, attention_mask=attn)
    for i, r in enumerate(rows):
        tokens, logits, _ = generate(model, r[None], mask, new=20)
        assert torch.equal(batch_tokens[i], tokens[0])
        assert torch.allclose(batch_logits[i], logits[0], atol=1e-4)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_decode_matches_the_masked_forward_in_the_same_dtype(dtype):
    model = peaked_model(dtype=dtype)
    mask = random_mask(model)
    apply(model, mask, allow_hash_mismatch=True)
    ids = prompt(30)
    tokens, logits, cache = generate(model, ids, mask, new=20)
    assert cache.layers[0].mid_k.dtype == dtype
    with torch.no_grad():
        h = continuation_hidden(model, prefill(model, ids), tokens[:, :-1], mask.mask.float(), SINK, RECENT,
                                mask.kept_counts() == 0)
        oracle = model.lm_head(h).float()
    assert torch.allclose(logits[:, 1:].float(), oracle, atol=0.05)


def test_allocated_middle_bytes_match_the_kept_fractions():
    model = peaked_model()
    mask = random_mask(model)
    apply(model, mask)
    _, _, cache = generate(model, prompt(60), mask, new=5)
    mem = cache.memory()
    assert mem["middle_k"] / mem["dense_equivalent_middle_k"] == pytest.approx(mask.k_fraction_kept, rel=0.01)
    assert mem["middle_v"] / mem["dense_equivalent_middle_k"] == pytest.approx(mask.v_fraction_kept, rel=0.01)
    assert mem["allocated"] >= mem["dense_kv"] + mem["middle_k"] + mem["middle_v"]
    assert "middle K stored" in memory_report(cache)


def test_middle_storage_grows_in_chunks_not_per_token():
    model = peaked_model()
    mask = random_mask(model)
    apply(model, mask)
    _, _, cache = generate(model, prompt(20), mask, new=40)
    layer = cache.layers[0]
    assert layer.mid_k.shape[-1] % 256 == 0 and int(layer.mid_len[0]) == 20 + 40 - 1 - SINK - RECENT


def test_masks_for_another_model_are_refused():
    model = peaked_model()
    mask = random_mask(model)
    other = tiny_model(seed=5)
    with pytest.raises(ValueError, match="model hash"):
        apply(other, mask)
    apply(other, mask, allow_hash_mismatch=True)
    wrong_shape = LeanKMask(mask=torch.ones(3, 2, 16, dtype=torch.bool), sink=4, recent=8, align=4, ratio=0.0)
    with pytest.raises(ValueError, match="does not match"):
        apply(model, wrong_shape, allow_hash_mismatch=True)
    with pytest.raises(ValueError, match="does not match"):
        LeanKCache(wrong_shape, model.config)
