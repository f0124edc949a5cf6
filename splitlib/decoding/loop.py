"""The loop itself: one problem's state machine (``ProblemRun.steps``), a generator that yields compute ops
(``Decode``/``Score``) and receives their results; ``splitlib.decoding`` drives it."""

from __future__ import annotations

import logging
import time
from collections.abc import Generator, Sequence
from dataclasses import dataclass, field

from splitlib import tags
from splitlib.backends.base import Backend, Counters, Decode, Done, Op, Score
from splitlib.decoding.config import DecodeConfig
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
        self.tags = {m: tag_ids(t) for m, t in tokenizers.items()}
        self.bridge = make_bridge(tokenizers.get("small", tokenizers.get("big")), tokenizers.get("big", tokenizers.get("small")))
        self.segments: list[Segment] = []
        self.events: list[dict] = []
        self.kept = {"small": 0, "big": 0}
        self.requests = self.handoffs = self.rejected = 0
        self.close_next: list[int] = []  # </bigmodel> that opens the next small segment
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

    def write(self, model: Model, seg: _Seg, n: int, drop: frozenset[int], request: int | None,
              ban: frozenset[int] = frozenset()):
        """Decode up to ``n`` kept tokens; ``ban`` may not be the first one.

        Tags in ``drop`` are removed and banned at the position where they were written. Returns ``(ids, end)``:
        ``end`` is "eos" (EOS read, not returned), "request" (``request`` read, not returned, still in the
        session) or "limit"."""
        s, kept = self.session(model), []
        stops = drop | ({request} if request is not None else frozenset())
        while len(kept) < n:
            done = yield Decode(s, n - len(kept), stops, self.sampling[model], ban)
            seg.wall_s += done.wall_s
            got = done.value
            if not got:
                break
            if got[-1] in drop:
                s.rollback(1)
                seg.discarded += 1
                ban = (ban if len(got) == 1 else frozenset()) | {got[-1]}  # same position: keep earlier bans
                kept += got[:-1]
                self.event("dropped_tag", model, token=got[-1], at_token=self.generated() + len(kept))
                continue
            ban = frozenset()
            if got[-1] in self.backends[model].eos_ids:
                return kept + got[:-1], "eos"
            if got[-1] == request:
                return kept + got[:-1], "request"
            kept += got
        return kept, "limit"

    def write_turn(self, turn: Turn):
        """One model writes (untagged, or the small model with requests) until its turn ends."""
        seg = self.begin(turn.model)
        s = self.session(turn.model)
        s.extend(self.bridge.take(turn.model))
        if turn.model == "small" and self.close_next:
            seg.ids, self.close_next = self.close_next, []  # counted when the span was closed
        first = len(seg.ids)
        own_tags = self.tags[turn.model]
        request = own_tags.open if turn.requests else None
        drop = own_tags.both - {request} if turn.drop_tags else frozenset()
        ban = frozenset()
        while True:
            turn_left = None if turn.max_tokens is None else turn.max_tokens - (len(seg.ids) - first)
            n = self.limit(turn.model, turn_left)
            if n == 0:
                return self.end_turn(seg, "chunk" if turn_left == 0 else "length")
            ids, end = yield from self.write(turn.model, seg, n, drop, request, ban)
            self.commit(seg, ids)
            ban = frozenset()
            if end == "eos":
                return self.end_turn(seg, "eos")
            if end == "request":
                if not self.policy_grants(s):
                    ban = frozenset({request})  # refused: the small model goes on without it
                    continue
                self.commit(seg, [request])
                self.handoffs += 1
                self.end_turn(seg, "handoff")
                return (yield from self.offload())

    def end_turn(self, seg: _Seg, finish: Finish) -> None:
        self.close(seg, finish)
        other = "big" if seg.model == "small" else "small"
        self.bridge.push(other, seg.ids)

    def policy_grants(self, s) -> bool:
        """Ask the policy about a <bigmodel> request; a refused one is removed from the small model's context."""
        self.requests += 1
        if self.policy.accept(self.progress()):
            return True
        self.rejected += 1
        s.rollback(1)
        self.event("rejected_request", "small")
        return False

    # -- the offload ----------------------------------------------------------------------------------
    def offload(self):
        """The big model writes a span, chunk by chunk, until the small model takes it back or a cap/EOS."""
        seg, span, finish = self.begin("big"), 0, None
        b, s = self.session("big"), self.session("small")
        while finish is None:
            b.extend(self.bridge.take("big"))
            cap_left = self.cfg.max_offload_tokens - span
            # one token is kept back for the </bigmodel> that closes the span, in the cap and the small context
            n = min(self.cfg.big_chunk_tokens, self.limit("big", cap_left, reserve=1), s.room() - 1)
            if n <= 0:
                finish = "offload_cap" if cap_left == 0 else "length"
                break
            base = len(b)
            chunk, end = yield from self.write("big", seg, n, self.tags["big"].both, None)
            small_chunk = self.bridge.to_small(chunk)
            overflow = len(small_chunk) > s.room() - 1  # another tokenizer may need more tokens for the same text
            small_chunk = small_chunk[: s.room() - 1]
            cut = yield from self.check(seg, s, small_chunk)
            kept = self.bridge.cut(chunk, small_chunk, len(small_chunk) if cut is None else cut)
            b.rollback(len(b) - base - kept.keep)  # the discarded tail (and an EOS after it)
            seg.discarded += len(chunk) - kept.written
            if cut is not None:
                s.rollback(len(small_chunk) - cut)
                finish = "takeback"
            elif end == "eos":
                finish = "eos"
            elif overflow or not chunk:
                finish = "length"
            self.commit(seg, chunk[: kept.written], kept.text)
            span += kept.written
        self.close(seg, finish)
        if finish in ("takeback", "offload_cap"):
            close = self.tags["small"].close
            s.extend([close])
            self.close_next = [close]
            self.kept["small"] += 1
        else:
            self.span_open = True

    def check(self, seg: _Seg, s, chunk: list[int]):
        """Where the small model takes control back in ``chunk``: a count of tokens to keep, or None."""
        if not chunk:
            return None
        seg.check += len(chunk)
        if self.cfg.reference:
            return (yield from self.probe(seg, s, chunk))
        close = self.tags["small"].close
        threshold = self.cfg.takeback == "threshold"
        floor = self.cfg.takeback_threshold if threshold else 0.0
        done = yield Score(s, tuple(chunk), prob_of=close if threshold else None, prob_floor=floor)
        seg.wall_s += done.wall_s
        scored = done.value
        hits = [p >= floor for p in scored.prob] if threshold else [t == close for t in scored.top1]
        return next((i + 1 for i, hit in enumerate(hits) if hit), None)

    def probe(self, seg: _Seg, s, chunk: list[int]):
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
