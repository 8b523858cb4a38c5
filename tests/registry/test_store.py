"""Object stores: create-if-absent semantics on both backends, and S3 failures as one-line errors."""

from __future__ import annotations

import json
import os
import re
import socket
import threading
import urllib.request
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import boto3
import pytest

from registry import MaskRegistry, RegistryError, redact_text, redact_url
from registry.store import S3_ATTEMPTS, S3_CONNECT_TIMEOUT_S, S3_READ_TIMEOUT_S, LocalStore, S3Store, open_store
from registry.urls import has_credentials

from .conftest import Backend, free_port, make_mask, new_bucket, start_s3_server, stop


def one_line_error(call) -> str:
    with pytest.raises(RegistryError) as err:
        call()
    text = str(err.value)
    assert text and "\n" not in text
    return text


def test_create_is_create_if_absent(backend: Backend) -> None:
    store = open_store(backend.url)
    assert store.create("org/m/a.json", b"first") is True
    assert store.create("org/m/a.json", b"second") is False
    assert store.get("org/m/a.json") == b"first"
    assert store.get("org/m/missing.json") is None
    assert store.list("org/m/") == ["org/m/a.json"]
    assert store.list("org/none/") == []


@pytest.mark.parametrize("key", ["../x", "/abs", "org//m", "org/./m"])
def test_unsafe_keys_are_refused(backend: Backend, key: str) -> None:
    with pytest.raises(ValueError, match="unsafe object key"):
        open_store(backend.url).create(key, b"x")


