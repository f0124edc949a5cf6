"""Methods: one row of a notebook's method table (a decoding policy on a small/big model pair), and the key of the
samples file's rows."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

KEY = ("method", "problem_id", "sample")  # one row per key in a samples file


@dataclass(frozen=True)
class Method:
    """One row of a notebook's method table: a decoding policy on a (small, big) model pair.

    It is a ``splitlib.decoder_service.Route`` as it is (same ``policy``/``small``/``big``/``policy_params``)."""

    name: str  # unique label; keys the samples file
    policy: str  # a splitlib.policies name: split, random_switch, small_only, big_only
    small: str | None  # small model: a key of the run's model table ("base", "sft", "grpo") or a directory
    big: str | None = None  # big model: a key or a directory; None where the policy never calls it
    policy_params: dict[str, Any] = field(default_factory=dict, hash=False)
    sweep: str | None = None  # budget sweep this method is a point of (joined by a line in plots)

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("a method needs a non-empty name")
        try:
            params = json.loads(json.dumps(dict(self.policy_params)))
        except TypeError as err:
            raise ValueError(f"method {self.name!r}: policy_params must be JSON values ({err})") from err
        object.__setattr__(self, "policy_params", params)

    def record(self) -> dict:
        """The fields every sample row of this method carries (labels: what a resumed run matches is the row's
        provenance key, see ``records``)."""
        return {"policy": self.policy, "policy_params": self.policy_params, "small_model": self.small,
                "big_model": self.big, "sweep": self.sweep}


def methods_table(methods: Sequence[Method]) -> pd.DataFrame:
    return pd.DataFrame([{"method": m.name, **m.record()} for m in methods])


def methods_from_rows(rows: Sequence[dict], names: Sequence[str]) -> list[Method]:
    """The ``Method``s that wrote ``rows`` (to re-run some of them elsewhere, e.g. at batch 1 for timing)."""
    first: dict[str, dict] = {}
    for r in rows:
        first.setdefault(r["method"], r)
    missing = [n for n in names if n not in first]
    if missing:
        raise ValueError(f"methods {missing} are not in the rows; present: {list(first)}")
    return [Method(n, policy=first[n]["policy"], small=first[n]["small_model"], big=first[n]["big_model"],
                   policy_params=first[n]["policy_params"] or {}, sweep=first[n]["sweep"]) for n in names]
