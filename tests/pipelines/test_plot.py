"""leank plot: writes one PNG per view next to the mask; bad input is a one-line error."""

from __future__ import annotations

import torch

from leank_core.mask import LeanKMask
from pipelines.cli import main as leank


def test_plot_writes_importance_and_kept_heatmaps(tmp_path, capsys):
    alpha = torch.rand(3, 2, 16, generator=torch.Generator().manual_seed(0))
    path = LeanKMask.from_importance(alpha, 0.5, 4, sink=4, recent=8, model_id="org/m").save(tmp_path / "m.safetensors")
    assert leank(["plot", str(path)]) == 0
    written = capsys.readouterr().out.split()
    assert [p.rsplit("/", 1)[-1] for p in written] == ["m.importance.png", "m.kept.png"]
    for p in written:
        assert open(p, "rb").read(8) == b"\x89PNG\r\n\x1a\n"


def test_plot_of_a_missing_file_fails_with_one_line(tmp_path, capsys):
    assert leank(["plot", str(tmp_path / "nope.safetensors")]) == 2
    err = capsys.readouterr().err.strip()
    assert "not found" in err and "\n" not in err


def test_plot_of_a_truncated_mask_fails_with_one_line_and_writes_nothing(tmp_path, capsys):
    data = LeanKMask.from_importance(torch.rand(3, 2, 16), 0.5, 4, sink=4, recent=8, model_id="org/m").to_bytes()
    (tmp_path / "m.safetensors").write_bytes(data[: len(data) // 2])  # head -c N
    assert leank(["plot", str(tmp_path / "m.safetensors")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("leank plot: cannot read mask") and "\n" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.safetensors"]
