"""The site's figures: mask heatmaps as PNG files inside an SVG frame, accuracy as inline SVG.

A heatmap has one pixel per (layer × KV head, channel) value, written by a few lines of PNG
encoding (zlib), so the site needs no plotting library and the picture is exact; the browser
scales it up without smoothing (``site.css``). The frame adds layer and channel ticks and a
colour bar. Every label goes through :func:`el`, so report run names in a chart stay text.
"""

from __future__ import annotations

import math
import struct
import zlib

import torch

from ..evidence import AccuracyTable
from .html import Html, el

Colormap = tuple[tuple[int, int, int], ...]  # evenly spaced anchors from 0 to 1
VIRIDIS: Colormap = ((68, 1, 84), (59, 82, 139), (33, 145, 140), (94, 201, 98), (253, 231, 37))
KEPT: Colormap = ((244, 244, 244), (34, 34, 34))  # dropped light, kept dark (as `leank plot`)
RUN_COLORS = {"full": "#555555", "masked": "#1f77b4", "random": "#d62728"}
OTHER_COLORS = ("#2ca02c", "#9467bd", "#8c564b", "#e377c2")
WIDTH = 640  # heatmap width in CSS pixels


def colorize(values: torch.Tensor, colormap: Colormap) -> torch.Tensor:
    """``[rows, cols]`` values (clamped to [0, 1]) → ``[rows, cols, 3]`` uint8 RGB, linear between anchors."""
    anchors = torch.tensor(colormap, dtype=torch.float32)
    pos = values.float().clamp(0, 1) * (len(colormap) - 1)
    low = pos.floor().long().clamp(max=len(colormap) - 2)
    t = (pos - low).unsqueeze(-1)
    return (anchors[low] * (1 - t) + anchors[low + 1] * t).round().to(torch.uint8)


def png(rgb: torch.Tensor) -> bytes:
    """An 8-bit RGB PNG of a ``[rows, cols, 3]`` uint8 tensor."""
    rows, cols, _ = rgb.shape
    raw = b"".join(b"\x00" + row.numpy().tobytes() for row in rgb.contiguous())  # filter 0 on every row

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", cols, rows, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b"")


def heatmap_png(values: torch.Tensor, colormap: Colormap) -> bytes:
    """A mask-shaped ``[layers, kv_heads, channels]`` tensor as a PNG: rows layer × head, columns channel."""
    layers, heads, dim = values.shape
    return png(colorize(values.reshape(layers * heads, dim), colormap))


def heatmap_figure(href: str, shape: tuple[int, int, int], colormap: Colormap, legend: tuple[str, str],
                   label: str) -> Html:
    """The PNG at ``href`` (written by :func:`heatmap_png`) framed with ticks and a colour bar."""
    layers, heads, dim = shape
    rows = layers * heads
    row_h = min(8.0, max(1.0, 540 / rows))
    left, top, height = 44, 4, rows * row_h
    parts: list[Html] = [el("image", href=href, x=left, y=top, width=WIDTH, height=f"{height:.1f}",
                            preserveAspectRatio="none")]
    step = max(1, math.ceil(layers / 12))
    for layer in range(0, layers, step):
        y = top + (layer * heads + heads / 2) * row_h
        parts.append(el("text", f"L{layer}", x=left - 6, y=f"{y + 4:.1f}", text_anchor="end"))
    base = top + height
    for channel in sorted({0, dim // 4, dim // 2, 3 * dim // 4, dim - 1}):
        x = left + (channel + 0.5) * WIDTH / dim
        parts.append(el("text", channel, x=f"{x:.1f}", y=f"{base + 16:.1f}", text_anchor="middle"))
    parts.append(el("text", "channel", x=left + WIDTH / 2, y=f"{base + 32:.1f}", text_anchor="middle"))
    gradient = f"cbar-{label}"
    stops = [el("stop", offset=f"{i / (len(colormap) - 1):.2f}", stop_color="#%02x%02x%02x" % c)
             for i, c in enumerate(colormap)]
    parts += [el("defs", el("linearGradient", *stops, id=gradient)),
              el("rect", x=left, y=f"{base + 42:.1f}", width=160, height=10, fill=f"url(#{gradient})",
                 stroke="#999"),
              el("text", legend[0], x=left, y=f"{base + 66:.1f}"),
              el("text", legend[1], x=left + 160, y=f"{base + 66:.1f}", text_anchor="end")]
    return el("svg", *parts, class_="heatmap", viewBox=f"0 0 {left + WIDTH + 8} {base + 72:.0f}",
              role="img", aria_label=f"{label} heatmap")


def accuracy_chart(table: AccuracyTable) -> Html | None:
    """Mean accuracy over tasks per context length, one line per run; None without numeric cells."""
    series = table.length_means()
    lengths = sorted({n for by in series.values() for n in by})
    if not lengths:
        return None
    left, right, top, plot_w, plot_h = 44, 120, 8, 360, 180
    step = plot_w / (len(lengths) - 1) if len(lengths) > 1 else 0.0
    xs = {n: left + (i * step if step else plot_w / 2) for i, n in enumerate(lengths)}

    def y(points: float) -> float:
        return top + plot_h * (1 - points / 100)

    parts: list[Html] = []
    for level in (0, 25, 50, 75, 100):
        parts += [el("line", x1=left, x2=left + plot_w, y1=y(level), y2=y(level), class_="grid"),
                  el("text", level, x=left - 6, y=f"{y(level) + 4:.1f}", text_anchor="end")]
    for n, x in xs.items():
        parts.append(el("text", n, x=f"{x:.1f}", y=top + plot_h + 18, text_anchor="middle"))
    parts.append(el("text", "context length (tokens); accuracy in points, mean over tasks",
                    x=left, y=top + plot_h + 38))
    others = iter(OTHER_COLORS * (1 + len(series) // len(OTHER_COLORS)))
    for i, run in enumerate(r for r in table.runs if r in series):
        color = RUN_COLORS.get(run) or next(others)
        coords = [(xs[n], y(min(max(v, 0.0), 100.0)), n, v) for n, v in series[run].items()]
        parts.append(el("polyline", points=" ".join(f"{px:.1f},{py:.1f}" for px, py, _, _ in coords),
                        fill="none", stroke=color, stroke_width=2))
        parts += [el("circle", el("title", f"{run} @ {n}: {v:.1f}"), cx=f"{px:.1f}", cy=f"{py:.1f}", r=3.5,
                     fill=color) for px, py, n, v in coords]
        ly = top + 12 + 18 * i
        parts += [el("line", x1=left + plot_w + 14, x2=left + plot_w + 34, y1=ly - 4, y2=ly - 4, stroke=color,
                     stroke_width=2),
                  el("text", run, x=left + plot_w + 40, y=ly)]
    return el("svg", *parts, class_="chart", viewBox=f"0 0 {left + plot_w + right} {top + plot_h + 46}",
              role="img", aria_label="accuracy by context length")