def test_local_store_leaves_no_temp_files(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    store.create("org/m/a", b"1")
    store.create("org/m/a", b"2")
    assert sorted(p.name for p in (tmp_path / "org/m").iterdir()) == ["a"]


@pytest.mark.parametrize("url", ["ftp://host/x", "s3://", "s3:///prefix"])
def test_unsupported_urls_are_refused(url: str) -> None:
    with pytest.raises(ValueError, match="registry URL"):
        MaskRegistry(url)


def test_missing_bucket() -> None:
    text = one_line_error(lambda: MaskRegistry("s3://leank-no-such-bucket/p").push(make_mask()))
    assert "bucket 'leank-no-such-bucket' does not exist" in text


def test_unreachable_endpoint(monkeypatch: pytest.MonkeyPatch) -> None:
    """The message names the endpoint, botocore's error class and the tries, and says what to check."""
    endpoint = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
    assert one_line_error(lambda: MaskRegistry("s3://bucket/p").list("org/m")) == (
        f"cannot reach S3 endpoint {endpoint} (EndpointConnectionError after {S3_ATTEMPTS} tries); "
        "check AWS_ENDPOINT_URL and the network")


def test_unknown_aws_profile(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_PROFILE", "leank-no-such-profile")
    assert "AWS profile 'leank-no-such-profile' not found" in one_line_error(lambda: MaskRegistry("s3://bucket/p"))


def test_malformed_endpoint(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", "not a url")
    with pytest.raises(ValueError, match=r"^Invalid endpoint: not a url; set AWS_ENDPOINT_URL to "
                                         r"http\(s\)://host\[:port\] or unset it$"):
        MaskRegistry("s3://bucket/p")


def test_missing_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    assert "no AWS credentials" in one_line_error(lambda: MaskRegistry("s3://bucket/p").list("org/m"))


@pytest.fixture(scope="module")
def auth_server() -> Iterator[tuple[str, dict[str, str]]]:
    """A second S3 server process that checks signatures against its IAM users.

    Set up (user, key, policy, bucket) while auth is off, then switch enforcement on for
    every later request through moto's own `/moto-api/reset-auth` endpoint. One mask is
    pushed during set-up: moto 5.2's server miscomputes SigV4 for list queries whose prefix
    holds '/', so with auth on the test uses only object GETs (a pull of an explicit version).
    """
    proc, url = start_s3_server()
    try:
        creds = {"aws_access_key_id": "setup", "aws_secret_access_key": "setup", "region_name": "us-east-1"}
        iam = boto3.client("iam", endpoint_url=url, **creds)
        iam.create_user(UserName="pusher")
        key = iam.create_access_key(UserName="pusher")["AccessKey"]
        policy = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}
        iam.put_user_policy(UserName="pusher", PolicyName="s3", PolicyDocument=json.dumps(policy))
        boto3.client("s3", endpoint_url=url, **creds).create_bucket(Bucket="leank-auth")
        with pytest.MonkeyPatch.context() as env:
            for name, value in {"AWS_ENDPOINT_URL": url, "AWS_ACCESS_KEY_ID": "setup",
                                "AWS_SECRET_ACCESS_KEY": "setup", "AWS_DEFAULT_REGION": "us-east-1"}.items():
                env.setenv(name, value)
            MaskRegistry("s3://leank-auth/masks").push(make_mask())
        request = urllib.request.Request(f"{url}/moto-api/reset-auth", data=b"0", method="POST",
                                         headers={"Content-Type": "text/plain"})
        urllib.request.urlopen(request, timeout=10).read()
        yield url, {"AWS_ACCESS_KEY_ID": key["AccessKeyId"], "AWS_SECRET_ACCESS_KEY": key["SecretAccessKey"]}
    finally:
        stop(proc)


def test_server_enforcing_credentials_refuses_invalid_keys(
        auth_server: tuple[str, dict[str, str]], monkeypatch: pytest.MonkeyPatch) -> None:
    url, valid = auth_server
    monkeypatch.setenv("AWS_ENDPOINT_URL", url)
    for name, value in valid.items():
        monkeypatch.setenv(name, value)
    pull = lambda: MaskRegistry("s3://leank-auth/masks").pull("org/m", 1, allow_unaccepted=True)  # noqa: E731
    assert pull().sha256() == make_mask().sha256()  # the valid key is let in
    for key_id, secret in [("AKIAINVALID000000000", "wrong"), (valid["AWS_ACCESS_KEY_ID"], "wrong-secret")]:
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", key_id)
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)
        text = one_line_error(pull)
        assert "S3 refused access" in text and "check the AWS credentials" in text


class SilentEndpoint:
    """A TCP server that accepts every connection and never answers: a hung S3 endpoint."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.accepted: list[socket.socket] = []
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                self.accepted.append(self.sock.accept()[0])
            except OSError:
                return

    def close(self) -> None:
        self.sock.close()
        for conn in self.accepted:
            conn.close()


def test_a_silent_endpoint_fails_after_the_documented_tries(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each try waits S3_READ_TIMEOUT_S for an answer, and there are S3_ATTEMPTS tries in all."""
    silent = SilentEndpoint()
    monkeypatch.setenv("AWS_ENDPOINT_URL", silent.url)
    try:
        text = one_line_error(lambda: MaskRegistry("s3://bucket/p").list("org/m"))
    finally:
        silent.close()
    assert "cannot reach S3 endpoint" in text and "ReadTimeoutError" in text and f"after {S3_ATTEMPTS} tries" in text
    assert len(silent.accepted) == S3_ATTEMPTS


def test_credentials_in_urls_are_never_echoed(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError, match=r"^registry URL 's3://\*\*\*@bucket/p' carries credentials; remove them and "
                                         r"use AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE or an instance role$"
                       ) as err:
        MaskRegistry("s3://AKIAEXAMPLE:hunter2@bucket/p")
    assert "hunter2" not in str(err.value) and "AKIAEXAMPLE" not in str(err.value)
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://minio:hunter2@127.0.0.1:{free_port()}")
    text = one_line_error(lambda: MaskRegistry("s3://bucket/p").list("org/m"))
    assert "cannot reach S3 endpoint http://***@127.0.0.1" in text and "hunter2" not in text


@pytest.mark.parametrize("url, shown", [
    ("s3://AKIA:secret@bucket/p", "s3://***@bucket/p"),
    ("http://user:pw@minio:9000", "http://***@minio:9000"),
    ("s3://bucket/runs?region=eu&access_key=AKIA&secret_key=S", "s3://bucket/runs?region=eu&access_key=***&secret_key=***"),
    ("https://h/o?X-Amz-Signature=abc&X-Amz-Credential=k&v=1", "https://h/o?X-Amz-Signature=***&X-Amz-Credential=***&v=1"),
    ("s3://bucket/prefix", "s3://bucket/prefix"),
    ("/home/me/ray_results", "/home/me/ray_results"),
    ("~/ray_results", "~/ray_results"),
])
def test_redact_url_hides_user_parts_and_secret_query_values(url: str, shown: str) -> None:
    assert redact_url(url) == shown
    assert redact_text(f"cannot open '{url}' now") == f"cannot open '{shown}' now"


def test_redaction_edge_cases_leak_nothing_and_keep_the_rest() -> None:
    """An unescaped '@' inside the secret still hides all of it (the host follows the last '@'); blank
    query values are kept as they were; a URL that cannot be parsed is shown as nothing but ***."""
    assert redact_url("s3://AKIA:se@cret@bucket/p") == "s3://***@bucket/p"
    assert redact_url("s3://bucket/runs?region=&secret_key=S") == "s3://bucket/runs?region=&secret_key=***"
    assert redact_url("s3://[bucket/runs?secret_key=S") == "***"


def test_has_credentials_tells_urls_with_secrets_from_paths_and_plain_urls() -> None:
    """Plain paths never count as URLs, even with '@' or '?token='; a URL that cannot be parsed cannot be
    shown to be free of secrets, so it counts as secret."""
    assert not has_credentials("/home/me/ray_results") and not has_credentials("/data/me@host/x?token=t")
    assert not has_credentials("s3://bucket/p") and not has_credentials("s3://bucket/p?region=eu")
    assert has_credentials("s3://k:s@bucket/p") and has_credentials("s3://bucket/p?secret_key=S")
    assert has_credentials("s3://[bucket/p")


# --- the local directory store --------------------------------------------------------------------

def test_local_store_url_is_its_absolute_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Messages and records name the registry by its resolved directory, `~` expanded."""
    monkeypatch.setenv("HOME", str(tmp_path))
    assert LocalStore("~/reg/../reg").url == str(tmp_path.resolve() / "reg")


def test_local_store_on_a_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(b"")
    with pytest.raises(RegistryError, match=rf"^registry path {re.escape(str(tmp_path.resolve() / 'f'))} is a file; "
                                            r"point --registry at a directory$"):
        LocalStore(tmp_path / "f")


def test_local_io_failures_name_the_registry_and_the_cause(tmp_path: Path) -> None:
    """A write below a file and a read of a folder fail with the OS's reason in one line; a key
    below a file is simply absent."""
    (tmp_path / "file").write_bytes(b"")
    blocked = LocalStore(tmp_path / "file" / "reg")
    with pytest.raises(RegistryError, match=rf"^cannot write to registry {re.escape(blocked.url)}: Not a directory; "
                                            r"check the path and permissions$"):
        blocked.create("org/a", b"x")
    store = LocalStore(tmp_path / "reg")
    store.create("org/m/a", b"x")
    assert store.get("org/m/a/b") is None
    with pytest.raises(RegistryError, match=rf"^cannot read registry {re.escape(store.url)}: Is a directory; "
                                            r"check the path and permissions$"):
        store.get("org/m")


def test_local_listing_holds_committed_files_under_the_prefix_only(tmp_path: Path) -> None:
    """Folders and in-flight temp files are not keys; a prefix (here one ending in a letter that
    a wrong strip would eat) restricts both listings; ages are the files' mtimes in UTC."""
    store = LocalStore(tmp_path)
    for key in ("org/BOX/a", "org/BOX/sub/b", "org/other/c"):
        store.create(key, b"x")
    (tmp_path / "org/BOX/.a.123.tmp").write_bytes(b"half")
    assert store.list("") == ["org/BOX/a", "org/BOX/sub/b", "org/other/c"]
    assert store.list("org/BOX/") == ["org/BOX/a", "org/BOX/sub/b"]
    assert store.list_modified("org/BOX/") == [
        (key, datetime.fromtimestamp((tmp_path / key).stat().st_mtime, timezone.utc)) for key in store.list("org/BOX/")]


def test_sweep_temp_removes_only_temp_files_older_than_the_cutoff(tmp_path: Path) -> None:
    """Strictly older: a temp file written at the cutoff instant may belong to a live writer."""
    store = LocalStore(tmp_path)
    store.create("org/a", b"x")
    cutoff = datetime(2026, 1, 1, tzinfo=timezone.utc)
    for name, seconds in ((".a.1.tmp", -1), (".a.2.tmp", 0), ("a", -1)):
        path = tmp_path / "org" / name
        path.touch()
        os.utime(path, (cutoff.timestamp() + seconds,) * 2)
    assert store.sweep_temp(cutoff) == ["org/.a.1.tmp"]
    assert sorted(p.name for p in (tmp_path / "org").iterdir()) == [".a.2.tmp", "a"]


# --- both backends ---------------------------------------------------------------------------------

def test_listing_and_delete(bare_backend: Backend) -> None:
    """Listings are sorted keys under the prefix ('' = all) with their UTC write times; delete
    removes one key and is quiet about a key that is already gone."""
    store = open_store(bare_backend.url)
    before = datetime.now(timezone.utc) - timedelta(minutes=1)
    for key in ("org/BOX/b", "org/BOX/a", "org/other/c"):
        store.create(key, b"x")
    assert store.list("") == ["org/BOX/a", "org/BOX/b", "org/other/c"]
    assert store.list("org/BOX/") == ["org/BOX/a", "org/BOX/b"]
    modified = store.list_modified("")
    assert [key for key, _ in modified] == store.list("")
    assert all(before < when < datetime.now(timezone.utc) + timedelta(minutes=1) for _, when in modified)
    store.delete("org/BOX/a")
    store.delete("org/BOX/a")
    assert store.list("") == ["org/BOX/b", "org/other/c"] and store.get("org/BOX/a") is None


# --- the S3 store ----------------------------------------------------------------------------------

def test_s3_prefix_is_one_folder_ending_in_a_slash() -> None:
    """Slashes around the URL's path are dropped and one is put back; no path means the bucket's root.
    ('X' stands at the edges because a strip of the wrong characters would eat it.)"""
    for store, prefix in ((S3Store("b"), ""), (open_store("s3://b/"), ""), (open_store("s3://b/X"), "X/"),
                          (open_store("s3://b//masks/X/"), "masks/X/")):
        assert (store.prefix, store.url) == (prefix, f"s3://b/{prefix}")


def test_s3_objects_live_under_the_prefix() -> None:
    """What a store at s3://bucket/masks writes is the bucket's masks/ folder, and only that is listed."""
    bucket = new_bucket()
    boto3.client("s3").put_object(Bucket=bucket, Key="other/x", Body=b"")
    store = open_store(f"s3://{bucket}/masks")
    store.create("org/a", b"1")
    keys = [o["Key"] for o in boto3.client("s3").list_objects_v2(Bucket=bucket)["Contents"]]
    assert sorted(keys) == ["masks/org/a", "other/x"]
    assert store.list("") == ["org/a"] and open_store(f"s3://{bucket}").list("masks/") == ["masks/org/a"]
    store.delete("org/a")
    assert [o["Key"] for o in boto3.client("s3").list_objects_v2(Bucket=bucket)["Contents"]] == ["other/x"]


def test_s3_listing_follows_continuation_pages() -> None:
    """S3 answers a listing in pages; every page is read. The real server is asked for one key a page."""
    bucket = new_bucket()
    store = open_store(f"s3://{bucket}/masks")
    for key in ("org/a", "org/b", "org/c"):
        store.create(key, b"x")
    pages = []
    store.client.meta.events.register("before-parameter-build.s3.ListObjectsV2",
                                      lambda params, **_: pages.append(params.setdefault("MaxKeys", 1)))
    assert store.list("org/") == ["org/a", "org/b", "org/c"]
    assert len(pages) > 1


def test_s3_requests_are_bounded_as_documented() -> None:
    config = open_store("s3://b/p").client.meta.config
    assert (config.connect_timeout, config.read_timeout) == (S3_CONNECT_TIMEOUT_S, S3_READ_TIMEOUT_S)
    assert config.retries == {"total_max_attempts": S3_ATTEMPTS, "mode": "standard"}


def test_every_operation_on_a_missing_bucket_says_so() -> None:
    store = open_store("s3://leank-no-such-bucket/p")
    expected = (f"S3 bucket 'leank-no-such-bucket' does not exist at {os.environ['AWS_ENDPOINT_URL']}; "
                "create it or fix the registry URL")
    for call in (lambda: store.create("k", b""), lambda: store.get("k"), lambda: store.list("org/"),
                 lambda: store.delete("k")):
        assert one_line_error(call) == expected


def test_client_set_up_and_request_failures_are_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    """botocore's own reason is kept (on one line): a bad region, a bucket name it refuses."""
    text = one_line_error(lambda: open_store("s3://bad bucket!/p").list(""))
    assert text.startswith('S3 request to s3://bad bucket!/p/ failed: Parameter validation failed: Invalid bucket '
                           'name "bad bucket!"')
    monkeypatch.setenv("AWS_DEFAULT_REGION", "bad region!")
    assert one_line_error(lambda: open_store("s3://b/p")) == (
        "cannot set up an S3 client for s3://b/p/: Provided region_name 'bad region!' doesn't match a supported "
        "format.; check the AWS settings")


def test_an_s3_url_without_a_bucket_is_refused() -> None:
    with pytest.raises(ValueError, match=r"^invalid S3 registry URL 's3://': use s3://bucket/prefix$"):
        open_store("s3://")


class ErrorEndpoint:
    """An S3-compatible endpoint that answers every request with one error document, counting them."""

    def __init__(self, status: int, error: str | None) -> None:
        """``error``: the XML inside <Error>, or None for a response without a body."""
        self.requests = 0
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _answer(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                endpoint.requests += 1
                body = b"" if error is None else f"<?xml version='1.0' encoding='UTF-8'?><Error>{error}</Error>".encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/xml")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_PUT = do_DELETE = do_HEAD = _answer

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def error_endpoint(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[ErrorEndpoint]:
    endpoint = ErrorEndpoint(*request.param)
    monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint.url)
    yield endpoint
    endpoint.close()


@pytest.mark.parametrize("error_endpoint, shown", [
    ((400, "<Code>InvalidArgument</Code><Message>Bad key</Message>"), "InvalidArgument Bad key"),
    ((400, "<Code>InvalidArgument</Code>"), "InvalidArgument"),
    ((400, "<Message>Bad key</Message>"), " Bad key"),
], indirect=["error_endpoint"])
def test_other_s3_errors_name_the_object_with_the_code_and_message(error_endpoint: ErrorEndpoint, shown: str) -> None:
    """An error the store has no advice for is passed on as S3 said it (code, then message, either
    may be missing), after the URL of the object (or listed prefix) it concerns."""
    store = open_store("s3://bucket/p")
    for key, call in (("org/a", lambda: store.create("org/a", b"x")), ("org/b", lambda: store.get("org/b")),
                      ("org/", lambda: store.list("org/")), ("org/c", lambda: store.delete("org/c"))):
        assert one_line_error(call) == f"S3 error on s3://bucket/p/{key}: {shown}"


@pytest.mark.parametrize("error_endpoint", [(409, "<Code>ConditionalRequestConflict</Code><Message>retry</Message>")],
                         indirect=True)
def test_create_gives_up_after_five_conflicting_writes(error_endpoint: ErrorEndpoint) -> None:
    """S3 asks the loser of a concurrent conditional write to retry; the store does, five times in all."""
    text = one_line_error(lambda: open_store("s3://bucket/p").create("org/a", b"x"))
    assert text == "S3 kept reporting conflicting writes to s3://bucket/p/org/a; retry the command"
    assert error_endpoint.requests == 5


@pytest.mark.parametrize("error_endpoint", [(404, None)], indirect=True)
def test_a_bare_404_is_a_missing_object(error_endpoint: ErrorEndpoint) -> None:
    """An S3-compatible server may answer a GET of a missing key with 404 and no body (botocore then
    reports the code '404'): that is an absent key, not a failure."""
    assert open_store("s3://bucket/p").get("org/a") is None
