"""The minimal object store the registry needs, on a local directory or any S3 service.

Three operations are enough to build an append-only registry: create an object only if
its key is free (the sole write, so nothing is ever overwritten), read one, and list keys
under a prefix. Every write is all-or-nothing: a reader sees the whole object or none.
Garbage collection (``registry/gc.py``) alone also needs object ages, deletion and the
removal of a dead writer's temp files (:class:`Sweepable`).

S3 requests are bounded: connect within :data:`S3_CONNECT_TIMEOUT_S`, each read within
:data:`S3_READ_TIMEOUT_S`, at most :data:`S3_ATTEMPTS` tries in all, so an endpoint that
accepts and never answers fails in about ``S3_ATTEMPTS × S3_READ_TIMEOUT_S`` seconds plus
botocore's short backoff. URLs in messages are shown without credentials (``registry/urls.py``).
"""

from __future__ import annotations

import os
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Protocol
from urllib.parse import urlparse

from .errors import RegistryError
from .urls import has_credentials, redact_text, redact_url

S3_CONNECT_TIMEOUT_S = 3
S3_READ_TIMEOUT_S = 5
S3_ATTEMPTS = 2  # tries per request, the first included
_TEMP_SUFFIX = ".tmp"

# Refused S3 requests that mean "your credentials are not good enough here".
_AUTH_CODES = {"InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "ExpiredToken",
               "InvalidToken", "InvalidClientTokenId", "UnrecognizedClientException", "403"}
# A concurrent conditional write on the same key; S3 asks the loser to retry.
_CONFLICT = "ConditionalRequestConflict"


class ObjectStore(Protocol):
    """Keys are '/'-separated relative paths built by the registry from validated parts."""

    url: str

    def create(self, key: str, data: bytes) -> bool:
        """Store ``data`` under ``key`` if the key is free; False if it already exists."""

    def get(self, key: str) -> bytes | None:
        """The object's bytes, or None if there is no such key."""

    def list(self, prefix: str) -> list[str]:
        """All keys starting with ``prefix`` (a folder-like prefix ending in '/'; '' lists every key)."""


class Sweepable(ObjectStore, Protocol):
    """A store garbage collection can work on: object ages, deletion, dead writers' temp files."""

    def list_modified(self, prefix: str) -> list[tuple[str, datetime]]:
        """Every key under ``prefix`` ('' = the whole store) with the time it was written (UTC)."""

    def delete(self, key: str) -> None:
        """Remove ``key`` (no error if it is already gone)."""

    def sweep_temp(self, before: datetime) -> list[str]:
        """Remove temp files of writers that died before ``before``; return what was removed."""


def _check_key(key: str) -> str:
    parts = key.split("/")
    if key.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise ValueError(f"unsafe object key {key!r}")
    return key


