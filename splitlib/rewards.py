"""TRL-compatible reward functions, in a registry looked up by name.

Every reward has TRL's signature ``fn(completions, **kwargs) -> list[float | None]``: ``completions`` are strings
or conversational message lists (``[{"role": "assistant", "content": ...}]``); gold answers come as ``solution``
(the TRL/open-r1 column name) or ``answer``; other kwargs (``prompts``, ``completion_ids``, ``trainer_state``,
``log_metric``, dataset columns) are ignored unless a reward says it reads them. ``None`` means "skip this
sample" (TRL turns it into NaN and sums the other rewards with ``nansum``).

Families:

- ``paper_accuracy``, ``paper_format``, ``paper_tag_count`` and their sum ``paper``: the released GRPO reward,
  PAPER_FACTS §6, quirks included: a free nesting point for a completion without tags, stray ``</bigmodel>``
  undetected, a floor-divided count term, coverage over all characters (tags included in the denominator), a
  ``$`` that under MULTILINE also matches before any newline (text after ``</answer>\\n`` still passes).
- ``paper_fixed_format``, ``paper_fixed_tag_count`` and ``paper_fixed`` (accuracy + those two): the same shape
  with the quirks repaired — the nesting point needs a well-formed, non-empty set of spans (``tags.check``); the
  format regex must match the whole completion (trailing whitespace allowed); the count term is ``c(n) / 2``
  without floor division (0.25 per span up to 8 spans, then -0.25 per extra span); coverage is measured on the
  untagged text, in tokens when a ``tokenizer`` kwarg (fast tokenizer, offsets) or ``offload_token_fraction``
  values (measured, used as given) are passed, else in characters; malformed tags (stray closer, nesting,
  unclosed) cost -2 and earn no coverage term.
- ``rl4e`` and ``make_rl4e(...)``: latency-aware, the project's own (the paper's objective has no latency term,
  PAPER_FACTS §6): accuracy of the offloaded rollout (``splitlib.grading``, last box, truncation counted wrong)
  minus ``latency_weight · latency_cost``, the trace's simulated seconds over the big model's alone for the same
  prompt and length; without a trace, minus ``budget_weight · max(0, offload_fraction - target_offload)``.
- ``tagged_char_fraction``: a metric, not a reward — the offloaded share of characters, logged with weight 0.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from latex2sympy2_extended import NormalizationConfig
from math_verify import LatexExtractionConfig, parse, verify

from splitlib import grading, tags
from splitlib.trace import Trace

log = logging.getLogger(__name__)

RewardFn = Callable[..., list[float | None]]
LatencyFn = Callable[[Trace], float]  # a trace -> its latency cost (1.0 = as slow as the big model alone)

_REGISTRY: dict[str, RewardFn] = {}


# -- registry ---------------------------------------------------------------------------------------------------
def register(name: str) -> Callable[[RewardFn], RewardFn]:
    """Decorator: register a reward under ``name`` (a name can be registered once)."""

    def wrap(fn: RewardFn) -> RewardFn:
        if name in _REGISTRY:
            raise ValueError(f"reward {name!r} is already registered; pick another name")
        _REGISTRY[name] = fn
        return fn

    return wrap


def get_reward(name: str) -> RewardFn:
    """The reward registered under ``name``."""
    if name not in _REGISTRY:
        raise KeyError(f"unknown reward {name!r}; available: {', '.join(available())}")
    return _REGISTRY[name]


def available() -> list[str]:
    """Registered reward names, sorted."""
    return sorted(_REGISTRY)


# -- inputs -----------------------------------------------------------------------------------------------------
def _message_text(message: Mapping[str, Any]) -> str:
    content = message.get("content")
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    return "".join(part.get("text", "") for part in content if isinstance(part, Mapping))  # multimodal parts


def completion_text(completion: str | Sequence[Mapping[str, Any]]) -> str:
    """The text of one completion: the string itself, or its assistant messages' contents joined."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, Sequence) and all(isinstance(m, Mapping) for m in completion):
        return "".join(_message_text(m) for m in completion if m.get("role", "assistant") == "assistant")
    raise TypeError(f"completion of type {type(completion).__name__}: expected a str or a list of message dicts")


def _texts(completions: Sequence[Any]) -> list[str]:
    return [completion_text(c) for c in completions]


def _column(kwargs: Mapping[str, Any], key: str, n: int) -> list[Any] | None:
    """A per-completion kwarg as a list of length ``n``, or None when absent."""
    values = kwargs.get(key)
    if values is None:
        return None
    if isinstance(values, str) or len(values) != n:
        raise ValueError(f"kwarg {key!r} must be a list with one value per completion ({n}), got {values!r:.80}")
    return list(values)


