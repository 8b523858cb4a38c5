"""LeanKMask: stage-2 quantisation, statistics and safe serialisation."""

from __future__ import annotations

import pytest
import torch

from leank_core.mask import LeanKMask, quantize_importance


def random_alpha(shape=(4, 3, 32), seed=0) -> torch.Tensor:
    return torch.rand(shape, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("ratio,align", [(0.7, 8), (0.5, 16), (0.3, 4), (0.0, 8)])
def test_quantisation_hits_ratio_within_one_alignment_unit_per_head(ratio, align):
    alpha = random_alpha()
    mask = quantize_importance(alpha, ratio, align)
    counts = mask.sum(-1)
    assert bool((counts % align == 0).all())
    n_heads = counts.numel()
    kept_target = (1 - ratio) * mask.numel()
    assert abs(int(counts.sum()) - kept_target) <= align * n_heads / 2 + 1


def test_quantisation_keeps_each_heads_top_channels_and_uses_a_global_threshold():
    alpha = torch.zeros(2, 1, 8)
    alpha[0, 0] = torch.tensor([0.9, 0.1, 0.8, 0.2, 0.95, 0.05, 0.7, 0.3])
    alpha[1, 0] = 0.01 * torch.arange(8)  # an unimportant layer loses everything globally
    mask = quantize_importance(alpha, ratio=0.75, align=2)
    assert mask[0, 0].tolist() == [True, False, True, False, True, False, True, False]
    assert not mask[1].any()


def test_quantisation_rejects_bad_settings():
    with pytest.raises(ValueError, match="ratio"):
        quantize_importance(random_alpha(), 1.0, 8)
    with pytest.raises(ValueError, match="align"):
        quantize_importance(random_alpha(), 0.5, 5)


def test_fractions_and_histogram_count_zero_heads_as_dropping_values():
    mask = torch.zeros(1, 4, 8, dtype=torch.bool)
    mask[0, 1, :4] = True
    mask[0, 2, :] = True
    m = LeanKMask(kept=mask, sink=2, recent=4, align=4, ratio=0.5)
    assert m.histogram() == {0: 2, 4: 1, 8: 1}
    assert m.k_fraction_kept == pytest.approx(12 / 32)
    assert m.v_fraction_kept == pytest.approx(2 / 4)


def test_misaligned_mask_is_rejected():
    mask = torch.zeros(1, 1, 8, dtype=torch.bool)
    mask[0, 0, :3] = True
    with pytest.raises(ValueError, match="multiple of align"):
        LeanKMask(kept=mask, sink=2, recent=4, align=4, ratio=0.5)


def test_save_load_round_trips_everything(tmp_path):
    m = LeanKMask.from_importance(random_alpha(), 0.7, 8, sink=16, recent=64, model_id="org/m",
                                  model_hash="abc", extra={"training_config": {"lr": 0.02}})
    loaded = LeanKMask.load(m.save(tmp_path / "m.safetensors"))
    assert torch.equal(loaded.kept, m.kept) and torch.equal(loaded.importance, m.importance)
    assert (loaded.sink, loaded.recent, loaded.align, loaded.ratio) == (16, 64, 8, 0.7)
    assert (loaded.model_id, loaded.model_hash, loaded.extra) == ("org/m", "abc", m.extra)
    assert loaded.sha256() == m.sha256()


def test_loading_junk_or_a_plain_safetensors_file_fails_cleanly(tmp_path):
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\x00" * 3)
    with pytest.raises(ValueError, match="cannot read mask"):
        LeanKMask.load(junk)
    from safetensors.torch import save_file

    save_file({"x": torch.ones(2)}, tmp_path / "plain.safetensors")
    with pytest.raises(ValueError, match="not a LeanK mask"):
        LeanKMask.load(tmp_path / "plain.safetensors")


def test_reference_release_format_is_read_without_pickle(tmp_path):
    ref = torch.zeros(2, 2, 8)
    ref[0, 0, :4] = 1
    ref[1, 1, :] = 1
    torch.save(ref, tmp_path / "mask.pt")
    m = LeanKMask.from_reference_file(tmp_path / "mask.pt", sink=4, recent=8)
    assert torch.equal(m.kept, ref.bool()) and m.align == 4 and m.ratio == pytest.approx(1 - 12 / 32)

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    torch.save({"x": Evil()}, tmp_path / "evil.pt", _use_new_zipfile_serialization=True)
    with pytest.raises(ValueError, match="cannot read reference mask"):
        LeanKMask.from_reference_file(tmp_path / "evil.pt")


def test_ties_at_the_threshold_do_not_collapse_the_kept_total():
    """Clamping sends many alphas to exactly 0; the kept total must still match the ratio."""
    alpha = torch.zeros(2, 2, 16)
    alpha[0, 0, :2] = 0.5  # far fewer nonzero values than the 50% to keep
    mask = quantize_importance(alpha, 0.5, 4)
    assert abs(int(mask.sum()) - 32) <= 4 * 4 // 2 and bool(mask[0, 0, :2].all())  # half a unit per head


def test_random_baseline_keeps_the_per_head_counts_but_not_the_channels():
    m = LeanKMask.from_importance(random_alpha((3, 4, 32)), 0.7, 8, sink=4, recent=8)
    r = m.random_like(seed=1)
    assert torch.equal(r.kept_counts(), m.kept_counts())
    assert not torch.equal(r.kept, m.kept)
    assert torch.equal(r.kept, m.random_like(seed=1).kept)


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
