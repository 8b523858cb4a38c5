"""Mutation testing of the core with mutmut: one command, 2 cores, under an hour (docs/mutation.md).

    python scripts/mutation.py                # every group, then the summary in docs/mutation.md
    python scripts/mutation.py mask training  # only these groups (the summary keeps the others' last results)

Why groups: mutmut runs, for each mutant, every selected test that executed the mutated function.
Through ``generate`` nearly every test executes the mask, the hook and the model hash, so one run
over all tests spends minutes per mutant. Each group instead pairs modules with the fast unit tests
written for them and runs in its own scratch copy (``.mutation/<group>``, git-ignored) with its own
``[tool.mutmut]`` section; the settings all groups share are ``[tool.mutmut]`` in pyproject.toml.

Equivalent mutants (no observable change) are listed in ``scripts/mutation_equivalent.toml`` with
the reason, each with the changed line it must still show, so a stale entry is reported, not trusted.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRATCH = ROOT / ".mutation"
EQUIVALENT = ROOT / "scripts" / "mutation_equivalent.toml"
SUMMARY = ROOT / "docs" / "mutation.md"
START, END = "<!-- mutation-summary:start -->", "<!-- mutation-summary:end -->"
COPIED = ("leank_core", "registry", "pipelines", "tests", "configs", "scripts")

# group -> (modules mutated, the fast unit tests written for them: pytest arguments)
GROUPS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "mask": (("leank_core/mask.py",), ("tests/leank_core/test_mask.py",)),
    "model_hash": (("leank_core/model_hash.py",), ("tests/leank_core/test_model_hash.py",)),
    "training": (("leank_core/training.py",), ("tests/leank_core/test_training.py",)),
    "attention": (("leank_core/attention.py", "leank_core/hook.py"),
                  ("tests/leank_core/test_attention.py", "tests/leank_core/test_hook.py")),
    "cache": (("leank_core/cache.py", "leank_core/memory.py"), ("tests/leank_core/test_cache.py",)),
    "kernels": (("leank_core/kernels/reference.py",), ("tests/leank_core/kernels",)),
    "gate": (("registry/gate.py", "registry/report.py"),
             ("tests/registry/test_gate.py", "tests/registry/test_report.py", "tests/registry/test_signing.py",
              "tests/registry/test_looks.py", "-k", "not s3_backend")),
    # the store and trust layer: every test on the local backend, and test_store.py's on S3 too (the moto
    # server is one per pytest session, i.e. per mutant; a bucket per test): the whole of test_store.py
    # took 12-15 s with S3 on this shared 2-core box under load 2-4, 7 s without. Other files' S3 runs stay
    # out: with them the selection took 95 s instead of 6 s
    "registry": (("registry/ids.py", "registry/records.py", "registry/layout.py", "registry/policy.py",
                  "registry/signing.py", "registry/urls.py", "registry/store.py", "registry/registry.py",
                  "registry/gc.py"),
                 ("tests/registry/test_ids.py", "tests/registry/test_policy.py", "tests/registry/test_signing.py",
                  "tests/registry/test_store.py", "tests/registry/test_registry.py", "tests/registry/test_records.py",
                  "tests/registry/test_trust.py",
                  "tests/registry/test_gc.py", "tests/registry/test_looks.py", "tests/registry/test_cli.py",
                  "-k", "(not s3_backend or test_store.py) and not processes and not silent_endpoint")),
}

# mutmut's exit-code classes, folded into what the summary counts
KILLED, SURVIVED, NO_TESTS, NOT_RUN = "killed", "survived", "no tests", "not run"
STATUS = {1: KILLED, 3: KILLED, 36: KILLED, -24: KILLED, 24: KILLED, 152: KILLED, 255: KILLED,  # timeouts kill
          -11: KILLED, -9: KILLED, 0: SURVIVED, 5: NO_TESTS, 33: NO_TESTS, None: NOT_RUN}


@dataclass(frozen=True)
class Mutant:
    name: str
    module: str
    status: str
    diff: str = ""  # the changed lines, for survivors and equivalents


def _toml_value(value: object) -> str:
    return json.dumps(value, ensure_ascii=False)  # strings, lists of strings, numbers and bools: valid TOML


def _write_config(group: str, where: Path) -> None:
    """The scratch copy's pyproject.toml: pytest's settings and the group's [tool.mutmut] section."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    modules, tests = GROUPS[group]
    mutmut = {**project["tool"]["mutmut"], "only_mutate": list(modules),
              "pytest_add_cli_args_test_selection": list(tests)}
    lines = ["[tool.pytest.ini_options]"]
    lines += [f"{k} = {_toml_value(v)}" for k, v in project["tool"]["pytest"]["ini_options"].items()]
    lines += ["", "[tool.mutmut]"] + [f"{k} = {_toml_value(v)}" for k, v in mutmut.items()]
    (where / "pyproject.toml").write_text("\n".join(lines) + "\n")


def _copy_tree(where: Path) -> None:
    listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", *COPIED], cwd=ROOT,
                            check=True, capture_output=True, text=True).stdout.split("\n")
    for name in filter(None, listed):
        if (ROOT / name).is_file():
            (where / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, where / name)


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # the mutants, not this checkout, are imported
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1",
               TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    return env


