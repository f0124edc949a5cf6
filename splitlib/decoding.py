"""The cooperative decoding loop (DESIGN.md, "The cooperative decoding loop"): one loop, policies as parameters.

1. The small model decodes until it writes ``<bigmodel>``, EOS, or the total cap.
2. On a granted ``<bigmodel>`` the big model catches up on every token it has not seen (its own prompt, tags and
   hint removed) in one prefill that reuses its KV cache, then decodes a chunk.
3. The small model reads the chunk in ONE forward pass; the first position where it predicts ``</bigmodel>``
   (greedy, or P >= a threshold) ends the offload: the rest of the chunk is discarded (both caches rolled back),
   ``</bigmodel>`` is appended to the small model's context and it resumes.
4. A per-offload cap closes the span; the total cap ends generation; EOS from either model ends generation.
5. The result is a ``Trace`` of the generation only (never the prompt).

Bad input, defined: a tag written where the protocol has none (the small model's ``</bigmodel>`` outside a span,
any tag from the big model, any tag in a random switch) is removed, banned at that position, and recorded in
``Trace.events``; EOS or the total cap inside a span ends generation and the record closes the span.

The loop is a generator (``_Run.steps``) that yields compute ops (``Decode``/``Score``) and receives their
results, so ``decode`` runs one problem and ``decode_many`` steps many problems' loops together on batching
engines. ``reference=True`` replaces the one-pass check by the released code's probes (PAPER_FACTS §2): an
8-token greedy continuation at every prefix of the chunk, handing back at the first prefix whose continuation
contains ``</big`` (without the reference bugs).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Generator, Sequence
from dataclasses import dataclass, field
from typing import Literal

from tqdm.auto import tqdm

from splitlib import prompts, tags
from splitlib.backends.base import GREEDY, Backend, Counters, Decode, Done, Op, Sampling, Score, check_prompt
from splitlib.handoff import decode_text, encode_text, make_bridge, tag_ids
from splitlib.policies import Policy, Progress, Turn, derive_seed, make_policy
from splitlib.trace import Finish, Model, Segment, Trace

log = logging.getLogger(__name__)

Takeback = Literal["greedy", "threshold"]


@dataclass(frozen=True)
class DecodeConfig:
    max_new_tokens: int = 16384  # total generated tokens (both models, tags included; the prompt does not count)
    big_chunk_tokens: int = 64  # big-model tokens per chunk before the small model checks them
    max_offload_tokens: int = 512  # per-offload cap: the span is closed with a forced </bigmodel>
    takeback: Takeback = "greedy"  # greedy: argmax is </bigmodel>; threshold: P(</bigmodel>) >= takeback_threshold
    takeback_threshold: float = 0.5
    temperature: float = 0.0  # 0 = greedy decoding (both models)
    top_p: float = 1.0
    seed: int = 0  # sampling seed of the run; per-problem seeds derive from it
    reference: bool = False  # released-code check: probe continuations at every prefix of the chunk
    probe_tokens: int = 8  # reference: tokens per probe continuation

    def __post_init__(self) -> None:
        for name in ("max_new_tokens", "big_chunk_tokens", "max_offload_tokens", "probe_tokens"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)}: expected a positive number of tokens")
        if self.takeback not in ("greedy", "threshold"):
            raise ValueError(f"takeback={self.takeback!r}: expected 'greedy' or 'threshold'")
        if not 0 < self.takeback_threshold <= 1:
            raise ValueError(f"takeback_threshold={self.takeback_threshold}: expected 0 < threshold <= 1")
        Sampling(self.temperature, self.top_p)  # validates both

    @classmethod
    def reference_preset(cls, official: bool = True, **overrides) -> DecodeConfig:
        """The released code: 32-token chunks and a 288-token cap (official results) or 64/576 (code default)."""
        chunk, cap = (32, 288) if official else (64, 576)
        return cls(**{"big_chunk_tokens": chunk, "max_offload_tokens": cap, "reference": True, **overrides})


@dataclass(frozen=True)
class RolePrompts:
    """Ready prompt texts per role (instead of a question)."""

    small: str
    big: str


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


class _Run:
    """One problem's loop state. ``steps()`` is the generator the drivers run."""

    def __init__(self, prompt_ids: dict[str, list[int]], backends: dict[str, Backend | None], policy: Policy,
                 cfg: DecodeConfig, key: str) -> None:
        self.cfg, self.policy_name, self.prompt_ids = cfg, policy.name, prompt_ids
        self.backends = backends
        self.policy = policy.begin(key)
        self.sampling = {m: Sampling(cfg.temperature, cfg.top_p, derive_seed(cfg.seed, key, m)) for m in backends}
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


