"""``leank registry list|show|pull|push|import-reference|site|serve|keygen|policy|gc``.

There is deliberately no command that accepts a mask: only ``leank validate`` does, through
a report signed by a key the registry's policy trusts (docs/trust.md). ``policy set`` and
``gc`` are the owner's commands. Exit codes: 2 for bad input, 1 for registry or integrity failures.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

from leank_core.mask import LeanKMask

from .errors import RegistryError
from .gc import DEFAULT_GRACE, collect_garbage
from .ids import parse_ref
from .policy import Policy
from .registry import MaskRegistry
from .signing import SIGNING_KEY_ENV, check_public_key, default_key_path, generate_key, pins_path
from .site import render_site, serve_registry


_REGISTRY_HELP = "local directory or s3://bucket/prefix (default: embedded store, $LEANK_REGISTRY)"


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (exit 2) instead of a usage dump."""

    def error(self, message: str) -> None:  # type: ignore[override]
        print(f"{self.prog}: {message} (see --help)", file=sys.stderr)
        sys.exit(2)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="leank registry", description="Publish, inspect and fetch LeanK masks; only a passing validation report (leank validate) accepts one.")
    p.add_argument("--registry", default=None, help=_REGISTRY_HELP)
    # Also accepted after the subcommand; SUPPRESS keeps an absent one from hiding the first.
    common = _Parser(add_help=False)
    common.add_argument("--registry", default=argparse.SUPPRESS, help=_REGISTRY_HELP)
    sub = p.add_subparsers(dest="command", required=True)

    listing = sub.add_parser("list", parents=[common], help="versions of a model id")
    listing.add_argument("model_id")
    listing.add_argument("--json", action="store_true", help="one JSON array for scripts instead of text lines")

    show = sub.add_parser("show", parents=[common], help="manifest, status and reports of one version (JSON)")
    show.add_argument("ref", help="org/name or org/name@VERSION (default: newest version)")
    show.add_argument("--json", action="store_true", help="accepted for symmetry with list: show always prints JSON")

    pull = sub.add_parser("pull", parents=[common], help="fetch the newest accepted mask (or --version), verified")
    pull.add_argument("model_id")
    pull.add_argument("--version", type=int, default=None)
    pull.add_argument("--model-hash", default=None, help="hash of the model it will be applied to; refuses others")
    pull.add_argument("--out", type=Path, default=None, help="write the mask here (default: print the cache path)")

    push = sub.add_parser("push", parents=[common], help="store a mask file as a new candidate version")
    push.add_argument("mask", type=Path, help="mask .safetensors (LeanKMask.save)")
    push.add_argument("--manifest", type=Path, default=None, help="JSON file with provenance (training_config, data_recipe)")

    imp = sub.add_parser("import-reference", parents=[common], help="import a reference-format mask (torch 0/1 tensor) as a candidate")
    imp.add_argument("path", type=Path)
    imp.add_argument("--model-id", required=True)
    imp.add_argument("--model-hash", required=True)
    imp.add_argument("--sink", type=int, default=128, help="first tokens kept dense (default %(default)s, as the authors deploy)")
    imp.add_argument("--recent", type=int, default=768,
                     help="last tokens kept dense (default %(default)s: the authors deploy their masks with sink 128 / "
                          "recent 768; their training used 1024 for Llama)")
    imp.add_argument("--align", type=int, default=None, help="default: inferred from the kept counts")

    keygen = sub.add_parser("keygen", help="make a report-signing key pair for a validator (prints the public key)")
    keygen.add_argument("--out", type=Path, default=None,
                        help=f"private key file, created 0600, never overwritten (default {default_key_path()}; "
                             f"validators read ${SIGNING_KEY_ENV} or that path)")

    policy = sub.add_parser("policy", parents=[common], help="show or set the registry's acceptance policy (owner)")
    psub = policy.add_subparsers(dest="policy_command", required=True)
    psub.add_parser("show", parents=[common], help="the policy in force (defaults if none was set), as JSON")
    pset = psub.add_parser("set", parents=[common], help="store a new policy: the current one with these changes")
    pset.add_argument("--max-mean-drop", type=float, help="gate: allowed drop of mean accuracy (points, 0-100; the "
                      "upper confidence bound of the drop must be within it)")
    pset.add_argument("--max-cell-drop", type=float, help="gate: allowed drop of any task x length cell (points, 0-100)")
    pset.add_argument("--confidence", type=float, help="gate: confidence of each decision over all looks (0.5-1)")
    pset.add_argument("--looks", type=int, help="gate: most looks of a sequential validation (samples double per look)")
    pset.add_argument("--tasks", nargs="*", help="tasks every report must cover (none: any)")
    pset.add_argument("--lengths", type=int, nargs="*", help="context lengths every report must cover (none: any)")
    pset.add_argument("--min-samples", type=int, help="paired samples every task x length cell needs")
    pset.add_argument("--trust-key", action="append", default=[], metavar="KEY",
                      help="trust reports signed by this public key (ed25519:…; repeatable)")
    pset.add_argument("--untrust-key", action="append", default=[], metavar="KEY",
                      help="stop trusting this key: every acceptance it signed is withdrawn (repeatable)")

    gc = sub.add_parser("gc", parents=[common],
                        help="remove temp files and unreferenced mask objects older than a grace period")
    gc.add_argument("--grace-hours", type=_hours, default=DEFAULT_GRACE.total_seconds() / 3600,
                    help="keep anything younger: pushes in flight (default %(default)s)")

    site = sub.add_parser("site", parents=[common], help="render a static HTML site of every model, version and its evidence")
    site.add_argument("--out", type=Path, required=True, help="folder to write (replaced whole if an earlier site)")

    serve = sub.add_parser("serve", parents=[common], help="render the site and serve it on 127.0.0.1 for a quick look")
    serve.add_argument("--port", type=int, default=8000, help="default %(default)s; 0 picks a free port")
    return p