def run_group(group: str, children: int) -> dict:
    """Mutate and test one group in a fresh scratch copy; its results are kept in results.json there."""
    where = SCRATCH / group
    shutil.rmtree(where, ignore_errors=True)
    where.mkdir(parents=True)
    _copy_tree(where)
    _write_config(group, where)
    start = time.monotonic()
    with open(where / "mutmut.log", "w") as log:
        subprocess.run([sys.executable, "-m", "mutmut", "run", "--max-children", str(children)], cwd=where,
                       env=_env(), stdout=log, stderr=subprocess.STDOUT, check=False)
    mutants = []
    for meta in sorted((where / "mutants").rglob("*.py.meta")):
        module = str(meta.relative_to(where / "mutants")).removesuffix(".meta")
        for name, code in json.loads(meta.read_text())["exit_code_by_key"].items():
            mutants.append(Mutant(name, module, STATUS.get(code, SURVIVED)))
    with contextlib.chdir(where):  # mutmut reads the mutants relative to the working directory
        from mutmut.mutation.diff_apply import get_diff_for_mutant

        mutants = [m if m.status == KILLED else Mutant(m.name, m.module, m.status, _changed_lines(
            get_diff_for_mutant(m.name, path=m.module))) for m in mutants]
    result = {"group": group, "seconds": round(time.monotonic() - start), "mutants": [m.__dict__ for m in mutants]}
    (where / "results.json").write_text(json.dumps(result, indent=1))
    return result


def _changed_lines(diff: str) -> str:
    return "\n".join(line for line in diff.splitlines() if line[:1] in "-+" and line[:3] not in ("---", "+++"))


def _equivalents() -> dict[str, dict[str, str]]:
    return tomllib.loads(EQUIVALENT.read_text()) if EQUIVALENT.exists() else {}


def summarise(results: list[dict]) -> str:
    """The committed summary: per module killed / survived / equivalent, the score, every equivalent and survivor."""
    equivalent = _equivalents()
    rows, listed_equivalent, survivors, stale = {}, [], [], []
    for result in results:
        for m in map(lambda d: Mutant(**d), result["mutants"]):
            row = rows.setdefault(m.module, {KILLED: 0, SURVIVED: 0, "equivalent": 0, NO_TESTS: 0, NOT_RUN: 0})
            entry = equivalent.get(m.name)
            if entry and m.status != KILLED and entry["change"].strip() in m.diff:
                row["equivalent"] += 1
                listed_equivalent.append((m, entry["reason"]))
                continue
            if entry:
                stale.append(m.name)
            row[m.status] += 1
            if m.status != KILLED:
                survivors.append(m)
    total = {k: sum(r[k] for r in rows.values()) for k in (KILLED, SURVIVED, "equivalent", NO_TESTS, NOT_RUN)}

    def score(r: dict) -> str:
        counted = r[KILLED] + r[SURVIVED] + r[NO_TESTS] + r[NOT_RUN]
        return f"{100 * r[KILLED] / counted:.1f}%" if counted else "-"

    per_group = ", ".join(f"{r['group']} {r['seconds'] / 60:.1f}" for r in results)
    out = [f"Measured {time.strftime('%Y-%m-%d')} with mutmut {_mutmut_version()}, "
           f"{sum(r['seconds'] for r in results) / 60:.0f} min on 2 cores ({per_group} min).", "",
           "| module | killed | survived | no tests | equivalent | score (non-equivalent) |",
           "|---|---:|---:|---:|---:|---:|"]
    for module, r in sorted(rows.items()):
        out.append(f"| `{module}` | {r[KILLED]} | {r[SURVIVED]} | {r[NO_TESTS] + r[NOT_RUN]} | {r['equivalent']} "
                   f"| {score(r)} |")
    out.append(f"| **all** | {total[KILLED]} | {total[SURVIVED]} | {total[NO_TESTS] + total[NOT_RUN]} "
               f"| {total['equivalent']} | **{score(total)}** |")
    out += ["", "### Equivalent mutants", ""]
    out += [f"- `{m.name}` — {reason}\n  ```diff\n{_indent(m.diff)}\n  ```" for m, reason in listed_equivalent]
    out += ["", "### Surviving mutants", ""]
    out += [f"- `{m.name}` ({m.status})\n  ```diff\n{_indent(m.diff)}\n  ```" for m in survivors] or ["None."]
    if stale:
        out += ["", "### Stale equivalence entries (killed, or the listed change no longer matches)", ""]
        out += [f"- `{name}`" for name in stale]
    return "\n".join(out)


def _indent(text: str) -> str:
    return "\n".join("  " + line for line in text.splitlines())


def _mutmut_version() -> str:
    from importlib.metadata import version

    return version("mutmut")


def write_summary(text: str) -> None:
    doc = SUMMARY.read_text()
    head, _, rest = doc.partition(START)
    _, _, tail = rest.partition(END)
    SUMMARY.write_text(f"{head}{START}\n{text}\n{END}{tail}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("groups", nargs="*", metavar="GROUP", help=f"groups to run (default: all of {', '.join(GROUPS)})")
    parser.add_argument("--children", type=int, default=2, help="mutants tested at once (default 2: two cores)")
    parser.add_argument("--summary-only", action="store_true", help="rewrite the summary from the last results")
    args = parser.parse_args(argv)
    unknown = sorted(set(args.groups) - set(GROUPS))
    if unknown:
        parser.error(f"unknown group {unknown[0]!r}: choose from {', '.join(GROUPS)}")
    for group in [] if args.summary_only else args.groups or GROUPS:
        result = run_group(group, args.children)
        print(f"{group}: {len(result['mutants'])} mutants in {result['seconds']} s", flush=True)
    results = [json.loads(p.read_text()) for g in GROUPS if (p := SCRATCH / g / "results.json").exists()]
    write_summary(summarise(results))
    print(f"summary written to {SUMMARY.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
