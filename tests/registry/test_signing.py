"""Report-signing keys: made once with owner-only permissions, loaded with one-line errors, verified."""

from __future__ import annotations

import base64
import os
import re
import stat
import sys
from pathlib import Path

import pytest

from registry import GatePolicy, Report, SignedReport, generate_key, load_signer
from registry.signing import (
    SIGNING_KEY_ENV,
    TRUSTED_KEYS_ENV,
    check_public_key,
    config_dir,
    default_key_path,
    pinned_keys,
    pins_path,
    short,
    verify,
)

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


def test_the_config_dir_defaults_to_dot_config_under_home(tmp_path: Path, monkeypatch) -> None:
    """Without XDG_CONFIG_HOME (unset or empty) keys and pins live in ~/.config/leank, under their exact names."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    for unset in (lambda: monkeypatch.delenv("XDG_CONFIG_HOME"), lambda: monkeypatch.setenv("XDG_CONFIG_HOME", "")):
        unset()
        assert config_dir() == tmp_path / "home" / ".config" / "leank"
        assert default_key_path() == tmp_path / "home" / ".config" / "leank" / "signing.key"
        assert pins_path() == tmp_path / "home" / ".config" / "leank" / "trusted_keys"
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    assert pins_path() == tmp_path / "xdg" / "leank" / "trusted_keys"


def test_without_cryptography_signing_says_what_to_install(tmp_path: Path, monkeypatch) -> None:
    """Making, loading or checking a signature without `cryptography` is one line naming the package."""
    monkeypatch.setitem(sys.modules, "cryptography", None)  # import of it now raises ImportError
    message = r"^report signing needs the 'cryptography' package: pip install cryptography$"
    with pytest.raises(ValueError, match=message):
        generate_key(tmp_path / "k")
    with pytest.raises(ValueError, match=message):
        verify("ed25519:" + base64.b64encode(bytes(32)).decode(), b"data", "")


def test_the_public_key_error_quotes_at_most_60_characters_and_says_where_keys_come_from() -> None:
    """A pasted blob is quoted only in its first 60 characters, and the message points at keygen."""
    text = "ed25519:" + "x" * 100
    with pytest.raises(ValueError, match=rf"^{re.escape(repr(text[:60]))} is not an Ed25519 public key; use the "
                                         r"'ed25519:…' line printed by leank registry keygen$"):
        check_public_key(text)


def test_a_public_key_is_trimmed_and_must_be_strict_base64_of_a_string(tmp_path: Path) -> None:
    """Surrounding whitespace is trimmed; a stray non-base64 character is refused (not skipped), and so is
    a non-string (a policy's JSON may hold one) — with the same ValueError, not a crash."""
    key = generate_key(tmp_path / "k").public_key
    assert check_public_key(f"  {key}\n") == key
    with pytest.raises(ValueError, match="is not an Ed25519 public key"):
        check_public_key(key[:20] + "*" + key[20:])
    for not_text in (None, 42):
        with pytest.raises(ValueError, match=rf"^{re.escape(repr(str(not_text)))} is not an Ed25519 public key"):
            check_public_key(not_text)


def test_short_shows_the_prefix_and_12_base64_characters(tmp_path: Path) -> None:
    key = generate_key(tmp_path / "k").public_key
    b64 = key.removeprefix("ed25519:")
    assert short(key) == "ed25519:" + b64[:12] + "…"


def test_keygen_makes_the_key_directory_owner_only(tmp_path: Path) -> None:
    """The directory a new key goes into is 0700 (others may not even list it), whatever the umask lets through."""
    old = os.umask(0o022)
    try:
        generate_key(tmp_path / "keys" / "v.key")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "keys").stat().st_mode) == 0o700


def test_first_use_creates_the_default_key_and_says_so_on_stderr(tmp_path: Path, monkeypatch, capsys) -> None:
    """`create` with no key named anywhere makes the default key once (said on stderr only); later calls load it."""
    monkeypatch.delenv(SIGNING_KEY_ENV)
    where = tmp_path / "config" / "leank" / "signing.key"
    made = load_signer(create=True)
    assert made.source == str(where) and stat.S_IMODE(where.stat().st_mode) == 0o600
    out, err = capsys.readouterr()
    assert out == ""
    assert err == (f"leank: created your report-signing key {where}; public key {made.public_key} (a registry with "
                   "a policy must trust it: leank registry policy set --trust-key …)\n")
    again = load_signer(create=True)
    assert again.public_key == made.public_key and again.source == str(where)
    assert capsys.readouterr() == ("", "")


def test_create_never_makes_a_key_that_was_named(tmp_path: Path, monkeypatch, capsys) -> None:
    """A key named by argument or by $LEANK_SIGNING_KEY must exist, even with `create`."""
    missing = tmp_path / "named.key"
    with pytest.raises(ValueError, match=rf"^no report-signing key at {re.escape(str(missing))}: "):
        load_signer(missing, create=True)
    monkeypatch.setenv(SIGNING_KEY_ENV, str(missing))
    with pytest.raises(ValueError, match=rf"^no report-signing key at {re.escape(str(missing))}: "):
        load_signer(create=True)
    assert not missing.exists() and not (tmp_path / "config").exists()
    assert capsys.readouterr() == ("", "")


def test_a_loaded_key_names_its_file_and_an_unreadable_one_says_why(tmp_path: Path) -> None:
    path = tmp_path / "v.key"
    generate_key(path)
    assert load_signer(path).source == str(path)
    with pytest.raises(ValueError, match=rf"^cannot read the signing key {re.escape(str(tmp_path))}: Is a directory$"):
        load_signer(tmp_path)


def test_a_signature_must_be_strict_base64(tmp_path: Path) -> None:
    """A signature with a stray character is not the same signature: it does not verify."""
    signer = generate_key(tmp_path / "k")
    sig = signer.sign(b"data")
    assert verify(signer.public_key, b"data", sig)
    assert not verify(signer.public_key, b"data", sig[:10] + "*" + sig[10:])


def test_the_pins_file_errors_name_the_file(tmp_path: Path) -> None:
    """A bad key in the pins file, or a pins path that cannot be read, is an error naming that file."""
    pins_path().parent.mkdir(parents=True)
    pins_path().write_text("ed25519:bad\n")
    with pytest.raises(ValueError, match=rf"^{re.escape(str(pins_path()))}: 'ed25519:bad' is not"):
        pinned_keys()
    pins_path().unlink()
    pins_path().mkdir()
    with pytest.raises(ValueError, match=rf"^cannot read pinned keys {re.escape(str(pins_path()))}: Is a directory$"):
        pinned_keys()


def test_a_pins_comment_runs_from_the_first_hash(tmp_path: Path) -> None:
    """Everything after the first '#' on a line is comment, even if the comment holds another '#'."""
    key = generate_key(tmp_path / "k").public_key
    pins_path().parent.mkdir(parents=True)
    pins_path().write_text(f"{key} # ci validator #2, rotated in 2026\n")
    assert pinned_keys() == {key}
