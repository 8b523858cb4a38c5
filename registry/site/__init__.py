"""The registry site: static HTML pages of every model id, version, its evidence and provenance.

``render_site`` writes it (``leank registry site --out DIR``), ``serve_registry`` renders and
serves it locally (``leank registry serve``). Escaping rules: ``html.py``; page rules (no
script, relative links, offline): ``pages.py``.
"""

from .render import render_site
from .serve import serve_registry, site_server

__all__ = ["render_site", "serve_registry", "site_server"]
