"""LeanKEngine generates exactly what transformers' generate does (dense or LeanKCache), for every supported architecture.

Tensors live on CUDA when there is one (then the Triton kernels and the CUDA graphs run),
on CPU otherwise (the reference kernels, eagerly).
"""

from __future__ import annotations

import pytest
import torch
from transformers import DynamicCache

from leank_core.cache import LeanKCache
from leank_core.compat import cache_kwargs
from leank_core.hook import apply
from leank_core.engine import LeanKEngine
from leank_core.engine.storage import bytes_per_sequence
from leank_core.mask import LeanKMask
from leank_core.model_hash import model_hash
from tests.conftest import requires_smollm2
from tests.leank_core.test_cache import RECENT, SINK, identity_mask, left_padded, peaked_model, prompt

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
ARCHS = ["llama", "qwen2", "mistral"]
NEW = 64


def no_eos_model(arch: str = "llama"):
    """A peaked tiny model (masks change its logits) that never stops on its own: ``generate`` runs all steps."""
    model = peaked_model(arch, device=DEVICE)
    model.generation_config.eos_token_id = None
    return model


def pruned_mask(model, ratio: float = 0.7, seed: int = 0) -> LeanKMask:
    alpha = torch.rand(2, 2, 16, generator=torch.Generator().manual_seed(seed))
    return LeanKMask.from_importance(alpha, ratio, 4, SINK, RECENT, model_hash=model_hash(model))


def hf_greedy(model, ids, new=NEW, mask=None, attention_mask=None) -> torch.Tensor:
    """transformers' greedy tokens: DynamicCache, or LeanKCache when a mask is given (hook installed by the caller)."""
    cache = DynamicCache() if mask is None else LeanKCache(mask, model.config)
    out = model.generate(ids, attention_mask=attention_mask, max_new_tokens=new, do_sample=False, pad_token_id=0,
                         **cache_kwargs(model, cache))
    return out[:, ids.shape[1]:].cpu()  # where the engine returns its tokens


@pytest.mark.parametrize("arch", ARCHS)
def test_identity_mask_and_dense_twin_generate_what_generate_with_a_dynamic_cache_does(arch):
    """Prompt longer than sink + recent and 64 new tokens: the middle is used from the first step on."""
    model = no_eos_model(arch)
    ids = prompt(30, device=DEVICE)
    expected = hf_greedy(model, ids)[0]
    for mask in (identity_mask(model), None):
        tokens = LeanKEngine(model, mask, max_batch=2, max_len=128).generate(ids, max_new_tokens=NEW)
        assert torch.equal(tokens[0], expected), "dense twin" if mask is None else "identity mask"


@pytest.mark.parametrize("arch", ARCHS)
def test_a_pruned_mask_generates_what_generate_with_a_leank_cache_does(arch):
    model = no_eos_model(arch)
    mask = pruned_mask(model)
    ids = prompt(30, device=DEVICE)
    dense = hf_greedy(model, ids)[0]
    apply(model, mask)
    expected = hf_greedy(model, ids, mask=mask)[0]
    assert not torch.equal(expected, dense), "the mask must change this model's output for the test to mean anything"
    tokens = LeanKEngine(model, mask, max_batch=1, max_len=128).generate(ids, max_new_tokens=NEW)
    assert torch.equal(tokens[0], expected)


def test_left_padded_batch_rows_equal_their_own_runs_and_dummy_rows_change_nothing():
    """Three prompts in a bucket of four: each row decodes exactly as the sequence alone in the engine."""
    model = no_eos_model()
    mask = pruned_mask(model, seed=1)
    engine = LeanKEngine(model, mask, max_batch=4, max_len=128)
    rows = [prompt(n, seed=10 + i, device=DEVICE)[0] for i, n in enumerate([25, 17, 6])]
    ids, attn = left_padded(rows)
    batch = engine.generate(ids.to(DEVICE), attn.to(DEVICE), max_new_tokens=40)
    for got, row in zip(batch, rows):
        alone = engine.generate(row[None], max_new_tokens=40)[0]
        assert torch.equal(got, alone)


def test_a_sequence_stops_after_its_eos_while_the_others_continue():
    model = no_eos_model()
    engine = LeanKEngine(model, pruned_mask(model), max_batch=2, max_len=128)
    ids, attn = left_padded([prompt(20, seed=1)[0], prompt(14, seed=2)[0]])
    ids, attn = ids.to(DEVICE), attn.to(DEVICE)
    free = engine.generate(ids, attn, max_new_tokens=40)
    eos = int(free[0][5])
    assert eos not in free[0][:5].tolist()
    stopped = engine.generate(ids, attn, max_new_tokens=40, eos_token_id=eos)
    for got, run in zip(stopped, free):
        hits = (run == eos).nonzero().flatten().tolist()
        assert torch.equal(got, run[: hits[0] + 1] if hits else run)
    assert len(stopped[0]) == 6


def test_generation_stops_early_once_every_sequence_has_finished():
    model = no_eos_model()
    engine = LeanKEngine(model, None, max_batch=1, max_len=256)
    ids = prompt(20, device=DEVICE)
    first = int(engine.generate(ids, max_new_tokens=1)[0][0])
    tokens = engine.generate(ids, max_new_tokens=200, eos_token_id=first)
    assert tokens[0].tolist() == [first]
    assert int(engine.cache.n[0]) < 20 + 200 - 1, "the decode loop should have stopped at its next check"


def test_chunked_prefill_gives_the_same_tokens_as_one_piece():
    model = no_eos_model()
    mask = pruned_mask(model, seed=2)
    ids = prompt(37, device=DEVICE)
    whole = LeanKEngine(model, mask, max_batch=1, max_len=128).generate(ids, max_new_tokens=30)
    chunked = LeanKEngine(model, mask, max_batch=1, max_len=128, prefill_chunk=8).generate(ids, max_new_tokens=30)
    assert torch.equal(whole[0], chunked[0])


