"""LeanKMask: stage-2 quantisation, statistics and safe serialisation."""

from __future__ import annotations

import json
import math

import pytest
import torch
from safetensors.torch import save, save_file

from leank_core.mask import LeanKMask, check_ratio_align, check_window, quantize_importance


def random_alpha(shape=(4, 3, 32), seed=0) -> torch.Tensor:
    return torch.rand(shape, generator=torch.Generator().manual_seed(seed))


def oracle_mask(alpha: torch.Tensor, ratio: float, align: int) -> torch.Tensor:
    """quantize_importance's docstring, element by element in plain Python (ties: lower flat / channel index first)."""
    layers, heads, d = alpha.shape
    values = alpha.flatten().tolist()
    n_drop = int(round(ratio * len(values)))
    dropped = set(sorted(range(len(values)), key=lambda i: (values[i], i))[:n_drop])
    out = torch.zeros(alpha.shape, dtype=torch.bool)
    for l in range(layers):
        for h in range(heads):
            first = (l * heads + h) * d
            above = sum(first + c not in dropped for c in range(d))
            count = min(d, max(0, math.floor(above / align + 0.5) * align))
            for c in sorted(range(d), key=lambda c: (-values[first + c], c))[:count]:
                out[l, h, c] = True
    return out


# Realistic shapes: SmolLM2 (30 layers x 3 KV heads x 64) and a head_dim-128 model.
@pytest.mark.parametrize("shape", [(30, 3, 64), (4, 8, 128)])
@pytest.mark.parametrize("ratio,align", [(0.7, 16), (0.5, 32), (0.3, 64), (0.0, 16), (0.9, 16)])
def test_quantisation_is_the_specified_mask_exactly_at_head_dim_64_and_128(shape, ratio, align):
    """Per-head kept counts (global threshold, rounded to align) and the kept channels, bit for bit."""
    alpha = random_alpha(shape, seed=len(shape) + shape[-1])
    mask = quantize_importance(alpha, ratio, align)
    expected = oracle_mask(alpha, ratio, align)
    assert mask.dtype == torch.bool and mask.shape == alpha.shape
    assert torch.equal(mask.sum(-1), expected.sum(-1))
    assert torch.equal(mask, expected)


def test_rounding_of_a_heads_count_is_half_up_to_whole_alignment_units():
    """Above-threshold counts 7, 8, 9 (align 16) become 0, 16, 16: round half up, never truncation."""
    alpha = torch.zeros(1, 3, 16)
    for h, n_above in enumerate([7, 8, 9]):
        alpha[0, h, :n_above] = 1.0
    mask = quantize_importance(alpha, ratio=1 - 24 / 48, align=16)
    assert mask.sum(-1).tolist() == [[0, 16, 16]]


def test_quantisation_keeps_each_heads_top_channels_and_uses_a_global_threshold():
    alpha = torch.zeros(2, 1, 8)
    alpha[0, 0] = torch.tensor([0.9, 0.1, 0.8, 0.2, 0.95, 0.05, 0.7, 0.3])
    alpha[1, 0] = 0.01 * torch.arange(8)  # an unimportant layer loses everything globally
    mask = quantize_importance(alpha, ratio=0.75, align=2)
    assert mask[0, 0].tolist() == [True, False, True, False, True, False, True, False]
    assert not mask[1].any()


def test_ties_at_the_threshold_do_not_collapse_the_kept_total():
    """Clamping sends many alphas to exactly 0: the ratio-quantile drops the first 32 of the flat order, so
    the heads keep 2 -> 4, 0 -> 0, 14 -> 16 and 16 channels, ties kept lowest channel first."""
    alpha = torch.zeros(2, 2, 16)
    alpha[0, 0, :2] = 0.5  # far fewer nonzero values than the 50% to keep
    mask = quantize_importance(alpha, 0.5, 4)
    assert mask.sum(-1).tolist() == [[4, 0], [16, 16]]
    assert mask[0, 0].nonzero().flatten().tolist() == [0, 1, 2, 3]


@pytest.mark.parametrize("head_dim", [64, 128])
def test_equal_alphas_give_one_mask_whatever_the_sort_algorithm(head_dim):
    """Few distinct values (as after clamping): ties are broken by position, so the mask is a function of α alone."""
    alpha = torch.randint(0, 3, (6, 3, head_dim), generator=torch.Generator().manual_seed(2)).float() / 2
    mask = quantize_importance(alpha, 0.6, 16)
    assert torch.equal(mask, oracle_mask(alpha, 0.6, 16))


