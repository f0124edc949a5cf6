"""The paper's central claim on one run: learned offloading beats random offloading at the same realised offload
and recovers most of the small→big accuracy gap (notebooks 04–06)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import pandas as pd

from splitlib.evaluate.stats import accuracy_by_problem, gap_recovered, json_safe, paired_difference

OffloadMeasure = Literal["offload_token_fraction", "offload_char_fraction"]


def random_ratio_for(offload: float) -> float:
    """The ``random_switch`` ratio whose expected big share is ``offload``: p_big = 1 / (1 + ratio)."""
    if not 0 < offload <= 1:
        raise ValueError(f"offload={offload!r}: expected a fraction in (0, 1]")
    return 1.0 / offload - 1.0


def best_method(summary: pd.DataFrame, candidates: Sequence[str], max_offload: float | None = None,
                offload: OffloadMeasure = "offload_token_fraction") -> str | None:
    """The most accurate of ``candidates`` (ties: less offload) whose mean offload is ≤ ``max_offload``; None if
    none qualifies."""
    df = summary[summary["method"].isin(list(candidates))].dropna(subset=["accuracy"])
    if max_offload is not None:
        df = df[df[offload] <= max_offload + 1e-12]
    if df.empty:
        return None
    return str(df.sort_values(["accuracy", offload], ascending=[False, True], kind="stable").iloc[0]["method"])


def match_random(summary: pd.DataFrame, target: float, random_methods: Sequence[str], tolerance: float = 0.02,
                 offload: OffloadMeasure = "offload_token_fraction") -> str | None:
    """The random method whose realised mean offload is nearest ``target``, if within ``tolerance`` (an absolute
    fraction: 0.02 = ±2 points); else None."""
    df = summary[summary["method"].isin(list(random_methods))]
    if df.empty:
        return None
    gap = (df[offload] - target).abs()
    best = gap.idxmin()
    return str(df.loc[best, "method"]) if gap[best] <= tolerance + 1e-12 else None


def gap_recovered_ci(rows: Sequence[dict], method: str, small: str, big: str, n_boot: int = 10_000, seed: int = 0,
                     level: float = 0.95) -> dict:
    """``gap_recovered`` of ``method`` on the problems all three share, with a paired bootstrap CI over problems
    (resampled as ``stats.bootstrap_mean_ci`` does, with the ratio taken per resample)."""
    x = accuracy_by_problem(rows, (method, small, big))[[method, small, big]].dropna().to_numpy()
    if not len(x):
        raise ValueError(f"{method}, {small} and {big} share no problem")
    point = gap_recovered(*x.mean(axis=0))
    means = x[np.random.default_rng(seed).integers(0, len(x), size=(n_boot, len(x)))].mean(axis=1)
    span = means[:, 2] - means[:, 1]
    ok = span != 0
    boots = (means[ok, 0] - means[ok, 1]) / span[ok]
    tail = (1 - level) / 2
    lo, hi = (float(np.quantile(boots, tail)), float(np.quantile(boots, 1 - tail))) if boots.size else (math.nan,) * 2
    return {"method": method, "gap_recovered": point, "ci_low": lo, "ci_high": hi, "n_problems": len(x)}


def claim(rows: Sequence[dict], summary: pd.DataFrame, learned: str, random: str | None, small: str, big: str,
          offload: OffloadMeasure = "offload_token_fraction", max_offload: float = 0.15, min_gap: float = 0.7,
          tolerance: float = 0.02, n_boot: int = 10_000, seed: int = 0, level: float = 0.95) -> dict:
    """The paper's central claim on this run: ``learned`` offloads ≤ ``max_offload``, recovers ≥ ``min_gap`` of the
    small→big gap, and beats ``random`` (at the same realised offload ± ``tolerance``) with a CI excluding 0."""
    by = summary.set_index("method")
    off = {m: float(by.loc[m, offload]) for m in (learned, random) if m is not None}
    gap = gap_recovered_ci(rows, learned, small, big, n_boot, seed, level)
    out: dict[str, Any] = {
        "offload_measure": offload, "learned": learned, "random": random, "small": small, "big": big,
        "accuracy": {m: json_safe(float(by.loc[m, "accuracy"])) for m in (small, big, learned, random) if m},
        "offload": off, "gap_recovered": {k: json_safe(v) for k, v in gap.items()},
        "random_gap_recovered": None, "difference": None,
    }
    if random is not None:
        rgap = gap_recovered_ci(rows, random, small, big, n_boot, seed, level)
        out["random_gap_recovered"] = {k: json_safe(v) for k, v in rgap.items()}
        out["difference"] = paired_difference(rows, learned, random, n_boot, seed, level)
    diff = out["difference"]
    out["checks"] = {
        "learned_offload_at_most_max": off[learned] <= max_offload + 1e-12,
        "gap_recovered_at_least_min": bool(gap["gap_recovered"] >= min_gap),
        "random_matched_within_tolerance": random is not None and abs(off[random] - off[learned]) <= tolerance + 1e-12,
        "difference_ci_excludes_0": diff is not None and (diff["ci_low"] > 0 or diff["ci_high"] < 0),
        "learned_beats_random": diff is not None and diff["ci_low"] > 0,
    }
    out["thresholds"] = {"max_offload": max_offload, "min_gap": min_gap, "tolerance": tolerance, "ci_level": level}
    out["holds"] = all(out["checks"].values())
    return out
