"""``splitreason serve``: an OpenAI-compatible vLLM server in the foreground until Ctrl-C (``splitlib.serve``).

    splitreason serve --model Qwen/QwQ-32B --port 8000 --arg tensor_parallel_size=2 --env CUDA_VISIBLE_DEVICES=6,7

``--arg key=value`` is a vLLM server option by its Python name; the value is read as YAML (``true``, ``2``, ``0.9``,
``[a, b]``). ``--print`` prints the shell command instead of running it.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
from pathlib import Path

import yaml

from splitlib import serve
from splitlib.params import ParamError

log = logging.getLogger(__name__)


def _pairs(items: list[str], what: str, parse_value) -> dict:
    pairs = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ParamError(f"{what} {item!r}: expected KEY=VALUE")
        pairs[key] = parse_value(value)
    return pairs


def spec_mapping(args: argparse.Namespace) -> dict:
    """The ``ServerSpec`` fields the command line gives (a parameter file's ``server`` mapping has the same keys)."""
    return {"model": args.model, "served_model_name": args.served_model_name, "host": args.host, "port": args.port,
            "args": _pairs(args.arg, "--arg", yaml.safe_load), "env": _pairs(args.env, "--env", str),
            "startup_timeout_s": args.startup_timeout_s}


def _cmd_serve(args: argparse.Namespace) -> int:
    try:
        spec = serve.spec_of(spec_mapping(args))
    except (ParamError, yaml.YAMLError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.print:
        print(serve.shell_command(spec))
        return 0
    from splitlib.backends.base import resolve_model

    resolve_model(spec.model)  # a model directory that is not there: one line, exit 2 (splitlib.cli)
    log_path = Path(args.log or Path(tempfile.gettempdir()) / f"splitreason-serve-{os.getpid()}.log")
    server = serve.VLLMServer(spec, log_path)
    try:
        with server:
            print(f"serving {server.model_name!r} at {server.base_url} (ready after {server.ready_s:.0f} s; "
                  f"log {log_path}); Ctrl-C stops it", flush=True)
            code = server.wait()
        log.error("the server exited with code %s; see %s", code, log_path)
        return 1
    except serve.ServerError as err:
        log.error("%s", err)
        return 1
    except KeyboardInterrupt:
        print("stopped", file=sys.stderr)
        return 0


def add_cli(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="an OpenAI-compatible vLLM server in the foreground (Ctrl-C stops it)",
                       description="Start vLLM's OpenAI-compatible server for one model and keep it in the "
                                   "foreground until Ctrl-C; prints its URL once it answers. Point decode "
                                   "(--big-base-url) or a profile's backend options (base_url) at that URL.",
                       epilog="examples:\n"
                              "  splitreason serve --model outputs/toy/models/big --port 8000 --arg enforce_eager=true\n"
                              "  splitreason serve --model Qwen/QwQ-32B --arg tensor_parallel_size=2 "
                              "--env CUDA_VISIBLE_DEVICES=6,7 --print")
    p.add_argument("--model", required=True, help="model directory or hub id")
    p.add_argument("--served-model-name", help="the name clients ask for (default: --model)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000, help="port (default: 8000; 0 picks a free one)")
    p.add_argument("--arg", action="append", default=[], metavar="KEY=VALUE",
                   help="a vLLM server option, e.g. max_model_len=20480 or enforce_eager=true (repeatable)")
    p.add_argument("--env", action="append", default=[], metavar="KEY=VALUE",
                   help="extra environment for the server, e.g. CUDA_VISIBLE_DEVICES=6,7 (repeatable)")
    p.add_argument("--startup-timeout-s", type=float, default=900.0,
                   help="give up when the server does not answer within this many seconds")
    p.add_argument("--log", help="the server's log file (default: a file in the temp directory)")
    p.add_argument("--print", action="store_true", help="print the shell command instead of running it")
    p.set_defaults(func=_cmd_serve)
