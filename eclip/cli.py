"""The `eclip` command line: each subsystem owns its subcommands' parsers and handlers (`<subsystem>/cli.py`,
listed below in the order a user meets them); this module joins them and turns `EclipError` into one line.

Library modules are imported inside each handler so that `eclip --help` stays fast.
Bad input raises `EclipError`, printed as one line (exit 2) instead of a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from eclip.errors import EclipError

SUBSYSTEMS = ("eclip.data.cli", "eclip.train.cli", "eclip.graph.cli", "eclip.index.cli", "eclip.eval.cli",
              "eclip.rec.cli", "eclip.serve.cli", "eclip.export.cli")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="eclip", description="Learn product representations from e-commerce catalogues (e-CLIP).")
    from eclip import __version__
    parser.add_argument("--version", action="version", version=f"eclip {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in SUBSYSTEMS:
        for add in importlib.import_module(name).COMMANDS:
            add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except EclipError as error:
        print(f"eclip {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"eclip {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
