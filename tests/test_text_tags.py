"""Text tags: the decoder runs a small model that writes <bigmodel>/</bigmodel> as ordinary text (several tokens
each, as the paper's checkpoints do) in the same loop, and gives the same generation and the same hand-offs as a
model with single tag tokens.

The two tokenizers differ only in the tags: ``tok`` has them as added tokens, ``txt`` (``without_tag_tokens``)
spells them ``<`` ``bigmodel`` ``>`` and ``<`` ``/`` ``bigmodel`` ``>``, and has merges across a tag's edges
(``.<``, `` <``, ``>..``). On transformers the same weights run with either tokenizer and a script steers the small
model in its own tokens; vLLM cannot be steered, so there the models are ``build_bigram_model``s whose greedy next
token is a scripted function of the current one (exact on every engine)."""

from __future__ import annotations

import os

import pytest
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from splitlib import tags
from splitlib.backends.base import resumed_stop_texts, text_stop_hit
from splitlib.backends.hf import HFBackend
from splitlib.backends.testing import (
    SteeredHFBackend,
    build_bigram_model,
    shared_vllm,
    tiny_model_dirs,
    without_tag_tokens,
)
from splitlib.decoding import DecodeConfig, decode, decode_many, small_tags
from splitlib.decoding.tagging import TagCodec, close_start_of
from splitlib.handoff import SharedIds, decode_text, encode_text, strip_tag_ids, tag_ids
from splitlib.policies import Split
from splitlib.prompts import build_prompt
from splitlib.toy.world import generate
from splitlib.trace import Trace

os.environ.setdefault("HF_HUB_OFFLINE", "1")
QUESTIONS = [p.question for p in generate(3, seed=11)]
Q = QUESTIONS[0]


@pytest.fixture(scope="module")
def dirs():
    return tiny_model_dirs()


@pytest.fixture(scope="module")
def tok(dirs):
    """Token tags: <bigmodel> and </bigmodel> are single added tokens."""
    return AutoTokenizer.from_pretrained(dirs["plain"])


@pytest.fixture(scope="module")
def txt(tok):
    """Text tags: the same tokenizer without the tag tokens (every other id unchanged)."""
    return without_tag_tokens(tok)


@pytest.fixture(scope="module")
def weights(dirs):
    """(small, big) models: the small one never writes a tag or EOS by itself (steered here)."""
    return HFBackend.load(str(dirs["plain"])).model, HFBackend.load(str(dirs["big"])).model


def one_token_each(tokenizer, *pieces: str) -> list[int]:
    out = []
    for piece in pieces:
        ids = encode_text(tokenizer, piece)
        assert len(ids) == 1, (piece, ids)
        out += ids
    return out


# -- detection -------------------------------------------------------------------------------------------------
def _unspellable() -> PreTrainedTokenizerFast:
    """A word-level tokenizer that turns '<', 'bigmodel', '>' into [UNK]: it cannot write the tags at all."""
    words = Tokenizer(models.WordLevel({"[UNK]": 0, "a": 1, "b": 2}, unk_token="[UNK]"))
    words.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=words, unk_token="[UNK]", eos_token="b")


@pytest.mark.parametrize("which,choice,mode", [
    ("tok", "auto", "token"), ("txt", "auto", "text"), ("tok", "text", "text"), ("tok", "token", "token"),
    ("txt", "token", "none"), ("txt", "text", "text"), ("unspellable", "auto", "none"),
])
def test_tag_mode_is_detected_per_tokenizer(tok, txt, which, choice, mode):
    tokenizer = {"tok": tok, "txt": txt, "unspellable": _unspellable()}[which]
    found = tag_ids(tokenizer, choice)
    assert found.mode == mode
    if mode == "token":
        assert found.open_seq == (tok.convert_tokens_to_ids(tags.OPEN),) and found.both == {found.open, found.close}
    if mode == "text":
        assert decode_text(tokenizer, found.open_seq) == tags.OPEN and decode_text(tokenizer, found.close_seq) == tags.CLOSE
        assert found.both == frozenset()
    if which == "txt" and mode == "text":
        assert len(found.open_seq) == 3 and len(found.close_seq) == 4  # '<' 'bigmodel' '>', '<' '/' 'bigmodel' '>'