def test_sampling_at_a_tiny_temperature_is_greedy_and_a_seed_reproduces_a_sampled_run():
    model = no_eos_model()
    engine = LeanKEngine(model, pruned_mask(model), max_batch=2, max_len=128)
    ids = prompt(30, device=DEVICE)
    greedy = engine.generate(ids, max_new_tokens=20)[0]
    assert torch.equal(engine.generate(ids, max_new_tokens=20, do_sample=True, temperature=1e-4)[0], greedy)
    engine.prepare(1, do_sample=True, top_p=0.9)  # capturing a graph draws random numbers: do it before seeding
    runs = []
    for _ in range(2):
        torch.manual_seed(7)
        runs.append(engine.generate(ids, max_new_tokens=20, do_sample=True, temperature=2.0, top_p=0.9)[0])
    assert torch.equal(runs[0], runs[1]) and not torch.equal(runs[0], greedy)


def test_bad_requests_are_refused_with_one_line():
    model = no_eos_model()
    wrong = LeanKMask(kept=torch.ones(3, 2, 16, dtype=torch.bool), sink=4, recent=8, align=4, ratio=0.0)
    with pytest.raises(ValueError, match="does not match"):
        LeanKEngine(model, wrong)
    engine = LeanKEngine(model, None, max_batch=2, max_len=64)
    with pytest.raises(ValueError, match="do not fit"):
        engine.generate(prompt(10, batch=3, device=DEVICE), max_new_tokens=4)
    with pytest.raises(ValueError, match="do not fit"):
        engine.generate(prompt(60, device=DEVICE), max_new_tokens=10)
    ids, attn = left_padded([prompt(10)[0], prompt(6)[0]])
    with pytest.raises(ValueError, match="left-padded"):
        engine.generate(ids.flip(1).to(DEVICE), attn.flip(1).to(DEVICE), max_new_tokens=4)
    with pytest.raises(ValueError, match="temperature"):
        engine.generate(prompt(10, device=DEVICE), max_new_tokens=4, do_sample=True, temperature=0.0)


def test_storage_holds_exactly_the_planned_bytes():
    model = no_eos_model()
    mask = pruned_mask(model)
    engine = LeanKEngine(model, mask, max_batch=3, max_len=300)
    buffers = sum(t.nbytes for s in engine.cache.layers for t in (s.dense_k, s.dense_v, s.mid_k, s.mid_v))
    assert buffers == 3 * bytes_per_sequence(mask.kept, SINK, RECENT, 300, 4)
    assert engine.cache.nbytes() > buffers


@pytest.mark.skipif(torch.cuda.is_available(), reason="on a GPU every engine test already runs the compiled kernels")
def test_the_step_with_the_triton_kernels_in_the_interpreter_gives_the_reference_tokens(monkeypatch):
    """Decode attention, append, residual norm and RoPE kernels wired into the whole step (strides, dtypes, the
    dense twin's all-kept layout), on CPU through the Triton interpreter."""
    import leank_core.kernels

    model = no_eos_model("qwen2")
    mask = pruned_mask(model)
    ids = prompt(30)
    expected = [LeanKEngine(model, m, max_batch=2, max_len=128).generate(ids, max_new_tokens=16)[0] for m in (mask, None)]
    monkeypatch.setattr(leank_core.kernels, "_use_triton", lambda tensor: True)
    for m, want in zip((mask, None), expected):
        assert torch.equal(LeanKEngine(model, m, max_batch=2, max_len=128).generate(ids, max_new_tokens=16)[0], want)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a GPU (on CPU the step runs eagerly)")
def test_graph_replay_equals_the_eager_step_and_one_graph_serves_each_bucket(monkeypatch):
    model = no_eos_model()
    mask = pruned_mask(model)
    ids = prompt(30, batch=3, device=DEVICE)
    engine = LeanKEngine(model, mask, max_batch=4, max_len=128)
    replayed = engine.generate(ids, max_new_tokens=30)
    engine.generate(ids[:1], max_new_tokens=30)
    engine.generate(ids[:2], max_new_tokens=30)
    assert sorted(bucket for bucket, _ in engine.graphs.graphs) == [1, 2, 4]
    eager = LeanKEngine(model, mask, max_batch=4, max_len=128)
    monkeypatch.setattr(eager.graphs, "run", eager._step)
    monkeypatch.setattr(eager.graphs, "captured", lambda *_: True)
    assert all(torch.equal(a, b) for a, b in zip(eager.generate(ids, max_new_tokens=30), replayed))


@requires_smollm2
def test_smollm2_identity_mask_generates_what_generate_with_a_dynamic_cache_does():
    """The real model, fp32, a ~1.5K-token prompt with sink/recent 64/256: over 1K middle tokens from the start."""
    from leank_core.model_source import resolve_model

    source = resolve_model("smollm2-135m")
    model = source.load(device=DEVICE)
    model.generation_config.eos_token_id = None
    tok = source.tokenizer()
    text = " ".join(f"Item {i} is stored in drawer {i * 7 % 31}." for i in range(90))
    ids = tok(text + " The item in drawer 12 is", return_tensors="pt").input_ids.to(DEVICE)
    assert 1000 < ids.shape[1] < 2048
    mask = LeanKMask(kept=torch.ones(30, 3, 64, dtype=torch.bool), sink=64, recent=256, align=64, ratio=0.0)
    expected = hf_greedy(model, ids)[0]
    tokens = LeanKEngine(model, mask, max_batch=1, max_len=ids.shape[1] + NEW).generate(ids, max_new_tokens=NEW)
    assert torch.equal(tokens[0], expected)
