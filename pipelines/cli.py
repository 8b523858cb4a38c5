"""The ``leank`` command: one entry point that hands each subcommand to the module owning it."""

from __future__ import annotations

import importlib
import sys

COMMANDS = {
    "learn": ("pipelines.learn_masks", "learn a mask for a model (Ray Train + DeepSpeed job)"),
    "validate": ("pipelines.validate", "benchmark full vs masked and gate publication"),
    "registry": ("registry.cli", "list, show, pull, push or import masks"),
    "plot": ("pipelines.plot", "heatmaps of learned importance and kept channels"),
}


def usage() -> str:
    lines = ["usage: leank <command> [options]   (leank <command> --help for details)", "", "commands:"]
    lines += [f"  {name:<10} {help_}" for name, (_, help_) in COMMANDS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0
    if argv[0] not in COMMANDS:
        print(f"leank: unknown command {argv[0]!r}; choose one of {', '.join(COMMANDS)}", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[argv[0]][0])
    return module.main(argv[1:]) or 0


if __name__ == "__main__":
    sys.exit(main())
