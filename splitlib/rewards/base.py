"""What every reward shares: the registry (``REWARDS``), TRL's reward signature, and reading its inputs.

A reward is ``fn(completions, **kwargs) -> list[float | None]`` (see the package doc); the helpers here turn
``completions`` into texts and per-completion kwargs into lists, and sum reward columns as TRL does.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from splitlib.grading import GOLD_RULES, GoldRule
from splitlib.registry import Registry

RewardFn = Callable[..., list[float | None]]

REWARDS: Registry[RewardFn] = Registry("reward")  # name -> reward; TRL logs each under its callable's __name__


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


def completion_texts(completions: Sequence[Any]) -> list[str]:
    """``completion_text`` of each completion."""
    return [completion_text(c) for c in completions]


def per_completion(kwargs: Mapping[str, Any], key: str, n: int) -> list[Any] | None:
    """A per-completion kwarg as a list of length ``n``, or None when absent."""
    values = kwargs.get(key)
    if values is None:
        return None
    if isinstance(values, str) or len(values) != n:
        raise ValueError(f"kwarg {key!r} must be a list with one value per completion ({n}), got {values!r:.80}")
    return list(values)


def gold_answers(kwargs: Mapping[str, Any], n: int) -> list[str]:
    """The gold texts, one per completion, from kwarg ``solution`` (TRL/open-r1) or ``answer``."""
    for key in ("solution", "answer"):
        golds = per_completion(kwargs, key, n)
        if golds is not None:
            return [str(g) for g in golds]
    raise ValueError("accuracy rewards need the gold answers as kwarg 'solution' (or 'answer'), one per completion")


def gold_rules(kwargs: Mapping[str, Any], n: int, default: GoldRule) -> list[GoldRule]:
    """How each gold text parses (``splitlib.grading.GOLD_RULES``): kwarg ``gold_rule`` (a dataset column, one
    rule per completion: ``answer`` for a short answer, ``solution`` for a worked solution), else ``default``."""
    rules = per_completion(kwargs, "gold_rule", n)
    if rules is None:
        return [default] * n
    for rule in set(rules):
        GOLD_RULES[rule]  # an unknown rule raises UnknownNameError naming the allowed ones
    return rules


def nansum(*columns: list[float | None]) -> list[float | None]:
    """Row sums skipping None, as TRL's nansum over reward functions; None only where every term is None."""
    out: list[float | None] = []
    for row in zip(*columns, strict=True):
        values = [v for v in row if v is not None]
        out.append(sum(values) if values else None)
    return out
