"""splitreason: run the SplitReason pipeline, decode a question cooperatively, simulate latency, serve, show prompts.

Every subcommand is registered here, in ``COMMANDS``: each is a module of ``splitlib.commands`` with
``add_cli(subparsers)``, which adds its parser and sets ``func`` (called with the parsed args; returns an exit
code). The commands call into the library; nothing below imports them."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

COMMANDS = ("splitlib.commands.run", "splitlib.commands.plan", "splitlib.commands.decode", "splitlib.commands.simulate",
            "splitlib.commands.train", "splitlib.commands.serve", "splitlib.commands.prompt")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="splitreason", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in COMMANDS:
        importlib.import_module(name).add_cli(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
