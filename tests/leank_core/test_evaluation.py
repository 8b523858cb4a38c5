"""Scoring of generated answers (what the gate's accuracy is made of)."""

from __future__ import annotations

import pytest

from leank_core.evaluation import score


def test_score_is_the_fraction_of_expected_strings_found():
    assert score("The pass key is 12345.", ["12345"]) == 1.0
    assert score("1234", ["12345"]) == 0.0
    assert score("alpha and GAMMA", ["alpha", "beta", "gamma", "delta"]) == 0.5
    assert score("ABCDEF-0A", ["abcdef-0a"]) == 1.0
    with pytest.raises(ValueError):
        score("anything", [])
