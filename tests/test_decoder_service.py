"""splitlib.decoder_service: the one adapter between decode_many and evaluation, rollouts and reports — backends
loaded once and kept, ready backends in place of references, sampling settings kept out of ``decode``, and each
item's seed as the engine's problem key."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import pytest

from splitlib import evaluate as ev
from splitlib import notebook_params as nbp
from splitlib import prompts, provenance
from splitlib.backends import load_backend
from splitlib.decoder_service import SAMPLING_FIELDS, DecoderService, Route, check_decode_settings
from splitlib.decoding import DecodeConfig, decode
from splitlib.evaluate import Method
from splitlib.params import ParamError
from splitlib.policies import make_policy
from splitlib.sampling import Sampling
from splitlib.toy.world import generate
from splitlib.trace import Trace

REPO = Path(__file__).resolve().parent.parent


# -- decode settings ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", SAMPLING_FIELDS)
def test_sampling_settings_are_refused_in_decode(name):
    with pytest.raises(ValueError, match=f"'{name}'.*leave them out of 'decode'"):
        check_decode_settings({"big_chunk_tokens": 4, name: 1})
    with pytest.raises(ValueError, match=name):
        DecoderService(decode={name: 1})


def test_other_decode_settings_pass_as_a_copy():
    settings = {"big_chunk_tokens": 4, "takeback": "threshold"}
    checked = check_decode_settings(settings)
    assert checked == settings and checked is not settings


def test_the_evaluation_schema_refuses_sampling_settings_in_decode_by_key():
    with pytest.raises(ParamError, match=r"parameter decode=\{'top_p': 0.9\}: expected no sampling settings"):
        nbp.load_yaml("05_evaluate", REPO / "params" / "smoke" / "05_evaluate.yaml", {"decode": {"top_p": 0.9}})


# -- backends -------------------------------------------------------------------------------------------------------
def test_preload_loads_only_what_each_policy_uses():
    loaded = []
    service = DecoderService({"base": "b", "big": "B"})
    service.backend = lambda role, ref: loaded.append((role, ref))  # record instead of loading
    service.preload([Method("s", policy="small_only", small="base", big="big"),
                     Route("big_only", small=None, big="big")])
    assert loaded == [("small", "base"), ("big", "big")]


def test_a_ready_backend_stands_in_for_a_reference_and_none_stays_none():
    service = DecoderService()
    ready = object()
    assert service.backend("small", ready) is ready and service.backend("big", None) is None
    assert service._loaded == {}


# -- provenance ------------------------------------------------------------------------------------------------------
def test_provenance_hashes_each_model_once_and_only_the_roles_a_policy_uses(monkeypatch):
    hashed = []
    monkeypatch.setattr(provenance, "model_hash", lambda ref: hashed.append(ref) or f"h({ref})")
    service = DecoderService({"sft": "/m/sft", "big": "/m/big"}, kind="vllm", big_kind="openai",
                             decode={"big_chunk_tokens": 4},
                             backend_opts={"sft": {"dtype": "float32", "max_num_seqs": 512},
                                           "big": {"base_url": "http://h:8000/v1", "timeout_s": 5,
                                                   "tokenizer": "/m/big"}})
    split = service.provenance(Route("split", small="sft", big="big"))
    small = service.provenance(Method("s", policy="small_only", small="sft", big="big"))
    assert split["model"] == {"small": "h(/m/sft)", "big": "h(/m/big)"}
    assert small["model"] == {"small": "h(/m/sft)", "big": None} and small["backend"]["big"] is None
    assert hashed == ["/m/sft", "/m/big"]  # once per model for the whole service
    assert split["backend"] == {"small": {"kind": "vllm", "options": {"dtype": "float32"}, "device": "cpu"},
                                "big": {"kind": "openai", "options": {"tokenizer": "/m/big"}}}  # not where it listens
    assert split["decode"] == {**{k: v for k, v in asdict(DecodeConfig()).items() if k not in SAMPLING_FIELDS},
                               "big_chunk_tokens": 4}
    assert (split["policy"], split["policy_params"]) == ("split", {})


def test_a_local_engine_records_its_device_so_cpu_and_gpu_rows_get_other_keys(monkeypatch):
    import torch

    monkeypatch.setattr(provenance, "model_hash", lambda ref: "h")
    cpu = DecoderService({"m": "/m"}, kind="hf").provenance(Route("small_only", small="m"))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    gpu = DecoderService({"m": "/m"}, kind="hf").provenance(Route("small_only", small="m"))
    pinned = DecoderService({"m": "/m"}, kind="hf", backend_opts={"m": {"device": "cpu"}}).provenance(
        Route("small_only", small="m"))
    assert (cpu["backend"]["small"]["device"], gpu["backend"]["small"]["device"]) == ("cpu", "cuda")
    assert pinned["backend"]["small"]["device"] == "cpu"
    assert provenance.key(cpu) != provenance.key(gpu)


def test_a_ready_backend_cannot_be_hashed_and_is_named_by_its_object():
    ready = object()
    parts = DecoderService().provenance(Route("small_only", small=ready))
    assert parts["model"]["small"].startswith("live:object@") and parts["backend"]["small"]["options"] == {}


# -- decoding on tiny random models ---------------------------------------------------------------------------------
def test_each_item_is_decoded_under_the_key_prefix_and_its_seed(tiny_model_dirs):
    small = load_backend("hf", str(tiny_model_dirs["small"]))
    big = load_backend("hf", str(tiny_model_dirs["big"]))
    question = generate(1, seed=3)[0].question
    service = DecoderService(decode={"big_chunk_tokens": 4})
    route = Route("random_switch", small=small, big=big, policy_params={"ratio": 1, "chunk": 4})
    sampling = Sampling(temperature=1.0)
    for prefix in ("seed", "rollout"):
        (trace,) = service(route, [question], [11], sampling, 12, key_prefix=prefix)
        cfg = DecodeConfig(max_new_tokens=12, temperature=1.0, big_chunk_tokens=4)
        alone = decode(question, small, big, make_policy("random_switch", ratio=1, chunk=4), cfg, key=f"{prefix}-11")
        assert trace.text == alone.text and [s.model for s in trace.segments] == [s.model for s in alone.segments]


def test_top_k_is_not_applied_and_says_so_once(tiny_model_dirs, caplog):
    service = DecoderService({"small": tiny_model_dirs["small"]})
    route = Route("small_only", small="small")
    with caplog.at_level("WARNING", logger="splitlib.decoder_service"):
        plain = service(route, ["1 + 1"], [0], Sampling(temperature=1.0), 6)
        for _ in range(2):
            assert [t.text for t in service(route, ["1 + 1"], [0], Sampling(temperature=1.0, top_k=5), 6)] == [
                plain[0].text]
    assert caplog.text.count("top_k=5 is not applied") == 1


def test_evaluation_runs_every_policy_and_reruns_a_subset_identically(tiny_model_dirs, tmp_path):
    problems = [{"id": p.id, "question": p.question, "answer": p.answer} for p in generate(2, seed=5)]
    methods = [
        Method("small", policy="small_only", small="small"),
        Method("big", policy="big_only", small=None, big="big"),
        Method("split", policy="split", small="small", big="big", policy_params={"max_offload_fraction": 0.5}),
        Method("random", policy="random_switch", small="small", big="big", policy_params={"ratio": 1, "chunk": 4}),
    ]
    protocol = ev.make_protocol("deepseek", samples=2, max_new_tokens=12)
    service = DecoderService(tiny_model_dirs, kind="hf", decode={"big_chunk_tokens": 4})
    rows = ev.evaluate(methods, problems, protocol, service, tmp_path / "all.jsonl", progress=False, batch_size=3)
    assert len(rows) == 4 * 2 * 2
    for row in rows:
        trace = Trace.from_json(row["trace"])
        assert trace.text == row["generation"] and trace.total_tokens <= 12
        if row["method"] == "small":
            assert row["tokens_big"] == 0
        if row["method"] == "big":
            assert row["tokens_small"] == 0
    assert rows[0]["decoder"] == {"engine": "splitlib.decoding", "kinds": {"small": "hf", "big": "hf"},
                                  "decode": {"big_chunk_tokens": 4},
                                  "model_dirs": {k: str(v) for k, v in tiny_model_dirs.items()},
                                  "prompt": prompts.TEMPLATE_ID}
    assert any(0 < r["offload_token_fraction"] < 1 for r in rows if r["method"] == "random")
    assert len(service._loaded) == 2  # each model loaded once

    fresh = DecoderService(tiny_model_dirs, kind="hf", decode={"big_chunk_tokens": 4})
    again = ev.evaluate(methods[3:], problems[1:], protocol, fresh, tmp_path / "one.jsonl", progress=False)
    before = {(r["method"], r["problem_id"], r["sample"]): r["generation"] for r in rows}
    assert [r["generation"] for r in again] == [before[("random", r["problem_id"], r["sample"])] for r in again]
    assert len({r["generation"] for r in rows if r["method"] == "random"}) > 1  # samples differ (T = 0.6)


# -- releasing engines ----------------------------------------------------------------------------------------------
class _FakeBackend:
    """Records its close calls; stands in for a loaded engine."""

    def __init__(self, kind, target):
        self.kind, self.target, self.closes = kind, target, 0

    def close(self):
        self.closes += 1


@pytest.fixture
def fake_loads(monkeypatch):
    import splitlib.backends

    made = []

    def load(kind, target, **opts):
        made.append(_FakeBackend(kind, target))
        return made[-1]

    monkeypatch.setattr(splitlib.backends, "load_backend", load)
    return made


def test_close_closes_every_loaded_backend_once_and_holds_none(fake_loads):
    with DecoderService({"base": "b", "big": "B"}) as service:
        service.preload([Route("split", small="base", big="big")])
        assert service.loaded == [("hf", "b"), ("hf", "B")]
    assert [b.closes for b in fake_loads] == [1, 1] and service.loaded == []
    service.close()  # closing again closes nothing twice
    assert [b.closes for b in fake_loads] == [1, 1]


def test_max_loaded_keeps_only_the_models_of_the_route_served_next(fake_loads):
    service = DecoderService({"x": "X", "y": "Y", "big": "B"}, max_loaded=2)
    service.preload([Route("split", small="x", big="big")])
    service.preload([Route("split", small="y", big="big")])
    assert set(service.loaded) == {("hf", "Y"), ("hf", "B")}
    assert {b.target: b.closes for b in fake_loads} == {"X": 1, "B": 0, "Y": 0}  # the big engine stays loaded


def test_max_loaded_never_releases_a_model_of_the_route_being_served(fake_loads):
    service = DecoderService({"x": "X", "big": "B"}, max_loaded=1)
    service.preload([Route("split", small="x", big="big")])  # needs two: both stay while the route is served
    assert service.loaded == [("hf", "X"), ("hf", "B")]
    service.backend("small", "z")  # outside that route: both go before another model loads
    assert service.loaded == [("hf", "z")] and [b.closes for b in fake_loads] == [1, 1, 0]


def test_a_pinned_backend_outlives_the_routes_served_after_it(fake_loads):
    # notebook 06 profiles base and big between timed routes of many checkpoints: those two must stay loaded
    service = DecoderService({"base": "b", "big": "B", "c1": "C1", "c2": "C2"}, max_loaded=3)
    base = service.backend("small", "base", pin=True)
    service.preload([Route("split", small="c1", big="big")])
    service.preload([Route("split", small="c2", big="big")])
    assert set(service.loaded) == {("hf", "b"), ("hf", "B"), ("hf", "C2")} and base.closes == 0
    service.release("base")  # release unpins: the next route may push it out
    assert base.closes == 1


def test_preload_under_max_loaded_stops_at_the_first_route_that_does_not_fit(fake_loads):
    service = DecoderService(max_loaded=2)
    service.preload([Route("small_only", small="a"), Route("small_only", small="b"), Route("split", "c", "big")])
    assert service.loaded == [("hf", "a"), ("hf", "b")] and not any(b.closes for b in fake_loads)


def test_release_closes_one_model_and_the_next_use_loads_it_again(fake_loads):
    service = DecoderService({"big": "B"})
    first = service.backend("big", "big")
    service.release("big")
    assert first.closes == 1 and service.loaded == []
    assert service.backend("big", "big") is not first


def test_a_ready_backend_is_never_closed_by_the_service(fake_loads):
    ready = _FakeBackend("live", "policy")
    service = DecoderService({"big": "B"}, max_loaded=1)
    service.preload([Route("split", small=ready, big="big")])
    service.close()
    assert ready.closes == 0 and fake_loads[0].closes == 1


def test_warm_up_decodes_once_per_path_and_empties_prefix_caches_before_every_timed_call(fake_loads, monkeypatch):
    """The evaluation finds ``warm_up`` on the service (``getattr``); a path (policy and engines) is decoded untimed
    once, up to WARM_UP_TOKENS, under its own keys; every call empties the engines' prefix caches, so a method
    evaluated after another on the same questions finds none of its blocks."""
    from splitlib.decoder_service import WARM_UP_TOKENS

    resets = []
    monkeypatch.setattr(_FakeBackend, "reset_prefix_cache", lambda self: resets.append(self.target), raising=False)
    service = DecoderService({"a": "A", "b": "B", "big": "G"}, kind="vllm")
    decoded = []
    monkeypatch.setattr(DecoderService, "__call__", lambda self, route, questions, seeds, sampling, max_new_tokens,
                        key_prefix="seed": decoded.append((route.small, seeds, max_new_tokens, key_prefix)))
    service.preload([Route("split", small="a", big="big"), Route("split", small="b", big="big")])
    assert callable(getattr(service, "warm_up", None))  # how the evaluation looks for it
    for small in ("a", "a", "b"):
        service.warm_up(Route("split", small=small, big="big"), ["q1", "q2"], Sampling(temperature=0.0), 192)
    assert decoded == [("a", [0, 1], WARM_UP_TOKENS, "warm-up"), ("b", [0, 1], WARM_UP_TOKENS, "warm-up")]
    assert [set(resets[i : i + 3]) for i in (0, 3, 6)] == [{"A", "B", "G"}] * 3 and len(resets) == 9  # each call, all
    hf = DecoderService({"a": "A"}, kind="hf")
    hf.warm_up(Route("small", small="a"), ["q1"], Sampling(temperature=0.0), 192)
    assert len(decoded) == 2  # transformers backends: nothing to warm


def test_max_loaded_must_be_positive():
    with pytest.raises(ValueError, match="max_loaded=0"):
        DecoderService(max_loaded=0)


def test_releasing_between_methods_changes_no_generation_and_no_engine_outlives_the_stage(tiny_model_dirs, tmp_path):
    """What notebooks 04-06 do: evaluate method after method with max_loaded=2, then close the service."""
    import shutil

    dirs = {**tiny_model_dirs, "copy": shutil.copytree(tiny_model_dirs["small"], tmp_path / "copy")}
    problems = [{"id": p.id, "question": p.question, "answer": p.answer} for p in generate(2, seed=5)]
    methods = [Method("split", policy="split", small="copy", big="big"),
               Method("split again", policy="split", small="small", big="big"),
               Method("small", policy="small_only", small="small")]
    protocol = ev.make_protocol("deepseek", samples=1, max_new_tokens=10, temperature=0.0)
    kept = DecoderService(dirs, decode={"big_chunk_tokens": 4})
    expected = ev.evaluate(methods, problems, protocol, kept, tmp_path / "kept.jsonl", progress=False)
    with DecoderService(dirs, decode={"big_chunk_tokens": 4}, max_loaded=2) as service:
        rows = ev.evaluate(methods, problems, protocol, service, tmp_path / "released.jsonl", progress=False)
        held = [service._loaded[k] for k in service.loaded]
        assert {t for _, t in service.loaded} == {str(dirs["big"]), str(dirs["small"])}  # not the copy
    assert [r["generation"] for r in rows] == [r["generation"] for r in expected]
    assert service.loaded == [] and all(b.model is None for b in held)  # closed: the weights are dropped
    kept.close()