def test_a_small_model_that_cannot_write_the_tags_is_refused_with_the_fix(txt, weights):
    with pytest.raises(ValueError, match="neither as single tokens nor as text"):
        small_tags(_unspellable())
    small, big = HFBackend(weights[0], txt), HFBackend(weights[1], txt)
    with pytest.raises(ValueError, match=r"tags='token'.*ensure_control_tokens"):
        decode(Q, small, big, "split", DecodeConfig(tags="token"))
    assert decode(Q, small, None, "small_only", DecodeConfig(tags="token", max_new_tokens=3)).total_tokens == 3


@pytest.mark.parametrize("bad,match", [({"tags": "words"}, "tags='words'"),
                                       ({"text_takeback": "never"}, "text_takeback='never'")])
def test_decode_config_rejects_unknown_tag_settings(bad, match):
    with pytest.raises(ValueError, match=match):
        DecodeConfig(**bad)


def test_shared_ids_strip_text_tags_as_token_sequences(tok, txt):
    text = "A: 1" + tags.OPEN + "B: 2" + tags.CLOSE + "C"
    plain = encode_text(txt, "A: 1") + encode_text(txt, "B: 2") + encode_text(txt, "C")
    ids = encode_text(txt, "A: 1") + list(tag_ids(txt).open_seq) + encode_text(txt, "B: 2") + \
        list(tag_ids(txt).close_seq) + encode_text(txt, "C")
    assert decode_text(txt, ids) == text and strip_tag_ids(ids, tag_ids(txt)) == plain
    bridge = SharedIds(txt, txt)
    bridge.push("big", ids)
    assert bridge.take("big") == plain
    assert strip_tag_ids(encode_text(tok, text), tag_ids(tok)) == plain  # token tags: the ids are removed


# -- the stop rule at tag boundaries that BPE merges -----------------------------------------------------------
@pytest.mark.parametrize("pieces,watched,tag,start,lead", [
    (["A", "<", "bigmodel", ">"], {tags.OPEN}, tags.OPEN, 1, ""),  # the canonical tokens
    (["A", ".<", "bigmodel", ">.."], {tags.OPEN}, tags.OPEN, 1, "."),  # merged on both edges: lead '.', '..' dropped
    (["A", " <", "bigmodel", ">", "B"], {tags.OPEN}, tags.OPEN, 1, " "),  # tokens after the tag (a backend overshot)
    (["<", "/", "bigmodel", ">.."], {tags.OPEN, tags.CLOSE}, tags.CLOSE, 0, ""),
    (["<", "bigmodel", ">", "<", "/", "bigmodel", ">"], {tags.CLOSE}, tags.CLOSE, 3, ""),  # only what is watched
    (["A", "<", "bigmodel"], {tags.OPEN}, None, 0, ""),  # not written yet
])
def test_find_locates_the_first_tag_and_its_start_token(txt, pieces, watched, tag, start, lead):
    codec = TagCodec(txt, tag_ids(txt))
    got = one_token_each(txt, *pieces)
    hit = codec.find(got, watched)
    if tag is None:
        assert hit is None
        return
    assert (hit.tag, hit.start, hit.ban) == (tag, start, got[start])
    assert decode_text(txt, hit.lead) == lead and hit.tag_ids == tag_ids(txt).seq(tag)
    assert decode_text(txt, got[:start] + hit.kept) == decode_text(txt, got).split(tag)[0] + tag


def test_find_with_token_tags_reads_the_last_token(tok):
    codec = TagCodec(tok, tag_ids(tok))
    got = encode_text(tok, "A: 1") + [tag_ids(tok).open]
    hit = codec.find(got, {tags.OPEN, tags.CLOSE})
    assert (hit.start, hit.kept, hit.ban) == (len(got) - 1, [tag_ids(tok).open], tag_ids(tok).open)
    assert codec.find(got, {tags.CLOSE}) is None


