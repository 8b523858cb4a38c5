"""The site's pages: the index of model ids, one page per model id, one per version.

Pages are built from :func:`el` only (see ``html.py``: everything from the store is text).
Each page carries a Content-Security-Policy that allows no script at all and loads styles and
images only from the site itself, so a page works offline and from S3 static hosting and
could not fetch anything elsewhere even if a string slipped through. Links are relative.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict, dataclass
from typing import Any

from leank_core.mask import LeanKMask

from ..card import decided_by, pull_command, python_snippet
from ..evidence import MISSING, accuracy_table, cell_bounds, percent, points, verdict
from ..registry import ReportEntry, VersionRecord
from .charts import KEPT, VIRIDIS, accuracy_chart, heatmap_figure
from .html import Html, el

CSP = "default-src 'none'; style-src 'self'; img-src 'self'; base-uri 'none'; form-action 'none'"
KNOWN_REPORT_FIELDS = {"format", "model_id", "version", "model_hash", "mask_sha256", "manifest_sha256", "pairs",
                       "accuracy", "mean", "deltas", "look", "verdict", "gate", "memory", "tokens_per_s", "settings"}
KNOWN_RECORD_FIELDS = {"ref", "manifest", "status", "problem", "decision", "reports"}
EVIDENCE_HEADING = {"accepted": "Why it was accepted", "rejected": "Why it was rejected",
                    "candidate": "Evidence (not judged yet)"}
PROVENANCE_FIRST = ("training_config", "data_recipe", "training_metrics", "source")


@dataclass(frozen=True)
class VersionView:
    """One version as the site shows it: its record and mask, or why they cannot be shown."""

    version: int
    record: VersionRecord | None = None
    mask: LeanKMask | None = None
    damaged: str | None = None  # why the version's records cannot be read (then record is None)
    mask_problem: str | None = None  # why the mask bytes cannot be shown (missing, tampered)

    @property
    def status(self) -> str:
        return "damaged" if self.record is None else self.record.status.value


@dataclass(frozen=True)
class ModelView:
    model_id: str
    versions: list[VersionView]  # oldest first

    @property
    def newest_accepted(self) -> VersionView | None:
        return next((v for v in reversed(self.versions) if v.status == "accepted"), None)


def model_href(model_id: str) -> str:
    """The model page's path from the site root; ids are validated ``org/name`` (no '..', URL-safe)."""
    return f"models/{model_id}/index.html"


def version_dir(model_id: str, version: int) -> str:
    return f"models/{model_id}/{version}/"


# -- pages ----------------------------------------------------------------------------------
def index_page(models: list[ModelView], registry_url: str | None) -> str:
    rows = [el("tr", el("td", el("a", m.model_id, href=model_href(m.model_id))),
               el("td", len(m.versions), class_="num"),
               el("td", [(status_badge(s), f" {n} ") for s, n in _status_counts(m).items()]),
               el("td", _newest_accepted_cell(m)),
               data_model=m.model_id) for m in models]
    body = [el("h1", "LeanK masks"),
            el("p", "Learned K-cache channel masks, each judged by a validation report before it is served.",
               class_="lead"),
            el("table", el("tr", el("th", "model id"), el("th", "versions", class_="num"), el("th", "status"),
                           el("th", "newest accepted")), *rows)
            if rows else el("p", "This registry holds no masks yet.")]
    return page("LeanK masks", 0, registry_url, body)


def model_page(model: ModelView, registry_url: str | None) -> str:
    newest = model.newest_accepted
    use = ([el("p", f"Newest accepted: version {newest.version}. Pull it, or apply it in Python:"),
            *_snippets(model.model_id, None, registry_url)] if newest is not None else
           [el("p", "No accepted version yet: pull refuses candidates and rejected versions.")])
    rows = [_version_row(model.model_id, v) for v in reversed(model.versions)]
    header = el("tr", *(el("th", h, class_="num" if h in ("K kept", "V kept") else None) for h in
                        ("version", "status", "model hash", "K kept", "V kept", "pushed", "decided", "verdict")))
    body = [el("h1", model.model_id),
            el("p", f"{len(model.versions)} version(s), newest first. K/V kept: share of middle-token key "
                    "channels / value heads the mask stores.", class_="lead"),
            el("section", *use, class_="card"),
            el("table", header, *rows, class_="versions")]
    return page(model.model_id, 3, registry_url, body)


