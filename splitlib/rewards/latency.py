"""Latency-aware rewards, the project's own (the paper's objective has no latency term, PAPER_FACTS §6):
``rl4e`` / ``make_rl4e(...)``, and the ``tagged_char_fraction`` and ``tag_failure`` metrics that GRPO logs with
weight 0."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from splitlib import grading, tags
from splitlib.rewards.base import REWARDS, completion_texts, gold_answers, gold_rules, per_completion
from splitlib.tag_failures import tag_outcome
from splitlib.trace import Trace

LatencyFn = Callable[[Trace], float]  # a trace -> its latency cost (1.0 = as slow as the big model alone)


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
        texts = completion_texts(completions)
        n = len(texts)
        golds, rules = gold_answers(kwargs, n), gold_rules(kwargs, n, default="answer")
        traces = [_as_trace(t) for t in (per_completion(kwargs, "traces", n) or [None] * n)]
        fractions = per_completion(kwargs, "offload_fraction", n) or [None] * n
        out: list[float | None] = []
        for text, gold, rule, trace, fraction in zip(texts, golds, rules, traces, fractions, strict=True):
            truncated = trace.truncated if trace is not None else False
            verdict = grading.grade(text, gold, truncated=truncated, gold_rule=rule)
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
    ``REWARDS.register(reward.__name__, reward)`` to look it up by name.
    """
    return RL4EReward(config=replace(config or RL4EConfig(), **overrides), latency_fn=latency_fn)


rl4e = REWARDS.register("rl4e", make_rl4e())


@REWARDS.register("tagged_char_fraction")
def tagged_char_fraction(completions: Sequence[Any], **kwargs: Any) -> list[float | None]:
    """A metric to log with weight 0, not a reward: characters inside ``<bigmodel>`` spans over the untagged text
    (``lenient_char_coverage``), so that GRPO logs an offload fraction in either rollout mode."""
    return [lenient_char_coverage(t) for t in completion_texts(completions)]


@REWARDS.register("tag_failure")
def tag_failure(completions: Sequence[Any], **kwargs: Any) -> list[float | None]:
    """A metric to log with weight 0, not a reward: 1.0 where the completion's tags fail (unbalanced, or a toy hard
    step written outside every offloaded span: ``splitlib.tag_failures.tag_outcome``), else 0.0. Offload-mode
    completions carry the tags and the big model's spans (``rollout.completion_from_trace``), so the check holds
    there too. Text without the toy's ``, bonus`` clauses is judged on balance alone."""
    return [float(tag_outcome(t, hard_steps=True)["failure"]) for t in completion_texts(completions)]
