"""The loop itself: one problem's state machine (``ProblemRun.steps``), a generator that yields compute ops
(``Decode``/``Score``) and receives their results; ``splitlib.decoding`` drives it.

The loop speaks of tags (``tags.OPEN``/``tags.CLOSE``); each model's ``tagging.TagCodec`` says how that model writes
them (one token, or text) — one loop for both kinds of tags."""

from __future__ import annotations

import logging
import time
from collections.abc import Generator, Sequence
from dataclasses import dataclass, field

from splitlib import tags
from splitlib.backends.base import Backend, Counters, Decode, Done, Op, Score
from splitlib.decoding.config import DecodeConfig
from splitlib.decoding.tagging import Hit, TagCodec
from splitlib.handoff import decode_text, make_bridge, tag_ids
from splitlib.policies import Policy, Progress, Turn
from splitlib.sampling import GREEDY, Sampling
from splitlib.seeds import derive_engine_seed
from splitlib.trace import Finish, Model, Segment, Trace

log = logging.getLogger(__name__)


@dataclass
class _Seg:
    """A segment being written."""

    model: Model
    ids: list[int] = field(default_factory=list)
    texts: list[str] | None = None  # kept text per commit, when it is not the decode of ids (cross-tokenizer)
    discarded: int = 0
    check: int = 0
    wall_s: float = 0.0
    start: dict[str, Counters] = field(default_factory=dict)