class LocalStore:
    """A directory. Create-if-absent is a hard link of a fully written temp file: atomic,
    refused by the OS when the name exists, and never exposes a half-written object."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).expanduser().resolve()
        self.url = str(self.root)
        if self.root.exists() and not self.root.is_dir():
            raise RegistryError(f"registry path {self.root} is a file; point --registry at a directory")

    def create(self, key: str, data: bytes) -> bool:
        path = self.root / _check_key(key)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}{_TEMP_SUFFIX}")
            with open(tmp, "xb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            try:
                os.link(tmp, path)
            except FileExistsError:
                return False
            finally:
                tmp.unlink()
        except OSError as e:
            raise RegistryError(f"cannot write to registry {self.root}: {e.strerror}; check the path and permissions") from None
        return True

    def get(self, key: str) -> bytes | None:
        try:
            return (self.root / _check_key(key)).read_bytes()
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError as e:
            raise RegistryError(f"cannot read registry {self.root}: {e.strerror}; check the path and permissions") from None

    def list(self, prefix: str) -> list[str]:
        return [key for key, _ in self._files(prefix)]

    def list_modified(self, prefix: str) -> list[tuple[str, datetime]]:
        return [(key, _written(path)) for key, path in self._files(prefix)]

    def delete(self, key: str) -> None:
        (self.root / _check_key(key)).unlink(missing_ok=True)

    def sweep_temp(self, before: datetime) -> list[str]:
        removed = []
        for path in sorted(self.root.rglob(f".*{_TEMP_SUFFIX}")) if self.root.is_dir() else []:
            try:
                if path.is_file() and _written(path) < before:
                    path.unlink()
                    removed.append(path.relative_to(self.root).as_posix())
            except FileNotFoundError:
                pass  # its writer finished (and removed it) meanwhile
        return removed

    def _files(self, prefix: str) -> list[tuple[str, Path]]:
        base = self.root / _check_key(prefix.rstrip("/")) if prefix else self.root
        if not base.is_dir():
            return []
        return sorted((p.relative_to(self.root).as_posix(), p) for p in base.rglob("*")
                      if p.is_file() and not p.name.endswith(_TEMP_SUFFIX))


def _written(path: Path) -> datetime:
    """When a local object was last written, in UTC (what S3 reports as LastModified)."""
    return datetime.fromtimestamp(path.stat().st_mtime, timezone.utc)


class S3Store:
    """``s3://bucket/prefix`` through boto3's normal credential chain and endpoint settings
    (``AWS_ENDPOINT_URL`` for MinIO, Ceph, ...). Conditional create is ``If-None-Match: *``.

    Timeouts are short and tries few (module docstring) so that an unreachable or silent
    endpoint fails in seconds instead of hanging a CLI call; every botocore error becomes a
    one-line RegistryError.
    """

    def __init__(self, bucket: str, prefix: str = "") -> None:
        import boto3
        from botocore.config import Config

        self.bucket = bucket
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        self.url = f"s3://{bucket}/{self.prefix}"
        from botocore import exceptions as bx

        config = Config(connect_timeout=S3_CONNECT_TIMEOUT_S, read_timeout=S3_READ_TIMEOUT_S,
                        retries={"total_max_attempts": S3_ATTEMPTS, "mode": "standard"})
        try:
            # A private session per store: the default session is not thread safe.
            self.client = boto3.session.Session().client("s3", config=config)
        except bx.ProfileNotFound as e:
            raise RegistryError(f"AWS profile '{e.kwargs['profile']}' not found; fix AWS_PROFILE or ~/.aws/config") from None
        except bx.BotoCoreError as e:
            raise RegistryError(f"cannot set up an S3 client for {self.url}: {e}; check the AWS settings") from None
        except ValueError as e:  # botocore's answer to a malformed endpoint
            raise ValueError(f"{redact_text(str(e))}; set AWS_ENDPOINT_URL to http(s)://host[:port] or unset it") from None

    def create(self, key: str, data: bytes) -> bool:
        for _ in range(5):
            answer = self._call("put_object", key, {"PreconditionFailed", _CONFLICT},
                                Key=self.prefix + _check_key(key), Body=data, IfNoneMatch="*")
            if answer != _CONFLICT:
                return answer != "PreconditionFailed"
        raise RegistryError(f"S3 kept reporting conflicting writes to {self.url}{key}; retry the command")

    def get(self, key: str) -> bytes | None:
        answer = self._call("get_object", key, {"NoSuchKey", "404"}, Key=self.prefix + _check_key(key))
        return None if isinstance(answer, str) else answer["Body"].read()

    def list(self, prefix: str) -> list[str]:
        return [key for key, _ in self.list_modified(prefix)]

    def list_modified(self, prefix: str) -> list[tuple[str, datetime]]:
        found, token = [], {}
        full = self.prefix + (_check_key(prefix.rstrip("/")) + "/" if prefix else "")
        while True:
            page = self._call("list_objects_v2", prefix, set(), Prefix=full, **token)
            found += [(o["Key"][len(self.prefix):], o["LastModified"]) for o in page.get("Contents", [])]
            if not page.get("IsTruncated"):
                return sorted(found)
            token = {"ContinuationToken": page["NextContinuationToken"]}

    def delete(self, key: str) -> None:
        self._call("delete_object", key, set(), Key=self.prefix + _check_key(key))

    def sweep_temp(self, before: datetime) -> list[str]:
        return []  # a PUT is atomic and single-part: S3 holds no temp objects of ours

    def _call(self, operation: str, key: str, expected: set[str], **kwargs) -> dict | str:
        """One S3 request: its response, or the error code if it is one of ``expected``
        (a missing key or a failed precondition is an answer, not a failure). Everything
        else becomes a one-line RegistryError."""
        from botocore import exceptions as bx

        endpoint = redact_url(self.client.meta.endpoint_url)
        try:
            return getattr(self.client, operation)(Bucket=self.bucket, **kwargs)
        except bx.ClientError as e:
            err = e.response.get("Error", {})
            code = str(err.get("Code", ""))
            if code in expected:
                return code
            raise self._client_error(code, err.get("Message", ""), key) from None
        except (bx.NoCredentialsError, bx.PartialCredentialsError):
            raise RegistryError(
                f"no AWS credentials for {self.url}: set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE or an instance role"
            ) from None
        except (bx.EndpointConnectionError, bx.ConnectTimeoutError, bx.ConnectionClosedError, bx.ReadTimeoutError) as e:
            raise RegistryError(
                f"cannot reach S3 endpoint {endpoint} ({type(e).__name__} after {S3_ATTEMPTS} tries); check "
                "AWS_ENDPOINT_URL and the network"
            ) from None
        except bx.BotoCoreError as e:
            # botocore's text can span lines (a parameter validation lists each problem): keep one line
            raise RegistryError(f"S3 request to {self.url} failed: {' '.join(redact_text(str(e)).split())}") from None

    def _client_error(self, code: str, message: str, key: str) -> RegistryError:
        endpoint = redact_url(self.client.meta.endpoint_url)
        if code == "NoSuchBucket":
            return RegistryError(f"S3 bucket '{self.bucket}' does not exist at {endpoint}; create it or fix the registry URL")
        if code in _AUTH_CODES:
            return RegistryError(f"S3 refused access to {self.url} ({code}); check the AWS credentials and the bucket policy")
        return RegistryError(f"S3 error on {self.url}{key}: {code} {message}".strip())


def open_store(url: str) -> ObjectStore:
    """``s3://bucket[/prefix]`` → S3Store; anything else is a local directory path."""
    if has_credentials(url):
        raise ValueError(f"registry URL {redact_url(url)!r} carries credentials; remove them and use "
                         "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE or an instance role")
    if url.startswith("s3://"):
        parsed = urlparse(url)
        if not parsed.netloc:
            raise ValueError(f"invalid S3 registry URL {url!r}: use s3://bucket/prefix")
        return S3Store(parsed.netloc, parsed.path)
    if "://" in url:
        raise ValueError(f"unsupported registry URL {url!r}: use a local directory or s3://bucket/prefix")
    return LocalStore(url)
