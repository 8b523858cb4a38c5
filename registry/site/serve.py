"""``leank registry serve``: render the site into a temporary folder and serve it on 127.0.0.1.

For a quick look only (Python's ``http.server``); publish the output of ``leank registry site``
on a real static host or an S3 bucket instead.
"""

from __future__ import annotations

import functools
import tempfile
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from ..registry import MaskRegistry
from .render import render_site


def site_server(directory: Path, port: int) -> ThreadingHTTPServer:
    """A server for the files under ``directory`` on 127.0.0.1 (``port`` 0: any free port); not started."""
    handler = functools.partial(SimpleHTTPRequestHandler, directory=str(directory))
    try:
        return ThreadingHTTPServer(("127.0.0.1", port), handler)
    except OSError as e:
        raise ValueError(f"cannot listen on 127.0.0.1:{port} ({e.strerror}); pick another --port") from None


def serve_registry(registry: MaskRegistry, port: int) -> None:
    """Render ``registry`` and serve it until Ctrl-C; the rendered files are removed afterwards."""
    with tempfile.TemporaryDirectory(prefix="leank-site-") as tmp:
        index = render_site(registry, Path(tmp) / "site")
        server = site_server(index.parent, port)
        print(f"serving the site of {registry.store.url} at http://127.0.0.1:{server.server_address[1]}/ "
              "(Ctrl-C stops)", flush=True)
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            pass
        finally:
            server.server_close()
