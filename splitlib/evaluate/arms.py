"""The trained checkpoints side by side (notebook 05's ``grpo`` block): accuracy with its CI, offload, how often the
tags fail, and the paired difference between two GRPO arms.

A generation's tags fail when they are unbalanced (``splitlib.tags.check``) or, on the toy world, when a hard step
(a ``bonus`` clause, ``splitlib.toy.world.step_spans``) is written without being offloaded. A span that runs over
more than one line (a "runaway" span, which the decoder closes when the generation ends) is counted apart.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

from splitlib import tags
from splitlib.evaluate.stats import paired_difference


def arm_key(checkpoint: str) -> str:
    """The ``grpo`` block's name of a checkpoint of notebook 05: ``grpo-paper`` -> ``grpo_paper``, ``grpo-rl4e_1``
    -> ``rl4e_1`` (notebook 03's arm name), ``sft`` -> ``sft``."""
    name = checkpoint.removeprefix("grpo-") if checkpoint.startswith("grpo-rl4e") else checkpoint
    return name.replace("-", "_")


def _hard_clauses(plain: str) -> list[tuple[int, int]]:
    from splitlib.toy.world import step_spans  # the toy world's steps; its bonus clauses are the hard ones

    return [(a, b) for a, b in step_spans(plain) if plain[a:b].startswith(" bonus ")]


def tag_outcome(generation: str, hard_steps: bool) -> dict[str, Any]:
    """One generation's tags: ``balanced``, ``hard_steps`` (toy: bonus clauses written), ``hard_missed`` (those not
    inside an offloaded span; with unbalanced tags every one counts as missed), ``runaway`` (a span over a line
    break) and ``failure`` (unbalanced, or a hard step missed)."""
    check = tags.check(generation)
    plain = tags.strip_tags(generation)
    spans = tags.spans(generation) if check.balanced else []
    clauses = _hard_clauses(plain) if hard_steps else []
    missed = sum(not any(s <= a and b <= e for s, e in spans) for a, b in clauses)
    return {"balanced": check.balanced, "hard_steps": len(clauses), "hard_missed": missed,
            "runaway": any("\n" in plain[s:e] for s, e in spans), "failure": not check.balanced or missed > 0}


def tag_failures(rows: Sequence[Mapping[str, Any]], hard_steps: bool) -> pd.DataFrame:
    """Per method: ``tag_failure_rate`` (share of generations whose tags fail), ``unbalanced_rate``,
    ``hard_step_missed_rate`` (balanced tags, a hard step not offloaded), ``runaway_span_rate``."""
    outcomes = pd.DataFrame([{"method": r["method"], **tag_outcome(r["generation"], hard_steps)} for r in rows])
    grouped = outcomes.groupby("method", sort=False)
    return pd.DataFrame({
        "tag_failure_rate": grouped["failure"].mean(),
        "unbalanced_rate": grouped["balanced"].apply(lambda b: float((~b).mean())),
        "hard_step_missed_rate": grouped.apply(lambda g: float((g["balanced"] & (g["hard_missed"] > 0)).mean()),
                                               include_groups=False),
        "runaway_span_rate": grouped["runaway"].mean(),
    })


def grpo_block(rows: Sequence[Mapping[str, Any]], summary: pd.DataFrame, checkpoints: Sequence[str],
               hard_steps: bool, pair: tuple[str, str] = ("grpo-offload", "grpo-paper"), n_boot: int = 10_000,
               seed: int = 0) -> dict[str, Any]:
    """Per checkpoint (its split-decoding method ``split <name>``, keyed by ``arm_key``): accuracy and its CI,
    offload token fraction and tag failures; then ``<a>_minus_<b>``, the paired accuracy difference of ``pair`` with
    its bootstrap CI over problems, when both were evaluated."""
    failures = tag_failures(rows, hard_steps)
    by_method = summary.set_index("method")
    block: dict[str, Any] = {}
    for name in checkpoints:
        method = f"split {name}"
        if method not in by_method.index:
            continue
        s, f = by_method.loc[method], failures.loc[method]
        block[arm_key(name)] = {"method": method, "accuracy": float(s["accuracy"]),
                                "accuracy_ci": [float(s["ci_low"]), float(s["ci_high"])],
                                "offload_token_fraction": float(s["offload_token_fraction"]),
                                **{k: float(v) for k, v in f.items()}}
    a, b = pair
    if all(f"split {n}" in by_method.index for n in pair):
        diff = paired_difference(list(rows), f"split {a}", f"split {b}", n_boot, seed)
        block[f"{arm_key(a)}_minus_{arm_key(b)}"] = {"diff": diff["diff"], "ci": [diff["ci_low"], diff["ci_high"]],
                                                     "n_problems": diff["n_problems"]}
    return block
