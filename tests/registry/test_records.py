"""The registry's stored records: the on-disk JSON encoding and the one-line refusals of damaged objects."""

from __future__ import annotations

import json
import re

import pytest

from registry.records import DamagedRecord, Decision, Manifest, Status, dump_json, parse_json_object

WHERE = "org/m@1 manifest"


def manifest(**changes) -> Manifest:
    fields = {"model_id": "org/m", "model_hash": "abc", "mask_sha256": "0" * 64,
              "mask_key": f"org/m/masks/{'0' * 64}.safetensors", "version": 1, "shape": (1, 2, 16), "ratio": 0.25,
              "align": 16, "sink": 4, "recent": 8, "k_fraction_kept": 0.75, "code_version": "0.1.0",
              "created": "2026-01-01T00:00:00+00:00", "provenance": {"data_recipe": "synthetic-v1"}}
    return Manifest(**{**fields, **changes})


def stored(**changes) -> bytes:
    """A manifest's stored bytes with some fields replaced (None: the field left out)."""
    d = manifest().to_dict()
    d.update(changes)
    return json.dumps({k: v for k, v in d.items() if v is not None}).encode()


def test_the_encoding_is_sorted_one_space_indented_json() -> None:
    """Signed reports bind a manifest by the sha256 of these bytes, so the encoding is part of the file
    format: keys sorted (equal records are equal bytes whatever the insertion order), indent 1."""
    assert dump_json({"b": 1, "a": [2]}) == b'{\n "a": [\n  2\n ],\n "b": 1\n}'
    assert dump_json({"b": 1, "a": [2]}) == dump_json({"a": [2], "b": 1})


@pytest.mark.parametrize("value, why", [(float("nan"), "Out of range float values are not JSON compliant"),
                                        (object(), "Object of type object is not JSON serializable")])
def test_what_json_cannot_hold_is_refused_with_one_line(value, why: str) -> None:
    """NaN/Infinity would be written as bare words no JSON reader accepts; objects cannot be written at all."""
    with pytest.raises(ValueError, match=rf"^manifest/report must be plain JSON data: {why}"):
        dump_json({"training_config": {"lr": value}})


@pytest.mark.parametrize("data, message", [
    (b"[1, 2]", f"{WHERE} is list, not a JSON object"),
    (b'"accepted"', f"{WHERE} is str, not a JSON object"),
    (b"{not json", f"{WHERE} is not valid JSON"),
    (b"\xff\xfe{", f"{WHERE} is not valid JSON"),
    (b'{"ratio": NaN}', f"{WHERE}: NaN is not a number JSON allows"),
    (b'{"ratio": -Infinity}', f"{WHERE}: -Infinity is not a number JSON allows"),
])
def test_stored_bytes_that_are_no_json_object_are_one_damaged_record(data: bytes, message: str) -> None:
    """Python's json reads NaN/Infinity although JSON has no such numbers; a stored record never holds them."""
    with pytest.raises(DamagedRecord, match=f"^{re.escape(message)}$"):
        parse_json_object(data, WHERE)


def test_a_manifest_round_trips_through_its_stored_bytes() -> None:
    m = manifest()
    assert Manifest.from_json(m.to_json(), WHERE) == m
    assert Manifest.from_json(stored(ratio=1, k_fraction_kept=1), WHERE).k_fraction_kept == 1.0
    assert isinstance(Manifest.from_json(stored(ratio=1, k_fraction_kept=1), WHERE).k_fraction_kept, float)
    assert Manifest.from_json(stored(shape=[1, 1, 1]), WHERE).shape == (1, 1, 1)  # the smallest geometry


KINDS = {"model_id": "str", "model_hash": "str", "mask_sha256": "str", "mask_key": "str", "version": "int",
         "shape": "list", "ratio": "int or float", "align": "int", "sink": "int", "recent": "int",
         "k_fraction_kept": "int or float", "code_version": "str", "created": "str"}


@pytest.mark.parametrize("name", sorted(KINDS))
@pytest.mark.parametrize("value", [None, "x", True])
def test_a_manifest_field_missing_or_of_the_wrong_type_is_named(name: str, value) -> None:
    """Each field the registry fills is checked by its JSON type, and a bool is no number (``true`` is not
    an alignment); the message says where and which field."""
    if value == "x" and KINDS[name] == "str":
        value = 7
    with pytest.raises(DamagedRecord, match=f"^{WHERE}: field '{name}' is missing or not {KINDS[name]}$"):
        Manifest.from_json(stored(**{name: value}), WHERE)


@pytest.mark.parametrize("shape", [[2, 2], [2, 2, 16, 1], [2, 0, 16], [2, -1, 16], [2, True, 16], [2, 2.0, 16],
                                   [2, "2", 16]])
def test_a_manifest_shape_must_be_three_positive_integers(shape: list) -> None:
    with pytest.raises(DamagedRecord, match=f"^{WHERE}: field 'shape' is not \\[layers, kv_heads, head_dim\\]$"):
        Manifest.from_json(stored(shape=shape), WHERE)


@pytest.mark.parametrize("version", [0, -3])
def test_a_manifest_version_starts_at_one(version: int) -> None:
    with pytest.raises(DamagedRecord, match=f"^{WHERE}: field 'version' must be >= 1$"):
        Manifest.from_json(stored(version=version), WHERE)


def test_a_manifest_that_is_no_json_object_says_where() -> None:
    with pytest.raises(DamagedRecord, match=f"^{WHERE} is not valid JSON$"):
        Manifest.from_json(b"{", WHERE)


STATUS_WHERE = "org/m@1 status"


def decision_bytes(**changes) -> bytes:
    d = json.loads(Decision(Status.ACCEPTED, 2, "0" * 64, "2026-01-01T00:00:00+00:00").to_json())
    d.update(changes)
    return json.dumps({k: v for k, v in d.items() if v is not None}).encode()


def test_a_decision_round_trips_through_its_stored_bytes() -> None:
    d = Decision(Status.REJECTED, 3, "f" * 64, "2026-01-01T00:00:00+00:00")
    assert Decision.from_json(d.to_json(), STATUS_WHERE) == d


@pytest.mark.parametrize("status", ["candidate", None, "ACCEPTED", 1])
def test_a_decision_is_accepted_or_rejected_nothing_else(status) -> None:
    """A version without a decision is a candidate; a stored decision saying so is not the registry's."""
    with pytest.raises(DamagedRecord, match=f"^{STATUS_WHERE}: field 'status' must be 'accepted' or 'rejected', "
                                            f"got {re.escape(repr(status))}$"):
        Decision.from_json(decision_bytes(status=status), STATUS_WHERE)


@pytest.mark.parametrize("name, kind", [("report_id", "int"), ("mask_sha256", "str"), ("decided", "str")])
def test_a_decision_field_missing_or_of_the_wrong_type_is_named(name: str, kind: str) -> None:
    for value in (None, True if kind == "int" else 1):
        with pytest.raises(DamagedRecord, match=f"^{STATUS_WHERE}: field '{name}' is missing or not {kind}$"):
            Decision.from_json(decision_bytes(**{name: value}), STATUS_WHERE)


def test_a_decision_that_is_no_json_object_says_where() -> None:
    with pytest.raises(DamagedRecord, match=f"^{STATUS_WHERE} is str, not a JSON object$"):
        Decision.from_json(b'"accepted"', STATUS_WHERE)
