"""The model card: a ``README.md`` per accepted version, in the style of a Hugging Face model card.

It says what the mask is, the numbers it was accepted on and how to use it, for people who
browse a store (an S3 console, a mirrored folder) rather than run ``leank registry show``.
:meth:`MaskRegistry.judge` writes it beside the version's records when it accepts one; the
registry never reads it back (the manifest, decision and reports are the records).

Report fields and provenance are free text from the store: table cells are HTML-escaped (card
viewers render inline HTML) and lose their ``|`` and line breaks, and JSON blocks get a fence
longer than any backtick run inside them.
"""

from __future__ import annotations

import html
import json
import re
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from .evidence import MISSING, accuracy_table, cell_bounds, percent, points, verdict

if TYPE_CHECKING:
    from .registry import ReportEntry, VersionRecord


def model_card(record: VersionRecord) -> str:
    """The Markdown card of one version (see the module docstring)."""
    m = record.manifest
    deciding = decided_by(record)
    parts = [
        _front_matter(m.model_id),
        f"# LeanK K-cache mask for {_cell(m.model_id)}, version {m.version}",
        f"A static mask over the key-cache channels of `{m.model_id}` learned with LeanK "
        "([arXiv 2508.02215](https://arxiv.org/abs/2508.02215)): middle tokens (between the first "
        f"{m.sink} and the last {m.recent}) keep only each KV head's kept channels, and heads that keep "
        "none store no K and no V for them.",
        f"Status: **{record.status.value}**" + (f", decided {_cell(record.decision.decided)} by report "
                                               f"{record.decision.report_id}." if record.decision else "."),
        "## What it keeps\n\n" + _table(["", ""], [
            ["K channels kept (middle tokens)", percent(m.k_fraction_kept)],
            ["pruning ratio asked", f"{m.ratio:.2f}"],
            ["dense sink / recent tokens", f"{m.sink} / {m.recent}"],
            ["channel alignment", str(m.align)],
            ["shape [layers, KV heads, head dim]", " × ".join(map(str, m.shape))],
            *_savings(deciding),
        ]),
    ]
    if deciding is not None:
        parts.append(f"## Evaluation (report {deciding.report_id}, the one that decided)\n\n" + _evidence(deciding))
    others = [e for e in record.reports if deciding is None or e.report_id != deciding.report_id]
    if others:
        parts.append("Later reports (stored beside it; a decision is final):\n\n"
                     + "\n".join(f"- report {e.report_id}: {_cell(verdict(e))}" for e in others))
    parts += [
        "## How to use\n\n" + _fence("bash", pull_command(m.model_id, m.version)) + "\n\n"
        + _fence("python", python_snippet(m.model_id)),
        "## Provenance\n\n" + (_fence("json", json.dumps(m.provenance, indent=1, sort_keys=True))
                               if m.provenance else "None recorded."),
        "## Identity\n\n" + _table(["", ""], [
            ["model hash (leank_core.model_hash)", f"`{_cell(m.model_hash)}`"],
            ["mask sha256", f"`{_cell(m.mask_sha256)}`"],
            ["pushed", _cell(m.created)],
            ["leank version", _cell(m.code_version)],
        ]),
    ]
    return "\n\n".join(parts) + "\n"


def decided_by(record: VersionRecord) -> ReportEntry | None:
    """The report the version's decision names, if it is evidence (None for a candidate)."""
    if record.decision is None or record.status is None:
        return None
    return next((e for e in record.reports if e.report_id == record.decision.report_id and e.problem is None), None)


def pull_command(model_id: str, version: int | None, registry_url: str | None = None) -> str:
    """The CLI line that fetches ``version`` (None: the newest accepted one) into ``mask.safetensors``."""
    pinned = f" --version {version}" if version is not None else ""
    where = f" --registry {registry_url}" if registry_url else ""
    return f"leank registry pull {model_id}{pinned}{where} --out mask.safetensors"


def python_snippet(model_id: str, registry_url: str | None = None) -> str:
    """Load the model, then one call pulls the newest accepted mask for its exact weights and applies it."""
    where = f"{registry_url!r}" if registry_url else ""
    return (f"from leank_core import LeanKCache, cache_kwargs, pull_and_apply\n"
            f"from registry import MaskRegistry\n\n"
            f"# model = AutoModelForCausalLM.from_pretrained(...)  the weights the mask was learned for\n"
            f"mask = pull_and_apply(model, MaskRegistry({where}), model_id={model_id!r})\n"
            f"cache = LeanKCache(mask, model.config)\n"
            f"out = model.generate(**inputs, **cache_kwargs(model, cache), max_new_tokens=64)")


def _front_matter(model_id: str) -> str:
    return "\n".join(["---", "library_name: leank", f"base_model: {json.dumps(model_id)}",
                      "tags:", "- leank", "- kv-cache", "- long-context", "---"])


def _savings(deciding: ReportEntry | None) -> list[list[str]]:
    memory = deciding.signed.report.memory if deciding else {}
    return [[f"{kind} bytes saved on middle tokens (report {deciding.report_id})", percent(memory[key])]
            for kind, key in (("K", "k_saving"), ("V", "v_saving")) if key in memory]


def _evidence(entry: ReportEntry) -> str:
    report = entry.signed.report
    table = accuracy_table(report)
    bounds = cell_bounds(entry)
    rows = [[_cell(r.task), MISSING if r.length is None else str(r.length),
             *(_cell(points(r.values[run])) for run in table.runs), points(r.delta, signed=True),
             points(bounds[r.key].upper) if r.key in bounds else MISSING]
            for r in table.rows]
    mean_bound = points(entry.verdict.mean.upper) if entry.verdict is not None else MISSING
    rows.append(["**mean**", "", *(_cell(points(table.means.get(run))) for run in table.runs), "", mean_bound])
    gate = ", ".join(f"{_cell(k)} {_cell(v)}" for k, v in asdict(report.gate).items())
    return (_table(["task", "length", *map(_cell, table.runs), "masked − full", "drop ≤ (upper bound)"], rows)
            + f"\n\nAccuracy in points (0–100). Gate the report was signed with ({gate}); the registry's verdict "
              f"under its policy: {_cell(verdict(entry))}.")


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = [header, ["---"] * len(header), *rows]
    return "\n".join("| " + " | ".join(line) + " |" for line in lines)


def _cell(value: Any) -> str:
    """Free text as one Markdown table cell: no HTML, no column breaks, no line breaks."""
    return html.escape(re.sub(r"\s+", " ", str(value)), quote=True).replace("|", "\\|")


def _fence(language: str, text: str) -> str:
    ticks = "`" * max(3, 1 + max((len(run) for run in re.findall(r"`+", text)), default=0))
    return f"{ticks}{language}\n{text}\n{ticks}"
