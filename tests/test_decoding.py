"""The cooperative decoding loop: equality with plain generation, the contract's steps, caps, EOS, bad input,
policies, cross-tokenizer hand-off. Real transformers engines on tiny random models; where a behaviour must be
injected (ask for the big model here, predict </bigmodel> there) the model's prediction is steered
(``SteeredHFBackend``: the real backend, with chosen predictions overridden)."""

from __future__ import annotations

import os

import pytest
import torch

from splitlib import tags
from splitlib.backends import PromptTooLongError
from splitlib.backends.hf import HFBackend
from splitlib.backends.testing import SteeredHFBackend, shared_vllm, tiny_model_dirs
from splitlib.decoding import DecodeConfig, RolePrompts, decode, decode_many
from splitlib.handoff import SharedIds, ViaText, decode_text, encode_text, make_bridge
from splitlib.policies import RandomSwitch, Split, make_policy
from splitlib.prompts import build_prompt
from splitlib.registry import UnknownNameError
from splitlib.toy.world import generate
from splitlib.trace import Trace

os.environ.setdefault("HF_HUB_OFFLINE", "1")
QUESTIONS = [p.question for p in generate(3, seed=11)]
Q = QUESTIONS[0]


@pytest.fixture(scope="session")
def dirs():
    return tiny_model_dirs()


@pytest.fixture(scope="session")
def small(dirs):
    return HFBackend.load(str(dirs["small"]))


@pytest.fixture(scope="session")
def plain(dirs):
    """A small model that never writes tags or EOS by itself (scenario tests steer it)."""
    return HFBackend.load(str(dirs["plain"]))


@pytest.fixture(scope="session")
def big(dirs):
    return HFBackend.load(str(dirs["big"]))


@pytest.fixture(scope="session")
def big300(dirs):
    return HFBackend.load(str(dirs["big300"]))


@pytest.fixture(scope="session")
def ids(small):
    tok = small.tokenizer
    return {"open": tok.convert_tokens_to_ids(tags.OPEN), "close": tok.convert_tokens_to_ids(tags.CLOSE),
            "eos": tok.eos_token_id, "filler": tok.encode("7", add_special_tokens=False)[0]}


def prompt_len(backend, role: str, question: str = Q) -> int:
    return len(encode_text(backend.tokenizer, build_prompt(backend.tokenizer, question, role)))


def span_steer(p_len: int, ids: dict, open_at=(5,), close_after: int | None = 10, filler: bool = True,
               close_at=(), eos_at=()):
    """Small-model steering: <bigmodel> when the generation has ``open_at`` tokens; inside a span, </bigmodel>
    after ``close_after`` span tokens (else a filler token when ``filler``); a stray </bigmodel> or EOS at the
    given generation lengths."""
    def steer(ctx):
        gen = list(ctx[p_len:])
        if ids["open"] in gen and ids["close"] not in gen[len(gen) - gen[::-1].index(ids["open"]):]:
            inside = len(gen) - (len(gen) - gen[::-1].index(ids["open"]))
            if close_after is not None and inside == close_after:
                return ids["close"]
            return ids["filler"] if filler else None
        if len(gen) in open_at:
            return ids["open"]
        if len(gen) in close_at:
            return ids["close"]
        if len(gen) in eos_at:
            return ids["eos"]
        return None
    return steer


def steered(backend, steer):
    return SteeredHFBackend(backend.model, backend.tokenizer, steer=steer)


def plain_greedy(backend, prompt_ids: list[int], n: int) -> list[int]:
    with torch.inference_mode():
        out = backend.model.generate(torch.tensor([prompt_ids]), max_new_tokens=n, do_sample=False)
    return out[0, len(prompt_ids):].tolist()


def gen_ids(trace: Trace) -> list[int]:
    return [t for seg in trace.segments for t in seg.token_ids]


def big_segments(trace: Trace):
    return [s for s in trace.segments if s.model == "big"]


# -- one model alone equals plain generation ------------------------------------------------------------
@pytest.mark.parametrize("policy,role", [("small_only", "small"), ("big_only", "big")])
def test_one_model_alone_equals_plain_greedy_generate(small, big, policy, role):
    backend = small if role == "small" else big
    for question in QUESTIONS:
        trace = decode(question, small, big, policy, DecodeConfig(max_new_tokens=40))
        prompt = encode_text(backend.tokenizer, build_prompt(backend.tokenizer, question, role))
        assert gen_ids(trace) == plain_greedy(backend, prompt, 40)
        assert trace.finish == "length" and trace.tokens(role) == 40
        assert trace.text == decode_text(backend.tokenizer, gen_ids(trace))  # the generation only, no prompt


