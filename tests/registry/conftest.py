"""Registry fixtures: a real S3 server process (moto_server) on 127.0.0.1, a `backend` fixture
that runs each test against both the local directory store and S3 (with a policy that trusts
the session's test signing key), and signed reports for a version."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import boto3
import pytest
import torch

from leank_core.mask import LeanKMask
from registry import GatePolicy, MaskRef, MaskRegistry, Policy, Report, SignedReport, Signer, Suite, generate_key
from registry.signing import SIGNING_KEY_ENV, TRUSTED_KEYS_ENV

CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# moto's S3 server, as `python -m moto.server` builds it, but answering one request at a time:
# moto checks `If-None-Match: *` and then stores the object in two steps, so its threaded
# server lets two concurrent conditional creates of one key both succeed (seen: two pushers
# got version 2). Real S3 decides a conditional write atomically; a serial server does too.
SERIAL_MOTO = """
import sys
from moto.server import DomainDispatcherApplication, create_backend_app
from werkzeug.serving import run_simple
run_simple("127.0.0.1", int(sys.argv[1]), DomainDispatcherApplication(create_backend_app), threaded=False)
"""


def start_s3_server(env: dict[str, str] | None = None) -> tuple[subprocess.Popen, str]:
    """Start moto's S3 server in its own process and wait until it accepts connections."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-c", SERIAL_MOTO, str(port)],
                            env={**os.environ, "MOTO_PORT": str(port), **(env or {})},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"moto server exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return proc, f"http://127.0.0.1:{port}"
        except OSError:
            time.sleep(0.2)
    proc.terminate()
    raise RuntimeError("moto server did not start within 60 s")


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    proc, url = start_s3_server()
    yield url
    stop(proc)


@pytest.fixture(scope="session")
def signer(tmp_path_factory: pytest.TempPathFactory) -> Signer:
    """The validator key of this test session (its file is what $LEANK_SIGNING_KEY points at)."""
    return generate_key(tmp_path_factory.mktemp("keys") / "validator.key")


@pytest.fixture(autouse=True)
def aws_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, s3_endpoint: str, signer: Signer) -> None:
    """Test credentials and the local server for boto3; a private cache and config dir; no host
    AWS config; the session's signing key; no pinned keys."""
    for key, value in {**CREDENTIALS, "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL": s3_endpoint,
                       "AWS_EC2_METADATA_DISABLED": "true", "AWS_CONFIG_FILE": str(tmp_path / "no-aws-config"),
                       "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "no-aws-credentials"),
                       "XDG_CACHE_HOME": str(tmp_path / "cache"), "XDG_CONFIG_HOME": str(tmp_path / "config"),
                       SIGNING_KEY_ENV: signer.source}.items():
        monkeypatch.setenv(key, value)
    for key in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "LEANK_REGISTRY", TRUSTED_KEYS_ENV):
        monkeypatch.delenv(key, raising=False)


def new_bucket() -> str:
    name = f"leank-{uuid.uuid4().hex[:16]}"
    boto3.client("s3").create_bucket(Bucket=name)
    return name


@dataclass
class Backend:
    """Where a registry lives, plus a way to corrupt an object behind the registry's back."""

    name: str
    url: str
    overwrite: Callable[[str, bytes], None]


def trusting_policy(signer: Signer) -> Policy:
    """The policy test registries run under: default gate, one sample per cell, the session key trusted."""
    return Policy(suite=Suite(min_samples=1), trusted_keys=(signer.public_key,))


def _backend(kind: str, tmp_path: Path) -> Backend:
    if kind == "local":
        root = tmp_path / "registry"

        def overwrite(key: str, data: bytes) -> None:
            (root / key).parent.mkdir(parents=True, exist_ok=True)
            (root / key).write_bytes(data)

        return Backend("local", str(root), overwrite)
    bucket = new_bucket()

    def overwrite(key: str, data: bytes) -> None:
        boto3.client("s3").put_object(Bucket=bucket, Key=f"masks/{key}", Body=data)

    return Backend("s3", f"s3://{bucket}/masks", overwrite)


# test ids name the S3 backend "s3_backend", a word no other parameter contains, so `-k "not s3_backend"`
# (scripts/mutation.py) leaves out exactly the S3-backed runs and keeps ids like suite3 or s3:// URLs
BACKEND_IDS = ["local", "s3_backend"]


@pytest.fixture(params=["local", "s3"], ids=BACKEND_IDS)
def bare_backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    """A registry with no policy set (the defaults hold)."""
    return _backend(request.param, tmp_path)


@pytest.fixture(params=["local", "s3"], ids=BACKEND_IDS)
def backend(request: pytest.FixtureRequest, tmp_path: Path, signer: Signer) -> Backend:
    """A registry whose policy trusts the session's signing key (:func:`trusting_policy`)."""
    b = _backend(request.param, tmp_path)
    MaskRegistry(b.url).update_policy(lambda _: trusting_policy(signer))
    return b


def make_mask(model_id: str = "org/m", model_hash: str = "abc", tag: int = 0) -> LeanKMask:
    """A small valid mask; `tag` makes otherwise equal masks differ in bytes."""
    mask = torch.ones(2, 2, 16, dtype=torch.bool)
    mask[0, 0] = False
    return LeanKMask(kept=mask, sink=4, recent=8, align=16, ratio=0.125, model_id=model_id,
                     model_hash=model_hash, extra={"tag": tag})


def score_rows(passed: bool = True, samples: int = 2, task: str = "passkey", length: int = 512) -> list[dict]:
    """Per-sample rows of a full and a masked run: equal accuracy (passes the gate) or every sample lost."""
    return [{"run": run, "task": task, "length": length, "index": i, "score": 1.0 if run == "full" or passed else 0.0,
             "new_tokens": 4, "seconds": 0.5} for run in ("full", "masked") for i in range(samples)]


def report_for(reg: MaskRegistry, ref: MaskRef, passed: bool = True, signer: Signer | None = None,
               rows: list[dict] | None = None, gate: GatePolicy = GatePolicy(), look: int = 1,
               earlier: tuple = (), **names) -> SignedReport:
    """A signed validation report on ``ref``'s stored version (``names`` overrides what it claims to judge).

    ``signer`` defaults to the key $LEANK_SIGNING_KEY points at (the session's)."""
    from registry import load_signer

    m = reg.manifest(ref)
    claims = {**dict(mask_sha256=m.mask_sha256, model_id=m.model_id, model_hash=m.model_hash, version=m.version,
                     manifest_sha256=m.sha256()), **names}
    report = Report.build(rows or score_rows(passed), gate=gate, memory={}, settings={}, look=look, earlier=earlier,
                          **claims)
    return SignedReport.sign(report, signer or load_signer())
