"""Ed25519 keys that sign validation reports, and the keys a reader trusts (docs/trust.md).

A validator holds a private key (a PEM file made by ``leank registry keygen``, or on first
use of ``leank validate``; path in ``$LEANK_SIGNING_KEY`` or the default below; never stored
in a registry). Public keys are text, ``ed25519:<base64 of the 32 raw bytes>``, so they can
be listed in a registry's policy and pinned by readers: ``$LEANK_TRUSTED_KEYS`` (whitespace
or comma separated) or the file ``trusted_keys`` in the user config directory (one key a
line, ``#`` comments). A reader that pins keys trusts only the policy's keys that it also
pins, so whoever can write the bucket cannot add a key for that reader. A registry without
a policy defers to the reader: its pinned keys and its own validator key.

``cryptography`` is imported only when a key is made, loaded or checked, so reading masks
and validating local files work without it.
"""

from __future__ import annotations

import base64
import binascii
import os
import sys
from pathlib import Path

SIGNING_KEY_ENV = "LEANK_SIGNING_KEY"
TRUSTED_KEYS_ENV = "LEANK_TRUSTED_KEYS"
_PREFIX = "ed25519:"


def config_dir() -> Path:
    """The user's config directory for leank (honours XDG_CONFIG_HOME)."""
    return Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config") / "leank"


def default_key_path() -> Path:
    return config_dir() / "signing.key"


def pins_path() -> Path:
    return config_dir() / "trusted_keys"


def _crypto():
    """The ``cryptography`` primitives, or a one-line error saying what to install."""
    try:
        from cryptography import exceptions
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ed25519
    except ImportError:
        raise ValueError("report signing needs the 'cryptography' package: pip install cryptography") from None
    return exceptions, serialization, ed25519


def _raw_public(text: str) -> bytes:
    raw = None
    if isinstance(text, str) and text.startswith(_PREFIX):
        try:
            raw = base64.b64decode(text[len(_PREFIX):], validate=True)
        except (binascii.Error, ValueError):
            raw = None
    if raw is None or len(raw) != 32:
        raise ValueError(f"{str(text)[:60]!r} is not an Ed25519 public key; use the 'ed25519:…' line "
                         "printed by leank registry keygen")
    return raw


def check_public_key(text: str) -> str:
    """``text`` if it is a public key in the ``ed25519:<base64>`` form (whitespace trimmed), else ValueError."""
    text = text.strip() if isinstance(text, str) else text
    _raw_public(text)
    return text


def short(key: str) -> str:
    """A key as shown in messages: prefix and the first 12 base64 characters."""
    return key[: len(_PREFIX) + 12] + "…"


class Signer:
    """A loaded private key: signs bytes; its public key is :attr:`public_key`."""

    def __init__(self, private_key, source: str) -> None:
        _, serialization, _ = _crypto()
        self._key = private_key
        self.source = source
        raw = private_key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        self.public_key = _PREFIX + base64.b64encode(raw).decode()

    def sign(self, data: bytes) -> str:
        return base64.b64encode(self._key.sign(data)).decode()


def generate_key(path: Path) -> Signer:
    """Write a new private key to ``path`` (mode 0600, never over an existing file)."""
    _, serialization, ed25519 = _crypto()
    key = ed25519.Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise ValueError(f"{path} exists; keep that key or pass --out with a new path") from None
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    return Signer(key, str(path))


def signing_key_path() -> Path:
    """Where this process's validator key is: ``$LEANK_SIGNING_KEY``, else :func:`default_key_path`."""
    return Path(os.environ.get(SIGNING_KEY_ENV) or default_key_path()).expanduser()


def load_signer(path: str | Path | None = None, create: bool = False) -> Signer:
    """The validator's key: ``path``, else :func:`signing_key_path`.

    ``create``: if neither ``path`` nor ``$LEANK_SIGNING_KEY`` is given and the default key
    does not exist yet, make it (first use; said on stderr), so a single user's own flow needs
    no set-up. A key named explicitly must exist.
    """
    _, serialization, ed25519 = _crypto()
    where = Path(path).expanduser() if path else signing_key_path()
    if create and not path and not os.environ.get(SIGNING_KEY_ENV) and not where.exists():
        signer = generate_key(where)
        print(f"leank: created your report-signing key {where}; public key {signer.public_key} (a registry with "
              "a policy must trust it: leank registry policy set --trust-key …)", file=sys.stderr)
        return signer
    try:
        data = where.read_bytes()
    except FileNotFoundError:
        raise ValueError(f"no report-signing key at {where}: create one with `leank registry keygen` or set "
                         f"{SIGNING_KEY_ENV} to the key file") from None
    except OSError as e:
        raise ValueError(f"cannot read the signing key {where}: {e.strerror}") from None
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError):
        key = None
    if not isinstance(key, ed25519.Ed25519PrivateKey):
        raise ValueError(f"{where} is not an unencrypted Ed25519 private key (PEM); make one with leank registry keygen")
    return Signer(key, str(where))


def own_public_key() -> str | None:
    """The public key of this user's validator key, if there is one (a registry without a policy trusts it)."""
    return load_signer().public_key if signing_key_path().exists() else None


def verify(public_key: str, data: bytes, signature: str) -> bool:
    """True if ``signature`` (base64) is ``public_key``'s signature of ``data``."""
    exceptions, _, ed25519 = _crypto()
    try:
        ed25519.Ed25519PublicKey.from_public_bytes(_raw_public(public_key)).verify(
            base64.b64decode(signature, validate=True), data)
    except (exceptions.InvalidSignature, ValueError, binascii.Error):
        return False
    return True


def pinned_keys() -> frozenset[str] | None:
    """The keys this reader pins (``$LEANK_TRUSTED_KEYS``, else the pins file), or None if it pins none."""
    text = os.environ.get(TRUSTED_KEYS_ENV)
    where = TRUSTED_KEYS_ENV
    if text is None:
        try:
            text = pins_path().read_text()
        except FileNotFoundError:
            return None
        except OSError as e:
            raise ValueError(f"cannot read pinned keys {pins_path()}: {e.strerror}") from None
        where = str(pins_path())
        text = "\n".join(line.split("#", 1)[0] for line in text.splitlines())
    keys = text.replace(",", " ").split()
    try:
        return frozenset(check_public_key(k) for k in keys)
    except ValueError as e:
        raise ValueError(f"{where}: {e}") from None
