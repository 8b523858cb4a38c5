"""Chunked prefill into one preallocated snapshot, and passes that read it in place."""

from __future__ import annotations

import pytest
import torch
from transformers import DynamicCache

from leank_core.compat import forward_with_cache
from leank_core.hook import install
from leank_core.kv_snapshot import ContinuationCache, prefill, prefill_through
from leank_core import training
from leank_core.training import Importance, TrainConfig, compute_loss, continuation_hidden, freeze
from tests.conftest import tiny_model

SINK, RECENT = 4, 8


def ids(n: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(3, 259, (1, n), generator=torch.Generator().manual_seed(seed))


@pytest.fixture
def model():
    return install(freeze(tiny_model("llama")))


@pytest.mark.parametrize("chunk", [7, 30, 64])
def test_chunked_prefill_stores_what_one_dense_forward_caches(model, chunk):
    prompt = ids(30)
    with torch.no_grad():
        dense = DynamicCache()
        forward_with_cache(model.base_model, prompt, dense)
    snapshot = prefill(model, prompt, chunk=chunk)
    assert snapshot.length == 30
    for (k, v), layer in zip(snapshot.layers, dense.layers):
        torch.testing.assert_close(k, layer.keys, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(v, layer.values, rtol=1e-5, atol=1e-5)


def test_teacher_after_a_chunked_prefill_equals_the_plain_forward_of_the_whole_sequence(model):
    prompt, answer = ids(40), ids(5, seed=1)
    h = continuation_hidden(model, prefill(model, prompt, chunk=9), answer, None, SINK, RECENT)
    full = model.base_model(torch.cat([prompt, answer], 1)).last_hidden_state
    torch.testing.assert_close(h, full[:, 40:], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("chunk", [9, 40, 64])
def test_prefill_through_returns_the_prompts_snapshot_and_the_dense_continuation(model, chunk):
    prompt, answer = ids(40), ids(5, seed=1)
    snapshot, hidden = prefill_through(model, prompt, answer, chunk=chunk)
    assert snapshot.length == 40
    for (k, v), (k0, v0) in zip(snapshot.layers, prefill(model, prompt, chunk=chunk).layers):
        torch.testing.assert_close(k, k0, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(v, v0, rtol=1e-5, atol=1e-5)
    full = model.base_model(torch.cat([prompt, answer], 1)).last_hidden_state
    torch.testing.assert_close(hidden, full[:, 40:], rtol=1e-5, atol=1e-5)
    dense_pass = continuation_hidden(model, snapshot, answer, None, SINK, RECENT)
    torch.testing.assert_close(hidden, dense_pass, rtol=1e-5, atol=1e-5)


def test_passes_read_the_snapshot_in_place_and_leave_it_unchanged(model):
    snapshot = prefill(model, ids(30))
    before = [(k.clone(), v.clone()) for k, v in snapshot.layers]
    cache = ContinuationCache(snapshot, None, SINK, RECENT)
    first = forward_with_cache(model.base_model, ids(4, seed=1), cache).last_hidden_state
    for layer, (k, v) in zip(cache.layers, snapshot.layers):
        assert layer.context[0].data_ptr() == k.data_ptr() and layer.context[1].data_ptr() == v.data_ptr()
    for (k, v), (k0, v0) in zip(snapshot.layers, before):
        assert torch.equal(k, k0) and torch.equal(v, v0)
    second = continuation_hidden(model, snapshot, ids(4, seed=1), None, SINK, RECENT)
    assert torch.equal(first, second)  # a pass does not see an earlier pass's tokens
    with pytest.raises(RuntimeError, match="one forward pass"):
        forward_with_cache(model.base_model, ids(4, seed=1), cache)


def saved_bytes_beyond_snapshot(model, n_prompt: int, monkeypatch) -> int:
    """Bytes autograd keeps for the student's backward, not counting storage shared with the snapshot."""
    config = TrainConfig(sink=SINK, recent=RECENT, align=4)
    importance = Importance((2, 2, 16))
    with torch.no_grad():
        importance.alpha.mul_(0.5)
    snapshot_storages: set[int] = set()

    def recording_prefill(m, input_ids, continuation_ids):
        snapshot, hidden = prefill_through(m, input_ids, continuation_ids)
        snapshot_storages.update(t.untyped_storage().data_ptr() for kv in snapshot.layers for t in kv)
        return snapshot, hidden

    monkeypatch.setattr(training, "prefill_through", recording_prefill)
    saved: list[torch.Tensor] = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        sample = {"input_ids": ids(n_prompt)[0].tolist(), "answer_ids": ids(5, seed=1)[0].tolist()}
        compute_loss(model, importance, sample, config, stage=1)
    storages = {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in saved}
    return sum(n for ptr, n in storages.items() if ptr not in snapshot_storages)


def test_the_student_keeps_nothing_for_backward_that_grows_with_the_context(model, monkeypatch):
    short = saved_bytes_beyond_snapshot(model, 40, monkeypatch)
    long = saved_bytes_beyond_snapshot(model, 400, monkeypatch)
    assert short > 0 and long == short


def test_each_layers_mask_rows_are_moved_to_that_layers_snapshot_device_keeping_the_gradient():
    """A mask loaded on the CPU serves a model elsewhere (a GPU, or layers spread over several): every
    layer attends with rows on its own snapshot's device, and the gradient still reaches ``weights``."""
    from leank_core.kv_snapshot import KVSnapshot

    cpu = (torch.zeros(1, 2, 6, 4), torch.zeros(1, 2, 6, 4))
    meta = (torch.empty(1, 2, 6, 4, device="meta"), torch.empty(1, 2, 6, 4, device="meta"))
    weights = torch.ones(2, 2, 4, requires_grad=True)
    cache = ContinuationCache(KVSnapshot((cpu, meta)), weights, 1, 2, torch.zeros(2, 2, dtype=torch.bool))
    assert [layer.weights.device.type for layer in cache.layers] == ["cpu", "meta"]
    assert [layer.zero_heads.device.type for layer in cache.layers] == ["cpu", "meta"]
    cache.layers[0].weights.sum().backward()
    assert torch.equal(weights.grad, torch.tensor([1.0, 0.0]).view(2, 1, 1).expand(2, 2, 4))
