"""The "leank" attention hook: what routes attention where, and the verbs apply / applied / install."""

from __future__ import annotations

import math

import pytest
import torch
from transformers import DynamicCache

from leank_core.attention import masked_attention
from leank_core.hook import AttentionMode, applied, apply, install, leank_attention_forward
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