class ProblemRun:
    """One problem's loop state. ``steps()`` is the generator the drivers run."""

    def __init__(self, prompt_ids: dict[str, list[int]], backends: dict[str, Backend | None], policy: Policy,
                 cfg: DecodeConfig, key: str) -> None:
        self.cfg, self.policy_name, self.prompt_ids = cfg, policy.name, prompt_ids
        self.backends = backends
        self.policy = policy.begin(key)
        self.sampling = {m: Sampling(cfg.temperature, cfg.top_p, seed=derive_engine_seed(cfg.seed, key, m))
                         for m in backends}
        self.sessions: dict[str, object] = {}
        tokenizers = {m: b.tokenizer for m, b in backends.items() if b is not None}
        self.tags = {m: TagCodec(t, tag_ids(t, cfg.tags)) for m, t in tokenizers.items()}
        self.bridge = make_bridge(tokenizers.get("small", tokenizers.get("big")), tokenizers.get("big", tokenizers.get("small")),
                                  self.tags["small"].ids if "small" in self.tags else None)
        self.segments: list[Segment] = []
        self.events: list[dict] = []
        self.kept = {"small": 0, "big": 0}
        self.requests = self.handoffs = self.rejected = 0
        self.close_next: list[int] = []  # the </bigmodel> tokens that open the next small segment
        self.span_open = False
        self.finish: Finish | None = None

    # -- bookkeeping ----------------------------------------------------------------------------------
    def session(self, model: Model):
        if model not in self.sessions:
            self.sessions[model] = self.backends[model].open(self.prompt_ids[model])
        return self.sessions[model]

    def progress(self) -> Progress:
        return Progress(self.kept["small"], self.kept["big"], self.requests)

    def generated(self) -> int:
        return self.kept["small"] + self.kept["big"]

    def limit(self, model: Model, turn_left: int | None, reserve: int = 0) -> int:
        """Tokens ``model`` may write now: its turn, the total cap (minus ``reserve``), its context window."""
        room = self.session(model).room()
        left = self.cfg.max_new_tokens - self.generated() - reserve
        return max(0, min(room, left, turn_left if turn_left is not None else left))

    def event(self, kind: str, model: Model, **info) -> None:
        self.events.append({"kind": kind, "model": model, "at_token": self.generated(), **info})
        log.debug("%s by the %s model at token %d %s", kind, model, self.generated(), info or "")

    def begin(self, model: Model) -> _Seg:
        return _Seg(model, start={m: s.counters.copy() for m, s in self.sessions.items()})

    def commit(self, seg: _Seg, ids: Sequence[int], text: str | None = None) -> None:
        seg.ids += ids
        self.kept[seg.model] += len(ids)
        if text is not None:
            seg.texts = (seg.texts or []) + [text]

    def close(self, seg: _Seg, finish: Finish) -> None:
        tok = self.backends[seg.model].tokenizer
        text = "".join(seg.texts) if seg.texts is not None else decode_text(tok, seg.ids)
        used = {m: s.counters.minus(seg.start.get(m, Counters())) for m, s in self.sessions.items()}
        own = used.get(seg.model, Counters())
        self.segments.append(Segment(
            model=seg.model, token_ids=tuple(seg.ids), text=text, prefill_tokens=own.prefill_tokens,
            decode_tokens=own.decode_tokens, discarded_tokens=seg.discarded, check_tokens=seg.check,
            wall_s=seg.wall_s, finish=finish, forward_calls={m: c.forward_calls for m, c in used.items()},
        ))
        if finish in ("eos", "length"):
            self.finish = finish

    # -- the loop -------------------------------------------------------------------------------------
    def steps(self) -> Generator[Op, Done, Trace]:
        t0 = time.perf_counter()
        while self.finish is None:
            turn = self.policy.next_turn(self.progress())
            yield from self.write_turn(turn)
        return self.trace(time.perf_counter() - t0)

    def write(self, model: Model, seg: _Seg, n: int, watch: frozenset[str], request: str | None,
              ban: frozenset[int] = frozenset()):
        """Decode up to ``n`` kept tokens; ``ban`` may not be the first one.

        Tags in ``watch`` (``tags.OPEN``/``tags.CLOSE``) are removed and their first token banned where they were
        written. Returns ``(ids, end, hit)``: ``end`` is "eos" (EOS read, not returned), "request" (the ``request``
        tag was written: ``hit``, whose ``kept`` tokens are in the session, not returned), "full" (a request whose
        re-encoded tag does not fit in ``n``: removed) or "limit"."""
        s, kept, codec = self.session(model), [], self.tags[model]
        watched = watch | ({request} if request is not None else frozenset())
        stop_ids, stop_texts = codec.stops(watched)
        while len(kept) < n:
            done = yield Decode(s, n - len(kept), stop_ids, self.sampling[model], ban, stop_texts)
            seg.wall_s += done.wall_s
            got = done.value
            if not got:
                break
            hit = codec.find(got, watched)
            if hit is None:
                ban = frozenset()
                if got[-1] in self.backends[model].eos_ids:
                    return kept + got[:-1], "eos", None
                kept += got
                continue
            kept += got[: hit.start]
            tail = got[hit.start :]
            if hit.tag == request and len(kept) + len(hit.kept) <= n:
                if tail != hit.kept:  # BPE merged the tag with its neighbours: rewritten from its start token
                    s.rollback(len(tail))
                    s.extend(hit.kept)
                    seg.discarded += len(tail)
                return kept, "request", hit
            s.rollback(len(tail))
            seg.discarded += len(tail)
            if hit.tag == request:
                return kept, "full", None
            ban = (ban if hit.start == 0 else frozenset()) | {hit.ban}  # same position: keep earlier bans
            self.event("dropped_tag", model, token=hit.ban, tag=hit.tag, at_token=self.generated() + len(kept))
        return kept, "limit", None

    def write_turn(self, turn: Turn):
        """One model writes (untagged, or the small model with requests) until its turn ends."""
        seg = self.begin(turn.model)
        s = self.session(turn.model)
        s.extend(self.bridge.take(turn.model))
        if turn.model == "small" and self.close_next:
            seg.ids, self.close_next = self.close_next, []  # counted when the span was closed
        first = len(seg.ids)
        request = tags.OPEN if turn.requests else None
        watch = frozenset(tags.TAGS) - {request} if turn.drop_tags else frozenset()
        ban, ban_at = frozenset(), -1
        while True:
            turn_left = None if turn.max_tokens is None else turn.max_tokens - (len(seg.ids) - first)
            n = self.limit(turn.model, turn_left)
            if n == 0:
                return self.end_turn(seg, "chunk" if turn_left == 0 else "length")
            ids, end, hit = yield from self.write(turn.model, seg, n, watch, request, ban)
            self.commit(seg, ids)
            if end in ("eos", "full"):
                return self.end_turn(seg, "eos" if end == "eos" else "length")
            if end == "request":
                if not self.policy_grants(s, hit):  # refused: the small model goes on without it; bans at one
                    # position add up (a text tag may start with several tokens there: '<', '.<', ' <')
                    ban = (ban if len(s) == ban_at else frozenset()) | {hit.ban}
                    ban_at = len(s)
                    continue
                self.commit(seg, hit.kept)
                self.handoffs += 1
                self.end_turn(seg, "handoff")
                return (yield from self.offload())

    def end_turn(self, seg: _Seg, finish: Finish) -> None:
        self.close(seg, finish)
        other = "big" if seg.model == "small" else "small"
        self.bridge.push(other, seg.ids)

    def policy_grants(self, s, hit: Hit) -> bool:
        """Ask the policy about a <bigmodel> request; a refused one is removed from the small model's context."""
        self.requests += 1
        if self.policy.accept(self.progress()):
            return True
        self.rejected += 1
        s.rollback(len(hit.kept))
        self.event("rejected_request", "small")
        return False

    # -- the offload ----------------------------------------------------------------------------------
    def offload(self):
        """The big model writes a span, chunk by chunk, until the small model takes it back or a cap/EOS."""
        seg, span, finish = self.begin("big"), 0, None
        b, s = self.session("big"), self.session("small")
        close = list(self.tags["small"].ids.close_seq)
        while finish is None:
            b.extend(self.bridge.take("big"))
            cap_left = self.cfg.max_offload_tokens - span
            # room is kept for the </bigmodel> that closes the span (its tokens), in the total cap and the small context
            n = min(self.cfg.big_chunk_tokens, self.limit("big", cap_left, reserve=len(close)), s.room() - len(close))
            if n <= 0:
                finish = "offload_cap" if cap_left == 0 else "length"
                break
            base = len(b)
            chunk, end, _ = yield from self.write("big", seg, n, frozenset(tags.TAGS), None)
            small_chunk = self.bridge.to_small(chunk)
            overflow = len(small_chunk) > s.room() - len(close)  # another tokenizer may need more tokens
            small_chunk = small_chunk[: s.room() - len(close)]
            cut = yield from self.check(seg, s, small_chunk)
            kept = self.bridge.cut(chunk, small_chunk, len(small_chunk) if cut is None else cut)
            b.rollback(len(b) - base - kept.keep)  # the discarded tail (and an EOS after it)
            seg.discarded += len(chunk) - kept.written
            if cut is not None:
                finish = "takeback"
            elif end == "eos":
                finish = "eos"
            elif overflow or not chunk:
                finish = "length"
            self.commit(seg, chunk[: kept.written], kept.text)
            span += kept.written
        self.close(seg, finish)
        if finish in ("takeback", "offload_cap"):
            s.extend(close)
            self.close_next = close
            self.kept["small"] += len(close)
        else:
            self.span_open = True

    # -- the take-back check --------------------------------------------------------------------------
    def check(self, seg: _Seg, s, chunk: list[int]):
        """Where the small model takes control back in ``chunk``: a count of tokens to keep, or None. The small
        session then holds ``chunk[:cut]`` (all of the chunk: None)."""
        if not chunk:
            return None
        seg.check += len(chunk)
        base = len(s)
        if self.cfg.reference:
            cut = yield from self.probe_prefixes(seg, s, chunk)
        else:
            cut = yield from self.score(seg, s, chunk)
        _seek(s, base, chunk, len(chunk) if cut is None else cut)
        return cut

    def score(self, seg: _Seg, s, chunk: list[int]):
        """The one-pass check: the small model reads the chunk in one forward pass (greedy: its argmax after each
        position; threshold: P(the tag's first token) >= the threshold). Token tags are decided there; text tags
        where the pass decides, else by a probe (``text_takeback``)."""
        codec = self.tags["small"]
        first = codec.ids.close_seq[0]  # </bigmodel> (token tags) or its first token (text tags)
        threshold = self.cfg.takeback == "threshold"
        floor = self.cfg.takeback_threshold if threshold else 0.0
        done = yield Score(s, tuple(chunk), prob_of=first if threshold else None, prob_floor=floor)
        seg.wall_s += done.wall_s
        scored = done.value
        starts = [first if p >= floor else None for p in scored.prob] if threshold else list(scored.top1)
        if codec.mode == "token":
            return next((i + 1 for i, t in enumerate(starts) if t == first), None)
        return (yield from self.text_takeback(seg, s, chunk, starts))

    def text_takeback(self, seg: _Seg, s, chunk: list[int], starts: list[int | None]):
        """Text tags: the first position whose predicted token starts </bigmodel> and is confirmed (``tagging``)."""
        codec, base = self.tags["small"], len(s) - len(chunk)
        for p, token in enumerate(starts):
            found = None if token is None else codec.close_start(token)
            if found is None:
                continue
            lead, part = found
            decided = part == len(tags.CLOSE) or self.cfg.text_takeback == "first_token"
            if decided or (yield from self.confirm(seg, s, base, chunk, p, token, lead, part)):
                return codec.hand_back(chunk, p, lead)
        return None

    def confirm(self, seg: _Seg, s, base: int, chunk: list[int], p: int, token: int, lead: str, part: int):
        """A probe: after ``chunk[: p + 1]`` and ``token``, does the small model's greedy continuation (at most the
        tag's remaining characters in tokens; it stops once the tag is written) complete ``lead`` + </bigmodel>?"""
        _seek(s, base, chunk, p + 1)
        if s.room() < 1:
            return False
        s.extend([token], counter="check_tokens")
        done = yield Decode(s, len(tags.CLOSE) - part, frozenset(), GREEDY, frozenset(), (tags.CLOSE,))
        seg.wall_s += done.wall_s
        s.rollback(1 + len(done.value))
        s.count(probes=1)
        text = decode_text(self.backends["small"].tokenizer, [token, *done.value])
        confirmed = text.startswith(lead + tags.CLOSE)
        self.event("takeback_probe", "small", position=p + 1, tokens=1 + len(done.value), confirmed=confirmed)
        return confirmed

    def probe_prefixes(self, seg: _Seg, s, chunk: list[int]):
        """Reference check: a greedy continuation at every prefix (one call each); first one containing '</big'."""
        cut = None
        for i, token in enumerate(chunk):
            s.extend([token], counter="check_tokens")
            done = yield Decode(s, self.cfg.probe_tokens, frozenset(), GREEDY)
            seg.wall_s += done.wall_s
            s.rollback(len(done.value))
            text = decode_text(self.backends["small"].tokenizer, done.value)
            if cut is None and tags.CLOSE[:5] in text:
                cut = i + 1
        return cut

    def trace(self, wall_s: float) -> Trace:
        text = "".join(seg.text for seg in self.segments) + (tags.CLOSE if self.span_open else "")
        return Trace(
            segments=tuple(self.segments), text=text,
            prompt_tokens={m: len(ids) for m, ids in self.prompt_ids.items()},
            handoffs=self.handoffs, rejected_requests=self.rejected, finish=self.finish, wall_s=wall_s,
            policy=self.policy_name, events=tuple(self.events),
        )


def _seek(s, base: int, chunk: Sequence[int], k: int) -> None:
    """Make the session (``base`` tokens before the chunk) hold exactly ``chunk[:k]``; re-read tokens are lazily
    prefilled by the next op and count as check tokens."""
    have = len(s) - base
    if have > k:
        s.rollback(have - k)
    elif have < k:
        s.extend(chunk[have:k], counter="check_tokens")
