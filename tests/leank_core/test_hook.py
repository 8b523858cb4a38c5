"""The "leank" attention hook: what routes attention where, and the verbs apply / applied / install."""

from __future__ import annotations

import math

import pytest
import torch
from transformers import DynamicCache

from leank_core.attention import masked_attention
from leank_core.hook import AttentionMode, applied, apply, check_mask, install, leank_attention_forward
from leank_core.mask import LeanKMask
from leank_core.model_hash import model_hash
from tests.conftest import tiny_model

SINK, RECENT = 3, 4


class Layer(torch.nn.Module):
    """The attributes the hook reads from an attention module."""

    layer_idx = 0
    is_causal = True


def ids(n: int = 30) -> torch.Tensor:
    return torch.randint(3, 259, (1, n), generator=torch.Generator().manual_seed(1))


def test_outside_any_mode_the_hook_is_ordinary_sdpa_and_install_is_idempotent():
    model = tiny_model()
    with torch.no_grad():
        plain = model(ids()).logits
        install(install(model))
        with masked_attention(torch.zeros(2, 2, 16), SINK, RECENT):
            masked = model(ids()).logits
        after = model(ids()).logits
    assert model.config._attn_implementation == "leank"
    assert torch.equal(after, plain)
    assert not torch.allclose(masked, plain, atol=1e-3)


def test_an_active_mode_computes_the_attention_itself():
    class Recorder(AttentionMode):
        def attend(self, module, query, key, value, attention_mask, scaling):
            self.call = (module, query, key, value, attention_mask, scaling)
            return torch.full((1, 2, 4, 8), 7.0)

    from leank_core.hook import active_mode

    recorder, layer, query, key = Recorder(), Layer(), torch.randn(1, 4, 2, 8), torch.randn(1, 2, 2, 8)
    mask = torch.ones(1, 1, 2, 5, dtype=torch.bool)
    with active_mode(recorder):
        out, weights = leank_attention_forward(layer, query, key, key, mask, scaling=None)
    assert weights is None and torch.equal(out, torch.full((1, 2, 4, 8), 7.0))
    module, q, k, _, m, scaling = recorder.call
    assert module is layer and q is query and k is key and m is mask and scaling == pytest.approx(1 / math.sqrt(8))


def test_a_mode_passed_to_forward_is_active_for_that_call_only():
    """A LeanKCache reaches the hook as a forward argument; the mode must not outlive the call."""
    calls = []

    class Counter(DynamicCache, AttentionMode):
        def attend(self, module, query, key, value, attention_mask, scaling):
            calls.append(module.layer_idx)
            b, h, t, d = query.shape
            return torch.zeros(b, t, h, d)

    model = install(tiny_model())
    with torch.no_grad():
        plain = model(ids()).logits
        model.model(ids(), None, None, Counter())  # the cache is the base model's 4th positional argument
        assert calls == [0, 1]
        assert torch.equal(model(ids()).logits, plain)
        with pytest.raises(RuntimeError, match="boom"):
            class Failing(DynamicCache, AttentionMode):
                def attend(self, *args):
                    raise RuntimeError("boom")
            model.model(ids(), None, None, Failing())
        assert torch.equal(model(ids()).logits, plain)  # an exception inside the call resets the mode too


def identity_mask(model) -> LeanKMask:
    return LeanKMask(kept=torch.ones(2, 2, 16, dtype=torch.bool), sink=SINK, recent=RECENT, align=4, ratio=0.0,
                     model_hash=model_hash(model))


def test_applied_restores_the_model_on_exit_and_apply_is_permanent():
    model = tiny_model()
    mask = identity_mask(model)
    with applied(model, mask) as same:
        assert same is model and model.config._attn_implementation == "leank"
    assert model.config._attn_implementation == "sdpa" and not model.model._leank_hook_handles
    apply(model, mask)
    assert model.config._attn_implementation == "leank" and len(model.model._leank_hook_handles) == 2


def test_apply_refuses_a_mask_for_another_model_with_one_line():
    model, other = tiny_model(seed=0), tiny_model(seed=1)
    with pytest.raises(ValueError, match="learned for model hash") as err:
        apply(model, identity_mask(other))
    assert "\n" not in str(err.value)
    wrong_shape = LeanKMask(kept=torch.ones(3, 2, 16, dtype=torch.bool), sink=SINK, recent=RECENT, align=4, ratio=0.0)
    with pytest.raises(ValueError, match="does not match this model"):
        applied(model, wrong_shape).__enter__()
    assert model.config._attn_implementation == "sdpa"


def test_concurrent_forwards_in_two_threads_each_see_their_own_mode():
    """Modes are per thread: two forwards interleaved layer by layer never hand a call to the other's mode."""
    import threading

    model = install(tiny_model())
    barrier = threading.Barrier(2, timeout=30)
    seen: dict[str, list[int]] = {"a": [], "b": []}

    class Recording(DynamicCache, AttentionMode):
        def __init__(self, name):
            super().__init__()
            self.name = name

        def attend(self, module, query, key, value, attention_mask, scaling):
            seen[self.name].append(module.layer_idx)
            barrier.wait()  # both threads are inside a forward at once, layer by layer
            b, h, t, d = query.shape
            return torch.zeros(b, t, h, d)

    errors = []

    def run(name):
        try:
            with torch.no_grad():
                model.model(ids(), None, None, Recording(name))
        except Exception as e:  # noqa: BLE001 - reported by the assert below
            errors.append(repr(e))

    threads = [threading.Thread(target=run, args=(name,)) for name in seen]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert errors == [] and seen == {"a": [0, 1], "b": [0, 1]}
    with torch.no_grad():
        assert torch.equal(model(ids()).logits, install(tiny_model())(ids()).logits)  # no mode left active


