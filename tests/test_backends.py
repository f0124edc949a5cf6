"""Backends: hf (transformers + KV cache), vllm (in-process engine), openai (a real vLLM OpenAI-compatible server
on 127.0.0.1) — decode equals plain greedy generation, the one-pass check equals greedy prediction, rollback,
bans, sampling, counters, and clear errors (missing model, unreachable or silent server)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from typing import get_args

import pytest
import torch

from splitlib import tags
from splitlib.backends import (
    BACKENDS,
    BackendKind,
    BackendUnreachable,
    ModelNotFoundError,
    PromptTooLongError,
    Sampling,
    check_prompt,
    load_backend,
)
from splitlib.backends.hf import HFBackend
from splitlib.backends.testing import shared_vllm, tiny_model_dirs
from splitlib.decoding import DecodeConfig, decode
from splitlib.handoff import encode_text
from splitlib.prompts import build_prompt
from splitlib.registry import UnknownNameError
from splitlib.toy.world import generate

os.environ.setdefault("HF_HUB_OFFLINE", "1")
QUESTION = generate(1, seed=21)[0].question


@pytest.fixture(scope="session")
def dirs():
    return tiny_model_dirs()


@pytest.fixture(scope="session")
def hf_small(dirs):
    return HFBackend.load(str(dirs["small"]))


@pytest.fixture(scope="session")
def hf_big(dirs):
    return HFBackend.load(str(dirs["big"]))


@pytest.fixture(scope="session")
def prompt(hf_small):
    return encode_text(hf_small.tokenizer, build_prompt(hf_small.tokenizer, QUESTION, "small"))


def plain_greedy(backend: HFBackend, prompt_ids: list[int], n: int) -> list[int]:
    with torch.inference_mode():
        out = backend.model.generate(torch.tensor([prompt_ids]), max_new_tokens=n, do_sample=False)
    return out[0, len(prompt_ids):].tolist()


# -- hf ----------------------------------------------------------------------------------------------------
def test_hf_decode_equals_plain_greedy_generate(hf_small, hf_big, prompt):
    for backend in (hf_small, hf_big):
        assert backend.open(prompt).decode(50) == plain_greedy(backend, prompt, 50)


def test_hf_score_is_one_forward_and_equals_greedy_prediction(hf_small, prompt):
    ref = plain_greedy(hf_small, prompt, 40)
    s = hf_small.open(prompt)
    s.decode(10)
    before = s.counters.copy()
    scored = s.score(ref[10:30], prob_of=ref[11])
    used = s.counters.minus(before)
    assert scored.top1 == tuple(ref[11:31])  # after reading ref[:11+i], the greedy next token is ref[11+i]
    assert used.forward_calls == 1 and used.check_tokens == 20 and used.computed_tokens == 21  # + the pending one
    assert scored.prob[0] > 0.99 and len(scored.prob) == 20


def test_hf_rollback_truncates_the_cache(hf_small, prompt):
    ref = plain_greedy(hf_small, prompt, 30)
    s = hf_small.open(prompt)
    s.decode(20)
    s.rollback(12)
    assert len(s) == len(prompt) + 8 and s.n_cached <= len(s)
    assert s.decode(22) == ref[8:30]


def test_hf_extend_is_prefilled_once_by_the_next_decode(hf_small, prompt):
    ref = plain_greedy(hf_small, prompt, 30)
    s = hf_small.open(prompt)
    s.decode(5)
    s.extend(ref[5:25])  # catch-up: 20 tokens the model did not write
    before = s.counters.copy()
    out = s.decode(5)
    used = s.counters.minus(before)
    assert out == ref[25:30]
    assert used.forward_calls == 5 and used.computed_tokens == 1 + 20 + 4  # pending + catch-up, then 4 steps


def test_hf_ban_first_excludes_the_token_once(hf_small, prompt):
    ref = plain_greedy(hf_small, prompt, 5)
    out = hf_small.open(prompt).decode(5, ban_first={ref[0]})
    assert out[0] != ref[0] and len(out) == 5


def test_hf_stops_after_a_stop_token_and_returns_it(hf_small, prompt):
    ref = plain_greedy(hf_small, prompt, 20)
    assert hf_small.open(prompt).decode(20, stop_ids={ref[6]}) == ref[: ref.index(ref[6]) + 1]


def test_hf_sampling_is_seeded(hf_small, prompt):
    warm = Sampling(temperature=5.0, seed=7)
    a = hf_small.open(prompt).decode(20, sampling=warm)
    assert a == hf_small.open(prompt).decode(20, sampling=warm)
    assert a != hf_small.open(prompt).decode(20, sampling=Sampling(temperature=5.0, seed=8))
    narrow = Sampling(temperature=5.0, top_p=1e-6, seed=7)  # the top token only: greedy
    assert hf_small.open(prompt).decode(20, sampling=narrow) == plain_greedy(hf_small, prompt, 20)


def test_hf_close_drops_the_model_once(dirs, monkeypatch):
    from splitlib.backends import hf

    frees = []
    monkeypatch.setattr(hf, "free_memory", lambda: frees.append(1))
    backend = HFBackend.load(str(dirs["small"]))
    backend.close()
    backend.close()  # idempotent
    assert backend.model is None and frees == [1]


def test_hf_refuses_half_precision_on_cpu(dirs):
    with pytest.raises(ValueError, match="use float32"):
        HFBackend.load(str(dirs["small"]), device="cpu", dtype="bfloat16")


def test_context_window_is_respected(hf_small, prompt):
    s = hf_small.open(prompt)
    assert len(s.decode(1000)) == hf_small.max_model_len - len(prompt) and s.room() == 0
    with pytest.raises(PromptTooLongError, match="max_model_len=512"):
        check_prompt(hf_small, [5] * 512, "small")


# -- loading errors --------------------------------------------------------------------------------------
def test_missing_model_directory_names_path_and_fix(tmp_path):
    missing = tmp_path / "models" / "small"
    with pytest.raises(ModelNotFoundError, match=f"{missing}.*notebooks/00_models.ipynb"):
        load_backend("hf", str(missing))


def test_unknown_backend_or_option_is_named():
    assert BACKENDS.names() == list(get_args(BackendKind))
    with pytest.raises(UnknownNameError, match="unknown backend 'tgi'; allowed: hf, vllm, openai"):
        load_backend("tgi", "x")
    with pytest.raises(TypeError, match=r"unknown option\(s\) \['temperature'\]"):
        load_backend("hf", "x", temperature=1.0)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_unreachable_server_error_names_the_url():
    url = f"http://127.0.0.1:{_free_port()}/v1"
    t0 = time.perf_counter()
    with pytest.raises(BackendUnreachable, match=f"cannot reach .*{url}"):
        load_backend("openai", "m", base_url=url, timeout_s=2, max_retries=0)
    assert time.perf_counter() - t0 < 10


def test_silent_server_times_out_instead_of_hanging():
    """A server that accepts connections and never answers."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    held = []
    threading.Thread(target=lambda: held.extend(listener.accept() for _ in range(3)), daemon=True).start()
    url = f"http://127.0.0.1:{listener.getsockname()[1]}/v1"
    t0 = time.perf_counter()
    try:
        with pytest.raises(BackendUnreachable, match=f"{url} timed out"):
            load_backend("openai", "m", base_url=url, timeout_s=1, max_retries=0)
    finally:
        listener.close()
    assert time.perf_counter() - t0 < 10


