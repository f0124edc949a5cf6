"""Answer extraction and math-verify equivalence, on the generation only.

Two steps, kept apart so each can be tested and replaced:

1. ``extract_answer(generation)`` finds the final answer in the *generation* — the API never sees a prompt, so
   a ``\\boxed{}`` in the problem statement or the instruction can never be picked up (the paper's evaluation
   graded text that included the prompt; PAPER_FACTS §2, §7). Control tags are removed first.
2. ``grade(generation, gold, truncated)`` compares the extracted answer with the gold answer through math-verify
   (``\\frac12`` = ``0.5`` = ``1/2``; ``007`` = ``7`` for AIME-style integers; ...). A truncated generation is
   flagged and counted wrong, whatever it contains.

What the gold is (``GoldRule``, one ``GOLD_RULES`` entry each; the rule's name is the data column it reads,
``gold_text``):

- ``"answer"`` (default; every benchmark): the short ``answer`` column, wrapped in ``\\boxed{}`` when bare so that
  math-verify reads it as LaTeX: ``2\\sqrt{3}`` is 2·√3 (unwrapped, math-verify's plain-expression reader stops at
  2), ``\\frac{\\pi}{4}`` is π/4, ``(1,2)`` the pair and ``[0, 1)`` the interval (unwrapped, both are not found).
- ``"solution"``: a worked ``solution`` text, read as the authors' GRPO accuracy reward reads its ``solution`` column
  (open-r1's ``parse(solution, extraction_mode="first_match")``): math-verify's own extraction, whose first
  choice is the *last* ``\\boxed{}`` (boxes joined by ",", "and" or "or" read as one set), then "final answer
  is ...", "answer: ...", the last LaTeX span, the last plain expression; only the first match found is tried,
  and one that does not parse falls back to its text (compared as a string, math-verify's default).

Extraction policy (``Fallback``, one ``FALLBACKS`` entry each):

- ``"none"`` (default): the content of the last ``\\boxed{...}`` whose braces balance, or ``None``. Boxes are
  scanned outermost-first, so ``\\boxed{\\boxed{5}}`` yields ``\\boxed{5}`` (math-verify unwraps it). A box cut
  off before its closing brace and an empty box (``\\boxed{}``, as when a model echoes the instruction) are
  skipped, so the last *complete, non-empty* box wins. ``\\fbox`` is not an answer.
- ``"answer_phrase"``: as ``"none"``, and when there is no box, the text after the last "final answer is" /
  "answer is" / "answer:" up to the end of its line, with ``$`` and a trailing period removed.

math-verify's timeouts use ``signal.alarm``, which only works in the main thread and would clobber an alarm the
caller already set. ``math_verify_timeout_s()`` decides per call: the main thread with no interval timer running
gets ``MATH_VERIFY_TIMEOUT_S``; any other thread, a caller that already owns ``SIGALRM`` (a pending timer, e.g.
pytest-timeout) or a platform without ``setitimer`` runs math-verify with its timeout disabled, and the caller's
own time limit (the timer, a worker process) is what bounds it.
"""

from __future__ import annotations

import logging
import re
import signal
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from importlib.metadata import version
from typing import Any, Literal

from math_verify import parse, verify

from splitlib import tags
from splitlib.registry import Registry

log = logging.getLogger(__name__)

GRADER_VERSION = f"splitreason-grader/1 (last-box; math-verify {version('math-verify')})"
MATH_VERIFY_TIMEOUT_S = 5  # per parse / per comparison; math-verify's own default

Fallback = Literal["none", "answer_phrase"]
GoldRule = Literal["answer", "solution"]
Reason = Literal[
    "correct", "wrong", "truncated", "empty_generation", "no_answer", "answer_unparseable", "gold_unparseable"
]

_BOX_RE = re.compile(r"\\boxed\s*\{")
_PHRASE_RE = re.compile(r"(?:final answer is|answer is|answer:)[ \t]*(?P<ans>[^\n]*)", re.IGNORECASE)


@dataclass(frozen=True)
class Grade:
    """The verdict on one generation."""

    correct: bool
    extracted: str | None  # the answer text found in the generation (None when there is none)
    truncated: bool  # the generation hit its length cap; always graded wrong
    reason: Reason  # why: "correct", "wrong", or what prevented a comparison

    @property
    def scorable(self) -> bool:
        """False when the gold answer itself cannot be parsed (the sample says nothing about the model)."""
        return self.reason != "gold_unparseable"


# -- math-verify timeouts ---------------------------------------------------------------------------------------
def math_verify_timeout_s() -> int | None:
    """The timeout to hand math-verify from the calling thread: ``MATH_VERIFY_TIMEOUT_S`` or ``None`` (disabled)."""
    if threading.current_thread() is not threading.main_thread():
        return None  # signal.alarm only works in the main thread
    if not hasattr(signal, "setitimer"):
        return None  # no SIGALRM here (Windows): math-verify would spawn a process per call
    if signal.getitimer(signal.ITIMER_REAL)[0] > 0:
        return None  # the caller owns SIGALRM; math-verify would cancel its timer
    return MATH_VERIFY_TIMEOUT_S


# -- extraction -----------------------------------------------------------------------------------------------
def _closing_brace(text: str, open_pos: int) -> int | None:
    """Index of the ``}`` matching the ``{`` at ``open_pos`` (escaped ``\\{`` ``\\}`` ignored), or None."""
    depth, i = 0, open_pos
    while i < len(text):
        ch = text[i]
        if ch == "\\":
            i += 2  # skip the escaped character (\{, \}, \\)
            continue
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                return i
        i += 1
    return None


