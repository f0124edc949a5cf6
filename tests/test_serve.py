"""Serving: vLLM options rendered as vLLM parses them, ServerSpec's errors, ports, processes that end with their
parent and whose whole group is stopped, ``serve_all``'s clean-up, the ``serve`` command; marked slow, a real vLLM
server on a tiny model (up, listed, reached by the openai backend, gone after stop) and a broken model that fails
fast with its log. Faults (a server that exits, hangs, serves another model) are injected with a fake server."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
import urllib.request
from pathlib import Path

import pytest
import torch

from splitlib import cli, serve
from splitlib.params import ParamError
from splitlib.serve import ServerError, ServerSpec, VLLMServer


def _alive(pid: int) -> bool:
    """Running (a zombie left for init to reap counts as gone)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in ("Z", "X")


def _group_gone(pgid: int, within_s: float = 5.0) -> bool:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        members = [p for p in os.listdir("/proc") if p.isdigit() and _pgid(int(p)) == pgid and _alive(int(p))]
        if not members:
            return True
        time.sleep(0.1)
    return False


def _pgid(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except ProcessLookupError:
        return None


# -- rendering --------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("args", "argv"), [
    ({"tensor_parallel_size": 2}, ["--tensor-parallel-size", "2"]),
    ({"gpu_memory_utilization": 0.9, "dtype": "float32"}, ["--gpu-memory-utilization", "0.9", "--dtype", "float32"]),
    ({"enforce_eager": True}, ["--enforce-eager"]),
    ({"enable_prefix_caching": False}, ["--no-enable-prefix-caching"]),  # omitting it would keep vLLM's default on
    ({"max_model_len": None}, []),
    ({"served_x": ["a", "b"], "empty": []}, ["--served-x", "a", "b"]),  # nargs="+"
    ({"allowed_origins": ["*"]}, ["--allowed-origins", '["*"]']),  # vLLM reads these lists as JSON
    ({"middleware": ["a.B", "c.D"]}, ["--middleware", "a.B", "--middleware", "c.D"]),  # argparse "append"
    ({"override_generation_config": {"temperature": 0.5}}, ["--override-generation-config", '{"temperature": 0.5}']),
    ({"max-num-seqs": 4}, ["--max-num-seqs", "4"]),  # the flag's own spelling works too
])
def test_vllm_options_render_as_flags(args, argv):
    assert serve.render_args(args) == argv


def test_rendered_options_parse_with_vllms_own_parser():
    pytest.importorskip("vllm")
    from vllm.entrypoints.launchers.cli_args import make_arg_parser
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    spec = ServerSpec("m", served_model_name="tiny", port=8001, args={
        "tensor_parallel_size": 2, "max_model_len": 20480, "gpu_memory_utilization": 0.9, "dtype": "float32",
        "enforce_eager": True, "enable_prefix_caching": False, "allowed_origins": ["*"],
        "override_generation_config": {"temperature": 0.5}, "seed": None})
    parsed = make_arg_parser(FlexibleArgumentParser()).parse_args(serve.command(spec)[3:])
    assert (parsed.model, parsed.served_model_name, parsed.host, parsed.port) == ("m", ["tiny"], "127.0.0.1", 8001)
    assert (parsed.tensor_parallel_size, parsed.max_model_len, parsed.gpu_memory_utilization) == (2, 20480, 0.9)
    assert (parsed.dtype, parsed.enforce_eager, parsed.enable_prefix_caching) == ("float32", True, False)
    assert parsed.allowed_origins == ["*"] and parsed.override_generation_config == {"temperature": 0.5}


def test_command_is_the_module_form_with_model_host_and_port():
    argv = serve.command(ServerSpec("/models/big", port=9000, args={"dtype": "float32"}))
    assert argv == [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", "/models/big",
                    "--host", "127.0.0.1", "--port", "9000", "--dtype", "float32"]