def _hours(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"must be a finite number of hours >= 0, got {text!r}")
    return value


def run(args: argparse.Namespace) -> str:
    """Do the command; return what to print."""
    if args.command == "keygen":
        signer = generate_key(args.out or default_key_path())
        return (f"wrote private key {signer.source} (keep it secret; validators read ${SIGNING_KEY_ENV} or the default path)\n"
                f"public key: {signer.public_key}\n"
                f"trust it: leank registry --registry URL policy set --trust-key {signer.public_key}\n"
                f"pin it (readers): add it to {pins_path()}")
    registry = MaskRegistry(args.registry)
    if args.command == "policy":
        policy = registry.policy() if args.policy_command == "show" else registry.update_policy(_policy_change(args))
        return json.dumps(policy.to_dict(), indent=2, sort_keys=True)
    if args.command == "gc":
        return collect_garbage(registry.store, timedelta(hours=args.grace_hours)).summary()
    if args.command == "list":
        rows = [r.to_dict() for r in registry.list(args.model_id)]
        if args.json:
            return json.dumps(rows, indent=2, sort_keys=True)
        return "\n".join(_list_line(args.model_id, r) for r in rows)
    if args.command == "show":
        ref = parse_ref(args.ref)
        return json.dumps(registry.show(ref.model_id, ref.version).to_dict(), indent=2, sort_keys=True)
    if args.command == "pull":
        path = registry.pull_path(args.model_id, args.version, args.model_hash)
        if args.out is None:
            return str(path)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, args.out)
        return str(args.out)
    if args.command == "site":
        return f"wrote {render_site(registry, args.out)}"
    if args.command == "serve":
        serve_registry(registry, args.port)
        return ""
    if args.command == "push":
        manifest = _read_json(args.manifest) if args.manifest else {}
        return f"pushed {registry.push(LeanKMask.load(args.mask), manifest)} (candidate)"
    mask = LeanKMask.from_reference_file(args.path, sink=args.sink, recent=args.recent, align=args.align,
                                         model_id=args.model_id, model_hash=args.model_hash)
    return f"imported {registry.push(mask, {'source': str(args.path)})} (candidate)"


def _policy_change(args: argparse.Namespace):
    """The ``policy set`` flags as a function of the current policy (re-applied if a concurrent set wins)."""
    gate = {k: v for k, v in (("mean_margin", args.max_mean_drop), ("cell_margin", args.max_cell_drop),
                              ("confidence", args.confidence), ("looks", args.looks)) if v is not None}
    suite = {k: v for k, v in (("tasks", args.tasks), ("lengths", args.lengths), ("min_samples", args.min_samples))
             if v is not None}
    if args.tasks:
        from leank_core.tasks import TASKS  # only here: it pulls in the task builders

        unknown = sorted(set(args.tasks) - set(TASKS))
        if unknown:
            raise ValueError(f"unknown tasks {', '.join(unknown)}; choose from {', '.join(TASKS)}")
    trust = [check_public_key(k) for k in args.trust_key]
    untrust = {check_public_key(k) for k in args.untrust_key}
    if not (gate or suite or trust or untrust):
        raise ValueError("nothing to change; give a gate margin, suite or key option (see --help)")

    def change(current: Policy) -> Policy:
        return Policy(replace(current.gate, **gate), replace(current.suite, **suite),
                      tuple(k for k in (*current.trusted_keys, *trust) if k not in untrust))

    return change


def _list_line(model_id: str, r: dict) -> str:
    if r["status"] == "damaged":
        return f"{model_id}@{r['version']}  damaged    {r['damaged']}"
    return (f"{model_id}@{r['version']}  {r['status']:<9}  ratio={r['ratio']:.3f} align={r['align']}  "
            f"model={r['model_hash'][:12]}  mask={r['mask_sha256'][:12]}  reports={r['reports']}  {r['created']}")


def _read_json(path: Path) -> object:
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not valid JSON ({e}); fix the manifest file") from None


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        out = run(args)
    except RegistryError as e:
        print(f"leank registry: {e}", file=sys.stderr)
        return 1
    except (ValueError, OSError) as e:  # bad ids, files, JSON
        print(f"leank registry: {e}", file=sys.stderr)
        return 2
    if out:
        print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