def test_outside_any_mode_the_hook_forwards_every_argument_to_sdpa():
    """Mask, scaling, dropout and extra keywords reach SDPA as given; no scaling means 1/sqrt(head_dim)."""
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, 2, 5, 8, generator=g) for _ in range(3))
    pad = torch.ones(1, 1, 5, 5, dtype=torch.bool).tril()
    pad[..., 0] = False
    pad[..., 0, 0] = True  # a padding mask, not the causal one
    out, weights = leank_attention_forward(Layer(), q, k, v, pad, scaling=0.1)
    expected = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=pad, scale=0.1)
    assert weights is None and torch.allclose(out, expected.transpose(1, 2), atol=1e-6)
    out, _ = leank_attention_forward(Layer(), q, k, v, None)
    expected = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True, scale=8 ** -0.5)
    assert torch.allclose(out, expected.transpose(1, 2), atol=1e-6)
    out, _ = leank_attention_forward(Layer(), q, k, v, None, is_causal=False)
    expected = torch.nn.functional.scaled_dot_product_attention(q, k, v, scale=8 ** -0.5)
    assert torch.allclose(out, expected.transpose(1, 2), atol=1e-6)
    out, _ = leank_attention_forward(Layer(), q, k, v, None, dropout=1.0)
    assert not out.any()  # dropout forwarded: p = 1 drops every weight


def test_a_left_padded_batch_through_the_installed_hook_equals_the_plain_model():
    """Outside a mode the hooked model builds its masks as SDPA does: padded rows stay padded."""
    model = tiny_model()
    batch = ids(12).repeat(2, 1)
    attention_mask = torch.ones_like(batch)
    attention_mask[1, :5] = 0
    with torch.no_grad():
        plain = model(batch, attention_mask=attention_mask).logits
        install(model)
        hooked = model(batch, attention_mask=attention_mask).logits
    assert torch.allclose(hooked, plain, atol=1e-5)


def test_install_adds_its_forward_hooks_once_and_leaving_applied_removes_them():
    model = tiny_model()
    install(install(model))
    assert len(model.model._forward_pre_hooks) == len(model.model._forward_hooks) == 1
    fresh = tiny_model()
    with applied(fresh, identity_mask(fresh)):
        assert len(fresh.model._forward_pre_hooks) == len(fresh.model._forward_hooks) == 1
    assert not fresh.model._forward_pre_hooks and not fresh.model._forward_hooks


def test_applied_restores_the_attention_implementation_the_model_had():
    model = tiny_model()
    model.set_attn_implementation("eager")
    with applied(model, identity_mask(model)):
        assert model.config._attn_implementation == "leank"
    assert model.config._attn_implementation == "eager"


def test_a_forward_nested_inside_another_restores_each_mode_in_turn():
    """A mode may run the model itself (e.g. a reference pass): each forward restores the mode it found."""
    model = install(tiny_model())
    seen = []

    class Inner(DynamicCache, AttentionMode):
        def attend(self, module, query, key, value, attention_mask, scaling):
            seen.append("inner")
            b, h, t, d = query.shape
            return torch.zeros(b, t, h, d)

    class Outer(DynamicCache, AttentionMode):
        def attend(self, module, query, key, value, attention_mask, scaling):
            seen.append("outer")
            if module.layer_idx == 0:
                model.model(ids(3), None, None, Inner())
            b, h, t, d = query.shape
            return torch.zeros(b, t, h, d)

    with torch.no_grad():
        plain = model(ids()).logits
        model.model(ids(), None, None, Outer())
        assert seen == ["outer", "inner", "inner", "outer"]
        assert torch.equal(model(ids()).logits, plain)


def test_check_mask_refuses_another_models_mask_unless_told_and_names_both_hashes():
    model, other = tiny_model(seed=0), tiny_model(seed=1)
    mine, theirs = model_hash(model), model_hash(other)
    with pytest.raises(ValueError, match=(f"^mask was learned for model hash {theirs[:16]}, this model is {mine[:16]}; "
                                          "pass allow_hash_mismatch=True only if you know the weights are "
                                          "equivalent$")):
        check_mask(model, identity_mask(other))
    unhashed = LeanKMask(kept=torch.ones(2, 2, 16, dtype=torch.bool), sink=SINK, recent=RECENT, align=4, ratio=0.0)
    with pytest.raises(ValueError, match=rf"^mask was learned for model hash \(none\), this model is {mine[:16]};"):
        check_mask(model, unhashed)
    check_mask(model, unhashed, allow_hash_mismatch=True)
    assert apply(model, identity_mask(other), allow_hash_mismatch=True) is model
    with applied(other, identity_mask(model), allow_hash_mismatch=True) as same:
        assert same is other
    wrong_shape = LeanKMask(kept=torch.ones(3, 2, 16, dtype=torch.bool), sink=SINK, recent=RECENT, align=4, ratio=0.0)
    with pytest.raises(ValueError, match=(r"^mask shape \(3, 2, 16\) does not match this model's \[layers, kv_heads, "
                                          r"head_dim\] \(2, 2, 16\): it was learned for another architecture$")):
        check_mask(model, wrong_shape, allow_hash_mismatch=True)
