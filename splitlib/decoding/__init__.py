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

The loop is a generator (``loop.ProblemRun.steps``) that yields compute ops (``Decode``/``Score``) and receives their
results, so ``decode`` runs one problem and ``decode_many`` steps many problems' loops together on batching
engines. ``reference=True`` replaces the one-pass check by the released code's probes (PAPER_FACTS §2): an
8-token greedy continuation at every prefix of the chunk, handing back at the first prefix whose continuation
contains ``</big`` (without the reference bugs).
"""

from __future__ import annotations

from collections.abc import Generator, Sequence

from tqdm.auto import tqdm

from splitlib import prompts, tags
from splitlib.backends.base import Backend, Done, Op, check_prompt
from splitlib.decoding.config import DecodeConfig, RolePrompts, Takeback
from splitlib.decoding.loop import ProblemRun
from splitlib.handoff import encode_text, tag_ids
from splitlib.policies import Policy, make_policy
from splitlib.trace import Trace

__all__ = ["DecodeConfig", "RolePrompts", "Takeback", "decode", "decode_many"]

DEFAULT_CONFIG = DecodeConfig()  # frozen: safe to share as a default


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
    return ProblemRun(prompt_ids, backends, policy, cfg, key or _key(item)).steps()


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
           policy: Policy | str = "split", cfg: DecodeConfig = DEFAULT_CONFIG, key: str | None = None) -> Trace:
    """Generate an answer to one question cooperatively; returns the Trace (no I/O)."""
    return _drive(_start(question_or_prompt, small, big, policy, cfg, key))


def decode_many(problems: Sequence, small: Backend | None, big: Backend | None, policy: Policy | str = "split",
                cfg: DecodeConfig = DEFAULT_CONFIG, progress: bool = True) -> list[Trace]:
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