def test_identical_alpha_gives_a_bit_identical_mask_and_digest_whatever_its_memory_layout():
    alpha = torch.randint(0, 4, (30, 3, 64), generator=torch.Generator().manual_seed(3)).float()
    transposed = alpha.transpose(0, 2).contiguous().transpose(0, 2)  # same values, other strides
    strided = torch.zeros(30, 3, 128)[..., ::2]
    strided.copy_(alpha)
    masks = [LeanKMask.from_importance(a, 0.7, 16, sink=4, recent=8)
             for a in (alpha, transposed, strided, alpha.double())]
    assert all(torch.equal(m.kept, masks[0].kept) for m in masks)
    assert len({m.sha256() for m in masks}) == 1


def test_quantisation_rejects_bad_settings():
    with pytest.raises(ValueError, match=r"ratio must be in \[0, 1\)"):
        quantize_importance(random_alpha(), 1.0, 8)
    with pytest.raises(ValueError, match="align must be a positive divisor of head_dim=32"):
        quantize_importance(random_alpha(), 0.5, 5)
    with pytest.raises(ValueError, match=r"importance must have shape \[layers, kv_heads, head_dim\], got \(3, 32\)"):
        quantize_importance(torch.rand(3, 32), 0.5, 8)


@pytest.mark.parametrize("ratio", [-0.01, 1.0, 1.5])
def test_ratios_outside_zero_to_one_are_refused(ratio):
    with pytest.raises(ValueError, match=f"ratio must be in .*got {ratio}"):
        check_ratio_align(ratio, 16, 64)


@pytest.mark.parametrize("align", [0, -16, 2.0, 24, 128])
def test_aligns_that_are_not_positive_integer_divisors_are_refused(align):
    with pytest.raises(ValueError, match=f"align must be a positive divisor of head_dim=64 .*got {align}"):
        check_ratio_align(0.5, align, 64)


def test_the_edges_of_the_valid_settings_are_accepted():
    for ratio, align in [(0.0, 1), (0.999, 64), (0.5, 1)]:
        check_ratio_align(ratio, align, 64)
    check_window(0, 1)  # no sink, a recent window of the query alone
    assert LeanKMask(kept=torch.ones(1, 1, 3, dtype=torch.bool), sink=0, recent=1, align=1, ratio=0.0).align == 1


@pytest.mark.parametrize("sink,recent", [(-1, 4), (4, 0), (-1, 0)])
def test_windows_without_a_dense_query_token_are_refused(sink, recent):
    with pytest.raises(ValueError, match=f"sink must be >= 0 and recent >= 1, got sink={sink} recent={recent}"):
        check_window(sink, recent)


def test_fractions_and_histogram_count_zero_heads_as_dropping_values():
    mask = torch.zeros(1, 4, 8, dtype=torch.bool)
    mask[0, 1, :4] = True
    mask[0, 2, :] = True
    m = LeanKMask(kept=mask, sink=2, recent=4, align=4, ratio=0.5)
    assert m.histogram() == {0: 2, 4: 1, 8: 1}
    assert m.k_fraction_kept == 12 / 32
    assert m.v_fraction_kept == 2 / 4
    assert m.shape == (1, 4, 8) and m.kept_counts().tolist() == [[0, 4, 8, 0]]


def test_misaligned_mask_is_rejected():
    mask = torch.zeros(1, 1, 8, dtype=torch.bool)
    mask[0, 0, :3] = True
    with pytest.raises(ValueError, match="every head's kept count must be a multiple of align=4"):
        LeanKMask(kept=mask, sink=2, recent=4, align=4, ratio=0.5)
    with pytest.raises(ValueError, match="align=3 does not divide head_dim=8"):
        LeanKMask(kept=torch.zeros(1, 1, 8, dtype=torch.bool), sink=2, recent=4, align=3, ratio=0.5)


@pytest.mark.parametrize("kept", [torch.ones(1, 2, 8), torch.ones(1, 2, 8, dtype=torch.uint8),
                                  torch.full((1, 2, 8), 0.5)])
def test_a_mask_that_is_not_bool_is_refused(kept):
    """A 0/1 float (or a score tensor) converted silently would keep every nonzero channel."""
    with pytest.raises(ValueError, match=f"mask must be a bool tensor .*got {kept.dtype}"):
        LeanKMask(kept=kept, sink=2, recent=4, align=4, ratio=0.0)