def test_shell_command_puts_the_environment_in_front_and_quotes():
    spec = ServerSpec("my models/32B", port=8000, env={"CUDA_VISIBLE_DEVICES": "6,7", "NOTE": "a b"},
                      args={"chat_template": "{{ x }}"})
    text = serve.shell_command(spec)
    assert text.startswith("CUDA_VISIBLE_DEVICES=6,7 NOTE='a b' ")
    assert "--model 'my models/32B'" in text and "--chat-template '{{ x }}'" in text


# -- the spec ---------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("mapping", "message"), [
    ({"model": "m", "gpus": 2}, "unknown parameter.*gpus.*allowed: model, served_model_name"),
    ({"model": "m", "port": -1}, r"port=-1: expected 0 \(pick a free port\) to 65535"),
    ({"model": "m", "port": 70000}, "port=70000"),
    ({"model": "m", "port": "8000"}, "port='8000': expected int"),
    ({"model": "m", "args": {"port": 8000}}, "args.port=8000: expected no port in args"),
    ({"model": "m", "args": {"served-model-name": "x"}}, "no served_model_name in args"),
    ({"model": "m", "env": {"CUDA_VISIBLE_DEVICES": None}}, "env.CUDA_VISIBLE_DEVICES=None"),
    ({"model": "m", "startup_timeout_s": 0}, "startup_timeout_s=0"),
    ({"port": 8000}, "missing parameter.*model"),
])
def test_a_bad_spec_names_the_key(mapping, message):
    with pytest.raises(ParamError, match=message):
        serve.spec_of(mapping)


def test_env_numbers_become_strings_and_defaults_hold():
    spec = serve.spec_of({"model": "m", "env": {"CUDA_VISIBLE_DEVICES": 0}})
    assert spec.env == {"CUDA_VISIBLE_DEVICES": "0"}
    assert (spec.host, spec.port, spec.startup_timeout_s, spec.served_model_name) == ("127.0.0.1", 0, 900.0, None)


