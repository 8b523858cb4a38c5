"""Command-line options for pipeline jobs, optionally read from a YAML file with the same keys.

A job can be committed as a file (``--config job.yaml``) and tweaked on the command line:
the file's values become the parser's defaults, so explicit flags win. Keys are the long
option names (``stage1-steps`` or ``stage1_steps``). Jobs must fail before any worker starts
on bad input, with one line, so every problem (unknown key, bad value, bad flag) surfaces as
a :class:`UsageError` instead of argparse's usage dump and ``SystemExit``.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import yaml


class UsageError(ValueError):
    """Bad command-line or config-file input (the job exits 2 with this one-line message)."""


def finite_float(low: float | None = None, high: float | None = None, *, low_open: bool = False,
                 high_open: bool = False) -> Callable[[str], float]:
    """An argparse ``type``: a finite float within the bounds (``*_open``: the bound itself is excluded).

    ``float()`` alone accepts ``nan`` and ``inf``, which pass every ``<``/``>`` check downstream
    (NaN compares false) and silently break what they feed, so every float option uses this.
    """
    span = (f"{'(' if low_open else '['}{'-inf' if low is None else f'{low:g}'}, "
            f"{'inf' if high is None else f'{high:g}'}{')' if high_open else ']'}")

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        below = low is not None and (value <= low if low_open else value < low)
        above = high is not None and (value >= high if high_open else value > high)
        if not math.isfinite(value) or below or above:
            raise argparse.ArgumentTypeError(f"must be a finite number in {span}, got {text}")
        return value

    parse.__name__ = "number"  # argparse names the type in its messages
    return parse


class JobParser(argparse.ArgumentParser):
    """An ArgumentParser with ``--config FILE`` whose errors raise :class:`UsageError`."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.add_argument("--config", metavar="FILE", help="YAML file of options (same keys as the flags); flags override it")

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(f"{message} (see --help)")

    def parse(self, argv: Sequence[str]) -> argparse.Namespace:
        """Parse ``argv`` on top of the defaults read from ``--config`` (if given)."""
        pre = argparse.ArgumentParser(add_help=False)
        pre.add_argument("--config")
        known, _ = pre.parse_known_args(argv)
        if known.config:
            self.set_defaults(**self._read_config(Path(known.config)))
        return self.parse_args(argv)

    def _read_config(self, path: Path) -> dict[str, Any]:
        try:
            data = yaml.safe_load(path.read_text())
        except OSError as e:
            raise UsageError(f"cannot read config file {path}: {e.strerror}") from None
        except yaml.YAMLError as e:
            raise UsageError(f"config file {path} is not valid YAML: {str(e).splitlines()[0]}") from None
        if data is None:
            return {}
        if not isinstance(data, dict):
            raise UsageError(f"config file {path} must be a mapping of option: value")
        actions = {a.dest: a for a in self._actions if a.dest not in ("help", "config")}
        return {key.replace("-", "_"): _convert(path, key, value, actions) for key, value in data.items()}


def _convert(path: Path, key: Any, value: Any, actions: dict[str, argparse.Action]) -> Any:
    """Check one config entry as argparse would check the flag (type, choices, list-ness)."""
    dest = str(key).replace("-", "_")
    action = actions.get(dest)
    if action is None:
        valid = ", ".join(sorted(a.replace("_", "-") for a in actions))
        raise UsageError(f"config file {path}: unknown key {key!r}; valid keys: {valid}")
    if isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction)):
        if not isinstance(value, bool):
            raise UsageError(f"config file {path}: {key} must be true or false, got {value!r}")
        return value
    is_list = action.nargs in ("+", "*")
    if is_list != isinstance(value, list):
        raise UsageError(f"config file {path}: {key} must be {'a list' if is_list else 'a single value'}, got {value!r}")
    items = [_check_item(path, key, v, action) for v in (value if is_list else [value])]
    return items if is_list else items[0]


def _check_item(path: Path, key: Any, value: Any, action: argparse.Action) -> Any:
    if action.type is None and not isinstance(value, str):  # a plain string option (model, paths, names)
        raise UsageError(f"config file {path}: {key} must be a string, got {value!r}; quote it in the YAML")
    if action.type is not None:
        try:
            value = action.type(value if isinstance(value, str) else str(value))
        except (TypeError, ValueError, argparse.ArgumentTypeError) as e:
            raise UsageError(f"config file {path}: bad value for {key}: {value!r} ({e})") from None
    if action.choices is not None and value not in action.choices:
        choices = ", ".join(map(str, action.choices))
        raise UsageError(f"config file {path}: {key} must be one of {choices}, got {value!r}")
    return value
