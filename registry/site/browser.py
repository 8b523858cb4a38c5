"""Headless Chromium (Debian's ``chromium`` package) to look at rendered pages without a display:
the DOM after the page ran, or a screenshot. Used by the site's tests and by
``scripts/smollm2_site.py`` (the screenshot in docs/).

The flags keep the browser's own traffic off the network (no background networking, component
updates, sync, QUIC, network time; its update and account endpoints point at a closed local
port), so whatever else a page load asks of the network came from the page. Each run gets a
fresh profile, so nothing carries over between pages.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

NOWHERE = "http://127.0.0.1:9/"  # the discard port: nothing listens, every request fails at once
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync", "--hide-scrollbars",
         # Still called home on a fresh profile (Chromium 156): network time, the component updater,
         # the Google account endpoint. Off, or pointed at a closed local port.
         "--disable-features=NetworkTimeServiceQuerying", f"--component-updater=url-source={NOWHERE}",
         f"--gaia-url={NOWHERE}")
INSTALL = "apt-get install -y chromium chromium-driver"


def chromium() -> str | None:
    """The Chromium executable, or None when it is not installed."""
    return shutil.which("chromium")


def run_chromium(url: str, *flags: str, timeout: float = 60) -> str:
    """Load ``url`` with the extra ``flags``; Chromium's stdout."""
    exe = chromium()
    if exe is None:
        raise ValueError(f"headless Chromium is not installed; {INSTALL}")
    with tempfile.TemporaryDirectory(prefix="leank-chromium-") as profile:
        done = subprocess.run([exe, *FLAGS, f"--user-data-dir={profile}", *flags, url],
                              capture_output=True, timeout=timeout)
    if done.returncode != 0:
        tail = done.stderr.decode(errors="replace").strip().splitlines()[-1:]
        raise RuntimeError(f"chromium exited with {done.returncode} on {url}: {' '.join(tail)}")
    return done.stdout.decode()


def dump_dom(url: str, *flags: str) -> str:
    """The serialized DOM once the page has loaded (scripts, had any run, included)."""
    return run_chromium(url, "--dump-dom", *flags)


def screenshot(url: str, path: Path, width: int = 1280, height: int = 1600) -> Path:
    """A PNG of the page's first ``width`` × ``height`` CSS pixels."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    run_chromium(url, f"--screenshot={path.resolve()}", f"--window-size={width},{height}")
    if not path.is_file():
        raise RuntimeError(f"chromium wrote no screenshot for {url}")
    return path
