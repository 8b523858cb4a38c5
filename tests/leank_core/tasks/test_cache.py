"""The generated-set cache: a hit returns the very same samples without rebuilding them; any
change of tokenizer, arguments or task code is a miss; a damaged entry is rebuilt."""

from __future__ import annotations

import pytest
from transformers import ByT5Tokenizer

from leank_core.tasks import cache as cache_module
from leank_core.tasks import cached_samples, make_samples

ARGS = dict(split="eval", tasks=["passkey", "qa_documents"], lengths=[1024], n_per_cell=2, seed=3)


@pytest.fixture
def built(monkeypatch):
    """Counts real builds (calls of make_samples through the cache)."""
    calls = []

    def counting(*args, **kwargs):
        calls.append(args)
        return make_samples(*args, **kwargs)

    monkeypatch.setattr(cache_module, "make_samples", counting)
    return calls


def test_a_hit_returns_the_same_samples_without_building(tmp_path, built):
    tok = ByT5Tokenizer(extra_ids=0)
    first = cached_samples(tok, **ARGS, cache_dir=tmp_path)
    again = cached_samples(tok, **ARGS, cache_dir=tmp_path)
    assert len(built) == 1 and again.to_list() == first.to_list() == make_samples(tok, **ARGS).to_list()
    assert again.features == first.features
    assert [p.name for p in tmp_path.iterdir()] == [p.name for p in tmp_path.iterdir() if ".tmp" not in p.name]


@pytest.mark.parametrize("change", [dict(seed=4), dict(n_per_cell=3), dict(tasks=["passkey"]), dict(lengths=[2048])])
def test_other_arguments_are_other_entries(tmp_path, built, change):
    tok = ByT5Tokenizer(extra_ids=0)
    cached_samples(tok, **ARGS, cache_dir=tmp_path)
    other = cached_samples(tok, **(ARGS | change), cache_dir=tmp_path)
    assert len(built) == 2 and other.to_list() == make_samples(tok, **(ARGS | change)).to_list()


def test_tokenizer_and_code_are_part_of_the_key(tmp_path, built, monkeypatch):
    tok = ByT5Tokenizer(extra_ids=0)
    cached_samples(tok, **ARGS, cache_dir=tmp_path)
    with_bos = ByT5Tokenizer(extra_ids=0)
    with_bos.bos_token = with_bos.pad_token  # other prompt ids, same vocabulary
    assert cached_samples(with_bos, **ARGS, cache_dir=tmp_path)[0]["input_ids"][0] == with_bos.pad_token_id
    monkeypatch.setattr(cache_module, "code_identity", lambda: "edited builders")
    cached_samples(tok, **ARGS, cache_dir=tmp_path)
    assert len(built) == 3


def test_a_damaged_entry_is_rebuilt(tmp_path, built):
    tok = ByT5Tokenizer(extra_ids=0)
    first = cached_samples(tok, **ARGS, cache_dir=tmp_path)
    (entry,) = tmp_path.iterdir()
    for f in entry.iterdir():
        f.write_bytes(b"\0" * 10)
    assert cached_samples(tok, **ARGS, cache_dir=tmp_path).to_list() == first.to_list() and len(built) == 2


def test_the_default_place_is_the_user_cache_dir(tmp_path, monkeypatch, built):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    cached_samples(ByT5Tokenizer(extra_ids=0), **ARGS)
    assert len(list((tmp_path / "leank" / "tasks").iterdir())) == 1