# -- the contract's steps ---------------------------------------------------------------------------------
def test_takeback_reads_each_chunk_in_one_small_forward_and_cuts_there(plain, big, ids):
    s = steered(plain, span_steer(prompt_len(plain, "small"), ids, close_after=10))
    trace = decode(Q, s, big, "split", DecodeConfig(max_new_tokens=30, big_chunk_tokens=4))
    first, span, after = trace.segments[:3]
    assert (first.model, first.finish, first.token_ids[-1]) == ("small", "handoff", ids["open"])
    assert (span.model, span.finish, len(span.token_ids)) == ("big", "takeback", 10)
    assert span.decode_tokens == 12 and span.discarded_tokens == 2 and span.check_tokens == 12
    assert span.forward_calls["small"] == 3  # chunks of 4, 4, 4: one small forward each
    assert after.model == "small" and after.token_ids[0] == ids["close"]
    assert tags.check(trace.text).balanced and trace.handoffs == 1


def test_reference_probes_every_prefix_one_call_each(plain, big, ids):
    s = steered(plain, span_steer(prompt_len(plain, "small"), ids, close_after=10, filler=True))
    cfg = DecodeConfig(max_new_tokens=30, big_chunk_tokens=4, reference=True)
    span = big_segments(decode(Q, s, big, "split", cfg))[0]
    # the probe at prefix 3 continues 8 tokens and meets the </bigmodel> due after 10: handed back 7 tokens early
    assert len(span.token_ids) == 3 and span.finish == "takeback"
    assert span.check_tokens == 4 and span.forward_calls["small"] == 4 * 8  # every prefix probed, 8 tokens each


def test_threshold_takeback_uses_the_probability(plain, big, ids):
    s = steered(plain, span_steer(prompt_len(plain, "small"), ids, close_after=6))
    cfg = DecodeConfig(max_new_tokens=30, big_chunk_tokens=4, takeback="threshold", takeback_threshold=0.9)
    span = big_segments(decode(Q, s, big, "split", cfg))[0]
    assert len(span.token_ids) == 6 and span.finish == "takeback"


def test_catch_up_prefills_only_unseen_tokens(plain, big, ids):
    s = steered(plain, span_steer(prompt_len(plain, "small"), ids, open_at=(5, 25), close_after=6))
    before = big.counters.copy()
    trace = decode(Q, s, big, "split", DecodeConfig(max_new_tokens=45, big_chunk_tokens=4))
    used = big.counters.minus(before)
    segs = trace.segments
    assert [x.model for x in segs[:4]] == ["small", "big", "small", "big"]
    untagged = [len([t for t in x.token_ids if t not in (ids["open"], ids["close"])]) for x in segs]
    assert segs[1].prefill_tokens == prompt_len(big, "big") + untagged[0]  # prompt + catch-up, once
    assert segs[3].prefill_tokens == untagged[2]  # only what the big model has not seen
    assert used.computed_tokens <= used.prefill_tokens + used.decode_tokens  # nothing computed twice


def test_offload_cap_closes_the_span(plain, big, ids):
    s = steered(plain, span_steer(prompt_len(plain, "small"), ids, close_after=None))
    trace = decode(Q, s, big, "split", DecodeConfig(max_new_tokens=40, big_chunk_tokens=4, max_offload_tokens=10))
    span, after = trace.segments[1], trace.segments[2]
    assert (span.finish, len(span.token_ids)) == ("offload_cap", 10)
    assert after.token_ids[0] == ids["close"] and tags.check(trace.text).balanced


def test_eos_from_big_inside_a_span_ends_and_closes_it(plain, big, ids):
    s = steered(plain, span_steer(prompt_len(plain, "small"), ids, close_after=None))
    p_big = prompt_len(big, "big")
    b = steered(big, lambda ctx: ids["eos"] if len(ctx) - p_big == 5 + 3 else None)  # catch-up 5, then 3 tokens
    trace = decode(Q, s, b, "split", DecodeConfig(max_new_tokens=40, big_chunk_tokens=8))
    first, span = trace.segments
    assert trace.finish == "eos" and span.finish == "eos" and len(span.token_ids) == 3
    assert ids["eos"] not in span.token_ids
    assert trace.text == first.text + span.text + tags.CLOSE  # closed in the record, nothing repeated
    assert tags.check(trace.text).balanced