# -- vllm --------------------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def vllm_small(dirs):
    return shared_vllm(str(dirs["small"]))


@pytest.fixture(scope="session")
def vllm_big(dirs):
    return shared_vllm(str(dirs["big"]))


@pytest.mark.slow
def test_vllm_greedy_agrees_with_hf(vllm_small, vllm_big, hf_small, hf_big, prompt):
    for v, h in ((vllm_small, hf_small), (vllm_big, hf_big)):
        assert v.open(prompt).decode(60) == h.open(prompt).decode(60) == plain_greedy(h, prompt, 60)


@pytest.mark.slow
def test_vllm_score_equals_hf_score(vllm_small, hf_small, prompt):
    ref = plain_greedy(hf_small, prompt, 50)
    close = hf_small.tokenizer.convert_tokens_to_ids(tags.CLOSE)
    results = []
    for backend in (vllm_small, hf_small):
        s = backend.open(prompt)
        s.decode(10)
        results.append(s.score(ref[10:45], prob_of=close, prob_floor=0.05))
        assert len(s) == len(prompt) + 45
    (v, h) = results
    assert v.top1 == h.top1 == tuple(ref[11:46])
    assert all(abs(a - b) < 1e-3 or (b < 0.05 and a == 0.0) for a, b in zip(v.prob, h.prob))


@pytest.mark.slow
def test_vllm_reuses_the_prefix_cache_and_rolls_back(vllm_small, hf_small, prompt):
    ref = plain_greedy(hf_small, prompt, 200)
    s = vllm_small.open(prompt)
    s.decode(100)
    s.extend(ref[100:150])
    before = s.counters.copy()
    assert s.decode(10) == ref[150:160]
    used = s.counters.minus(before)
    assert used.forward_calls == 10 and used.computed_tokens < 50 + 32 + 10  # catch-up + < one block, not the context
    s.rollback(70)
    assert s.decode(20) == ref[90:110]
    assert s.decode(3, ban_first={ref[110]})[0] != ref[110]