def test_stop_text_helpers(txt):
    assert text_stop_hit(txt, one_token_each(txt, "A", ".<", "bigmodel", ">.."), (tags.OPEN,))
    assert not text_stop_hit(txt, one_token_each(txt, ".<", "bigmodel"), (tags.OPEN,))
    rest = resumed_stop_texts(txt, one_token_each(txt, "A", " <"), tags.TAGS)
    assert rest[:2] == tags.TAGS and set(rest[2:]) == {"bigmodel>", "/bigmodel>"}
    assert resumed_stop_texts(txt, one_token_each(txt, "A"), tags.TAGS) == tags.TAGS


def test_hf_decode_stops_on_the_token_that_completes_a_merged_tag(txt, weights):
    script = one_token_each(txt, "A", ".<", "bigmodel", ">..", "B", "C")
    prompt = encode_text(txt, "x")
    backend = SteeredHFBackend(weights[0], txt, steer=lambda ctx: script[len(ctx) - 1] if len(ctx) <= 6 else None)
    assert backend.open(prompt).decode(10, stop_texts=(tags.OPEN,)) == script[:4]
    assert backend.open(prompt).decode(10, stop_texts=(tags.CLOSE,)) == script + backend.open(prompt + script).decode(4)


# -- the take-back decision --------------------------------------------------------------------------------------
@pytest.mark.parametrize("text,expected", [
    ("<", ("", 1)), ("</", ("", 2)), ("</big", ("", 5)), (".<", (".", 1)), (" <", (" ", 1)),
    ("</bigmodel>", ("", 11)), ("x</bigmodel>\n", ("x", 11)), ("<b", None), (">", None), ("bigmodel", None), ("", None),
])
def test_which_predicted_tokens_start_the_closing_tag(text, expected):
    assert close_start_of(text) == expected


def test_hand_back_keeps_the_lead_only_where_the_big_model_wrote_it(txt):
    codec = TagCodec(txt, tag_ids(txt))
    chunk = one_token_each(txt, "5", ".", "A", "B")
    assert codec.hand_back(chunk, 0, ".") == 2  # the small model would write '.</bigmodel>'; the big model wrote '.'
    assert codec.hand_back(chunk, 1, ".") == 2  # it did not: the lead is dropped
    assert codec.hand_back(chunk, 0, "") == 1


# -- scripted traces on transformers -------------------------------------------------------------------------------
def expand(tokenizer, script) -> list:
    """Script items in ``tokenizer``'s tokens: text is encoded, ``tags.OPEN`` is the tag's tokens, "EOS" the EOS id,
    ints stay, ``("span", n)`` stays (the big model writes n tokens, then the small model closes the span), and so
    does ``("write", written, kept)`` (the small model writes ``written``; its context then holds either that or
    ``kept``, what the loop keeps of a merged tag)."""
    out = []
    for item in script:
        if isinstance(item, int | tuple):
            out.append(item)
        elif item == tags.OPEN:
            out += tag_ids(tokenizer).open_seq
        elif item == "EOS":
            out.append(tokenizer.eos_token_id)
        else:
            out += encode_text(tokenizer, item)
    return out


def script_steer(tokenizer, prompt_len: int, script, close: list[int] | None = None):
    """Steer the small model through ``script`` in its own tokens (off the script: its own prediction). After a
    span it writes ``close`` (default: the tag's tokens); its context then holds that or the tag's tokens."""
    items, canonical = expand(tokenizer, script), list(tag_ids(tokenizer).close_seq)
    close = close or canonical

    def steer(ctx):
        gen, i = list(ctx[prompt_len:]), 0
        for item in items:
            if isinstance(item, int):
                item = ("write", [item], [item])
            if item[0] == "span":
                if len(gen) - i < item[1]:
                    return None  # inside the span: the small model only reads
                i += item[1]
                item = ("write", close, canonical)
            _, written, kept = item
            held = next((c for c in (written, kept) if gen[i : i + len(c)] == c), None)
            if held is None:  # writing it now (or a probe is): its next token
                rest = gen[i:]
                return written[len(rest)] if rest == written[: len(rest)] else None
            i += len(held)
        return None

    return steer


def run_script(weights, tokenizer, script, cfg: DecodeConfig, policy="split", close=None, big_steer=None) -> Trace:
    p_len = len(encode_text(tokenizer, build_prompt(tokenizer, Q, "small")))
    small = SteeredHFBackend(weights[0], tokenizer, steer=script_steer(tokenizer, p_len, script, close))
    big = SteeredHFBackend(weights[1], tokenizer, steer=big_steer) if big_steer else HFBackend(weights[1], tokenizer)
    return decode(Q, small, big, policy, cfg)


