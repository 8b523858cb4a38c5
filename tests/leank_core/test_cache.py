"""LeanKCache: generate() with the mask equals the training-side forward, and saves real memory."""

from __future__ import annotations

import dataclasses
import gc
import weakref

import pytest
import torch
from transformers import DynamicCache

from leank_core.cache import GROWTH_CHUNK, LeanKCache, _left_padding
from leank_core.compat import cache_kwargs
from leank_core.hook import apply
from leank_core.kernels.layout import window_lengths
from leank_core.kernels.reference import decode_attention_reference
from leank_core.memory import allocated_bytes, cache_memory, memory_report
from leank_core.mask import LeanKMask
from leank_core.model_hash import model_hash
from leank_core.training import continuation_hidden, prefill
from tests.conftest import tiny_model

SINK, RECENT = 4, 8
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def peaked_model(arch: str = "llama", dtype: torch.dtype = torch.float32, device: str = "cpu"):
    """A tiny model whose attention is not uniform, so masks really change the logits."""
    model = tiny_model(arch)
    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.q_proj.weight.mul_(10)
            layer.self_attn.k_proj.weight.mul_(10)
    return model.to(device, dtype)


def identity_mask(model) -> LeanKMask:
    return LeanKMask(kept=torch.ones(2, 2, 16, dtype=torch.bool), sink=SINK, recent=RECENT, align=4, ratio=0.0,
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


def generate(model, ids, mask=None, new=30, attention_mask=None, **options):
    """Greedy generation; returns (new tokens, per-step logits [B, new, V], the cache used)."""
    cache = LeanKCache(mask, model.config) if mask is not None else DynamicCache()
    out = model.generate(ids, attention_mask=attention_mask, max_new_tokens=new, min_new_tokens=new, do_sample=False,
                         output_logits=True, return_dict_in_generate=True, pad_token_id=0,
                         **cache_kwargs(model, cache), **options)
    return out.sequences[:, ids.shape[1]:], torch.stack(out.logits, 1), cache


def prompt(n, seed=1, batch=1, device="cpu"):
    return torch.randint(3, 259, (batch, n), generator=torch.Generator().manual_seed(seed)).to(device)


@torch.no_grad()
def oracle_logits(model, context, continuation, mask):
    """Training-side masked forward with inference semantics: dense context, then LeanK over the continuation."""
    h = continuation_hidden(model, prefill(model, context), continuation, mask.kept.float(), mask.sink, mask.recent,
                            mask.kept_counts() == 0)
    return model.lm_head(h)


@pytest.mark.parametrize("arch", ["llama", "qwen2", "mistral"])
@pytest.mark.parametrize("device", DEVICES)
def test_identity_mask_generates_exactly_what_the_dynamic_cache_does(arch, device):
    model = peaked_model(arch, device=device)
    mask = identity_mask(model)
    apply(model, mask)
    ids = prompt(30, device=device)
    tokens, logits, _ = generate(model, ids)
    lean_tokens, lean_logits, _ = generate(model, ids, mask)
    assert torch.equal(tokens, lean_tokens)
    assert torch.allclose(logits, lean_logits, atol=1e-4)


@pytest.mark.parametrize("prompt_len", [2, 5, SINK + RECENT, SINK + RECENT + 1, 40])
@pytest.mark.parametrize("device", DEVICES)
def test_decode_logits_equal_the_training_side_masked_forward(prompt_len, device):
    """Prompts shorter than the sink, short ones, the exact sink+recent boundary and long ones; 30 tokens cross
    into the middle."""
    model = peaked_model(device=device)
    mask = random_mask(model)
    apply(model, mask)
    ids = prompt(prompt_len, device=device)
    tokens, logits, _ = generate(model, ids, mask)
    # step 0 comes from the dense prompt pass; step i decodes generated token i-1
    with torch.no_grad():
        assert torch.allclose(logits[:, 0], model(ids).logits[:, -1], atol=1e-4)
    assert torch.allclose(logits[:, 1:], oracle_logits(model, ids, tokens[:, :-1], mask), atol=1e-4)
    # and the mask matters on this model: the full cache decodes different logits
    _, full_logits, _ = generate(model, ids)
    assert not torch.allclose(full_logits, logits, atol=1e-3)


@pytest.mark.parametrize("arch", ["qwen2", "mistral"])
def test_other_architectures_decode_like_the_training_side_forward(arch):
    model = peaked_model(arch)
    mask = random_mask(model, seed=3)
    apply(model, mask)
    ids = prompt(25)
    tokens, logits, _ = generate(model, ids, mask)
    assert torch.allclose(logits[:, 1:], oracle_logits(model, ids, tokens[:, :-1], mask), atol=1e-4)


def test_a_layer_that_keeps_no_channel_stores_no_middle_and_still_matches_the_oracle():
    model = peaked_model()
    bits = random_mask(model).kept.clone()
    bits[0] = False
    mask = LeanKMask(kept=bits, sink=SINK, recent=RECENT, align=4, ratio=0.5, model_hash=model_hash(model))
    apply(model, mask)
    ids = prompt(20)
    tokens, logits, cache = generate(model, ids, mask)
    assert cache.layers[0].mid_k.numel() == cache.layers[0].mid_v.numel() == 0
    assert torch.allclose(logits[:, 1:], oracle_logits(model, ids, tokens[:, :-1], mask), atol=1e-4)


def test_multi_token_call_after_the_prompt_runs_with_decode_semantics():
    """A second chunk of input (e.g. a follow-up turn) is decoded token by token, matching the oracle."""
    model = peaked_model()
    mask = random_mask(model)
    apply(model, mask)
    ids, follow_up = prompt(15), prompt(25, seed=4)
    cache = LeanKCache(mask, model.config)
    with torch.no_grad():
        model(ids, **cache_kwargs(model, cache))
        logits = model(follow_up, **cache_kwargs(model, cache)).logits
    assert cache.get_seq_length() == 40
    assert torch.allclose(logits, oracle_logits(model, ids, follow_up, mask), atol=1e-4)


def left_padded(rows):
    width = max(len(r) for r in rows)
    ids = torch.zeros(len(rows), width, dtype=torch.long)
    attn = torch.zeros_like(ids)
    for i, r in enumerate(rows):
        ids[i, width - len(r):] = r
        attn[i, width - len(r):] = 1
    return ids, attn


def test_left_padded_batch_rows_equal_their_own_unpadded_runs():
    model = peaked_model()
    mask = random_mask(model, seed=2)
    apply(model, mask)
    rows = [prompt(n, seed=10 + i)[0] for i, n in enumerate([25, 17, 6])]
    ids, attn = left_padded(rows)
    batch_tokens, batch_logits, _ = generate(model, ids, mask, new=20, attention_mask=attn)
    for i, r in enumerate(rows):
        tokens, logits, _ = generate(model, r[None], mask, new=20)
        assert torch.equal(batch_tokens[i], tokens[0])
        assert torch.allclose(batch_logits[i], logits[0], atol=1e-4)


def test_selecting_rows_of_a_padded_batch_keeps_each_row_on_its_own_positions():
    """batch_select_indices (and beam search's reorder_cache) move every row with its own lengths."""
    model = peaked_model()
    mask = random_mask(model, seed=2)
    apply(model, mask)
    lengths = [25, 17, 6]
    rows = [prompt(n, seed=10 + i)[0] for i, n in enumerate(lengths)]
    ids, attn = left_padded(rows)
    tokens, _, cache = generate(model, ids, mask, new=10, attention_mask=attn)
    keep = torch.tensor([2, 0])
    cache.batch_select_indices(keep)
    positions = torch.tensor([[lengths[i] + 9] for i in keep.tolist()])
    with torch.no_grad():
        logits = model(tokens[keep, 9:], position_ids=positions, **cache_kwargs(model, cache)).logits[:, 0]
    for got, i in zip(logits, keep.tolist()):
        _, alone, _ = generate(model, rows[i][None], mask, new=11)
        assert torch.allclose(got, alone[0, 10], atol=1e-4)


def test_right_padded_prompts_are_refused():
    model = peaked_model()
    mask = random_mask(model)
    apply(model, mask)
    ids, attn = left_padded([prompt(10)[0], prompt(6)[0]])
    with pytest.raises(ValueError, match=("^LeanKCache needs left-padded prompts with at least one token each: "
                                          "set tokenizer.padding_side = 'left'$")):
        generate(model, ids.flip(1), mask, new=2, attention_mask=attn.flip(1))


def test_beam_search_with_the_identity_mask_matches_the_dynamic_cache():
    """Beam search reorders cache rows every step (reorder_cache)."""
    model = peaked_model()
    mask = identity_mask(model)
    apply(model, mask)
    ids = prompt(20)
    tokens, _, _ = generate(model, ids, new=15, num_beams=3)
    lean_tokens, _, _ = generate(model, ids, mask, new=15, num_beams=3)
    assert torch.equal(tokens, lean_tokens)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_decode_matches_the_masked_forward_in_the_same_dtype(dtype):
    model = peaked_model(dtype=dtype)
    mask = random_mask(model)
    apply(model, mask, allow_hash_mismatch=True)
    ids = prompt(30)
    tokens, logits, cache = generate(model, ids, mask, new=20)
    assert cache.layers[0].mid_k.dtype == dtype
    assert torch.allclose(logits[:, 1:].float(), oracle_logits(model, ids, tokens[:, :-1], mask).float(), atol=0.05)


def test_allocated_middle_bytes_are_the_kept_fractions_of_dense():
    """With every allocated middle column in use, K bytes = kept fraction x dense and V bytes = nonzero-head fraction."""
    model = peaked_model()
    mask = random_mask(model)
    apply(model, mask)
    _, _, cache = generate(model, prompt(SINK + RECENT + GROWTH_CHUNK), mask, new=1)
    cfg = model.config
    dense_middle = cfg.num_hidden_layers * cfg.num_key_value_heads * cfg.head_dim * 4 * GROWTH_CHUNK  # fp32, batch 1
    for layer in cache.layers:
        assert layer.mid_k.shape[-1] == int(layer.state().mid_len[0]) == GROWTH_CHUNK
    k_bytes = sum(layer.mid_k.untyped_storage().nbytes() for layer in cache.layers)
    v_bytes = sum(layer.mid_v.untyped_storage().nbytes() for layer in cache.layers)
    assert k_bytes / dense_middle == pytest.approx(mask.k_fraction_kept, rel=0.01)
    assert v_bytes / dense_middle == pytest.approx(mask.v_fraction_kept, rel=0.01)
    mem = cache_memory(cache)
    assert 1 - mem.k_saving == pytest.approx(mask.k_fraction_kept, rel=0.01)
    assert f"({1 - mask.k_fraction_kept:.1%} saved)" in memory_report(cache)


def _tensors_reachable(obj, seen=None) -> list[torch.Tensor]:
    """Every tensor reachable through attributes, dataclass fields and containers."""
    seen = set() if seen is None else seen
    if id(obj) in seen:
        return []
    seen.add(id(obj))
    if isinstance(obj, torch.Tensor):
        return [obj]
    if isinstance(obj, (list, tuple)):
        children = list(obj)
    elif isinstance(obj, dict):
        children = list(obj.values())
    elif dataclasses.is_dataclass(obj):
        children = [getattr(obj, f.name) for f in dataclasses.fields(obj)]
    elif hasattr(obj, "__dict__"):
        children = list(vars(obj).values())
    else:
        return []
    return [t for child in children for t in _tensors_reachable(child, seen)]


def test_nbytes_counts_every_tensor_the_cache_holds():
    model = peaked_model()
    mask = random_mask(model)
    apply(model, mask)
    _, _, cache = generate(model, prompt(30), mask, new=10)
    held = _tensors_reachable(cache.layers)
    storages = {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in held}
    assert allocated_bytes(cache) == sum(storages.values())
    assert cache_memory(cache).allocated == allocated_bytes(cache)
    assert cache_memory(cache).dense_equivalent == 2 * 2 * 2 * 16 * 4 * 39  # K+V, layers, kv heads, D, fp32, tokens


def test_middle_storage_grows_one_chunk_at_a_time_not_per_token():
    model = peaked_model()
    mask = random_mask(model)
    apply(model, mask)
    cache = LeanKCache(mask, model.config)
    layer = cache.layers[0]
    token = prompt(1, seed=7)
    capacities = []
    with torch.no_grad():
        model(prompt(SINK + RECENT + GROWTH_CHUNK - 5), **cache_kwargs(model, cache))
        buffers = {layer.mid_k.data_ptr()}
        for _ in range(10):
            model(token, **cache_kwargs(model, cache))
            buffers.add(layer.mid_k.data_ptr())
            capacities.append(layer.mid_k.shape[-1])
    assert len(buffers) == 2 and capacities == [GROWTH_CHUNK] * 5 + [2 * GROWTH_CHUNK] * 5  # when the 257th arrives
    assert int(layer.state().mid_len[0]) == GROWTH_CHUNK + 5


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_a_decode_step_does_not_synchronise_with_the_host():
    """Storing the token, growing within capacity and the decode kernel launch never wait for the GPU."""
    model = peaked_model(device="cuda")
    mask = random_mask(model)
    apply(model, mask)
    cache = LeanKCache(mask, model.config)
    with torch.no_grad():
        model(prompt(GROWTH_CHUNK, device="cuda"), **cache_kwargs(model, cache))
    layer = cache.layers[0]
    query, kv = torch.randn(1, 4, 1, 16, device="cuda"), torch.randn(1, 2, 1, 16, device="cuda")
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")  # any host sync in these steps raises
    try:
        outs = [layer.attend(None, query, *layer.update(kv, kv), None, 0.25) for _ in range(3)]
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert layer.seen == GROWTH_CHUNK + 3 and int(layer.state().mid_len[0]) == GROWTH_CHUNK + 3 - SINK - RECENT
    expected = decode_attention_reference(query[:, :, 0], layer.state(), layer.layout, 0.25)
    assert torch.allclose(outs[-1][:, 0], expected, atol=1e-4)


@pytest.mark.skipif(torch.cuda.is_available(), reason="on a GPU the cache tests above run the compiled kernel")
def test_the_triton_decode_kernel_drives_the_cache_under_the_interpreter(monkeypatch):
    """On CPU the cache normally decodes with the PyTorch reference; here the Triton kernel (interpreted) does,
    and generate still equals the training-side masked forward."""
    import leank_core.kernels as kernels
    from leank_core.kernels import decode_launch

    launches = []
    kernel = decode_launch.decode_attention_triton
    monkeypatch.setattr(kernels, "_use_triton", lambda tensor: True)
    monkeypatch.setattr(decode_launch, "decode_attention_triton", lambda *a, **k: launches.append(1) or kernel(*a, **k))
    model = peaked_model()
    mask = random_mask(model)
    apply(model, mask)
    ids = prompt(SINK + RECENT + 6)
    tokens, logits, _ = generate(model, ids, mask, new=4)
    assert len(launches) == 3 * model.config.num_hidden_layers  # every decode step of every layer
    assert torch.allclose(logits[:, 1:], oracle_logits(model, ids, tokens[:, :-1], mask), atol=1e-4)


def test_masks_for_another_model_are_refused():
    model = peaked_model()
    mask = random_mask(model)
    other = tiny_model(seed=5)
    with pytest.raises(ValueError, match="model hash"):
        apply(other, mask)
    apply(other, mask, allow_hash_mismatch=True)
    wrong_shape = LeanKMask(kept=torch.ones(3, 2, 16, dtype=torch.bool), sink=4, recent=8, align=4, ratio=0.0)
    with pytest.raises(ValueError, match="does not match"):
        apply(model, wrong_shape, allow_hash_mismatch=True)
    with pytest.raises(ValueError, match="does not match"):
        LeanKCache(wrong_shape, model.config)


def test_a_cache_for_a_model_without_the_hook_is_refused():
    model = peaked_model()
    with pytest.raises(ValueError, match=(r"^the model does not use the LeanK attention hook: call "
                                          r"leank_core.apply\(model, mask\) before creating a LeanKCache$")):
        LeanKCache(random_mask(model), model.config)


def three_layer_model():
    """Layers != KV heads, and a mask whose layers keep different counts (per-layer sums are told apart)."""
    model = peaked_model()
    deeper = tiny_model("llama", num_hidden_layers=3)
    with torch.no_grad():
        for layer in deeper.model.layers:
            layer.self_attn.q_proj.weight.mul_(10)
            layer.self_attn.k_proj.weight.mul_(10)
    alpha = torch.rand(3, 2, 16, generator=torch.Generator().manual_seed(5))
    alpha[0] = 0.0
    alpha[2, 1] = 1.0
    mask = LeanKMask.from_importance(alpha, 0.5, 4, SINK, RECENT, model_hash=model_hash(deeper))
    del model
    apply(deeper, mask)
    return deeper, mask


def test_the_cache_holds_exactly_its_tokens_lengths_and_no_per_step_leftovers():
    """After every step each layer's lengths are window_lengths(n) (int32, the layout contract), and within one
    middle chunk a decode step allocates nothing that stays: memory is the same after 5 and after 15 tokens."""
    model, mask = three_layer_model()
    cache = LeanKCache(mask, model.config)
    assert cache.mask is mask and cache.layers[0].get_max_length() == -1  # no maximum: the middle grows
    token = prompt(1, seed=7)
    held = []
    with torch.no_grad():
        for n, ids in enumerate([prompt(2)] + [token] * 15, start=1):
            total = 2 if n == 1 else n + 1
            model(ids, **cache_kwargs(model, cache))
            for layer in cache.layers:
                state = layer.state()
                expected = window_lengths(torch.tensor([total]), SINK, RECENT)
                got = (state.sink_len, state.recent_len, state.mid_len)
                assert all(g.dtype == torch.int32 and torch.equal(g, e) for g, e in zip(got, expected)), total
            held.append(allocated_bytes(cache))
    assert held[5] == held[-1]


def test_cache_memory_parts_add_up_over_layers_and_rows():
    model, mask = three_layer_model()
    rows = [prompt(40, seed=1)[0], prompt(40, seed=2)[0]]
    _, _, cache = generate(model, torch.stack(rows), mask, new=3)
    m = cache_memory(cache)
    layers = cache.layers
    assert m.dense_window == sum(l.dense_k.nbytes + l.dense_v.nbytes for l in layers)
    assert (m.middle_k, m.middle_v) == (sum(l.mid_k.nbytes for l in layers), sum(l.mid_v.nbytes for l in layers))
    assert m.middle_dense == 3 * 2 * 2 * GROWTH_CHUNK * 16 * 4  # layers x rows x KV heads x columns x D x fp32
    assert m.dense_equivalent == 2 * 3 * 2 * 2 * 42 * 16 * 4  # K+V x layers x rows x KV heads x tokens x D x fp32
    assert m.k_saving == 1 - m.middle_k / m.middle_dense and m.v_saving == 1 - m.middle_v / m.middle_dense
    assert memory_report(cache) == (
        f"middle tokens: K {1 - m.k_saving:.1%} of dense ({m.k_saving:.1%} saved), "
        f"V {1 - m.v_saving:.1%} of dense ({m.v_saving:.1%} saved)\n"
        f"cache: {m.allocated / 2**20:.2f} MiB allocated vs {m.dense_equivalent / 2**20:.2f} MiB for a dense cache "
        "of the same tokens")
    assert f"K {mask.k_fraction_kept:.1%} of dense" in memory_report(cache)
    assert f"cache: {m.allocated / 2**20:.2f} MiB" != "cache: 0.00 MiB"  # the figures are large enough to check


@pytest.mark.parametrize("sink,recent", [(3, 8), (5, 3)])
def test_windows_whose_ring_does_not_wrap_evenly_decode_like_the_oracle(sink, recent):
    """A sink that is not a multiple of half the ring catches any slot arithmetic that only works for 4 / 8."""
    model = peaked_model()
    alpha = torch.rand(2, 2, 16, generator=torch.Generator().manual_seed(0))
    mask = LeanKMask.from_importance(alpha, 0.5, 4, sink, recent, model_hash=model_hash(model))
    apply(model, mask)
    ids = prompt(sink + recent + 3)
    tokens, logits, _ = generate(model, ids, mask, new=2 * recent + 2)
    assert torch.allclose(logits[:, 1:], oracle_logits(model, ids, tokens[:, :-1], mask), atol=1e-4)


def test_a_multi_token_call_on_a_batch_keeps_rows_and_tokens_apart():
    model = peaked_model()
    mask = random_mask(model)
    apply(model, mask)
    ids, follow_up = prompt(15, batch=2), prompt(6, seed=4, batch=2)
    cache = LeanKCache(mask, model.config)
    with torch.no_grad():
        model(ids, **cache_kwargs(model, cache))
        logits = model(follow_up, **cache_kwargs(model, cache)).logits
    for row in range(2):
        assert torch.allclose(logits[row], oracle_logits(model, ids[row:row + 1], follow_up[row:row + 1], mask)[0],
                              atol=1e-4)


def test_prompt_attention_uses_the_modules_scaling():
    """Models with a non-default attention scale (e.g. a query pre-scalar) get it for the prompt too."""
    model = peaked_model()
    mask = random_mask(model)
    apply(model, mask)
    layer = LeanKCache(mask, model.config).layers[0]
    g = torch.Generator().manual_seed(0)
    q = torch.randn(1, 4, 6, 16, generator=g)
    k, v = torch.randn(1, 2, 6, 16, generator=g), torch.randn(1, 2, 6, 16, generator=g)
    out = layer.attend(model.model.layers[0].self_attn, q, *layer.update(k, v), None, 0.05)
    expected = torch.nn.functional.scaled_dot_product_attention(q, k.repeat_interleave(2, 1), v.repeat_interleave(2, 1),
                                                                is_causal=True, scale=0.05)
    assert torch.allclose(out, expected.transpose(1, 2), atol=1e-5)


def test_rows_repeated_or_selected_after_the_prompt_decode_as_their_source_row():
    """batch_repeat_interleave (sampling several sequences per prompt) and the lengths kept by select."""
    model = peaked_model()
    mask = random_mask(model)
    apply(model, mask)
    rows = [prompt(n, seed=10 + i)[0] for i, n in enumerate([25, 17])]
    ids, attn = left_padded(rows)
    cache = LeanKCache(mask, model.config)
    with torch.no_grad():
        positions = (attn.cumsum(-1) - 1).clamp(min=0)  # as generate numbers a left-padded row
        first = model(ids, attention_mask=attn, position_ids=positions, **cache_kwargs(model, cache)).logits[:, -1]
        cache.batch_repeat_interleave(2)  # rows 0, 0, 1, 1
        assert allocated_bytes(cache) > 0  # accounting reads the selected rows' lengths
        state = cache.layers[0].state()
        assert state.mid_len.tolist() == [25 - SINK - RECENT] * 2 + [17 - SINK - RECENT] * 2
        nxt = first.argmax(-1).repeat_interleave(2)[:, None]
        positions = torch.tensor([[25], [25], [17], [17]])
        logits = model(nxt, position_ids=positions, **cache_kwargs(model, cache)).logits[:, 0]
    assert torch.allclose(logits[0], logits[1], atol=1e-6) and torch.allclose(logits[2], logits[3], atol=1e-6)
    for i, r in enumerate(rows):
        _, alone, _ = generate(model, r[None], mask, new=2)
        assert torch.allclose(logits[2 * i], alone[0, 1], atol=1e-4)


def test_a_reset_cache_serves_a_new_prompt_like_a_fresh_one():
    model = peaked_model()
    mask = random_mask(model)
    apply(model, mask)
    cache = LeanKCache(mask, model.config)
    cache.reset()  # a cache that never saw a token resets too
    with torch.no_grad():
        model(prompt(30, seed=3), **cache_kwargs(model, cache))
        storage = weakref.ref(cache.layers[0].mid_k)
        cache.reset()
        gc.collect()
        assert cache.get_seq_length() == 0 and storage() is None  # the old tokens' storage is released
        model(prompt(20), **cache_kwargs(model, cache))
        reused = model(prompt(1, seed=7), **cache_kwargs(model, cache)).logits
        fresh = LeanKCache(mask, model.config)
        model(prompt(20), **cache_kwargs(model, fresh))
        expected = model(prompt(1, seed=7), **cache_kwargs(model, fresh)).logits
    assert torch.equal(reused, expected)


def test_padding_beyond_the_longest_row_costs_no_middle_capacity():
    """Every row padded (pad_to_multiple_of): capacity follows the longest real row, not the padded width."""
    model = peaked_model()
    mask = random_mask(model)
    apply(model, mask)
    longest = SINK + RECENT + GROWTH_CHUNK  # exactly one chunk of middle tokens
    rows = [prompt(longest, seed=1)[0], prompt(longest - 10, seed=2)[0]]
    ids, attn = left_padded(rows)
    pad = torch.zeros(2, 8, dtype=torch.long)
    ids, attn = torch.cat([pad, ids], 1), torch.cat([pad, attn], 1)
    cache = LeanKCache(mask, model.config)
    with torch.no_grad():
        model(ids, attention_mask=attn, **cache_kwargs(model, cache))
    assert cache.layers[0].mid_k.shape[-1] == GROWTH_CHUNK


@pytest.mark.parametrize("allowed_value,masked_value", [(True, False), (0.0, float("-inf"))])
def test_left_padding_is_read_from_bool_and_additive_masks(allowed_value, masked_value):
    """The last query row of a 4D mask: True / 0.0 attend, False / -inf do not; a row needs one real token."""
    pads = [0, 3, 5]
    mask = torch.full((3, 1, 2, 6), allowed_value)
    for row, pad in enumerate(pads):
        mask[row, 0, :, :pad] = masked_value
    assert _left_padding(mask, 3, 6) == pads
    assert _left_padding(None, 2, 6) == [0, 0]
    right = mask.flip(-1)
    with pytest.raises(ValueError, match="left-padded"):
        _left_padding(right, 3, 6)
    empty = torch.full((1, 1, 1, 4), masked_value)
    with pytest.raises(ValueError, match="at least one token"):
        _left_padding(empty, 1, 4)
