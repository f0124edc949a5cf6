"""The trained checkpoints side by side (notebook 05's ``grpo`` block): accuracy with its CI, offload, how often the
tags fail, and the paired difference between two GRPO arms.

A generation's tags fail as ``splitlib.tag_failures.tag_outcome`` says (unbalanced, or on the toy world a hard step
written without being offloaded); a "runaway" span over more than one line is counted apart.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

from splitlib.evaluate.stats import paired_difference
from splitlib.tag_failures import tag_outcome

__all__ = ["arm_key", "tag_failures", "tag_outcome"]  # tag_outcome lives in splitlib.tag_failures (GRPO logs it too)


def arm_key(checkpoint: str) -> str:
    """The ``grpo`` block's name of a checkpoint of notebook 05: ``grpo-paper`` -> ``grpo_paper``, ``grpo-rl4e_1``
    -> ``rl4e_1`` (notebook 03's arm name), ``sft`` -> ``sft``."""
    name = checkpoint.removeprefix("grpo-") if checkpoint.startswith("grpo-rl4e") else checkpoint
    return name.replace("-", "_")


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


def grpo_table(block: Mapping[str, Any]) -> pd.DataFrame:
    """``grpo_block``'s checkpoints as a table, one row each (the paired differences left out)."""
    return pd.DataFrame({name: entry for name, entry in block.items() if "accuracy" in entry}).T