def test_eos_from_small_ends_without_repeating_text(plain, big, ids):
    s = steered(plain, span_steer(prompt_len(plain, "small"), ids, open_at=(), eos_at=(7,)))
    trace = decode(Q, s, big, "split", DecodeConfig(max_new_tokens=40))
    assert trace.finish == "eos" and len(trace.segments) == 1 and trace.tokens("small") == 7
    assert trace.text == decode_text(plain.tokenizer, trace.segments[0].token_ids)


def test_total_cap_inside_a_span_ends_and_closes_it(plain, big, ids):
    s = steered(plain, span_steer(prompt_len(plain, "small"), ids, close_after=None))
    trace = decode(Q, s, big, "split", DecodeConfig(max_new_tokens=12, big_chunk_tokens=4))
    assert trace.finish == "length" and trace.segments[-1].finish == "length"
    assert trace.total_tokens == 11 and trace.text.endswith(tags.CLOSE)  # the closing tag is the 12th token


def test_stray_closer_from_small_is_dropped_and_recorded(plain, big, ids):
    s = steered(plain, span_steer(prompt_len(plain, "small"), ids, open_at=(), close_at=(3,)))
    trace = decode(Q, s, big, "split", DecodeConfig(max_new_tokens=10))
    assert ids["close"] not in gen_ids(trace) and trace.total_tokens == 10
    assert trace.events[0]["kind"] == "dropped_tag" and trace.events[0]["token"] == ids["close"]
    assert trace.events[0]["at_token"] == 3 and trace.segments[0].discarded_tokens == 1


def test_tags_written_by_big_are_dropped_and_recorded(plain, big, ids):
    s = steered(plain, span_steer(prompt_len(plain, "small"), ids, close_after=None))
    p_big, calls = prompt_len(big, "big"), []

    def big_steer(ctx):  # at the third span token: <bigmodel>, then </bigmodel>, then <bigmodel> again ...
        if len(ctx) - p_big != 5 + 2:
            return None
        calls.append(1)
        return ids["open"] if len(calls) % 2 else ids["close"]

    trace = decode(Q, s, steered(big, big_steer), "split", DecodeConfig(max_new_tokens=20, big_chunk_tokens=8))
    span = big_segments(trace)[0]
    assert not set(span.token_ids) & {ids["open"], ids["close"]} and len(span.token_ids) == 13  # 20 - 5 - 2 tags
    assert [(e["kind"], e["model"], e["at_token"]) for e in trace.events] == [("dropped_tag", "big", 8)] * 2
    assert span.discarded_tokens == 2  # both tags banned at that position: the third try is a plain token
    assert tags.check(trace.text).balanced


def test_refused_request_is_removed_and_small_goes_on(plain, big, ids):
    steer = span_steer(prompt_len(plain, "small"), ids, open_at=(5,))
    trace = decode(Q, steered(plain, steer), big, Split(reject_probability=1.0), DecodeConfig(max_new_tokens=12))
    assert trace.handoffs == 0 and trace.rejected_requests == 1 and trace.tokens("big") == 0
    assert ids["open"] not in gen_ids(trace) and trace.events[0]["kind"] == "rejected_request"
    free = decode(Q, plain, big, "small_only", DecodeConfig(max_new_tokens=12))
    assert gen_ids(trace)[:5] == gen_ids(free)[:5] and len(gen_ids(trace)) == 12


@pytest.mark.parametrize("budget,handoffs", [(1.0, 2), (0.3, 1), (0.0, 0)])
def test_offload_budget_refuses_requests_over_the_fraction(plain, big, ids, budget, handoffs):
    steer = span_steer(prompt_len(plain, "small"), ids, open_at=(5, 25), close_after=10)
    trace = decode(Q, steered(plain, steer), big, Split(max_offload_fraction=budget), DecodeConfig(max_new_tokens=45))
    assert trace.handoffs == handoffs and trace.rejected_requests == 2 - handoffs


