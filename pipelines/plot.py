"""Figures: ``leank plot`` (heatmaps of a mask's learned importance α and kept channels) and the
accuracy plot of a validation report.

The paper's analysis view: rows are (layer, KV head), columns are channels. Bright α
columns show that importance is concentrated in a few (mostly low-frequency RoPE)
channels per head, and the kept-channel map shows how unevenly the global threshold
spreads the budget over layers.
"""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from leank_core.mask import LeanKMask  # noqa: E402
from registry.report import Report  # noqa: E402


def _heatmap(values: torch.Tensor, title: str, path: Path, cmap: str) -> Path:
    layers, heads, dim = values.shape
    fig, ax = plt.subplots(figsize=(min(4 + dim / 12, 14), min(2 + layers * heads / 12, 16)))
    image = ax.imshow(values.reshape(layers * heads, dim).float().numpy(), aspect="auto",
                      interpolation="nearest", cmap=cmap, vmin=0.0, vmax=1.0)
    ticks = range(0, layers * heads, max(heads, (layers * heads) // 16 // heads * heads))
    ax.set_yticks(list(ticks), [f"L{t // heads}" for t in ticks])
    ax.set_xlabel("channel")
    ax.set_ylabel("layer × KV head")
    ax.set_title(title)
    fig.colorbar(image, ax=ax, fraction=0.03)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_mask(mask: LeanKMask, out_dir: Path, stem: str) -> list[Path]:
    """Write ``<stem>.importance.png`` (if α is present) and ``<stem>.kept.png``; return the paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    label = mask.model_id or stem
    paths = [_heatmap(mask.kept, f"{label}: kept channels ({1 - mask.k_fraction_kept:.0%} of K pruned, "
                      f"{1 - mask.v_fraction_kept:.0%} of heads drop V)", out_dir / f"{stem}.kept.png", "Greys")]
    if mask.importance is not None:
        paths.insert(0, _heatmap(mask.importance, f"{label}: learned importance α",
                                 out_dir / f"{stem}.importance.png", "viridis"))
    return paths


def plot_report(report: Report, path: Path) -> Path:
    """Accuracy vs context length per run (mean over tasks), one line per run."""
    fig, ax = plt.subplots(figsize=(6, 4))
    for run, cells in report.accuracy.items():
        by_length: dict[int, list[float]] = defaultdict(list)
        for cell, acc in cells.items():
            by_length[int(cell.rsplit("@", 1)[1])].append(acc)
        lengths = sorted(by_length)
        ax.plot(lengths, [sum(by_length[n]) / len(by_length[n]) for n in lengths], marker="o", label=run)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("context length (tokens)")
    ax.set_ylabel("accuracy (points, mean over tasks)")
    ax.set_ylim(-2, 102)
    ax.set_title(f"{report.model_id}: {report.verdict.decision} (look {report.look})")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="leank plot", description="Heatmaps of learned importance α and kept channels (layer × head × channel).")
    parser.add_argument("mask", type=Path, help="mask file (.safetensors written by LeanKMask.save / leank registry pull)")
    parser.add_argument("--out-dir", type=Path, default=None, help="where to write the PNGs (default: next to the mask)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        mask = LeanKMask.load(args.mask)
    except (FileNotFoundError, ValueError) as e:
        print(f"leank plot: {e}", file=sys.stderr)
        return 2
    stem = args.mask.name.removesuffix(".safetensors")
    for path in plot_mask(mask, args.out_dir or args.mask.parent, stem):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
