"""Figures: ``leank plot`` heatmaps and the report's accuracy plot show the data they are drawn from."""

from __future__ import annotations

import matplotlib.image
import pytest
import torch
from matplotlib.figure import Figure

from leank_core.mask import LeanKMask
from pipelines.cli import main as leank
from pipelines.plot import plot_report
from registry import GatePolicy, Report


@pytest.fixture
def figures(monkeypatch) -> list[Figure]:
    """Every figure saved during the test, as it was when saved."""
    saved, savefig = [], Figure.savefig

    def record(fig, *args, **kwargs):
        saved.append(fig)
        return savefig(fig, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", record)
    return saved


def pixels(path) -> torch.Tensor:
    """The PNG decoded to RGB floats in [0, 1], ``[height, width, 3]``."""
    return torch.from_numpy(matplotlib.image.imread(path))[..., :3]


def test_plot_writes_importance_and_kept_heatmaps_of_the_mask(tmp_path, capsys, figures):
    alpha = torch.rand(3, 2, 16, generator=torch.Generator().manual_seed(0))
    mask = LeanKMask.from_importance(alpha, 0.5, 4, sink=4, recent=8, model_id="org/m")
    path = mask.save(tmp_path / "m.safetensors")
    assert leank(["plot", str(path)]) == 0
    written = capsys.readouterr().out.split()
    assert [p.rsplit("/", 1)[-1] for p in written] == ["m.importance.png", "m.kept.png"]
    kept, importance = (fig.axes[0] for fig in figures)  # drawn in this order
    assert torch.equal(torch.from_numpy(importance.images[0].get_array().data), alpha.reshape(6, 16))
    assert torch.equal(torch.from_numpy(kept.images[0].get_array().data), mask.kept.reshape(6, 16).float())
    assert importance.images[0].get_clim() == kept.images[0].get_clim() == (0.0, 1.0)
    assert importance.get_title() == "org/m: learned importance α"
    v_dropped = 1 - mask.v_fraction_kept
    assert kept.get_title() == f"org/m: kept channels (50% of K pruned, {v_dropped:.0%} of heads drop V)"
    assert [t.get_text() for t in kept.get_yticklabels()] == ["L0", "L1", "L2"]
    for p in written:
        image = pixels(p)
        dark, white = (image.sum(-1) < 0.3).float().mean(), (image.sum(-1) > 2.9).float().mean()
        assert dark > 0.01 and white > 0.1  # a drawn heatmap on a white page, not a blank or black image


def test_plot_of_a_mask_without_importance_writes_only_the_kept_map(tmp_path, capsys):
    mask = LeanKMask(kept=torch.ones(1, 2, 8, dtype=torch.bool), sink=2, recent=4, align=4, ratio=0.0)
    path = mask.save(tmp_path / "ones.safetensors")
    assert leank(["plot", str(path), "--out-dir", str(tmp_path / "figs")]) == 0
    assert capsys.readouterr().out.split() == [str(tmp_path / "figs" / "ones.kept.png")]


def test_plot_of_a_missing_file_fails_with_one_line(tmp_path, capsys):
    assert leank(["plot", str(tmp_path / "nope.safetensors")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("leank plot: mask file not found") and "\n" not in err


def test_report_plot_draws_the_mean_over_tasks_per_length_for_each_run(tmp_path, figures):
    scores = {("full", "a", 512): [1, 1], ("full", "b", 512): [1, 0], ("full", "a", 1024): [1, 1],
              ("full", "b", 1024): [0, 0], ("masked", "a", 512): [1, 0], ("masked", "b", 512): [0, 0],
              ("masked", "a", 1024): [1, 1], ("masked", "b", 1024): [1, 0]}
    rows = [{"run": run, "task": task, "length": length, "index": i, "score": s, "new_tokens": 1, "seconds": 1.0}
            for (run, task, length), values in scores.items() for i, s in enumerate(values)]
    report = Report.build(rows, "sha", "org/m", "hash", GatePolicy(), {}, {})
    path = plot_report(report, tmp_path / "r.png")
    [ax] = figures[0].axes
    drawn = {line.get_label(): (list(line.get_xdata()), list(line.get_ydata())) for line in ax.get_lines()}
    assert drawn == {"full": ([512, 1024], [75.0, 50.0]), "masked": ([512, 1024], [25.0, 75.0])}
    assert ax.get_title() == f"org/m: {report.verdict.decision} (look 1)" and ax.get_xscale() == "log"
    image = pixels(path)
    assert (image.sum(-1) < 2.9).float().mean() > 0.01  # something is drawn


def test_plot_of_a_truncated_mask_fails_with_one_line_and_writes_nothing(tmp_path, capsys):
    data = LeanKMask.from_importance(torch.rand(3, 2, 16), 0.5, 4, sink=4, recent=8, model_id="org/m").to_bytes()
    (tmp_path / "m.safetensors").write_bytes(data[: len(data) // 2])  # head -c N
    assert leank(["plot", str(tmp_path / "m.safetensors")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("leank plot: cannot read mask") and "\n" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.safetensors"]
