"""``leank registry site``: write the static site of a registry (local or S3) into a directory.

Layout (every link relative, so the folder works from disk, any static server or an S3 bucket):

    index.html, site.css                        the model ids
    models/{org}/{name}/index.html              one model id: its versions
    models/{org}/{name}/{N}/index.html          one version: facts, evidence, heatmaps, provenance
    models/{org}/{name}/{N}/kept.png, importance.png, manifest.json, report-{k}.json (signed),
                                 README.md      (the model card, accepted versions only)

The site is written into a fresh folder beside ``out`` and moved into place when complete,
so ``out`` is never half-written; an existing ``out`` is replaced only if it is a site this
command wrote (it holds the marker file).
"""

from __future__ import annotations

import shutil
import tempfile
from importlib import resources
from pathlib import Path

from ..card import model_card
from ..errors import RegistryError
from ..registry import MaskRegistry
from .charts import KEPT, VIRIDIS, heatmap_png
from .pages import ModelView, VersionView, index_page, model_href, model_page, version_dir, version_page

MARKER = ".leank-site"


def render_site(registry: MaskRegistry, out: Path) -> Path:
    """Render every model id in ``registry`` into ``out`` (see the module docstring); the index's path."""
    out = Path(out)
    _check_target(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    draft = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        _write(registry, draft)
        if out.exists():
            shutil.rmtree(out)
        draft.rename(out)
    except BaseException:
        shutil.rmtree(draft, ignore_errors=True)
        raise
    return out / "index.html"


def collect(registry: MaskRegistry, model_id: str) -> ModelView:
    """Everything the pages show about one model id; a damaged version or mask is a reason, not an error."""
    views = []
    for summary in registry.list(model_id):
        if summary.damaged is not None:
            views.append(VersionView(summary.version, damaged=summary.damaged))
            continue
        try:
            record = registry.show(model_id, summary.version)
        except RegistryError as e:  # e.g. a manifest damaged since it was listed
            views.append(VersionView(summary.version, damaged=str(e)))
            continue
        if record.status is None:  # its decision stopped holding since it was listed
            views.append(VersionView(summary.version, damaged=record.problem))
            continue
        try:
            mask = registry.pull(model_id, summary.version, allow_unaccepted=True)
        except (RegistryError, ValueError) as e:  # missing or tampered mask bytes
            views.append(VersionView(summary.version, record, mask_problem=str(e)))
            continue
        views.append(VersionView(summary.version, record, mask))
    return ModelView(model_id, views)


def _check_target(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise ValueError(f"{out} is a file; give --out a new or empty directory")
    if out.is_dir() and any(out.iterdir()) and not (out / MARKER).is_file():
        raise ValueError(f"{out} is not empty and was not written by leank registry site; give --out a new or "
                         "empty directory")


def _write(registry: MaskRegistry, root: Path) -> None:
    public_url = registry.store.url if registry.store.url.startswith("s3://") else None  # a local path is private
    models = [collect(registry, model_id) for model_id in registry.model_ids()]
    (root / MARKER).write_text("written by leank registry site; the next render replaces this folder\n")
    (root / "site.css").write_bytes(resources.files(__package__).joinpath("site.css").read_bytes())
    (root / "index.html").write_text(index_page(models, public_url), encoding="utf-8")
    for model in models:
        page = root / model_href(model.model_id)
        page.parent.mkdir(parents=True, exist_ok=True)
        page.write_text(model_page(model, public_url), encoding="utf-8")
        for view in model.versions:
            _write_version(root / version_dir(model.model_id, view.version), model.model_id, view, public_url)


def _write_version(folder: Path, model_id: str, view: VersionView, public_url: str | None) -> None:
    folder.mkdir(parents=True)
    (folder / "index.html").write_text(version_page(model_id, view, public_url), encoding="utf-8")
    if view.record is None:
        return
    (folder / "manifest.json").write_bytes(view.record.manifest.to_json())
    for entry in view.record.reports:
        if entry.signed is not None:  # as stored: the signed envelope, checkable by anyone
            (folder / f"report-{entry.report_id}.json").write_bytes(entry.signed.to_json())
    if view.record.status.value == "accepted":
        (folder / "README.md").write_text(model_card(view.record), encoding="utf-8")
    if view.mask is not None:
        (folder / "kept.png").write_bytes(heatmap_png(view.mask.kept.float(), KEPT))
        if view.mask.importance is not None:
            (folder / "importance.png").write_bytes(heatmap_png(view.mask.importance, VIRIDIS))