def version_page(model_id: str, view: VersionView, registry_url: str | None) -> str:
    title = f"{model_id}@{view.version}"
    back = el("p", el("a", f"all versions of {model_id}", href="../index.html"))
    head = [el("h1", title, " ", status_badge(view.status)), back]
    if view.record is None:
        why = el("p", f"This version is damaged and is never served: {view.damaged}", class_="damaged")
        return page(title, 4, registry_url, [*head, why])
    record = view.record
    body = [*head, el("section", _facts(record, view.mask), class_="card"),
            el("h2", "What was learned"), _figures(view),
            el("h2", EVIDENCE_HEADING[record.status.value]), *_evidence(record),
            el("h2", "How to pull it")]
    if record.status.value == "accepted":
        body += [*_snippets(model_id, view.version, registry_url),
                 el("p", el("a", "Model card (README.md)", href="README.md"), " · ",
                    el("a", "manifest.json", href="manifest.json"), class_="hint")]
    else:
        body.append(el("p", f"Not served: pull refuses a {record.status.value} version. ",
                       el("a", "manifest.json", href="manifest.json"), class_="hint"))
    body += [el("h2", "Provenance"), _provenance(record)]
    return page(title, 4, registry_url, body)


def page(title: str, depth: int, registry_url: str | None, body: list[Html]) -> str:
    """A whole document; ``depth`` is how many folders below the site root it sits (for relative links).
    ``registry_url`` is the S3 registry the pages show, None for a local one (its path is private)."""
    root = "../" * depth
    head = el("head", el("meta", charset="utf-8"), el("meta", http_equiv="Content-Security-Policy", content=CSP),
              el("meta", name="viewport", content="width=device-width, initial-scale=1"),
              el("meta", name="referrer", content="no-referrer"),
              el("title", title), el("link", rel="stylesheet", href=f"{root}site.css"))
    top = el("header", el("a", "LeanK mask registry", href=f"{root}index.html"),
             el("span", registry_url or "a local registry", class_="where"), class_="top")
    foot = el("footer", "Static pages rendered by leank registry site. Every number comes from the stored "
                        "validation reports; a version is accepted only on a report of its exact mask bytes, "
                        "signed by a trusted validator, that passes the registry's policy.")
    return "<!DOCTYPE html>\n" + el("html", head, el("body", top, el("main", *body), foot), lang="en") + "\n"


# -- parts ----------------------------------------------------------------------------------
def status_badge(status: str) -> Html:
    return el("span", status, class_=f"status {status}", data_status=status)


def _status_counts(model: ModelView) -> dict[str, int]:
    counts = Counter(v.status for v in model.versions)
    return {s: counts[s] for s in ("accepted", "rejected", "candidate", "damaged") if counts[s]}


def _newest_accepted_cell(model: ModelView) -> Html | str:
    newest = model.newest_accepted
    if newest is None:
        return MISSING
    link = el("a", f"version {newest.version}", href=f"{version_dir(model.model_id, newest.version)}index.html")
    return el("span", link, f", K kept {percent(newest.record.manifest.k_fraction_kept)}")


def _version_row(model_id: str, v: VersionView) -> Html:
    link = el("a", f"@{v.version}", href=f"{v.version}/index.html")
    if v.record is None:
        return el("tr", el("td", link), el("td", status_badge("damaged")),
                  el("td", f"damaged: {v.damaged}", colspan=6, class_="why"), data_version=v.version,
                  data_status="damaged")
    r, m = v.record, v.record.manifest
    deciding = decided_by(r)
    return el("tr", el("td", link), el("td", status_badge(v.status)),
              el("td", el("code", m.model_hash[:12], title=m.model_hash)),
              el("td", percent(m.k_fraction_kept), class_="num"),
              el("td", MISSING if v.mask is None else percent(v.mask.v_fraction_kept), class_="num"),
              _date_cell(m.created), _date_cell(r.decision.decided) if r.decision else el("td", MISSING),
              el("td", _verdict(deciding) if deciding else "not judged yet", class_="why"),
              data_version=v.version, data_status=v.status)


def _date_cell(stamp: str) -> Html:
    return el("td", stamp[:10], title=stamp, class_="date")  # ISO day; the whole stamp on hover