def handoff_view(trace: Trace) -> dict:
    """What must not depend on how the tags are written."""
    return {
        "text": trace.text, "finish": trace.finish, "handoffs": trace.handoffs, "rejected": trace.rejected_requests,
        "segments": [(s.model, s.finish, s.text) for s in trace.segments],
        "big": [(s.token_ids, s.prefill_tokens) for s in trace.segments if s.model == "big"],  # take-backs, catch-ups
        "char_fraction": trace.offload_char_fraction,
        "events": [(e["kind"], e["model"], e.get("tag")) for e in trace.events if e["kind"] != "takeback_probe"],
    }


SCRIPT = ["A: 4+1=5\n", tags.OPEN, ("span", 6), "C: 7+3=0\n", tags.OPEN, ("span", 3), "D: 1", "EOS"]


@pytest.mark.parametrize("takeback", ["greedy", "threshold"])
def test_text_tags_give_the_same_generation_and_handoffs_as_token_tags_on_hf(weights, tok, txt, takeback):
    cfg = DecodeConfig(max_new_tokens=80, big_chunk_tokens=4, takeback=takeback)
    want, got = run_script(weights, tok, SCRIPT, cfg), run_script(weights, txt, SCRIPT, cfg)
    assert handoff_view(got) == handoff_view(want)
    assert got.handoffs == 2 and [len(s.token_ids) for s in got.segments if s.model == "big"] == [6, 3]
    assert got.finish == "eos" and tags.check(got.text).balanced
    assert got.tokens("small") == want.tokens("small") + 2 * (3 - 1 + 4 - 1)  # the tags' tokens count as small ones
    probes = [e for e in got.events if e["kind"] == "takeback_probe"]
    assert sum(e["confirmed"] for e in probes) == 2 and not any(e["kind"] == "takeback_probe" for e in want.events)


def test_merged_tag_edges_are_cut_at_the_tag_and_spans_match_token_tags(weights, tok, txt):
    """The small model writes '.<' 'bigmodel' '>..' and hands back with '.<' '/' 'bigmodel' '>': its session ends
    where the tag ends ('..' dropped), the '.' before the tag is its own text, and the spans are token tags' spans."""
    opened = ("write", one_token_each(txt, ".<", "bigmodel", ">.."), one_token_each(txt, ".", "<", "bigmodel", ">"))
    merged = ["A: 4+1=5", opened, ("span", 5), "C: 1", "EOS"]
    close = one_token_each(txt, ".<", "/", "bigmodel", ">")
    cfg = DecodeConfig(max_new_tokens=60, big_chunk_tokens=8)
    got = run_script(weights, txt, merged, cfg, close=close)
    want = run_script(weights, tok, ["A: 4+1=5.", tags.OPEN, ("span", 5), "C: 1", "EOS"], cfg)
    first = got.segments[0]
    assert first.text == "A: 4+1=5." + tags.OPEN and first.discarded_tokens == 3
    assert list(first.token_ids[-4:]) == encode_text(txt, ".") + list(tag_ids(txt).open_seq)
    big_text = got.segments[1].text
    assert got.text == "A: 4+1=5." + tags.OPEN + big_text + tags.CLOSE + "C: 1"  # the lead of '.</' is dropped
    assert handoff_view(got) == handoff_view(want)


def test_refused_text_request_is_removed_like_a_token_one(weights, tok, txt):
    """Refused, the tag's tokens leave the context and its first token is banned there; the small model goes on
    (by itself: off the script, so with its own prompt, which differs with the tokenizer: only the shape compares)."""
    cfg = DecodeConfig(max_new_tokens=30)
    want = run_script(weights, tok, SCRIPT, cfg, Split(reject_probability=1.0))
    got = run_script(weights, txt, SCRIPT, cfg, Split(reject_probability=1.0))
    kept = encode_text(txt, "A: 4+1=5\n")
    for trace, tokenizer in ((got, txt), (want, tok)):
        assert trace.rejected_requests == 1 and trace.handoffs == 0 and trace.total_tokens == 30
        assert tags.OPEN not in trace.text and list(trace.segments[0].token_ids[: len(kept)]) == kept
        assert trace.segments[0].token_ids[len(kept)] != tag_ids(tokenizer).open_seq[0]  # banned where refused
        assert trace.events == ({"kind": "rejected_request", "model": "small", "at_token": len(kept)},)


