"""Object stores: create-if-absent semantics on both backends, and S3 failures as one-line errors."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest

from registry import MaskRegistry, RegistryError
from registry.store import LocalStore, open_store

from .conftest import Backend, free_port, make_mask, start_s3_server, stop


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
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")
    assert "cannot reach S3 endpoint" in one_line_error(lambda: MaskRegistry("s3://bucket/p").list("org/m"))


def test_unknown_aws_profile(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_PROFILE", "leank-no-such-profile")
    assert "AWS profile 'leank-no-such-profile' not found" in one_line_error(lambda: MaskRegistry("s3://bucket/p"))


def test_malformed_endpoint(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", "not a url")
    with pytest.raises(ValueError, match="set AWS_ENDPOINT_URL to http"):
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
