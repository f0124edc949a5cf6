"""The ``splitreason`` command line as a user meets it: every command's help renders, says what each option does and
its default; a user's mistake ends in one line and exit code 2, a bug keeps its traceback. No model loads here."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import pytest

from splitlib import cli
from splitlib.params import ParamError

REPO = Path(__file__).resolve().parent.parent


def commands() -> dict[str, argparse.ArgumentParser]:
    (sub,) = [a for a in cli.build_parser()._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(sub.choices)


COMMANDS = sorted(commands())


def help_text(capsys, *argv: str) -> str:
    with pytest.raises(SystemExit) as done:
        cli.main([*argv, "--help"])
    assert done.value.code == 0
    return capsys.readouterr().out


def test_every_module_in_commands_is_a_command():
    assert {"run", "plan", "decode", "simulate", "train", "serve", "prompt"} <= set(COMMANDS)
    assert len(COMMANDS) == len(cli.COMMANDS)


def test_top_level_help_describes_the_tool_for_a_user(capsys):
    text = help_text(capsys)
    assert "SplitReason" in text and "examples:" in text
    for developer_word in ("``", "add_cli", "COMMANDS", "splitlib.commands"):
        assert developer_word not in text
    for name in COMMANDS:
        assert f"    {name}" in text  # each command listed with its one-line help


@pytest.mark.parametrize("name", COMMANDS)
def test_command_help_renders_with_a_description(capsys, name):
    text = help_text(capsys, name)
    assert text.startswith(f"usage: splitreason {name}")
    description = commands()[name].description
    assert description and not description.startswith("``"), f"{name}: no user description"
    assert description.rstrip().endswith((".", ")")), f"{name}: description stops mid-sentence: {description!r}"


@pytest.mark.parametrize("name", COMMANDS)
def test_every_option_says_what_it_does(name):
    missing = [a.option_strings[0] if a.option_strings else a.dest for a in commands()[name]._actions
               if not isinstance(a, argparse._HelpAction) and not (a.help or "").strip()]
    assert not missing, f"splitreason {name}: options without help: {missing}"


def test_decode_help_shows_the_defaults(capsys):
    text = " ".join(help_text(capsys, "decode").split())  # unwrapped
    for shown in ("(default: split)", "(default: 16384)", "(default: 64)", "(default: 512)", "(default: greedy)",
                  "(default: 0.0)", "(default: hf)"):
        assert shown in text
    assert "(default: None)" not in text and "(default: False)" not in text


def test_a_default_already_in_the_help_is_not_repeated(capsys):
    text = " ".join(help_text(capsys, "plan").split())
    assert text.count("(default: toy)") == 1


@pytest.mark.parametrize("argv, says", [
    (["decode", "--small", "/nonexistent/small", "--big", "/nonexistent/big", "q"], "/nonexistent/small"),
    (["decode", "--big", "/nonexistent/big", "q"], "needs --small"),
    (["decode", "--small", "/x", "--max-new-tokens", "0", "q"], "--max-new-tokens=0"),
    (["decode", "--small", "/x", "--big", "/y", "--policy", "random_switch", "--ratio", "-1", "q"], "--ratio=-1.0"),
    (["decode", "--backend", "openai", "--small", "m", "--big", "m", "q"], "--base-url"),
    (["serve", "--model", "/nonexistent/model"], "/nonexistent/model"),
    (["plan", "--profile", "nope"], "unknown profile 'nope'"),
    (["simulate", "--profile", "nope"], "'nope'"),
])
def test_a_user_mistake_is_one_line_and_exit_code_2(capsys, argv, says):
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert says in err and "\n" not in err and "Traceback" not in err


def test_a_wrong_model_path_from_the_console_has_no_traceback(tmp_path):
    done = subprocess.run([sys.executable, "-m", "splitlib.cli", "decode", "--small", str(tmp_path / "no_such_model"),
                           "--big", str(tmp_path / "big"), "What is 2+3?"], cwd=REPO, capture_output=True, text=True,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=120, check=False)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr
    assert lines[0].startswith("splitreason decode: error: model directory") and "no_such_model" in lines[0]
    assert done.stdout == ""


def _failing_command(error: Exception):
    def func(args):
        raise error
    return func


def test_a_bug_keeps_its_traceback(monkeypatch):
    from splitlib.commands import simulate

    monkeypatch.setattr(simulate, "_cmd_simulate", _failing_command(KeyError("a bug")))
    with pytest.raises(KeyError, match="a bug"):
        cli.main(["simulate"])


def test_verbose_shows_the_traceback_of_a_user_mistake_too(monkeypatch):
    from splitlib.commands import simulate

    monkeypatch.setattr(simulate, "_cmd_simulate", _failing_command(ParamError("bad value")))
    assert cli.main(["simulate"]) == 2
    with pytest.raises(ParamError, match="bad value"):
        cli.main(["-v", "simulate"])