@pytest.mark.parametrize("budget,handoffs", [(1.0, 2), (0.3, 1), (0.0, 0)])
def test_offload_budget_refuses_text_requests_as_token_ones(weights, tok, txt, budget, handoffs):
    script = ["A: 4+", tags.OPEN, ("span", 10), "B: 3", tags.OPEN, ("span", 4), "C: 1", "EOS"]
    cfg = DecodeConfig(max_new_tokens=60, big_chunk_tokens=4)
    want = run_script(weights, tok, script, cfg, Split(max_offload_fraction=budget))
    got = run_script(weights, txt, script, cfg, Split(max_offload_fraction=budget))
    assert got.handoffs == want.handoffs == handoffs and got.rejected_requests == want.rejected_requests
    assert [s.text for s in got.segments if s.model == "big"] == [s.text for s in want.segments if s.model == "big"]


def test_stray_text_closer_from_small_is_dropped_and_recorded(weights, tok, txt):
    cfg = DecodeConfig(max_new_tokens=12)
    kept = encode_text(txt, "A: 4")
    got = run_script(weights, txt, ["A: 4", *tag_ids(txt).close_seq], cfg)  # outside a span
    want = run_script(weights, tok, ["A: 4", tag_ids(tok).close], cfg)
    for trace, tokenizer in ((got, txt), (want, tok)):
        assert tags.CLOSE not in trace.text and trace.total_tokens == 12
        assert list(trace.segments[0].token_ids[: len(kept) + 1]) != kept + [tag_ids(tokenizer).close_seq[0]]
        event = trace.events[0]
        assert (event["kind"], event["tag"], event["at_token"]) == ("dropped_tag", tags.CLOSE, len(kept))
        assert event["token"] == tag_ids(tokenizer).close_seq[0]
    assert got.segments[0].discarded_tokens == len(tag_ids(txt).close_seq) and want.segments[0].discarded_tokens == 1


def test_text_tags_written_by_big_are_dropped_like_token_ones(weights, tok, txt):
    def big_steer_for(tokenizer):
        p_big = len(encode_text(tokenizer, build_prompt(tokenizer, Q, "big")))
        seq = tag_ids(tokenizer).open_seq
        at = p_big + len(encode_text(tokenizer, "A: 4+1=5\n")) + 2  # the third token of the span

        def steer(ctx):
            k = len(ctx) - at
            return seq[k] if 0 <= k < len(seq) and list(ctx[at:]) == list(seq[:k]) else None
        return steer

    script = ["A: 4+1=5\n", tags.OPEN, ("span", 6), "C: 1", "EOS"]
    cfg = DecodeConfig(max_new_tokens=60, big_chunk_tokens=8)
    want = run_script(weights, tok, script, cfg, big_steer=big_steer_for(tok))
    got = run_script(weights, txt, script, cfg, big_steer=big_steer_for(txt))
    assert handoff_view(got) == handoff_view(want)
    assert ("dropped_tag", "big") in {(e["kind"], e["model"]) for e in got.events}


def test_total_cap_inside_a_span_keeps_room_for_the_closing_tag_s_tokens(weights, txt):
    trace = run_script(weights, txt, ["A: 4+", tags.OPEN, ("span", 100)], DecodeConfig(max_new_tokens=20,
                                                                                          big_chunk_tokens=4))
    close = len(tag_ids(txt).close_seq)
    assert trace.finish == "length" and trace.total_tokens == 20 - close and trace.text.endswith(tags.CLOSE)
    assert tags.check(trace.text).balanced


