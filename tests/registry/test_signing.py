"""Report-signing keys: made once with owner-only permissions, loaded with one-line errors, verified."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from registry import GatePolicy, Report, SignedReport, generate_key, load_signer
from registry.signing import SIGNING_KEY_ENV, TRUSTED_KEYS_ENV, check_public_key, pinned_keys, pins_path, verify

from .conftest import score_rows


def test_keygen_writes_an_owner_only_key_and_never_overwrites(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "v.key"
    signer = generate_key(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert check_public_key(signer.public_key) == signer.public_key
    with pytest.raises(ValueError, match="exists"):
        generate_key(path)
    assert load_signer(path).public_key == signer.public_key


def test_the_validator_key_comes_from_the_env_or_the_default_path(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv(SIGNING_KEY_ENV)
    with pytest.raises(ValueError, match="no report-signing key at .*leank registry keygen") as err:
        load_signer()
    assert "\n" not in str(err.value)
    default = generate_key(tmp_path / "config" / "leank" / "signing.key")  # XDG_CONFIG_HOME is tmp_path/config
    assert load_signer().public_key == default.public_key
    other = generate_key(tmp_path / "other.key")
    monkeypatch.setenv(SIGNING_KEY_ENV, str(tmp_path / "other.key"))
    assert load_signer().public_key == other.public_key


def test_a_file_that_is_not_an_ed25519_key_is_refused(tmp_path: Path) -> None:
    (tmp_path / "junk.key").write_text("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")
    with pytest.raises(ValueError, match="not an unencrypted Ed25519 private key"):
        load_signer(tmp_path / "junk.key")


def test_signatures_verify_only_for_the_same_key_and_bytes(tmp_path: Path) -> None:
    a, b = generate_key(tmp_path / "a"), generate_key(tmp_path / "b")
    sig = a.sign(b"data")
    assert verify(a.public_key, b"data", sig)
    assert not verify(a.public_key, b"datb", sig) and not verify(b.public_key, b"data", sig)
    assert not verify(a.public_key, b"data", "not base64!")


def test_a_signed_report_round_trips_and_any_edit_breaks_its_signature(tmp_path: Path) -> None:
    signer = generate_key(tmp_path / "k")
    report = Report.build(score_rows(), "sha", "org/m", "h", GatePolicy(), memory={}, settings={}, version=1)
    signed = SignedReport.sign(report, signer)
    loaded = SignedReport.from_json(signed.to_json(), "r")
    assert loaded == signed and loaded.signature_ok()
    edited = SignedReport(Report(**{**report.__dict__, "version": 2}), signed.key, signed.signature)
    assert not edited.signature_ok()


@pytest.mark.parametrize("text", ["ed25519:short", "rsa:AAAA", "ed25519:" + "A" * 44 + "==", ""])
def test_malformed_public_keys_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="not an Ed25519 public key"):
        check_public_key(text)


def test_pins_come_from_the_env_or_the_pins_file(tmp_path: Path, monkeypatch) -> None:
    a, b = generate_key(tmp_path / "a").public_key, generate_key(tmp_path / "b").public_key
    assert pinned_keys() is None
    pins_path().parent.mkdir(parents=True)
    pins_path().write_text(f"{a}  # ci validator\n\n# retired: {b}\n")
    assert pinned_keys() == {a}
    monkeypatch.setenv(TRUSTED_KEYS_ENV, f"{a},{b}")
    assert pinned_keys() == {a, b}
    monkeypatch.setenv(TRUSTED_KEYS_ENV, "")
    assert pinned_keys() == frozenset()  # pinning nothing trusts nothing
    monkeypatch.setenv(TRUSTED_KEYS_ENV, "ed25519:bad")
    with pytest.raises(ValueError, match=f"{TRUSTED_KEYS_ENV}: 'ed25519:bad' is not"):
        pinned_keys()