# -- policies ----------------------------------------------------------------------------------------------
def test_random_switch_fraction_and_reproducibility(plain, big):
    small, cfg = plain, DecodeConfig(max_new_tokens=380)  # 190 chunks; the context window is 512 tokens
    trace = decode(Q, small, big, RandomSwitch(ratio=3, chunk=2, seed=0), cfg)
    assert trace.total_tokens == 380 and abs(trace.offload_token_fraction - 0.25) < 0.1
    assert all(s.finish == "chunk" for s in trace.segments[:-1]) and trace.handoffs == 0
    again = decode(Q, small, big, make_policy("random_switch", ratio=3, chunk=2, seed=0), cfg)
    other = decode(Q, small, big, RandomSwitch(ratio=3, chunk=2, seed=1), cfg)
    assert gen_ids(again) == gen_ids(trace) and [s.model for s in again.segments] == [s.model for s in trace.segments]
    assert [s.model for s in other.segments] != [s.model for s in trace.segments]


def test_random_switch_each_model_catches_up_on_exactly_the_other_s_chunks(small, big):
    trace = decode(Q, small, big, RandomSwitch(ratio=1, chunk=4, seed=3), DecodeConfig(max_new_tokens=60))
    assert {s.model for s in trace.segments} == {"small", "big"}
    unseen = {"small": prompt_len(small, "small"), "big": prompt_len(big, "big")}
    for seg in trace.segments:
        assert seg.prefill_tokens == unseen[seg.model]
        unseen[seg.model] = 0
        unseen["big" if seg.model == "small" else "small"] += len(seg.token_ids)


def same_generation(a: Trace, b: Trace) -> bool:
    """Equal apart from measured times."""
    def shape(t: Trace):
        return [(s.model, s.token_ids, s.text, s.finish, s.prefill_tokens, s.decode_tokens, s.discarded_tokens,
                 s.check_tokens, s.forward_calls) for s in t.segments], t.text, t.handoffs, t.finish, t.events
    return shape(a) == shape(b)


def test_split_with_a_tagging_model_end_to_end(small, big):
    cfg = DecodeConfig(max_new_tokens=80, big_chunk_tokens=8)
    traces = decode_many(QUESTIONS, small, big, "split", cfg, progress=False)
    assert all(same_generation(t, decode(q, small, big, "split", cfg)) for t, q in zip(traces, QUESTIONS))
    assert sum(t.handoffs for t in traces) > 0 and all(tags.check(t.text).balanced for t in traces)
    assert any(s.finish == "takeback" for t in traces for s in t.segments)


# -- different tokenizers ------------------------------------------------------------------------------------
def test_bridge_kind_follows_the_vocabularies(small, big, big300):
    assert isinstance(make_bridge(small.tokenizer, big.tokenizer), SharedIds)
    assert isinstance(make_bridge(small.tokenizer, big300.tokenizer), ViaText)


def test_via_text_cut_keeps_whole_big_tokens_and_queues_the_rest(small, big300):
    bridge = ViaText(small.tokenizer, big300.tokenizer)
    text = "B: 5+2=7\nC: 7+3=0, code 0>6"
    big_ids = encode_text(big300.tokenizer, text)
    small_ids = bridge.to_small(big_ids)
    assert decode_text(small.tokenizer, small_ids) == text
    for k in range(len(small_ids) + 1):
        cut = bridge.cut(big_ids, small_ids, k)
        kept = decode_text(small.tokenizer, small_ids[:k])
        head = decode_text(big300.tokenizer, big_ids[: cut.keep])
        assert cut.text == kept and kept.startswith(head)
        assert decode_text(big300.tokenizer, bridge.take("big")) == kept[len(head):]


def test_cross_tokenizer_handoff_through_text(plain, big300, ids):
    small = plain
    script_small = encode_text(small.tokenizer, "A: 4+1=5\n")
    p_small, p_big = prompt_len(small, "small"), prompt_len(big300, "big")
    span_start = len(script_small) + 1
    script_big = encode_text(big300.tokenizer, "B: 5+2=7\nC: 7+3=0, code 0>6\nD: 6+4=0")

    def small_steer(ctx):
        gen = list(ctx[p_small:])
        if len(gen) < len(script_small):
            return script_small[len(gen)]
        if len(gen) == len(script_small):
            return ids["open"]
        return ids["close"] if len(gen) - span_start == 7 else None

    caught_up = len(encode_text(big300.tokenizer, "A: 4+1=5\n"))
    b = steered(big300, lambda ctx: script_big[len(ctx) - p_big - caught_up]
                if 0 <= len(ctx) - p_big - caught_up < len(script_big) else None)
    trace = decode(Q, steered(small, small_steer), b, "split", DecodeConfig(max_new_tokens=30, big_chunk_tokens=6))
    first, span, after = trace.segments[:3]
    assert first.text == "A: 4+1=5\n" + tags.OPEN and span.finish == "takeback"
    big_text = decode_text(big300.tokenizer, script_big)
    assert span.text and big_text.startswith(span.text) and span.check_tokens >= 7
    assert trace.text.startswith(first.text + span.text + tags.CLOSE) and after.token_ids[0] == ids["close"]
    assert span.prefill_tokens == p_big + caught_up  # the small model's text, re-encoded with the big tokenizer


