"""Registry fixtures: a real S3 server process (moto_server) on 127.0.0.1 and a `backend`
fixture that runs each test against both the local directory store and S3."""

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
from registry import Gate, Report

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


@pytest.fixture(autouse=True)
def aws_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, s3_endpoint: str) -> None:
    """Test credentials and the local server for boto3; a private cache; no host AWS config."""
    for key, value in {**CREDENTIALS, "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL": s3_endpoint,
                       "AWS_EC2_METADATA_DISABLED": "true", "AWS_CONFIG_FILE": str(tmp_path / "no-aws-config"),
                       "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "no-aws-credentials"),
                       "XDG_CACHE_HOME": str(tmp_path / "cache")}.items():
        monkeypatch.setenv(key, value)
    for key in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "LEANK_REGISTRY"):
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


@pytest.fixture(params=["local", "s3"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    if request.param == "local":
        root = tmp_path / "registry"

        def overwrite(key: str, data: bytes) -> None:
            (root / key).parent.mkdir(parents=True, exist_ok=True)
            (root / key).write_bytes(data)

        return Backend("local", str(root), overwrite)
    bucket = new_bucket()

    def overwrite(key: str, data: bytes) -> None:
        boto3.client("s3").put_object(Bucket=bucket, Key=f"masks/{key}", Body=data)

    return Backend("s3", f"s3://{bucket}/masks", overwrite)


def make_mask(model_id: str = "org/m", model_hash: str = "abc", tag: int = 0) -> LeanKMask:
    """A small valid mask; `tag` makes otherwise equal masks differ in bytes."""
    mask = torch.ones(2, 2, 16, dtype=torch.bool)
    mask[0, 0] = False
    return LeanKMask(kept=mask, sink=4, recent=8, align=16, ratio=0.125, model_id=model_id,
                     model_hash=model_hash, extra={"tag": tag})


def report_for(mask: LeanKMask, passed: bool = True) -> Report:
    """A validation report on ``mask``: equal accuracy (passes the gate) or every sample lost (fails)."""
    rows = [{"run": run, "task": "passkey", "length": 512, "score": 1.0 if run == "full" or passed else 0.0,
             "new_tokens": 4, "seconds": 0.5} for run in ("full", "masked") for _ in range(2)]
    return Report.build(rows, mask.sha256(), mask.model_id, mask.model_hash, Gate(), memory={}, settings={})