@pytest.mark.slow
def test_vllm_runs_many_sessions_in_the_same_steps(vllm_small, hf_small, prompt):
    from splitlib.backends import Decode, run_ops

    sessions = [vllm_small.open(prompt[: len(prompt) - k]) for k in range(6)]
    done = run_ops(vllm_small, [Decode(s, 20) for s in sessions])
    for s, d in zip(sessions, done):
        assert d.value == plain_greedy(hf_small, s.ids[: len(s) - 20], 20)


# -- openai: a real vLLM OpenAI-compatible server ---------------------------------------------------------
@pytest.fixture(scope="session")
def server_url(dirs):
    port = _free_port()
    env = dict(os.environ, VLLM_CPU_KVCACHE_SPACE="1", HF_HUB_OFFLINE="1")
    cmd = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(dirs["big"]),
           "--served-model-name", "tiny-big", "--host", "127.0.0.1", "--port", str(port), "--dtype", "float32",
           "--enforce-eager", "--max-model-len", "512", "--block-size", "32", "--enable-prefix-caching"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.time() + 300
        while time.time() < deadline and proc.poll() is None:
            try:
                urllib.request.urlopen(url + "/models", timeout=2).read()
                break
            except OSError:
                time.sleep(1)
        else:
            pytest.fail(f"vLLM server did not start (exit code {proc.poll()})")
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture(scope="session")
def served_big(server_url, dirs):
    return load_backend("openai", "tiny-big", base_url=server_url, tokenizer=str(dirs["big"]), timeout_s=60)


@pytest.mark.slow
def test_openai_backend_matches_hf(served_big, hf_big, prompt):
    assert served_big.max_model_len == 512
    ref = plain_greedy(hf_big, prompt, 40)
    s = served_big.open(prompt)
    assert s.decode(20) == ref[:20]
    assert s.score(ref[20:35]).top1 == tuple(ref[21:36])
    s.rollback(15)
    assert s.decode(3, ban_first={ref[20]})[0] != ref[20]


@pytest.mark.slow
def test_openai_big_in_the_loop_equals_local_big(served_big, hf_small, hf_big):
    cfg = DecodeConfig(max_new_tokens=60, big_chunk_tokens=8, max_offload_tokens=24)
    remote = decode(QUESTION, hf_small, served_big, "split", cfg)
    local = decode(QUESTION, hf_small, hf_big, "split", cfg)
    assert remote.text == local.text and remote.handoffs == local.handoffs > 0
    assert [s.token_ids for s in remote.segments] == [s.token_ids for s in local.segments]


# -- CUDA ----------------------------------------------------------------------------------------------------
@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_hf_on_cuda_equals_cpu(dirs, hf_small, prompt):
    gpu = HFBackend.load(str(dirs["small"]), device="cuda", dtype="float32")
    assert gpu.open(prompt).decode(40) == hf_small.open(prompt).decode(40)
    ref = hf_small.open(prompt)
    ref.decode(5)
    g = gpu.open(prompt)
    g.decode(5)
    chunk = plain_greedy(hf_small, prompt, 30)[5:25]
    assert g.score(chunk).top1 == ref.score(chunk).top1


def test_a_truncated_weight_file_is_named_before_any_loader_runs(tmp_path):
    from safetensors.torch import save_file

    from splitlib.backends.base import CorruptModelError, resolve_model

    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    save_file({"w": torch.zeros(64, 64)}, str(model / "model.safetensors"))
    assert resolve_model(model) == str(model)  # whole: accepted
    data = (model / "model.safetensors").read_bytes()
    (model / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(CorruptModelError, match=r"model\.safetensors is truncated"):
        resolve_model(model)
    (model / "model.safetensors").write_bytes(b"\x05\x00")
    with pytest.raises(CorruptModelError, match=r"model\.safetensors is not a readable safetensors file"):
        resolve_model(model)


@pytest.mark.slow
def test_a_closed_vllm_engine_lets_another_start_in_the_same_process(dirs, prompt):
    from splitlib.backends.vllm_engine import VLLMBackend

    first = VLLMBackend.load(str(dirs["small"]), max_model_len=256)
    expected = first.open(prompt).decode(20)
    first.close()
    first.close()  # idempotent
    assert first.llm is None and first.engine is None
    second = VLLMBackend.load(str(dirs["small"]), max_model_len=256)
    try:
        assert second.open(prompt).decode(20) == expected
    finally:
        second.close()
