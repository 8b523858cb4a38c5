"""Model ids and mask references."""

from __future__ import annotations

import re

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
    assert str(MaskRef("org/m", "abc")) == "org/m"  # unresolved: no version to show


@pytest.mark.parametrize("bad, needle", [
    ("org/m@", "invalid mask reference 'org/m@': use 'org/name' or 'org/name@VERSION'"),
    ("org/m@x", "invalid mask reference 'org/m@x'"),
    ("org/m@1@2", "invalid mask reference 'org/m@1@2'"),
    ("org/m@0", "version must be a positive integer, got 0"),
    ("../x@1", "invalid model id '../x'"),
])
def test_parse_ref_refuses_malformed_refs(bad: str, needle: str) -> None:
    with pytest.raises(ValueError, match=re.escape(needle)):
        parse_ref(bad)


@pytest.mark.parametrize("version", [0, -1, "1", 1.0])
def test_a_ref_version_is_a_positive_integer(version) -> None:
    with pytest.raises(ValueError, match="version must be a positive integer"):
        MaskRef("org/m", version=version)