def _verdict(entry: ReportEntry) -> Html:
    """The registry's verdict on a report (or why it is no evidence), styled by it."""
    decision = entry.verdict.decision if entry.verdict is not None else "none"
    kind = {"accepted": "pass", "rejected": "fail", "undecided": "undecided", "none": "none"}[decision]
    return el("span", verdict(entry), class_=f"verdict {kind}", data_passed=str(entry.passed).lower(),
              data_decision=decision)


def _snippets(model_id: str, version: int | None, registry_url: str | None) -> list[Html]:
    return [el("pre", el("code", pull_command(model_id, version, registry_url)), class_="copy", data_snippet="cli"),
            el("pre", el("code", python_snippet(model_id, registry_url)), class_="copy", data_snippet="python"),
            el("p", "Click a box once to select all of it. The Python call hashes the loaded weights and pulls the "
                    "newest accepted mask learned for exactly them.", class_="hint")]


def _facts(record: VersionRecord, mask: LeanKMask | None) -> Html:
    m, decision = record.manifest, record.decision
    items: list[tuple[str, Any]] = [
        ("status", status_badge(record.status.value)),
        ("decided", f"{decision.decided} by report {decision.report_id}" if decision else "not judged yet"),
        ("model hash", el("code", m.model_hash)),
        ("mask sha256", el("code", m.mask_sha256)),
        ("shape [layers, KV heads, head dim]", " × ".join(map(str, m.shape))),
        ("K channels kept (middle tokens)", percent(m.k_fraction_kept)),
        ("V heads kept (middle tokens)", MISSING if mask is None else percent(mask.v_fraction_kept)),
        ("heads by kept channels", MISSING if mask is None else
         ", ".join(f"{c}: {n}" for c, n in sorted(mask.histogram().items()))),
        ("pruning ratio asked", f"{m.ratio:.2f}"),
        ("dense sink / recent tokens", f"{m.sink} / {m.recent}"),
        ("channel alignment", m.align),
        ("pushed", m.created),
        ("leank version", m.code_version),
    ]
    return el("dl", *(el("div", el("dt", k), el("dd", v)) for k, v in items), class_="facts")


def _evidence(record: VersionRecord) -> list[Html]:
    """Every report, the deciding one first and open; later ones and reports that are no evidence folded
    (``<details>``, no script)."""
    if not record.reports:
        return [el("p", "No validation report yet: run leank validate on this version.")]
    deciding = decided_by(record)
    ordered = sorted(record.reports, key=lambda e: (deciding is None or e.report_id != deciding.report_id,
                                                    e.report_id))
    out: list[Html] = []
    for entry in ordered:
        number = entry.report_id
        decided = deciding is not None and number == deciding.report_id
        role = ("decided this version" if decided else "not evidence" if entry.problem else
                "stored after the decision (decisions are final)" if deciding else "")
        body = [] if entry.signed is None else [
            *_report_body(entry), el("p", el("a", f"report-{number}.json", href=f"report-{number}.json"), class_="hint")]
        summary = el("summary", el("strong", f"Report {number}"), f" — {role}: " if role else ": ", _verdict(entry))
        out.append(el("details", summary, *body, class_="card report", data_report=number,
                      open="open" if decided or (deciding is None and not entry.problem) else None))
    return out


