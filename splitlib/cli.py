"""The ``splitreason`` command line: its description and examples for users are ``DESCRIPTION`` and ``EPILOG``.

Every subcommand is a module of ``splitlib.commands`` with ``add_cli(subparsers)``, listed in
``COMMANDS``; it adds its parser and sets ``func`` (called with the parsed args; returns an exit code). The commands
call into the library; nothing below imports them. A user's mistake (see ``user_errors``) ends the command with one
line and exit code 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

COMMANDS = ("splitlib.commands.run", "splitlib.commands.plan", "splitlib.commands.decode", "splitlib.commands.simulate",
            "splitlib.commands.figures", "splitlib.commands.train", "splitlib.commands.serve",
            "splitlib.commands.prompt")

DESCRIPTION = """\
Reproduce "SplitReason: Learning To Offload Reasoning": a small reasoning model writes the chain of thought and hands
the hard spans to a big model (<bigmodel> ... </bigmodel>). The pipeline's commands (run, plan, train, prompt) read
a parameter profile from params/ (smoke: CI, toy: a laptop CPU, rehearsal: the paper's code path on CPU, paper: GPU
machines) and write under outputs/<run>/."""

EPILOG = """\
examples:
  splitreason run --profile toy            # the whole pipeline on a laptop CPU -> outputs/toy/
  splitreason plan --profile paper         # what each notebook needs, checked against this machine
  splitreason decode --small outputs/toy/03_grpo/offload/model --big outputs/toy/models/big "QUESTION"
  splitreason simulate --offload 0.0135 0.05

'splitreason COMMAND --help' describes each command."""


class HelpFormatter(argparse.HelpFormatter):
    """Wraps each paragraph on its own, keeps indented lines (examples) as written, and shows an option's default
    where its help does not already say it."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        paragraphs = []
        for block in text.split("\n\n"):
            lines = block.splitlines()
            verbatim = any(line.startswith(" ") for line in lines[1:]) or block.startswith(" ")
            paragraphs.append("\n".join(indent + line for line in lines) if verbatim
                              else super()._fill_text(block, width, indent))
        return "\n\n".join(paragraphs)

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        unsaid = default is None or default is False or default is argparse.SUPPRESS or default == []
        if not text or "default" in text or not action.option_strings or unsaid:
            return text
        return f"{text} (default: %(default)s)"


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose subcommand parsers share the help formatter above."""

    def __init__(self, **kwargs) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(**kwargs)


def user_errors() -> tuple[type[Exception], ...]:
    """The library's exceptions that mean the user asked for something that is not there or not allowed: a missing
    file, folder or model, an unknown profile or name, a bad parameter, unreadable input data, a server that does
    not answer at the URL given."""
    from splitlib.backends.base import BackendUnreachable, CorruptModelError, ModelNotFoundError
    from splitlib.data import DataError
    from splitlib.params import ParamError
    from splitlib.registry import UnknownNameError
    from splitlib.runs import MissingInputError

    return (ParamError, UnknownNameError, MissingInputError, ModelNotFoundError, CorruptModelError, DataError,
            BackendUnreachable)


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="splitreason", description=DESCRIPTION, epilog=EPILOG)
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="debug logging, and the full traceback of every error")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(name).add_cli(sub)
    for choice in sub._choices_actions:  # a command without a description shows its one-line help as a sentence
        command = sub.choices[choice.dest]
        command.description = command.description or f"{choice.help[:1].upper()}{choice.help[1:]}."
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args) or 0)
    except Exception as err:
        if args.verbose or not isinstance(err, user_errors()):
            raise
        print(f"splitreason {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