def test_mask_and_importance_are_stored_as_contiguous_cpu_bool_and_float32():
    kept = torch.ones(8, 2, 1, dtype=torch.bool).transpose(0, 2)  # [1, 2, 8], not contiguous
    importance = torch.rand(8, 2, 1, dtype=torch.float64).transpose(0, 2)
    m = LeanKMask(kept=kept, sink=2, recent=4, align=4, ratio=0.0, importance=importance)
    assert m.kept.is_contiguous() and m.kept.dtype == torch.bool and m.kept.device.type == "cpu"
    assert m.importance.is_contiguous() and m.importance.dtype == torch.float32
    assert torch.equal(m.importance, importance.float())
    assert LeanKMask.from_bytes(m.to_bytes()).kept.tolist() == kept.tolist()  # safetensors needs contiguous
    with pytest.raises(ValueError, match="^importance must have the same shape as the mask$"):
        LeanKMask(kept=m.kept, sink=2, recent=4, align=4, ratio=0.0, importance=torch.rand(1, 2, 4))
    with pytest.raises(ValueError, match=r"mask must have shape \[layers, kv_heads, head_dim\], got \(2, 8\)"):
        LeanKMask(kept=torch.ones(2, 8, dtype=torch.bool), sink=2, recent=4, align=4, ratio=0.0)
    with pytest.raises(ValueError, match="sink must be >= 0"):
        LeanKMask(kept=m.kept, sink=-1, recent=4, align=4, ratio=0.0)


def test_from_importance_keeps_alpha_settings_and_provenance():
    alpha = random_alpha((2, 2, 16))
    extra = {"training_config": {"lr": 0.1}}
    m = LeanKMask.from_importance(alpha, 0.5, 4, sink=3, recent=5, model_id="org/m", model_hash="h", extra=extra)
    assert torch.equal(m.kept, quantize_importance(alpha, 0.5, 4)) and torch.equal(m.importance, alpha)
    assert (m.sink, m.recent, m.align, m.ratio, m.model_id, m.model_hash) == (3, 5, 4, 0.5, "org/m", "h")
    assert m.extra == extra and m.extra is not extra
    plain = LeanKMask.from_importance(alpha, 0.5, 4, sink=3, recent=5)
    assert (plain.extra, plain.model_id, plain.model_hash) == ({}, "", "")
    same = m.with_identity("org/other", "h2")
    assert (same.model_id, same.model_hash) == ("org/other", "h2") and torch.equal(same.kept, m.kept)
    assert (same.sink, same.recent, same.align, same.ratio, same.extra) == (3, 5, 4, 0.5, extra)


def test_save_load_round_trips_everything(tmp_path):
    m = LeanKMask.from_importance(random_alpha(), 0.7, 8, sink=16, recent=64, model_id="org/m",
                                  model_hash="abc", extra={"training_config": {"lr": 0.02}})
    path = m.save(tmp_path / "new" / "dir" / "m.safetensors")
    assert path == tmp_path / "new" / "dir" / "m.safetensors" and [p.name for p in path.parent.iterdir()] == [path.name]
    loaded = LeanKMask.load(path)
    assert torch.equal(loaded.kept, m.kept) and torch.equal(loaded.importance, m.importance)
    assert (loaded.sink, loaded.recent, loaded.align, loaded.ratio) == (16, 64, 8, 0.7)
    assert (loaded.model_id, loaded.model_hash, loaded.extra) == ("org/m", "abc", m.extra)
    assert loaded.sha256() == m.sha256() and path.read_bytes() == m.to_bytes()
    m.with_identity("org/m", "def").save(path)  # overwrites in place
    assert LeanKMask.load(path).model_hash == "def"


def test_metadata_is_the_documented_strings_and_the_bytes_are_canonical():
    m = LeanKMask.from_importance(random_alpha((1, 2, 8)), 0.5, 4, sink=2, recent=3, model_id="org/m",
                                  model_hash="h", extra={"b": 1, "a": [2]})
    assert m.metadata() == {"format": "leank-mask", "format_version": "1", "sink": "2", "recent": "3", "align": "4",
                            "ratio": "0.5", "model_id": "org/m", "model_hash": "h", "extra": '{"a": [2], "b": 1}'}
    header = header_text(m.to_bytes())
    assert header.rstrip() == json.dumps(json.loads(header), sort_keys=True, separators=(",", ":"))
    tensors = json.loads(header)
    assert set(tensors) == {"__metadata__", "importance", "mask"}
    assert (tensors["mask"]["dtype"], tensors["importance"]["dtype"]) == ("U8", "F32")  # the digest's format
    without_importance = LeanKMask(kept=m.kept, sink=2, recent=3, align=4, ratio=0.5)
    assert set(json.loads(header_text(without_importance.to_bytes()))) == {"__metadata__", "mask"}


