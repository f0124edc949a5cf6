"""The paper's GRPO reward (PAPER_FACTS §6) exactly, quirks included, and the same shape with the quirks repaired.

See the package doc (``splitlib.rewards``) for what each reward pays and which quirks the repaired one fixes.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from typing import Any

from latex2sympy2_extended import NormalizationConfig
from math_verify import LatexExtractionConfig, parse, verify

from splitlib import grading, tags
from splitlib.grading import GoldRule
from splitlib.rewards.base import REWARDS, completion_texts, gold_answers, gold_rules, nansum, per_completion

log = logging.getLogger(__name__)


# -- the paper's pieces (PAPER_FACTS §6) -------------------------------------------------------------------------
PAPER_FORMAT_RE = re.compile(r"^<think>\n.*?\n</think>\n<answer>\n.*?\n</answer>$", re.DOTALL | re.MULTILINE)
FIXED_FORMAT_RE = re.compile(r"<think>\n.*?\n</think>\n<answer>\n.*?\n</answer>\s*", re.DOTALL)
COVERAGE_PEAK = 0.4  # g(r) rises to 1 at r = 0.4, then falls with slope -2/0.6, clipped to [-1, 1]

# The released code parses the completion with boxed answers first and no anchor-free extraction.
_PAPER_ANSWER_CONFIG = LatexExtractionConfig(
    normalization_config=NormalizationConfig(
        nits=False, malformed_operators=False, basic_latex=True, equations=True, boxed="all", units=True
    ),
    boxed_match_priority=0,
    try_extract_without_anchor=False,
)


def paper_accuracy_score(text: str, gold: str, gold_rule: GoldRule = "solution") -> float | None:
    """1.0/0.0 by ``verify(parse(gold), parse(completion))`` as released; None when the gold does not parse.

    ``gold_rule`` (``splitlib.grading.GOLD_RULES``): ``solution`` parses ``gold`` as the released reward parses its
    ``solution`` column (a worked solution: its last box, ...); ``answer`` reads a short answer as LaTeX."""
    timeout_s = grading.math_verify_timeout_s()
    gold_parsed = grading.parse_gold(gold, gold_rule)
    if not gold_parsed:
        log.warning("gold %r does not parse (gold rule %r); accuracy reward skipped (None)", gold[-200:], gold_rule)
        return None
    answer_parsed = parse(
        text, extraction_config=[_PAPER_ANSWER_CONFIG], extraction_mode="first_match", parsing_timeout=timeout_s
    )
    return float(verify(gold_parsed, answer_parsed, timeout_seconds=timeout_s))


def paper_nesting_ok(text: str) -> bool:
    """The released "properly nested" test: no opener before the previous one closes, every opener closed.

    True without tags; a ``</bigmodel>`` with no opener is ignored.
    """
    open_now = False
    for m in re.finditer(re.escape(tags.OPEN) + "|" + re.escape(tags.CLOSE), text):
        if m.group(0) == tags.OPEN:
            if open_now:
                return False
            open_now = True
        else:
            open_now = False  # closes the open span; a stray closer changes nothing
    return not open_now


def fixed_nesting_ok(text: str) -> bool:
    """Well-formed (``tags.check``) and at least one span, every span with some non-blank text."""
    status = tags.check(text)
    inner = tags.inner_texts(text)
    return status.balanced and status.n_open > 0 and all(s.strip() for s in inner)


def scaffold_score(text: str) -> float:
    """+0.5 ``<think>\\n`` once, +0.5 ``\\n</think>\\n`` once, +0.25 ``\\n<answer>\\n`` once, +0.25 ``\\n</answer>``
    once, +0.5 if ``\\boxed{`` occurs (max 2)."""
    score = 0.0
    for needle, points in (("<think>\n", 0.5), ("\n</think>\n", 0.5), ("\n<answer>\n", 0.25), ("\n</answer>", 0.25)):
        if text.count(needle) == 1:
            score += points
    return score + (0.5 if "\\boxed{" in text else 0.0)


def count_shape(n_spans: int) -> float:
    """c(n) = 0.5·n for n ≤ 8, else 4 - 0.5·(n - 8)."""
    return 0.5 * n_spans if n_spans <= 8 else 4.0 - 0.5 * (n_spans - 8)


def paper_count_term(n_spans: int) -> float:
    """``c(n) // 2`` (floor division, as released)."""
    return count_shape(n_spans) // 2


def fixed_count_term(n_spans: int) -> float:
    """``c(n) / 2``: +0.25 per span up to 2.0 at 8 spans, then -0.25 per extra span."""
    return count_shape(n_spans) / 2


def coverage_shape(r: float) -> float:
    """g(r): 0 for r ≤ 0, r/0.4 below 0.4, then clip(-(2/0.6)·r + 1 + (2/0.6)·0.4, -1, 1)."""
    if r <= 0:
        return 0.0
    if r < COVERAGE_PEAK:
        return r / COVERAGE_PEAK
    slope = -2.0 / (1.0 - COVERAGE_PEAK)
    return max(-1.0, min(1.0, slope * r + 1.0 - slope * COVERAGE_PEAK))


def paper_coverage_ratio(text: str) -> float:
    """Characters inside ``<bigmodel>(.*?)</bigmodel>`` over all characters, tags included (as released)."""
    if not text:
        return 0.0
    return sum(len(s) for s in tags.inner_texts(text)) / len(text)


def token_coverage_ratio(text: str, tokenizer: Any) -> float:
    """Tokens of the untagged text starting inside a span, over all its tokens (needs a fast tokenizer)."""
    plain = tags.strip_tags(text)
    encoding = tokenizer(plain, add_special_tokens=False, return_offsets_mapping=True)
    offsets = [(s, e) for s, e in encoding["offset_mapping"] if e > s]
    if not offsets:
        return 0.0
    mask = tags.char_mask(len(plain), tags.spans(text))
    return sum(mask[s] for s, _ in offsets) / len(offsets)


# -- paper rewards ----------------------------------------------------------------------------------------------
def _paper_tag_count_score(text: str) -> float:
    n_open, n_close = text.count(tags.OPEN), text.count(tags.CLOSE)
    score = scaffold_score(text) + paper_count_term(n_open) + 2.0 * coverage_shape(paper_coverage_ratio(text))
    return score - (2.0 if n_open != n_close else 0.0)


def _paper_format_score(text: str) -> float:
    return float(bool(PAPER_FORMAT_RE.match(text))) + float(paper_nesting_ok(text))


@REWARDS.register("paper_accuracy")
def paper_accuracy(completions: Sequence[Any], **kwargs: Any) -> list[float | None]:
    """math-verify accuracy in {0, 1}; None where the gold does not parse. Each gold parses by kwarg ``gold_rule``
    (default ``solution``, the released reading of its ``solution`` column)."""
    texts = completion_texts(completions)
    n = len(texts)
    golds, rules = gold_answers(kwargs, n), gold_rules(kwargs, n, default="solution")
    return [paper_accuracy_score(t, g, r) for t, g, r in zip(texts, golds, rules, strict=True)]


@REWARDS.register("paper_format")
def paper_format(completions: Sequence[Any], **kwargs: Any) -> list[float | None]:
    """{0, 1, 2}: the think/answer regex, plus the released nesting test."""
    return [_paper_format_score(t) for t in completion_texts(completions)]


@REWARDS.register("paper_tag_count")
def paper_tag_count(completions: Sequence[Any], **kwargs: Any) -> list[float | None]:
    """Scaffold + ``c(n)//2`` + 2·g(character coverage) - 2 if opener and closer counts differ."""
    return [_paper_tag_count_score(t) for t in completion_texts(completions)]


@REWARDS.register("paper")
def paper(completions: Sequence[Any], **kwargs: Any) -> list[float | None]:
    """accuracy + format + tag_count (weights 1, 1, 1; max 9); a None accuracy adds nothing, as in TRL."""
    return nansum(
        paper_accuracy(completions, **kwargs), paper_format(completions, **kwargs), paper_tag_count(completions)
    )


# -- paper, quirks repaired -------------------------------------------------------------------------------------
def _fixed_coverage_ratio(text: str, tokenizer: Any, measured: float | None) -> float:
    if measured is not None:
        if not 0.0 <= measured <= 1.0:
            raise ValueError(f"offload_token_fraction={measured!r}: expected a fraction in [0, 1]")
        return float(measured)
    if tokenizer is not None:
        return token_coverage_ratio(text, tokenizer)
    return tags.offload_char_fraction(text)


def fixed_tag_count_score(text: str, tokenizer: Any = None, measured: float | None = None) -> float:
    """Scaffold + ``c(n)/2`` + 2·g(coverage of the untagged text); malformed tags: no coverage, -2."""
    status = tags.check(text)
    score = scaffold_score(text) + fixed_count_term(status.n_open)
    if not status.balanced:
        return score - 2.0
    return score + 2.0 * coverage_shape(_fixed_coverage_ratio(text, tokenizer, measured))


def _fixed_format_score(text: str) -> float:
    return float(bool(FIXED_FORMAT_RE.fullmatch(text))) + float(fixed_nesting_ok(text))


@REWARDS.register("paper_fixed_format")
def paper_fixed_format(completions: Sequence[Any], **kwargs: Any) -> list[float | None]:
    """{0, 1, 2}: the whole-completion think/answer regex, plus a well-formed, non-empty set of spans."""
    return [_fixed_format_score(t) for t in completion_texts(completions)]


@REWARDS.register("paper_fixed_tag_count")
def paper_fixed_tag_count(completions: Sequence[Any], **kwargs: Any) -> list[float | None]:
    """Reads kwargs ``offload_token_fraction`` (per completion, measured) or ``tokenizer`` for token coverage."""
    texts = completion_texts(completions)
    measured = per_completion(kwargs, "offload_token_fraction", len(texts)) or [None] * len(texts)
    tokenizer = kwargs.get("tokenizer")
    return [fixed_tag_count_score(t, tokenizer, m) for t, m in zip(texts, measured, strict=True)]


@REWARDS.register("paper_fixed")
def paper_fixed(completions: Sequence[Any], **kwargs: Any) -> list[float | None]:
    """paper accuracy + fixed format + fixed tag_count (weights 1, 1, 1)."""
    return nansum(
        paper_accuracy(completions, **kwargs),
        paper_fixed_format(completions, **kwargs),
        paper_fixed_tag_count(completions, **kwargs),
    )