# -- bad input -----------------------------------------------------------------------------------------------
def test_empty_question_is_refused(small, big):
    with pytest.raises(ValueError, match="empty question"):
        decode("   ", small, big, "split")
    with pytest.raises(ValueError, match="empty prompt"):
        decode(RolePrompts(small="", big="x"), small, big, "split")


def test_over_long_prompt_fails_before_decoding(small, big):
    before = small.counters.copy()
    with pytest.raises(PromptTooLongError, match="max_model_len=512"):
        decode("Code: 1>2. " * 200, small, big, "split")
    assert small.counters.minus(before).forward_calls == 0


def test_policy_needs_its_models(small):
    with pytest.raises(ValueError, match="needs the big model"):
        decode(Q, small, None, "split")
    assert decode(Q, small, None, "small_only", DecodeConfig(max_new_tokens=3)).total_tokens == 3


@pytest.mark.parametrize("bad,match", [
    ({"max_new_tokens": 0}, "max_new_tokens=0"), ({"takeback": "sometimes"}, "takeback='sometimes'"),
    ({"takeback_threshold": 0.0}, "takeback_threshold"), ({"temperature": -1}, "temperature"),
])
def test_decode_config_rejects_bad_values(bad, match):
    with pytest.raises(ValueError, match=match):
        DecodeConfig(**bad)


def test_make_policy_names_allowed_values():
    with pytest.raises(UnknownNameError, match="policy 'oracle'; allowed: split, random_switch, small_only, big_only"):
        make_policy("oracle")
    with pytest.raises(ValueError, match=r"unknown parameter\(s\) \['rate'\]"):
        make_policy("random_switch", rate=3)
    with pytest.raises(ValueError, match="reject_probability=2"):
        make_policy("split", reject_probability=2)


def test_reference_preset():
    assert (DecodeConfig.reference_preset().big_chunk_tokens, DecodeConfig.reference_preset().max_offload_tokens) == (32, 288)
    assert DecodeConfig.reference_preset(official=False).max_offload_tokens == 576


def test_trace_round_trips_through_json(plain, big, ids):
    s = steered(plain, span_steer(prompt_len(plain, "small"), ids, close_at=(2,), open_at=(6,)))
    trace = decode(Q, s, big, "split", DecodeConfig(max_new_tokens=20, big_chunk_tokens=4))
    assert trace.events and Trace.from_json(trace.to_json()) == trace


def test_cli_prints_marked_generation_and_summary(dirs, capsys):
    from splitlib.cli import main

    assert main(["decode", "--small", str(dirs["small"]), "--big", str(dirs["big"]), "--max-new-tokens", "40",
                 "--big-chunk-tokens", "8", Q]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[-1].startswith("[split] small ") and "offload" in out[-1] and "hand-offs" in out[-1]


# -- vLLM: the same loop, batched ------------------------------------------------------------------------------
@pytest.mark.slow
def test_vllm_decode_many_equals_hf_for_every_policy(dirs, small, big):
    """vLLM steps all problems together; the result equals hf's one-at-a-time decode, token for token."""
    vsmall, vbig = shared_vllm(str(dirs["small"])), shared_vllm(str(dirs["big"]))
    cfg = DecodeConfig(max_new_tokens=60, big_chunk_tokens=8, max_offload_tokens=24)
    for policy in ("small_only", "big_only", "split", RandomSwitch(ratio=2, chunk=5, seed=4)):
        got = decode_many(QUESTIONS, vsmall, vbig, policy, cfg, progress=False)
        want = [decode(q, small, big, policy, cfg) for q in QUESTIONS]
        for g, w in zip(got, want):
            assert gen_ids(g) == gen_ids(w) and g.text == w.text, policy
            assert [(s.model, s.finish) for s in g.segments] == [(s.model, s.finish) for s in w.segments]
        if policy == "split":  # the same chunks were checked: one small forward (one request) each, as on hf
            assert sum(t.handoffs for t in got) > 0
            assert [[s.forward_calls.get("small") for s in big_segments(t)] for t in got] == \
                [[s.forward_calls.get("small") for s in big_segments(t)] for t in want]
