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

Tags as single tokens or as text (``DecodeConfig.tags``, ``decoding.tagging``): the project's SFT adds
``<bigmodel>``/``</bigmodel>`` as single tokens; the paper's checkpoints write them as ordinary text, several tokens
each. ``auto`` reads each tokenizer: single tokens where it has both ("token" tags), else text it spells back exactly
("text" tags). With text tags the same loop runs: the small model stops once its decoded text contains
``<bigmodel>`` (its session cut back to where the tag ends), the big model reads the span's context without tags or
hint, and the one-pass check marks each position whose predicted token starts ``</bigmodel>``: a token holding the
whole tag decides there; a shorter start (``<``, ``</``, ``.<``) is confirmed by a short greedy probe, counted in
``Counters.probes`` and as a ``takeback_probe`` event (``text_takeback="first_token"`` takes it without a probe).
The tags count as the small model's text and tokens in both modes (one token each, or their tokens).
"""

from __future__ import annotations

from collections.abc import Generator, Sequence

from splitlib import prompts, tags
from splitlib.backends.base import Backend, Done, Op, check_prompt
from splitlib.decoding import schedule
from splitlib.decoding.config import DecodeConfig, RolePrompts, TagChoice, Takeback, TextTakeback
from splitlib.decoding.loop import ProblemRun
from splitlib.handoff import TagIds, encode_text, tag_ids
from splitlib.policies import Policy, make_policy
from splitlib.progressbar import progress_bar
from splitlib.trace import Trace

__all__ = ["DecodeConfig", "RolePrompts", "TagChoice", "Takeback", "TextTakeback", "decode", "decode_many",
           "small_tags"]

DEFAULT_CONFIG = DecodeConfig()  # frozen: safe to share as a default


# -- public API -------------------------------------------------------------------------------------------
def _prompt_texts(item, backends: dict[str, Backend | None], style: prompts.PromptStyle | None,
                  offloading: bool) -> dict[str, str]:
    if isinstance(item, RolePrompts):
        return {"small": item.small, "big": item.big}
    question = getattr(item, "question", item)
    return {m: prompts.build_prompt(b.tokenizer, question, m, style, offloading)
            for m, b in backends.items() if b is not None}


def _key(item) -> str:
    if isinstance(item, RolePrompts):
        return item.small
    return str(getattr(item, "id", None) or getattr(item, "question", item))


def _start(item, small: Backend | None, big: Backend | None, policy: Policy | str, cfg: DecodeConfig,
           key: str | None = None, prompt_style: prompts.PromptStyle | None = None) -> Generator[Op, Done, Trace]:
    """Check everything that can be checked before decoding, then return the problem's loop."""
    policy = make_policy(policy) if isinstance(policy, str) else policy
    given = {"small": small, "big": big}
    missing = [m for m in policy.models if given[m] is None]
    if missing:
        raise ValueError(f"policy {policy.name!r} needs the {' and '.join(missing)} model")
    backends = {m: given[m] for m in sorted(policy.models)}
    texts = _prompt_texts(item, backends, prompt_style, offloading=policy.requests)
    prompt_ids = {m: encode_text(b.tokenizer, texts[m]) for m, b in backends.items()}
    for m, b in backends.items():
        check_prompt(b, prompt_ids[m], m)
    if policy.requests:
        small_tags(small.tokenizer, cfg.tags)
    return ProblemRun(prompt_ids, backends, policy, cfg, key or _key(item)).steps()


def small_tags(tokenizer, choice: TagChoice = "auto") -> TagIds:
    """How a small model writes the tags (``handoff.tag_ids``); raises, naming the fix, where it cannot."""
    found = tag_ids(tokenizer, choice)
    if found.mode != "none":
        return found
    name = getattr(tokenizer, "name_or_path", "") or type(tokenizer).__name__
    if choice == "token":
        raise ValueError(f"tags='token' but the small model's tokenizer ({name}) lacks {tags.OPEN} and {tags.CLOSE} "
                         "as single tokens: use tags='auto' (text tags), or add them as non-special tokens "
                         "(splitlib.training.tokens.ensure_control_tokens) and fine-tune")
    raise ValueError(f"the small model's tokenizer ({name}) can write {tags.OPEN} and {tags.CLOSE} neither as single "
                     "tokens nor as text it decodes back exactly (tags="
                     f"{choice!r}); add them as non-special tokens (splitlib.training.tokens.ensure_control_tokens) "
                     "or use a tokenizer that spells them")


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
           policy: Policy | str = "split", cfg: DecodeConfig = DEFAULT_CONFIG, key: str | None = None,
           prompt_style: prompts.PromptStyle | None = None) -> Trace:
    """Generate an answer to one question cooperatively; returns the Trace (no I/O). A question's prompts are
    rendered in ``prompt_style`` (``splitlib.prompts``; None: the project's evaluation prompt)."""
    return _drive(_start(question_or_prompt, small, big, policy, cfg, key, prompt_style))


def decode_many(problems: Sequence, small: Backend | None, big: Backend | None, policy: Policy | str = "split",
                cfg: DecodeConfig = DEFAULT_CONFIG, progress: bool = True,
                prompt_style: prompts.PromptStyle | None = None, gang: float = schedule.DEFAULT_GANG) -> list[Trace]:
    """Decode many problems (questions, ``RolePrompts`` or objects with ``.question``/``.id``), in order.

    On engines that batch (vLLM, a server) every active problem's next op runs in the same engine steps, the two
    engines kept busy by ``schedule.drive_together`` (``gang``: how many of the active problems' ops a local big
    engine gathers before it steps); otherwise (transformers) problems run one after another. The text is the
    same either way."""
    loops = [_start(p, small, big, policy, cfg, prompt_style=prompt_style) for p in problems]
    backends = [b for b in (small, big) if b is not None]
    bar = progress_bar(total=len(loops), desc="decode", disable=not progress)
    try:
        if all(b.concurrent for b in backends):
            return schedule.drive_together(loops, small, big, bar, gang)
        traces = []
        for loop in loops:
            traces.append(_drive(loop))
            bar.update(1)
        return traces
    finally:
        bar.close()