def test_offload_cap_closes_the_span_with_the_tag_s_tokens(weights, txt):
    trace = run_script(weights, txt, ["A: 4+", tags.OPEN, ("span", 100)],
                       DecodeConfig(max_new_tokens=40, big_chunk_tokens=4, max_offload_tokens=10))
    span, after = trace.segments[1], trace.segments[2]
    assert (span.finish, len(span.token_ids)) == ("offload_cap", 10)
    assert list(after.token_ids[:4]) == list(tag_ids(txt).close_seq) and after.text.startswith(tags.CLOSE)
    assert tags.check(trace.text).balanced


def test_text_mode_over_single_tag_tokens_equals_token_mode(dirs):
    """``tags="text"`` on a tokenizer with tag tokens: each tag's text is one token, so the generation is the same;
    only a predicted token that may begin the tag as text (' <') costs a probe, which rejects it."""
    small, big = HFBackend.load(str(dirs["small"])), HFBackend.load(str(dirs["big"]))
    base = {"max_new_tokens": 80, "big_chunk_tokens": 8}
    want = decode_many(QUESTIONS, small, big, "split", DecodeConfig(**base, tags="token"), progress=False)
    got = decode_many(QUESTIONS, small, big, "split", DecodeConfig(**base, tags="text"), progress=False)

    def shape(traces):
        return [([(s.model, s.token_ids, s.finish, s.prefill_tokens, s.decode_tokens) for s in t.segments], t.text,
                 [e for e in t.events if e["kind"] != "takeback_probe"]) for t in traces]

    assert shape(got) == shape(want) and sum(t.handoffs for t in got) > 0
    probes = [e for t in got for e in t.events if e["kind"] == "takeback_probe"]
    assert not any(e["confirmed"] for e in probes)  # the real closers are whole tokens: decided in the pass


# -- the same on vLLM: scripted (bigram) models ------------------------------------------------------------------
@pytest.fixture(scope="module")
def bigram(tok, txt, tmp_path_factory):
    """Bigram models scripting: A B C D . <bigmodel> (the big model: K M N …) </bigmodel> E F G H EOS.

    Token tags: D → '.' → <bigmodel>; after N (the big model's third token) </bigmodel>; then E.
    Text tags: D → '.<' → 'bigmodel' → '>..' (merged edges); after N '<' → '/' → 'bigmodel'; after '>' E.
    After K (the big model's first token) the small model predicts ' <': a candidate start that its probe rejects.
    The big model continues from '.' (what it reads of the small text); a tag leaking into its view changes that.
    Text tags, refused: after D the small model would next open with ' <' 'bigmodel' '>..', then write E."""
    a, b, c, d, e, f, g, h = one_token_each(tok, "A", "B", "C", "D", "E", "F", "G", "H")
    cycle = one_token_each(tok, "K", "M", "N", "P", "Q", "R", "S", "T", "W", "Y")
    dot, dot_lt, lt, slash, bigmodel, gt, gt_dots, sp_lt, leak = one_token_each(
        txt, ".", ".<", "<", "/", "bigmodel", ">", ">..", " <", "Z")
    open_id, close_id, eos = tag_ids(tok).open, tag_ids(tok).close, tok.eos_token_id
    common = {a: b, b: c, c: d, e: f, f: g, g: h, h: eos, cycle[0]: sp_lt}
    small = {
        "token": {**common, d: dot, dot: open_id, cycle[2]: close_id, close_id: e},
        "text": {**common, d: (dot_lt, sp_lt, e), dot_lt: bigmodel, sp_lt: bigmodel, lt: slash, slash: bigmodel,
                 bigmodel: gt_dots, gt: e, cycle[2]: lt},
    }
    big = {dot: cycle[0], **dict(zip(cycle, cycle[1:] + cycle[:1], strict=True)), gt: leak, bigmodel: leak, lt: leak}
    vocab = len(tok)
    out = {m: build_bigram_model(vocab, small[m], a, eos) for m in small} | {"big": build_bigram_model(vocab, big, cycle[0], eos)}
    root = tmp_path_factory.mktemp("bigram")
    for name in ("text", "big"):
        out[name].save_pretrained(root / name)
        txt.save_pretrained(root / name)
    out["dirs"] = {"text": root / "text", "big": root / "big"}
    return out


BIGRAM_TEXT = "ABCD." + tags.OPEN + "KMN" + tags.CLOSE + "EFGH"