# -- ports ------------------------------------------------------------------------------------------------------------
def test_a_taken_port_is_refused_naming_it_before_anything_starts(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        server = VLLMServer({"model": "m", "port": port}, tmp_path / "m.log")
        with pytest.raises(ServerError, match=f"127.0.0.1:{port}.*in use.*stale run.*port: 0"):
            server.start()
    assert server.pid is None and not (tmp_path / "m.log").exists()


def test_port_0_picks_a_free_port(tmp_path):
    server = VLLMServer({"model": "org/m"}, tmp_path / "m.log")
    assert server.port > 0 and server.base_url == f"http://127.0.0.1:{server.port}/v1"
    serve.check_port_free("127.0.0.1", server.port)
    assert server.model_name == "org/m" and serve.backend_options(server) == {"base_url": server.base_url,
                                                                              "tokenizer": "org/m"}


# -- processes --------------------------------------------------------------------------------------------------------
def test_a_launched_process_has_its_own_session_and_dies_with_its_parent(tmp_path):
    parent = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sys, time
        from pathlib import Path
        from splitlib import serve
        child = serve.launch([sys.executable, "-c", "import time; time.sleep(120)"], {{}}, Path({str(tmp_path)!r}) / "log")
        print(child.pid, flush=True)
        time.sleep(120)
    """)], stdout=subprocess.PIPE, text=True)
    child = int(parent.stdout.readline())
    assert os.getsid(child) == child and os.getpgid(child) == child
    parent.kill()  # SIGKILL: no clean-up of its own runs
    parent.wait()
    assert _group_gone(child), "the server outlived the process that started it"


def test_stop_group_stops_the_whole_group_and_kills_what_ignores_sigterm(tmp_path):
    stubborn = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(120)"
    leader = f"import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', {stubborn!r}]); time.sleep(120)"
    proc = serve.launch([sys.executable, "-c", leader], {}, tmp_path / "log")
    time.sleep(1.0)  # the grandchild is up
    t0 = time.monotonic()
    serve.stop_group(proc, timeout_s=1.0)
    assert time.monotonic() - t0 < 5 and proc.returncode == -signal.SIGTERM
    assert _group_gone(proc.pid)


# -- faults, with a fake server ---------------------------------------------------------------------------------------
FAKE = """
import json, sys, time
from http.server import BaseHTTPRequestHandler, HTTPServer
host, port, model, mode = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
print("fake server up as", mode, flush=True)
if mode == "exit":
    print("RuntimeError: model load failed, code", 40 + 2, flush=True)
    sys.exit(3)
if mode == "hang":
    time.sleep(120)
class H(BaseHTTPRequestHandler):
    def do_GET(self):
        body = json.dumps({"data": [{"id": "other" if mode == "other" else model}]}).encode()
        self.send_response(200)
        self.end_headers()
        self.wfile.write(body)
HTTPServer((host, port), H).serve_forever()
"""


@pytest.fixture
def fake_vllm(monkeypatch):
    """``serve.command`` replaced by a fake server whose behaviour is the spec's ``args["mode"]``; the processes
    it launched, in order."""
    launched = []
    real_launch = serve.launch

    def command(spec):
        return [sys.executable, "-c", FAKE, spec.host, str(spec.port), spec.served_model_name or spec.model,
                spec.args.get("mode", "serve")]

    def launch(*a, **kw):
        launched.append(real_launch(*a, **kw))
        return launched[-1]

    monkeypatch.setattr(serve, "command", command)
    monkeypatch.setattr(serve, "launch", launch)
    return launched


def test_serve_all_starts_in_order_and_stops_all_on_exit(fake_vllm, tmp_path):
    with serve.serve_all({"annotator": {"model": "a"}, "big": {"model": "b", "served_model_name": "big"}},
                         tmp_path) as servers:
        assert list(servers) == ["annotator", "big"]
        with urllib.request.urlopen(servers["big"].base_url + "/models") as resp:
            assert json.load(resp)["data"][0]["id"] == "big"
        assert servers["big"].model_name == "big" and servers["big"].ready_s > 0
        assert (tmp_path / "big.log").read_text().startswith("# ")
    assert all(_group_gone(p.pid) for p in fake_vllm)
    servers["big"].stop()  # idempotent


def test_serve_all_stops_the_started_ones_when_a_later_one_fails(fake_vllm, tmp_path):
    specs = {"first": {"model": "a"}, "second": {"model": "b", "args": {"mode": "exit"}}, "never": {"model": "c"}}
    with pytest.raises(ServerError, match="exited with code 3"), serve.serve_all(specs, tmp_path):
        pytest.fail("unreachable")
    assert len(fake_vllm) == 2 and all(_group_gone(p.pid) for p in fake_vllm)


def test_serve_all_checks_every_spec_before_starting_any(fake_vllm, tmp_path):
    specs = {"first": {"model": "a"}, "second": {"model": "b", "gpus": 2}}
    with pytest.raises(ParamError, match="server second: unknown parameter"), serve.serve_all(specs, tmp_path):
        pytest.fail("unreachable")
    assert fake_vllm == []


@pytest.mark.parametrize(("mode", "timeout_s", "message"), [
    ("exit", 60, r"(?s)exited with code 3 after .*RuntimeError: model load failed, code 42"),
    ("hang", 1.5, r"(?s)was not ready after 1.5 s .*fake server up as hang"),
    ("other", 60, r"serves \['other'\], not 'm'"),
])
def test_a_server_that_cannot_serve_raises_with_its_log_and_is_stopped(fake_vllm, tmp_path, mode, timeout_s, message):
    server = VLLMServer({"model": "m", "args": {"mode": mode}, "startup_timeout_s": timeout_s}, tmp_path / "m.log")
    t0 = time.monotonic()
    with pytest.raises(ServerError, match=message) as err:
        server.start()
    assert time.monotonic() - t0 < 20
    assert str(tmp_path / "m.log") in str(err.value)
    assert _group_gone(server.pid) and not server.running()


# -- the command ------------------------------------------------------------------------------------------------------
def test_serve_command_prints_the_shell_command(capsys):
    code = cli.main(["serve", "--model", "/m", "--port", "8001", "--arg", "tensor_parallel_size=2",
                     "--arg", "enforce_eager=true", "--env", "CUDA_VISIBLE_DEVICES=6,7", "--print"])
    assert code == 0
    assert capsys.readouterr().out.strip() == (f"CUDA_VISIBLE_DEVICES=6,7 {sys.executable} -m "
                                               "vllm.entrypoints.openai.api_server --model /m --host 127.0.0.1 "
                                               "--port 8001 --tensor-parallel-size 2 --enforce-eager")


@pytest.mark.parametrize(("argv", "message"), [
    (["--arg", "max_model_len"], "--arg 'max_model_len': expected KEY=VALUE"),
    (["--arg", "port=1"], "no port in args"),
    (["--port", "-5"], "port=-5"),
])
def test_serve_command_refuses_bad_options(capsys, argv, message):
    assert cli.main(["serve", "--model", "/m", "--print", *argv]) == 2
    assert message in capsys.readouterr().err


def test_serve_command_reports_a_server_that_cannot_start(fake_vllm, tmp_path, caplog):
    code = cli.main(["serve", "--model", "m", "--port", "0", "--arg", "mode=exit", "--log", str(tmp_path / "s.log")])
    assert code == 1 and "exited with code 3" in caplog.text and str(tmp_path / "s.log") in caplog.text
    assert _group_gone(fake_vllm[0].pid)


# -- a real vLLM server (slow: ~20-30 s to start on CPU) -------------------------------------------------------------
def _cpu_spec(model: Path | str, **fields) -> dict:
    return {"model": str(model), "served_model_name": "tiny", "port": 0, "env": {"VLLM_CPU_KVCACHE_SPACE": "1"},
            "args": {"dtype": "float32", "enforce_eager": True, "max_model_len": 512}, "startup_timeout_s": 300,
            **fields}


@pytest.fixture(scope="module")
def real_server(tiny_model_dirs, tmp_path_factory):
    with serve.start_server(_cpu_spec(tiny_model_dirs["small"]), tmp_path_factory.mktemp("serve") / "tiny.log") as s:
        yield s


@pytest.mark.slow
def test_a_real_server_comes_up_and_lists_its_model(real_server):
    with urllib.request.urlopen(real_server.base_url + "/models", timeout=10) as resp:
        assert [m["id"] for m in json.load(resp)["data"]] == ["tiny"]
    assert real_server.running() and 0 < real_server.ready_s < 300
    print(f"vLLM server ready after {real_server.ready_s:.1f} s")


@pytest.mark.slow
def test_the_openai_backend_reaches_it_with_backend_options(real_server, tiny_models, toy_tokenizer):
    from splitlib.backends.openai_server import OpenAIBackend

    backend = OpenAIBackend.load(real_server.model_name, **serve.backend_options(real_server), timeout_s=60)
    try:
        prompt = toy_tokenizer.encode("3 + 4 =", add_special_tokens=False)
        with torch.inference_mode():
            ref = tiny_models["small"].generate(torch.tensor([prompt]), max_new_tokens=8, do_sample=False)
        assert backend.open(prompt).decode(8) == ref[0, len(prompt):].tolist()
    finally:
        backend.close()


@pytest.mark.slow
def test_after_stop_its_process_group_is_gone_and_the_port_free(real_server):
    pid = real_server.pid
    real_server.stop()
    assert _group_gone(pid) and not real_server.running()
    serve.check_port_free(real_server.host, real_server.port)
    real_server.stop()  # idempotent


@pytest.mark.slow
def test_a_broken_model_fails_fast_with_the_log_tail(tiny_model_dirs, tmp_path):
    broken = tmp_path / "broken"
    broken.mkdir()
    for f in tiny_model_dirs["small"].iterdir():
        (broken / f.name).write_bytes(f.read_bytes())
    (broken / "config.json").write_text("{not json")
    server = VLLMServer(_cpu_spec(broken), tmp_path / "broken.log")
    t0 = time.monotonic()
    with pytest.raises(ServerError, match=r"exited with code \d+") as err:
        server.start()
    wall_s = time.monotonic() - t0
    print(f"broken model failed after {wall_s:.1f} s")
    assert wall_s < 120, "a server that cannot start must fail when its process exits, not at the timeout"
    assert str(tmp_path / "broken.log") in str(err.value) and "config.json" in str(err.value)
    assert _group_gone(server.pid)
