"""Job options: finite-float types and YAML values of the wrong kind are one-line UsageErrors."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from pipelines.config import JobParser, UsageError, finite_float


def parser() -> JobParser:
    p = JobParser(prog="job")
    p.add_argument("--model")
    p.add_argument("--ratio", type=finite_float(0, 1, low_open=True, high_open=True))
    p.add_argument("--lr", type=finite_float(0, low_open=True))
    p.add_argument("--l1", type=finite_float(0))
    p.add_argument("--tasks", nargs="+")
    return p


@pytest.mark.parametrize("text", ["nan", "NaN", "inf", "-inf", "1e999", "x", ""])
def test_finite_float_refuses_non_numbers_and_non_finite_values(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        finite_float()(text)


@pytest.mark.parametrize("flag, value, ok", [
    ("--ratio", "0", False), ("--ratio", "1", False), ("--ratio", "0.5", True), ("--ratio", "1e-9", True),
    ("--lr", "0", False), ("--lr", "-0.1", False), ("--lr", "0.02", True),
    ("--l1", "0", True), ("--l1", "-1e-9", False), ("--l1", "nan", False),
])
def test_bounds_are_checked_with_the_documented_openness(flag: str, value: str, ok: bool) -> None:
    if ok:
        assert getattr(parser().parse([f"{flag}={value}"]), flag[2:]) == float(value)
    else:
        with pytest.raises(UsageError, match=f"argument {flag}: must be a finite number in") as err:
            parser().parse([f"{flag}={value}"])
        assert "\n" not in str(err.value)


@pytest.mark.parametrize("yaml_text, needle", [
    ("model: 12\n", "model must be a string, got 12"),
    ("model: [a, b]\n", "model must be a single value"),
    ("model: {a: 1}\n", "model must be a string"),
    ("tasks: [passkey, 7]\n", "tasks must be a string, got 7"),
    ("ratio: .nan\n", "bad value for ratio: nan"),
    ("ratio: 0\n", "bad value for ratio: 0"),
    ("lr: .inf\n", "bad value for lr: inf"),
    ("l1: true\n", "bad value for l1: True"),
])
def test_yaml_values_of_the_wrong_kind_are_one_line_errors(tmp_path: Path, yaml_text: str, needle: str) -> None:
    config = tmp_path / "job.yaml"
    config.write_text(yaml_text)
    with pytest.raises(UsageError, match=needle) as err:
        parser().parse(["--config", str(config)])
    assert "\n" not in str(err.value)


def test_yaml_strings_and_numbers_that_fit_are_taken(tmp_path: Path) -> None:
    config = tmp_path / "job.yaml"
    config.write_text("model: '12'\nratio: 0.7\ntasks: [passkey]\n")
    args = parser().parse(["--config", str(config)])
    assert (args.model, args.ratio, args.tasks) == ("12", 0.7, ["passkey"])