def _golds(kwargs: Mapping[str, Any], n: int) -> list[str]:
    for key in ("solution", "answer"):
        golds = _column(kwargs, key, n)
        if golds is not None:
            return [str(g) for g in golds]
    raise ValueError("accuracy rewards need the gold answers as kwarg 'solution' (or 'answer'), one per completion")


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


def paper_accuracy_score(text: str, gold: str) -> float | None:
    """1.0/0.0 by ``verify(parse(gold), parse(completion))`` as released; None when the gold does not parse."""
    timeout_s = grading.math_verify_timeout_s()
    gold_parsed = parse(gold, extraction_mode="first_match", parsing_timeout=timeout_s)
    if not gold_parsed:
        log.warning("gold answer %r does not parse; accuracy reward skipped (None)", gold)
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


@register("paper_accuracy")
def paper_accuracy(completions: Sequence[Any], **kwargs: Any) -> list[float | None]:
    """math-verify accuracy in {0, 1}; None where the gold does not parse."""
    texts = _texts(completions)
    return [paper_accuracy_score(t, g) for t, g in zip(texts, _golds(kwargs, len(texts)), strict=True)]


@register("paper_format")
def paper_format(completions: Sequence[Any], **kwargs: Any) -> list[float | None]:
    """{0, 1, 2}: the think/answer regex, plus the released nesting test."""
    return [_paper_format_score(t) for t in _texts(completions)]


@register("paper_tag_count")
def paper_tag_count(completions: Sequence[Any], **kwargs: Any) -> list[float | None]:
    """Scaffold + ``c(n)//2`` + 2·g(character coverage) - 2 if opener and closer counts differ."""
    return [_paper_tag_count_score(t) for t in _texts(completions)]


def _nansum(*columns: list[float | None]) -> list[float | None]:
    """Row sums skipping None, as TRL's nansum over reward functions; None only where every term is None."""
    out: list[float | None] = []
    for row in zip(*columns, strict=True):
        values = [v for v in row if v is not None]
        out.append(sum(values) if values else None)
    return out


