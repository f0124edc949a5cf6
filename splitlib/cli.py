"""The ``splitreason`` command. Each subcommand lives with the module that does the work:
a module listed in ``_COMMANDS`` exposes ``add_cli(subparsers)`` which registers its parser and sets
``func`` (called with the parsed args, returns an exit code)."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

_COMMANDS = ("splitlib.pipeline", "splitlib.decoding", "splitlib.simulator")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="splitreason", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in _COMMANDS:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as err:
            if err.name != name:
                raise
            continue  # a subcommand whose module is not written yet
        module.add_cli(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