def _report_body(entry: ReportEntry) -> list[Html]:
    report = entry.signed.report
    table = accuracy_table(report)
    limit = -report.gate.cell_margin
    bounds = cell_bounds(entry)
    rows = []
    for row in table.rows:
        drop = row.delta is not None and row.delta < limit
        bound = bounds.get(row.key)
        rows.append(el("tr", el("td", row.task), el("td", MISSING if row.length is None else row.length, class_="num"),
                       *(el("td", points(row.values[run]), class_="num", data_run=run) for run in table.runs),
                       el("td", points(row.delta, signed=True), class_="num drop" if drop else "num"),
                       el("td", MISSING if bound is None else points(bound.upper), class_="num", data_bound="upper"),
                       el("td", MISSING if bound is None else str(bound.n), class_="num"),
                       data_cell=row.key))
    mean_bound = entry.verdict.mean.upper if entry.verdict is not None else None
    mean = el("tr", el("td", "mean", colspan=2),
              *(el("td", points(table.means.get(run)), class_="num", data_run=run) for run in table.runs),
              el("td", MISSING, class_="num"), el("td", points(mean_bound), class_="num", data_bound="upper"),
              el("td", str(len(report.pairs)), class_="num"), class_="mean")
    header = el("tr", el("th", "task"), el("th", "length", class_="num"),
                *(el("th", run, class_="num") for run in table.runs), el("th", "masked − full", class_="num"),
                el("th", "drop ≤ (upper bound)", class_="num"), el("th", "samples", class_="num"))
    chart = accuracy_chart(table)
    facts = [("signed by", entry.signed.key), ("gate it was signed with", asdict(report.gate)),
             ("look of the sequential plan", report.look),
             ("learned vs random", MISSING if entry.verdict is None or entry.verdict.baseline is None
              else asdict(entry.verdict.baseline)),
             ("registry's reasons", list(entry.reasons) or ("none" if entry.passed else entry.problem or "none")),
             ("judged", f"{report.model_id}@{report.version} (model hash {report.model_hash})"),
             ("cache memory", report.memory), ("tokens per second", report.tokens_per_s),
             ("settings", report.settings)]
    facts += sorted((k, v) for k, v in report.to_dict().items() if k not in KNOWN_REPORT_FIELDS)
    return [el("table", header, *rows, mean, class_="evidence"),
            el("p", "Accuracy in points (0–100) per task × context length.", class_="hint"),
            chart if chart is not None else "",
            el("dl", *(el("div", el("dt", k), el("dd", value_html(v))) for k, v in facts), class_="details")]


def _figures(view: VersionView) -> Html:
    if view.mask is None:
        return el("p", f"The mask cannot be shown: {view.mask_problem}", class_="damaged")
    shape = view.mask.shape
    figures = [el("figure", el("figcaption", "Kept channels: rows are layer × KV head, columns channels; dark = "
                                             "kept for middle tokens."),
                  heatmap_figure("kept.png", shape, KEPT, ("dropped", "kept"), "kept"))]
    if view.mask.importance is not None:
        figures.insert(0, el("figure", el("figcaption", "Learned importance α per channel (stage 1), the score the "
                                                        "kept channels were chosen by."),
                             heatmap_figure("importance.png", shape, VIRIDIS, ("α 0", "α 1"), "importance")))
    return el("div", *figures, class_="figures")


def _provenance(record: VersionRecord) -> Html:
    provenance = record.manifest.provenance
    keys = [k for k in PROVENANCE_FIRST if k in provenance] + sorted(k for k in provenance if k not in PROVENANCE_FIRST)
    extra = {k: v for k, v in record.to_dict().items() if k not in KNOWN_RECORD_FIELDS}  # e.g. who signed
    items = [(k, provenance[k]) for k in keys] + sorted(extra.items())
    if not items:
        return el("p", "None recorded.")
    return el("dl", *(el("div", el("dt", k), el("dd", value_html(v))) for k, v in items), class_="details")


def value_html(value: Any, depth: int = 0) -> Html:
    """Any JSON value, readable: flat objects and lists on one line, nested ones as key/value lists."""
    if isinstance(value, dict) and value:
        if depth >= 4:
            return el("code", json.dumps(value, sort_keys=True))
        if all(_flat(v) for v in value.values()):
            pairs = [(", " if i else "", el("code", k), " ", _scalar(v)) for i, (k, v) in enumerate(value.items())]
            return el("span", pairs)
        return el("dl", *(el("div", el("dt", k), el("dd", value_html(v, depth + 1))) for k, v in value.items()),
                  class_="kv")
    if isinstance(value, list) and value and not _flat(value):
        return el("ol", *(el("li", value_html(v, depth + 1)) for v in value))
    return el("span", ", ".join(map(_scalar, value)) if isinstance(value, list) else _scalar(value))


def _flat(value: Any) -> bool:
    """A scalar or a list of scalars: fits on one line."""
    return not any(isinstance(v, (dict, list)) for v in (value if isinstance(value, list) else [value]))


def _scalar(value: Any) -> str:
    if isinstance(value, list):
        return "[" + ", ".join(map(_scalar, value)) + "]"
    if isinstance(value, str):
        return value
    if isinstance(value, float):
        return f"{value:.4g}"
    return json.dumps(value)
