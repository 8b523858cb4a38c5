"""Model ids and mask references."""

from __future__ import annotations

import pytest

from registry import MaskRef, check_model_id, parse_ref


@pytest.mark.parametrize("good", ["Qwen/Qwen2.5-7B-Instruct", "meta-llama/Llama-3.1-8B", "org/m_1"])
def test_hub_style_ids_are_accepted(good: str) -> None:
    assert check_model_id(good) == good


@pytest.mark.parametrize("bad", ["", "org", "org/", "/org/m", "org/m/x", "../m", "org/..", "org/a..b",
                                 ".org/m", "org/m\x00", "org/m\n", "org\\m", "org/m x", "org/" + "a" * 200])
def test_ids_that_are_not_plain_org_name_are_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="invalid model id") as err:
        check_model_id(bad)
    assert "\n" not in str(err.value)


def test_parse_ref_with_and_without_version() -> None:
    assert parse_ref("org/m") == MaskRef("org/m")
    assert parse_ref("org/m@12") == MaskRef("org/m", version=12)
    assert str(MaskRef("org/m", "abc", 3)) == "org/m@3"


@pytest.mark.parametrize("bad", ["org/m@", "org/m@x", "org/m@0", "org/m@1@2", "../x@1"])
def test_parse_ref_refuses_malformed_refs(bad: str) -> None:
    with pytest.raises(ValueError):
        parse_ref(bad)