@register("paper")
def paper(completions: Sequence[Any], **kwargs: Any) -> list[float | None]:
    """accuracy + format + tag_count (weights 1, 1, 1; max 9); a None accuracy adds nothing, as in TRL."""
    return _nansum(
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


@register("paper_fixed_format")
def paper_fixed_format(completions: Sequence[Any], **kwargs: Any) -> list[float | None]:
    """{0, 1, 2}: the whole-completion think/answer regex, plus a well-formed, non-empty set of spans."""
    return [_fixed_format_score(t) for t in _texts(completions)]


@register("paper_fixed_tag_count")
def paper_fixed_tag_count(completions: Sequence[Any], **kwargs: Any) -> list[float | None]:
    """Reads kwargs ``offload_token_fraction`` (per completion, measured) or ``tokenizer`` for token coverage."""
    texts = _texts(completions)
    measured = _column(kwargs, "offload_token_fraction", len(texts)) or [None] * len(texts)
    tokenizer = kwargs.get("tokenizer")
    return [fixed_tag_count_score(t, tokenizer, m) for t, m in zip(texts, measured, strict=True)]


@register("paper_fixed")
def paper_fixed(completions: Sequence[Any], **kwargs: Any) -> list[float | None]:
    """paper accuracy + fixed format + fixed tag_count (weights 1, 1, 1)."""
    return _nansum(
        paper_accuracy(completions, **kwargs),
        paper_fixed_format(completions, **kwargs),
        paper_fixed_tag_count(completions, **kwargs),
    )


# -- rl4e: latency-aware ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RL4EConfig:
    accuracy_weight: float = 1.0  # reward for a correct offloaded rollout
    latency_weight: float = 0.5  # times the latency cost (simulated split seconds / big-alone seconds)
    budget_weight: float = 2.0  # without a trace: times the offload fraction above the target
    target_offload: float = 0.05  # without a trace: offload fraction allowed for free (the paper's "5 %" model)
    profile: str = "a6000-paper"  # splitlib.hardware profile for the simulator
    small: str = "1.5B"  # model names in that profile
    big: str = "32B"
    mode: str = "serial"  # simulator mode pricing a trace ("serial" prices every recorded segment)
    name: str = "rl4e"  # the name TRL logs

    def __post_init__(self) -> None:
        for key in ("accuracy_weight", "latency_weight", "budget_weight"):
            if getattr(self, key) < 0:
                raise ValueError(f"RL4EConfig.{key}={getattr(self, key)!r}: expected a weight >= 0")
        if not 0.0 <= self.target_offload <= 1.0:
            raise ValueError(f"RL4EConfig.target_offload={self.target_offload!r}: expected a fraction in [0, 1]")
        if not self.name.isidentifier():
            raise ValueError(f"RL4EConfig.name={self.name!r}: expected an identifier (TRL logs it as a column)")


def simulated_latency_cost(trace: Trace, config: RL4EConfig) -> float:
    """The trace's simulated seconds over the big model's alone for the same prompt and generated length."""
    from splitlib import simulator  # imported here: the simulator is optional for every other reward

    split_s = simulator.simulate_trace(trace, config.profile, config.small, config.big, mode=config.mode)
    big_alone = simulator.simulate(
        trace.offload_token_fraction, config.profile, config.small, config.big, mode=config.mode,
        prompt_tokens=trace.prompt_tokens.get("big", trace.prompt_tokens.get("small", 0)),
        decode_tokens=max(trace.total_tokens, 1),
    )
    return split_s / big_alone.big_only_s


def _as_trace(item: Trace | Mapping[str, Any] | None) -> Trace | None:
    if item is None or isinstance(item, Trace):
        return item
    if isinstance(item, Mapping):
        return Trace.from_json(dict(item))
    raise TypeError(f"trace of type {type(item).__name__}: expected a splitlib.trace.Trace, its JSON dict or None")


@dataclass(frozen=True)
class RL4EReward:
    """A configured rl4e reward: TRL's signature, ``__name__`` from the config, picklable."""

    config: RL4EConfig = field(default_factory=RL4EConfig)
    latency_fn: LatencyFn | None = None  # default: simulated_latency_cost with this config

    @property
    def __name__(self) -> str:  # TRL logs each reward under its callable's __name__
        return self.config.name

    def _latency_cost(self, trace: Trace, kwargs: Mapping[str, Any]) -> float:
        fn = kwargs.get("latency_fn") or self.latency_fn
        return fn(trace) if fn is not None else simulated_latency_cost(trace, self.config)

    def _penalty(self, text: str, trace: Trace | None, fraction: float | None, kwargs: Mapping[str, Any]) -> float:
        cfg = self.config
        if trace is not None:
            return cfg.latency_weight * self._latency_cost(trace, kwargs)
        if fraction is None:
            fraction = lenient_char_coverage(text)
        return cfg.budget_weight * max(0.0, fraction - cfg.target_offload)

    def __call__(self, completions: Sequence[Any], **kwargs: Any) -> list[float | None]:
        texts = _texts(completions)
        n = len(texts)
        golds = _golds(kwargs, n)
        traces = [_as_trace(t) for t in (_column(kwargs, "traces", n) or [None] * n)]
        fractions = _column(kwargs, "offload_fraction", n) or [None] * n
        out: list[float | None] = []
        for text, gold, trace, fraction in zip(texts, golds, traces, fractions, strict=True):
            verdict = grading.grade(text, gold, truncated=trace.truncated if trace is not None else False)
            if not verdict.scorable:
                out.append(None)
                continue
            accuracy = self.config.accuracy_weight * float(verdict.correct)
            out.append(accuracy - self._penalty(text, trace, fraction, kwargs))
        return out


def lenient_char_coverage(text: str) -> float:
    """Characters inside ``<bigmodel>…</bigmodel>`` pairs over the untagged text; defined for malformed tags too."""
    plain_len = len(tags.strip_tags(text))
    if plain_len == 0:
        return 0.0
    return sum(len(tags.strip_tags(s)) for s in tags.inner_texts(text)) / plain_len


def make_rl4e(config: RL4EConfig | None = None, *, latency_fn: LatencyFn | None = None, **overrides: Any) -> RL4EReward:
    """An rl4e reward from ``config`` and/or field overrides, e.g. ``make_rl4e(latency_weight=1.0, name="rl4e_w1")``.

    Unknown field names raise ``TypeError`` (from ``dataclasses.replace``). Register it with
    ``register(reward.__name__)(reward)`` to look it up by name.
    """
    return RL4EReward(config=replace(config or RL4EConfig(), **overrides), latency_fn=latency_fn)


rl4e = register("rl4e")(make_rl4e())


@register("tagged_char_fraction")
def tagged_char_fraction(completions: Sequence[Any], **kwargs: Any) -> list[float | None]:
    """A metric to log with weight 0, not a reward: characters inside ``<bigmodel>`` spans over the untagged text
    (``lenient_char_coverage``), so that GRPO logs an offload fraction in either rollout mode."""
    return [lenient_char_coverage(t) for t in _texts(completions)]