def header_text(data: bytes) -> str:
    return data[8:8 + int.from_bytes(data[:8], "little")].decode()


def test_a_file_without_optional_metadata_reads_with_defaults():
    meta = {"format": "leank-mask", "sink": "2", "recent": "3", "align": "4", "ratio": "0.25"}
    m = LeanKMask.from_bytes(save({"mask": torch.ones(1, 1, 8, dtype=torch.uint8)}, metadata=meta))
    assert (m.model_id, m.model_hash, m.extra, m.importance) == ("", "", {}, None)
    assert (m.sink, m.recent, m.align, m.ratio) == (2, 3, 4, 0.25) and bool(m.kept.all())


def safetensors_with_header(header: bytes, length: int | None = None) -> bytes:
    return (len(header) if length is None else length).to_bytes(8, "little") + header


@pytest.mark.parametrize("data,message", [
    (b"\x00" * 3, "file too short to be safetensors"),
    (safetensors_with_header(b"{}", length=0), "corrupt safetensors header"),
    (safetensors_with_header(b"{}", length=3), "corrupt safetensors header"),
    (safetensors_with_header(b"{not json"), "corrupt safetensors header"),
    (safetensors_with_header(b'{"a": "\xff"}'), "corrupt safetensors header"),
    (safetensors_with_header(b'{"__metadata__": null}'), "not a LeanK mask file"),
    (b"\x00" * 8, "corrupt safetensors header$"),  # long enough for a header length, which is 0
    (safetensors_with_header(b"[1]"), "corrupt safetensors header$"),
    (safetensors_with_header(b'{"__metadata__": [1]}'), r"corrupt safetensors header \(no string metadata\)$"),
    (safetensors_with_header(b'{"__metadata__": {"sink": 2}}'), r"corrupt safetensors header \(no string metadata\)$"),
    (safetensors_with_header(b'{"__metadata__": {"format": "other"}}'), "not a LeanK mask file"),
])
def test_loading_junk_fails_cleanly_with_the_reason(tmp_path, data, message):
    path = tmp_path / "junk.safetensors"
    path.write_bytes(data)
    with pytest.raises(ValueError, match=f"cannot read mask {path}: {message}") as err:
        LeanKMask.load(path)
    assert "\n" not in str(err.value)


def test_loading_a_plain_safetensors_file_or_bad_fields_fails_cleanly(tmp_path):
    save_file({"x": torch.ones(2)}, tmp_path / "plain.safetensors")
    with pytest.raises(ValueError, match="not a LeanK mask"):
        LeanKMask.load(tmp_path / "plain.safetensors")
    bad_extra = {"format": "leank-mask", "sink": "2", "recent": "3", "align": "4", "ratio": "0", "extra": "{"}
    ones = {"mask": torch.ones(1, 1, 8, dtype=torch.uint8)}
    (tmp_path / "extra.safetensors").write_bytes(save(ones, metadata=bad_extra))
    with pytest.raises(ValueError, match="cannot read mask"):
        LeanKMask.load(tmp_path / "extra.safetensors")
    no_sink = {"format": "leank-mask", "recent": "3", "align": "4", "ratio": "0"}
    (tmp_path / "sink.safetensors").write_bytes(save(ones, metadata=no_sink))
    with pytest.raises(ValueError, match="cannot read mask .*sink"):
        LeanKMask.load(tmp_path / "sink.safetensors")
    for missing in (tmp_path / "nope.safetensors", tmp_path):
        with pytest.raises(FileNotFoundError, match=f"mask file not found: {missing}"):
            LeanKMask.load(missing)


