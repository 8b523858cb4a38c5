"""A private Ray head for pipeline tests: its own temp dir and free ports, stopped by the tests.

Never ``ray stop`` (it kills every Ray on the machine) and never a bare ``ray.init()``
(it joins whatever cluster this machine started last, or starts one and writes a token to
``~/.ray/auth_token``, which switches every later ``ray start`` here to token auth): the
head is a ``ray start --block`` child process, clients get its address explicitly, and
teardown interrupts that process, which stops exactly the Ray processes it started.

Token auth is off for this loopback-only, minutes-long cluster, explicitly: whether Ray
turns it on otherwise depends on a file in the home directory, and a client process caches
its mode when ``ray`` is first imported, before any fixture could hand it a token.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

# Read by Ray Train's controller, by DeepSpeed and transformers in workers (the head's env).
HEAD_ENV = {
    "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.2",  # reports cost ~2 s each otherwise
    "TORCH_EXTENSIONS_DIR": str(Path.home() / ".cache" / "leank" / "torch_extensions"),  # compile DS ops once
    "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "RAY_DEDUP_LOGS": "0",
    "RAY_AUTH_MODE": "disabled",
}


# The ``ray`` CLI of this interpreter, not whatever ``ray`` is first on PATH (tests run without an activated venv).
RAY_CLI = [sys.executable, "-m", "ray.scripts.scripts"]


@dataclass(frozen=True)
class RayHead:
    address: str        # GCS address for ray.init / RAY_ADDRESS
    dashboard_url: str  # for ray job submit and the state API
    temp_dir: Path


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def _wait_for(check, what: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise RuntimeError(f"the test Ray head did not come up: no {what} after {timeout:.0f} s")
        time.sleep(0.5)


def _dashboard_up(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/api/version", timeout=2):
            return True
    except OSError:
        return False


@pytest.fixture(scope="session")
def ray_head() -> Iterator[RayHead]:
    """Start a head with 4 logical CPUs (2 workers + drivers) and yield its addresses.

    The session's environment (inherited by the head, ``ray job`` CLI calls and in-process
    drivers) gets :data:`HEAD_ENV`.
    """
    env = pytest.MonkeyPatch()
    for key, value in HEAD_ENV.items():
        env.setenv(key, value)
    temp_dir = Path(tempfile.mkdtemp(prefix="lkray-", dir="/tmp"))  # short: Ray's socket paths are length-limited
    gcs, dashboard, agent = _free_ports(3)
    cmd = [*RAY_CLI, "start", "--head", "--block", "--temp-dir", str(temp_dir), "--port", str(gcs),
           "--dashboard-host", "127.0.0.1", "--dashboard-port", str(dashboard),
           "--dashboard-agent-listen-port", str(agent), "--num-cpus", "4", "--disable-usage-stats"]
    log = open(temp_dir / "head.log", "w")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{dashboard}"
    try:
        try:
            _wait_for(lambda: (temp_dir / "ray_current_cluster").exists(), "GCS address file", 120)
            _wait_for(lambda: _dashboard_up(url), "dashboard", 120)
        except RuntimeError as e:
            raise RuntimeError(f"{e}; ray start said: {(temp_dir / 'head.log').read_text()[-2000:]}") from None
        yield RayHead((temp_dir / "ray_current_cluster").read_text().strip(), url, temp_dir)
    finally:
        proc.send_signal(signal.SIGINT)  # ray start --block then stops the processes it started
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            pass
        try:  # stragglers of this head only: its own process group (start_new_session)
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        log.close()
        shutil.rmtree(temp_dir, ignore_errors=True)
        env.undo()
