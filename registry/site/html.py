"""Building HTML so that nothing from the store can become markup.

Every page is assembled from :func:`el` calls. A child that is not already :class:`Html` (built
here) is text and is escaped with ``html.escape(..., quote=True)``; every attribute value is
escaped the same way and always double-quoted. Element and attribute names are constants in
this package's code, never data. So a model id, a provenance value or a report field such as
``<script>…`` or ``"><img onerror=…>`` reaches the browser as text, whatever the store holds.
"""

from __future__ import annotations

import html

VOID = frozenset({"meta", "link", "img", "br"})  # HTML elements without an end tag (SVG ones may have one)


class Html(str):
    """A fragment built by this module; any other string is text."""


def text(value: object) -> Html:
    """``value`` as HTML text: ``& < > " '`` escaped (safe in content and in quoted attributes)."""
    return Html(html.escape(str(value), quote=True))


def render(part: object) -> Html:
    """A child: Html as it is, None as nothing, a list or tuple part by part, anything else as text."""
    if isinstance(part, Html):
        return part
    if part is None:
        return Html("")
    if isinstance(part, (list, tuple)):
        return Html("".join(render(p) for p in part))
    return text(part)


def el(tag: str, /, *children: object, **attrs: object) -> Html:
    """``<tag attrs>children</tag>``. Attribute names: ``class_`` → ``class``, ``data_x`` → ``data-x``
    (SVG names such as ``viewBox`` stay as they are); a None value leaves the attribute out."""
    rendered = "".join(f' {_attr_name(k)}="{text(v)}"' for k, v in attrs.items() if v is not None)
    if tag in VOID:
        return Html(f"<{tag}{rendered}>")
    return Html(f"<{tag}{rendered}>{render(list(children))}</{tag}>")


def _attr_name(key: str) -> str:
    return key.rstrip("_").replace("_", "-")