def test_reference_release_format_is_read_without_pickle(tmp_path):
    ref = torch.zeros(2, 2, 8)
    ref[0, 0, :4] = 1
    ref[1, 1, :] = 1
    torch.save(ref, tmp_path / "mask.pt")
    m = LeanKMask.from_reference_file(tmp_path / "mask.pt", sink=4, recent=8, model_id="org/m", model_hash="h")
    assert torch.equal(m.kept, ref.bool()) and m.align == 4 and m.ratio == 1 - 12 / 32
    assert (m.sink, m.recent, m.model_id, m.model_hash, m.extra) == (4, 8, "org/m", "h", {"source": "reference"})
    default = LeanKMask.from_reference_file(tmp_path / "mask.pt", align=2)
    assert (default.sink, default.recent, default.align, default.model_id, default.model_hash) == (128, 768, 2, "", "")

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    torch.save({"x": Evil()}, tmp_path / "evil.pt", _use_new_zipfile_serialization=True)
    with pytest.raises(ValueError, match=f"cannot read reference mask {tmp_path / 'evil.pt'}: "):
        LeanKMask.from_reference_file(tmp_path / "evil.pt")


@pytest.mark.parametrize("content,message", [
    (torch.ones(2, 8), "must hold one tensor of shape"),
    ({"mask": torch.ones(1, 2, 8)}, "must hold one tensor of shape"),
    (torch.full((1, 2, 8), 0.5), "must contain only 0 and 1"),
    (torch.full((1, 2, 8), 2.0), "must contain only 0 and 1"),
])
def test_reference_files_that_are_not_one_binary_tensor_are_refused(tmp_path, content, message):
    torch.save(content, tmp_path / "ref.pt")
    with pytest.raises(ValueError, match=f"reference mask {tmp_path / 'ref.pt'} {message}"):
        LeanKMask.from_reference_file(tmp_path / "ref.pt")


@pytest.mark.parametrize("counts,head_dim,align", [
    ([16, 48, 0], 64, 16),   # zero heads do not constrain the alignment
    ([64, 64], 64, 64),      # capped by head_dim
    ([24, 40], 64, 8),       # gcd 8
    ([96], 128, 32),         # 96 = 3 * 32
    ([0, 0], 64, 64),        # an all-zero mask: any alignment, the largest
    ([32], 48, 16),          # 32 divides the count but not head_dim 48
    ([6], 64, 2),
    ([1, 2], 8, 1),          # odd counts: no alignment beyond 1
])
def test_reference_alignment_is_the_largest_power_of_two_dividing_every_count_and_head_dim(tmp_path, counts,
                                                                                          head_dim, align):
    ref = torch.zeros(1, len(counts), head_dim)
    for h, c in enumerate(counts):
        ref[0, h, :c] = 1
    torch.save(ref, tmp_path / "ref.pt")
    assert LeanKMask.from_reference_file(tmp_path / "ref.pt").align == align


def test_random_baseline_keeps_the_per_head_counts_but_not_the_channels():
    m = LeanKMask.from_importance(random_alpha((3, 4, 32)), 0.7, 8, sink=4, recent=8, model_id="org/m",
                                  model_hash="h", extra={"training_config": {"lr": 1}})
    r = m.random_like(seed=1)
    assert torch.equal(r.kept_counts(), m.kept_counts())
    assert not torch.equal(r.kept, m.kept)
    assert torch.equal(r.kept, m.random_like(seed=1).kept)
    assert not torch.equal(r.kept, m.random_like(seed=2).kept)
    assert r.importance is None and r.extra == {"training_config": {"lr": 1}, "baseline": "random", "seed": 1}
    assert (r.sink, r.recent, r.align, r.ratio, r.model_id, r.model_hash) == (4, 8, 8, 0.7, "org/m", "h")
    assert m.extra == {"training_config": {"lr": 1}}  # the learned mask's provenance is not touched


def test_keep_all_is_the_full_cache_in_the_masks_own_window_geometry():
    m = LeanKMask.from_importance(random_alpha((3, 4, 32)), 0.7, 8, sink=4, recent=8, model_id="org/m",
                                  model_hash="h", extra={"training_config": {"lr": 1}})
    full = m.keep_all()
    assert bool(full.kept.all()) and full.kept.shape == m.kept.shape
    assert (full.sink, full.recent, full.align, full.ratio, full.model_id, full.model_hash) == (4, 8, 8, 0.0, "org/m", "h")
    assert full.importance is None and full.extra == {"training_config": {"lr": 1}, "baseline": "full"}
    assert not bool(m.kept.all()) and m.extra == {"training_config": {"lr": 1}}  # the mask itself is not touched