# -- public API -------------------------------------------------------------------------------------------
def _prompt_texts(item, backends: dict[str, Backend | None]) -> dict[str, str]:
    if isinstance(item, RolePrompts):
        return {"small": item.small, "big": item.big}
    question = getattr(item, "question", item)
    return {m: prompts.build_prompt(b.tokenizer, question, m) for m, b in backends.items() if b is not None}


def _key(item) -> str:
    if isinstance(item, RolePrompts):
        return item.small
    return str(getattr(item, "id", None) or getattr(item, "question", item))


def _start(item, small: Backend | None, big: Backend | None, policy: Policy | str, cfg: DecodeConfig,
           key: str | None = None) -> Generator[Op, Done, Trace]:
    """Check everything that can be checked before decoding, then return the problem's loop."""
    policy = make_policy(policy) if isinstance(policy, str) else policy
    given = {"small": small, "big": big}
    missing = [m for m in policy.models if given[m] is None]
    if missing:
        raise ValueError(f"policy {policy.name!r} needs the {' and '.join(missing)} model")
    backends = {m: given[m] for m in sorted(policy.models)}
    texts = _prompt_texts(item, backends)
    prompt_ids = {m: encode_text(b.tokenizer, texts[m]) for m, b in backends.items()}
    for m, b in backends.items():
        check_prompt(b, prompt_ids[m], m)
    if policy.requests and None in (tag_ids(small.tokenizer).open, tag_ids(small.tokenizer).close):
        raise ValueError(f"the small model's tokenizer must have {tags.OPEN} and {tags.CLOSE} as single tokens "
                         "(add them as non-special added tokens, see splitlib.toy.tokenizer)")
    return _Run(prompt_ids, backends, policy, cfg, key or _key(item)).steps()


def _drive(loop: Generator[Op, Done, Trace]) -> Trace:
    """Run one problem's loop, one op at a time."""
    try:
        op = next(loop)
        while True:
            backend = op.session.backend
            backend.submit(op)
            done = []
            while not done:
                done = backend.poll()
            op = loop.send(done[0])
    except StopIteration as stop:
        return stop.value


def decode(question_or_prompt: str | RolePrompts, small: Backend | None, big: Backend | None,
           policy: Policy | str = "split", cfg: DecodeConfig = DecodeConfig(), key: str | None = None) -> Trace:
    """Generate an answer to one question cooperatively; returns the Trace (no I/O)."""
    return _drive(_start(question_or_prompt, small, big, policy, cfg, key))


def decode_many(problems: Sequence, small: Backend | None, big: Backend | None, policy: Policy | str = "split",
                cfg: DecodeConfig = DecodeConfig(), progress: bool = True) -> list[Trace]:
    """Decode many problems (questions, ``RolePrompts`` or objects with ``.question``/``.id``), in order.

    On engines that batch (vLLM, a server) every active problem's next op runs in the same engine steps;
    otherwise (transformers) problems run one after another."""
    loops = [_start(p, small, big, policy, cfg) for p in problems]
    backends = [b for b in {id(b): b for b in (small, big) if b is not None}.values()]
    bar = tqdm(total=len(loops), desc="decode", disable=not progress)
    try:
        if all(b.concurrent for b in backends):
            return _drive_together(loops, backends, bar)
        traces = []
        for loop in loops:
            traces.append(_drive(loop))
            bar.update(1)
        return traces
    finally:
        bar.close()


def _drive_together(loops: list, backends: list[Backend], bar) -> list[Trace]:
    """Step every problem's loop; each poll advances all ops in flight on an engine."""
    traces: list[Trace | None] = [None] * len(loops)
    waiting: dict[int, int] = {}

    def advance(i: int, done: Done | None) -> None:
        try:
            op = loops[i].send(done)
        except StopIteration as stop:
            traces[i] = stop.value
            bar.update(1)
            return
        waiting[id(op)] = i
        op.session.backend.submit(op)

    for i in range(len(loops)):
        advance(i, None)
    while waiting:
        for backend in backends:
            for done in backend.poll():
                advance(waiting.pop(id(done.op)), done)
    return traces