def boxed_contents(text: str) -> list[str]:
    """Contents of every complete outermost ``\\boxed{...}`` in order (unclosed boxes dropped)."""
    out: list[str] = []
    pos = 0
    while (m := _BOX_RE.search(text, pos)) is not None:
        close = _closing_brace(text, m.end() - 1)
        if close is None:  # cut off inside the box: a box opened later can still be complete
            pos = m.end()
            continue
        out.append(text[m.end() : close])
        pos = close + 1
    return out


def _answer_phrase(text: str) -> str | None:
    matches = list(_PHRASE_RE.finditer(text))
    if not matches:
        return None
    answer = matches[-1].group("ans").strip().rstrip(".").strip().strip("$").strip()
    return answer or None


def _no_answer(text: str) -> None:
    return None


# What ``extract_answer`` reads from a generation without a complete, non-empty box.
FALLBACKS: Registry[Callable[[str], str | None]] = Registry(
    "answer fallback", {"none": _no_answer, "answer_phrase": _answer_phrase}
)


def extract_answer(generation: str, fallback: Fallback = "none") -> str | None:
    """The final answer written in ``generation`` (never pass a prompt), or None. See the module doc for policy."""
    read_fallback = FALLBACKS[fallback]
    text = tags.strip_tags(generation)
    boxes = [b.strip() for b in boxed_contents(text) if b.strip()]
    if boxes:
        return boxes[-1]
    return read_fallback(text)


# -- equivalence ----------------------------------------------------------------------------------------------
def _as_latex(answer: str) -> str:
    """Wrap a bare answer so math-verify reads it as LaTeX (``\\frac12``, ``x^2+1`` are not found unwrapped)."""
    if "$" in answer or "\\boxed" in answer:
        return answer
    return f"\\boxed{{{answer}}}"


def _parse_short_answer(gold: str) -> list[Any]:
    if not gold.strip():
        return []
    return parse(_as_latex(gold.strip()), fallback_mode="no_fallback", parsing_timeout=math_verify_timeout_s())


def _parse_worked_solution(solution: str) -> list[Any]:
    if not solution.strip():
        return []
    return parse(solution, extraction_mode="first_match", parsing_timeout=math_verify_timeout_s())


# How a gold text becomes math-verify objects, by the column it comes from (see the module doc).
GOLD_RULES: Registry[Callable[[str], list[Any]]] = Registry(
    "gold rule", {"answer": _parse_short_answer, "solution": _parse_worked_solution}
)


def gold_text(row: Mapping[str, Any] | Any, rule: GoldRule = "answer") -> str:
    """The text ``rule`` reads from a data row (a mapping, or an object such as a toy ``Problem``): its field of the
    same name, ``answer`` or ``solution``."""
    GOLD_RULES[rule]  # an unknown rule names the allowed ones
    fields = row if isinstance(row, Mapping) else vars(row)
    value = fields.get(rule)
    if value is None:
        raise ValueError(f"gold rule {rule!r} reads column {rule!r}, which row {fields.get('id', '?')!r} lacks "
                         f"(has {sorted(fields)}); use gold 'answer' for data without worked solutions (toy, "
                         "benchmarks), or load rows that carry them (splitlib.data.load_specr, load_openr1)")
    return str(value)


def parse_gold(gold: str, rule: GoldRule = "answer") -> list[Any]:
    """math-verify's parse of a gold text under ``rule`` (``GOLD_RULES``); empty when it does not parse."""
    return GOLD_RULES[rule](gold)


def parse_answer(answer: str) -> list[Any]:
    """math-verify's parse of an extracted answer; empty when it does not parse to a mathematical object."""
    return parse(_as_latex(answer), fallback_mode="no_fallback", parsing_timeout=math_verify_timeout_s())


def equivalent(gold_parsed: list[Any], answer_parsed: list[Any]) -> bool:
    """math-verify's ``verify(gold, answer)`` (it is not symmetric: gold first)."""
    return bool(verify(gold_parsed, answer_parsed, timeout_seconds=math_verify_timeout_s()))


def grade(generation: str, gold: str, truncated: bool = False, *, fallback: Fallback = "none",
          gold_rule: GoldRule = "answer") -> Grade:
    """Grade one generation against its gold (a short answer, or a worked solution with ``gold_rule="solution"``).
    Truncated generations are flagged and counted wrong."""
    extracted = extract_answer(generation, fallback)
    gold_parsed = parse_gold(gold, gold_rule)

    def verdict(correct: bool, reason: Reason) -> Grade:
        return Grade(correct=correct, extracted=extracted, truncated=truncated, reason=reason)

    if not gold_parsed:
        log.warning("gold answer %r does not parse; the sample is not scorable", gold)
        return verdict(False, "gold_unparseable")
    if truncated:
        return verdict(False, "truncated")
    if not generation.strip():
        return verdict(False, "empty_generation")
    if extracted is None:
        return verdict(False, "no_answer")
    answer_parsed = parse_answer(extracted)
    if not answer_parsed:
        return verdict(False, "answer_unparseable")
    ok = equivalent(gold_parsed, answer_parsed)
    return verdict(ok, "correct" if ok else "wrong")