def test_random_baseline_channels_are_uniform():
    """Every channel is as likely to be kept: over many seeds each is kept about count / D of the time."""
    kept = torch.zeros(1, 1, 16, dtype=torch.bool)
    kept[0, 0, :4] = True
    m = LeanKMask(kept=kept, sink=2, recent=4, align=4, ratio=0.75)
    freq = torch.stack([m.random_like(seed).kept[0, 0] for seed in range(800)]).float().mean(0)
    assert float((freq - 0.25).abs().max()) < 0.08


def test_a_truncated_mask_file_fails_cleanly_at_every_length(tmp_path):
    """`head -c N mask.safetensors` for any N: one ValueError, never a SafetensorError traceback."""
    data = LeanKMask.from_importance(random_alpha(), 0.5, 8, sink=4, recent=8, model_id="org/m").to_bytes()
    for cut in range(0, len(data), max(1, len(data) // 64)):
        (tmp_path / "cut.safetensors").write_bytes(data[:cut])
        with pytest.raises(ValueError, match="cannot read mask") as err:
            LeanKMask.load(tmp_path / "cut.safetensors")
        assert "\n" not in str(err.value)


def _with_metadata(mask: LeanKMask, **changes) -> bytes:
    from safetensors.torch import save

    meta = {**mask.metadata(), **changes}
    return save({"mask": mask.kept.to(torch.uint8)}, metadata={k: v for k, v in meta.items() if v is not None})


@pytest.mark.parametrize("changes, needle", [
    ({"sink": None}, "incomplete or malformed"),
    ({"align": "x"}, "incomplete or malformed"),
    ({"align": "0"}, "align must be a positive integer"),
    ({"ratio": "nan"}, "ratio must be a number in [0, 1]"),
    ({"ratio": "1.5"}, "ratio must be a number in [0, 1]"),
    ({"extra": "[1, 2]"}, "'extra' must be a JSON object"),
    ({"extra": "{not json"}, "incomplete or malformed"),
])
def test_malformed_mask_metadata_is_one_value_error(changes, needle):
    mask = LeanKMask(kept=torch.ones(2, 2, 8, dtype=torch.bool), sink=2, recent=4, align=8, ratio=0.0)
    with pytest.raises(ValueError, match=needle.replace("[", r"\[").replace("]", r"\]")):
        LeanKMask.from_bytes(_with_metadata(mask, **changes))


def test_a_mask_file_with_other_tensors_is_refused():
    from safetensors.torch import save

    mask = LeanKMask(kept=torch.ones(2, 2, 8, dtype=torch.bool), sink=2, recent=4, align=8, ratio=0.0)
    data = save({"mask": mask.kept.to(torch.uint8), "payload": torch.zeros(3)}, metadata=mask.metadata())
    with pytest.raises(ValueError, match="holds 'mask'"):
        LeanKMask.from_bytes(data)
    with pytest.raises(ValueError, match="holds 'mask'"):
        LeanKMask.from_bytes(save({"kept": mask.kept.to(torch.uint8)}, metadata=mask.metadata()))


def test_damaged_tensor_data_and_metadata_errors_name_the_problem():
    data = LeanKMask(kept=torch.ones(2, 2, 8, dtype=torch.bool), sink=2, recent=4, align=8, ratio=0.0).to_bytes()
    with pytest.raises(ValueError, match=r"^corrupt or truncated safetensors data \("):
        LeanKMask.from_bytes(data[:-3])
    mask = LeanKMask(kept=torch.ones(2, 2, 8, dtype=torch.bool), sink=2, recent=4, align=8, ratio=0.0)
    with pytest.raises(ValueError, match=r"^mask metadata is incomplete or malformed \(KeyError: 'sink'\)$"):
        LeanKMask.from_bytes(_with_metadata(mask, sink=None))
    with pytest.raises(ValueError, match="^mask metadata 'extra' must be a JSON object$"):
        LeanKMask.from_bytes(_with_metadata(mask, extra="[1, 2]"))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_a_mask_built_from_cuda_tensors_is_held_on_the_cpu():
    kept, alpha = torch.ones(1, 2, 8, dtype=torch.bool, device="cuda"), torch.rand(1, 2, 8, device="cuda")
    m = LeanKMask(kept=kept, sink=2, recent=4, align=8, ratio=0.0, importance=alpha)
    assert m.kept.device.type == m.importance.device.type == "cpu"