def bigram_hf(bigram, tok, txt, mode: str):
    tokenizer = tok if mode == "token" else txt
    return HFBackend(bigram[mode], tokenizer), HFBackend(bigram["big"], tokenizer)


def test_bigram_script_on_hf_token_and_text_tags(bigram, tok, txt):
    cfg = DecodeConfig(max_new_tokens=60, big_chunk_tokens=8, max_offload_tokens=24)
    want = decode(Q, *bigram_hf(bigram, tok, txt, "token"), "split", cfg)
    got = decode(Q, *bigram_hf(bigram, tok, txt, "text"), "split", cfg)
    assert want.text == got.text == BIGRAM_TEXT and handoff_view(got) == handoff_view(want)
    assert [(e["position"], e["confirmed"]) for e in got.events if e["kind"] == "takeback_probe"] == \
        [(1, False), (3, True)]
    assert (want.tokens("small"), got.tokens("small")) == (11, 16)
    fast = decode(Q, *bigram_hf(bigram, tok, txt, "text"), "split", DecodeConfig(
        max_new_tokens=60, big_chunk_tokens=8, text_takeback="first_token"))
    assert fast.text == "ABCD." + tags.OPEN + "K" + tags.CLOSE + "EFGH"  # ' <' after K decides: no probe
    assert not [e for e in fast.events if e["kind"] == "takeback_probe"]
    reference = decode(Q, *bigram_hf(bigram, tok, txt, "text"), "split", DecodeConfig(
        max_new_tokens=60, big_chunk_tokens=8, reference=True))  # the released code's probes read text anyway
    assert reference.text == BIGRAM_TEXT
    refused = decode(Q, *bigram_hf(bigram, tok, txt, "text"), Split(reject_probability=1.0), cfg)
    assert_refused_twice_at_one_position(refused, txt)


def assert_refused_twice_at_one_position(trace: Trace, txt) -> None:
    """'.<' is refused, then ' <' at the same position (both banned there): the text goes on with E."""
    assert trace.text == "ABCDEFGH" and trace.rejected_requests == 2 and trace.handoffs == 0
    assert [e["at_token"] for e in trace.events] == [4, 4]
    assert trace.segments[0].decode_tokens == 4 + 3 + 3 + 5  # each tag stopped where written, on every engine


@pytest.mark.slow
def test_vllm_text_tags_give_the_token_tags_trace(bigram, tok, txt):
    """Two engines (the text-tag small model and the big model), all problems stepped together."""
    vsmall, vbig = shared_vllm(str(bigram["dirs"]["text"])), shared_vllm(str(bigram["dirs"]["big"]))
    assert tag_ids(vsmall.tokenizer).mode == "text"
    for extra in ({}, {"takeback": "threshold"}, {"text_takeback": "first_token"}):
        cfg = DecodeConfig(max_new_tokens=60, big_chunk_tokens=8, max_offload_tokens=24, **extra)
        want_token = decode(Q, *bigram_hf(bigram, tok, txt, "token"), "split", cfg)
        want_text = decode(Q, *bigram_hf(bigram, tok, txt, "text"), "split", cfg)
        before = vsmall.counters.probes
        got = decode_many(QUESTIONS, vsmall, vbig, "split", cfg, progress=False)
        for trace in got:  # a bigram model's generation does not depend on the question
            assert [s.token_ids for s in trace.segments] == [s.token_ids for s in want_text.segments], extra
            assert trace.events == want_text.events and trace.text == want_text.text
        if extra.get("text_takeback") != "first_token":
            assert got[0].text == BIGRAM_TEXT and handoff_view(got[0]) == handoff_view(want_token)
        probes = {(): 2, ("takeback",): 1, ("text_takeback",): 0}[tuple(extra)]
        assert vsmall.counters.probes - before == probes * len(QUESTIONS)
    refused = decode_many(QUESTIONS, vsmall, vbig, Split(reject_probability=1.0), cfg, progress=False)
    for trace in refused:  # the second tag begins in a first token settled apart (banned '.<'): stopped anyway
        assert_refused_twice_at_one_position(trace, txt)
    first = next(s for s in got[0].segments if s.model == "big")
    assert first.text == "K"  # first_token: the ' <' after K hands back (its lead ' ' is not what the big model wrote)
