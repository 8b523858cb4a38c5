"""Store and storage URLs as people see them: credentials never leave the process in a message or a record.

A URL may carry secrets in its user part (``s3://AKIA…:secret@bucket``, ``http://user:pw@minio``)
or in its query (pyarrow's ``?access_key=…&secret_key=…``, presigned ``X-Amz-Signature=…``).
Anything printed or written to a manifest goes through :func:`redact_url` first.
"""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

# Query keys whose values are secrets (matched case-insensitively, anywhere in the key).
_SECRET_KEY = re.compile(r"secret|password|passwd|token|key|signature|credential|sig", re.IGNORECASE)
HIDDEN = "***"
_URL_IN_TEXT = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"]+")


def redact_url(url: str) -> str:
    """``url`` with its user part and secret query values replaced by ``***``; other text unchanged."""
    if not has_credentials(url):
        return url
    try:
        parts = urlsplit(url)
        netloc = parts.netloc
        if "@" in netloc:
            netloc = f"{HIDDEN}@{netloc.rpartition('@')[2]}"
        query = urlencode([(k, HIDDEN if _SECRET_KEY.search(k) else v)
                           for k, v in parse_qsl(parts.query, keep_blank_values=True)], safe="*")
        return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))
    except ValueError:  # not parseable as a URL: show nothing of it
        return HIDDEN


def redact_text(text: str) -> str:
    """``text`` (a message) with every URL in it passed through :func:`redact_url`."""
    return _URL_IN_TEXT.sub(lambda m: redact_url(m.group(0)), text)


def has_credentials(url: str) -> bool:
    """True if ``url`` carries a user part or a query value under a secret-looking key."""
    if "://" not in url:
        return False  # a plain path
    try:
        parts = urlsplit(url)
        return "@" in parts.netloc or any(_SECRET_KEY.search(k) for k, _ in parse_qsl(parts.query))
    except ValueError:
        return True  # cannot tell: treat as secret
