"""Numbers from sample rows: per-problem and per-run accuracy, a summary per method with its confidence interval,
paired differences, the share of the small→big gap a method recovers, and ``metrics.json``.

Intervals: the ``runs`` aggregate takes a Student-t interval over per-run accuracies (``scipy.stats.t``); ``pass@1``
and the paired comparisons a percentile bootstrap over problems (``bootstrap_mean_ci``).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats as scipy_stats

from splitlib import runs
from splitlib.evaluate.methods import KEY
from splitlib.evaluate.protocols import EvalProtocol
from splitlib.evaluate.records import method_provenance

log = logging.getLogger(__name__)

_NUMERIC = ("offload_token_fraction", "offload_char_fraction", "tokens_small", "tokens_big", "handoffs",
            "rejected_requests", "wall_s")


def frame(rows: Sequence[dict]) -> pd.DataFrame:
    """The scalar columns of sample rows (generations and traces left out)."""
    if not rows:
        raise ValueError("no sample rows to aggregate")
    df = pd.DataFrame([{k: v for k, v in r.items() if k not in ("generation", "trace", "policy_params")}
                       for r in rows])
    df["correct"] = df["correct"].astype(float)
    return df


def per_problem_accuracy(rows: Sequence[dict]) -> pd.DataFrame:
    """Mean correctness per (method, problem) over its samples (scorable rows only)."""
    df = frame(rows)
    df = df[df["scorable"]]
    out = df.groupby(["method", "problem_id"], sort=False)["correct"].agg(["mean", "size"]).reset_index()
    return out.rename(columns={"mean": "accuracy", "size": "n_samples"})


def per_run_accuracy(rows: Sequence[dict]) -> pd.DataFrame:
    """Accuracy of each run (sample index) per method over its problems (scorable rows only)."""
    df = frame(rows)
    df = df[df["scorable"]]
    out = df.groupby(["method", "sample"], sort=False)["correct"].agg(["mean", "size"]).reset_index()
    return out.rename(columns={"sample": "run", "mean": "accuracy", "size": "n_problems"})


def t_quantile(level: float, dof: int) -> float:
    """Half-width multiplier of a two-sided ``level`` t-interval with ``dof`` degrees of freedom."""
    if dof < 1 or not 0 < level < 1:
        raise ValueError(f"t_quantile(level={level}, dof={dof}): need 0 < level < 1 and dof ≥ 1")
    return float(scipy_stats.t.ppf((1 + level) / 2, dof))


def bootstrap_mean_ci(values: Sequence[float], n_boot: int, level: float, seed: int) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean (resampling the values with replacement, seeded).

    Hand-written with numpy rather than ``scipy.stats.bootstrap``: scipy defaults to BCa intervals and draws its
    resamples differently, so it would change every recorded interval, and it cannot resample the paired ratio of
    ``splitlib.evaluate.claim.gap_recovered_ci``, which draws its resamples the same way as this function.
    """
    x = np.asarray(values, dtype=float)
    if x.size == 0:
        return math.nan, math.nan
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, x.size, size=(n_boot, x.size))].mean(axis=1)
    tail = (1 - level) / 2
    return float(np.quantile(means, tail)), float(np.quantile(means, 1 - tail))


def _accuracy_ci(method_rows: pd.DataFrame, protocol: EvalProtocol) -> dict:
    run_acc = method_rows.groupby("sample")["correct"].mean()
    run_sd = float(run_acc.std(ddof=1)) if len(run_acc) > 1 else math.nan
    if protocol.aggregate == "runs":
        acc = float(run_acc.mean())
        half = t_quantile(protocol.ci_level, len(run_acc) - 1) * run_sd / math.sqrt(len(run_acc)) \
            if len(run_acc) > 1 else math.nan
        return {"accuracy": acc, "ci_low": acc - half, "ci_high": acc + half, "ci_method": "t over runs",
                "run_sd": run_sd}
    problem_acc = method_rows.groupby("problem_id")["correct"].mean()
    lo, hi = bootstrap_mean_ci(problem_acc.to_numpy(), protocol.n_boot, protocol.ci_level, protocol.seed)
    return {"accuracy": float(problem_acc.mean()), "ci_low": lo, "ci_high": hi,
            "ci_method": "bootstrap over problems", "run_sd": run_sd}


def _method_summary(m: pd.DataFrame, protocol: EvalProtocol) -> dict:
    scorable = m[m["scorable"]]
    per_problem = scorable.groupby("problem_id").size()
    if per_problem.nunique() > 1:
        log.warning("method %s: problems have unequal sample counts (%d–%d): an incomplete grid",
                    m["method"].iat[0], per_problem.min(), per_problem.max())
    first = m.iloc[0]
    return {
        "method": first["method"], "policy": first.get("policy"), "sweep": first.get("sweep"),
        **(_accuracy_ci(scorable, protocol) if len(scorable) else
           {"accuracy": math.nan, "ci_low": math.nan, "ci_high": math.nan, "ci_method": "", "run_sd": math.nan}),
        **{c: float(m[c].mean()) for c in _NUMERIC},
        "truncated_share": float(m["truncated"].mean()),
        "n_problems": int(per_problem.size), "samples_per_problem": int(per_problem.min()) if len(per_problem) else 0,
        "n_rows": len(m), "n_unscorable": int((~m["scorable"]).sum()),
    }


def aggregate(rows: Sequence[dict], protocol: EvalProtocol) -> pd.DataFrame:
    """One row per method (in order of appearance): accuracy with its CI, offload, tokens, time, truncation, n."""
    df = frame(rows)
    return pd.DataFrame([_method_summary(m, protocol) for _, m in df.groupby("method", sort=False)])


def accuracy_by_problem(rows: Sequence[dict], methods: Sequence[str]) -> pd.DataFrame:
    """Per-problem accuracy, one column per method; every one of ``methods`` must have scorable rows."""
    acc = per_problem_accuracy(rows).pivot(index="problem_id", columns="method", values="accuracy")
    missing = [m for m in methods if m not in acc.columns]
    if missing:
        raise ValueError(f"no scorable rows for {missing}; methods present: {list(acc.columns)}")
    return acc


def paired_difference(rows: Sequence[dict], method_a: str, method_b: str, n_boot: int = 10_000,
                      seed: int = 0, level: float = 0.95) -> dict:
    """Accuracy of A minus B on their common problems, with a paired bootstrap CI over problems."""
    acc = accuracy_by_problem(rows, (method_a, method_b))
    diffs = (acc[method_a] - acc[method_b]).dropna()
    if diffs.empty:
        raise ValueError(f"{method_a} and {method_b} share no problem")
    lo, hi = bootstrap_mean_ci(diffs.to_numpy(), n_boot, level, seed)
    return {"method_a": method_a, "method_b": method_b, "diff": float(diffs.mean()), "ci_low": lo, "ci_high": hi,
            "n_problems": int(diffs.size)}


def gap_recovered(acc: float, small_acc: float, big_acc: float) -> float:
    """Share of the small→big accuracy gap a method closes: (acc − small) / (big − small); NaN without a gap."""
    if big_acc == small_acc:
        log.warning("gap_recovered: big and small accuracies are equal (%.4f); no gap to recover", big_acc)
        return math.nan
    return (acc - small_acc) / (big_acc - small_acc)


def json_safe(value: Any) -> Any:
    """NaN as None and numpy scalars as Python ones (strict JSON)."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, np.generic):
        return json_safe(value.item())
    return value


def write_metrics(rows: Sequence[dict], protocol: EvalProtocol, path: str | Path, extra: dict | None = None) -> Path:
    """``metrics.json``: the protocol, grader versions, per method its summary and per-run accuracies, and under
    ``provenance`` per method what determined its rows (``records.method_provenance``: model hashes, settings,
    prompt and grader, and their key)."""
    summary = aggregate(rows, protocol)
    run_acc = per_run_accuracy(rows)
    methods = {
        rec["method"]: {**{k: json_safe(v) for k, v in rec.items()},
                        "run_accuracy": [float(a) for a in run_acc.loc[run_acc["method"] == rec["method"], "accuracy"]]}
        for rec in summary.to_dict("records")
    }
    body = {"protocol": asdict(protocol), "grader_versions": sorted({r["grader_version"] for r in rows}),
            "methods": methods, "provenance": method_provenance(rows), **(extra or {})}
    return runs.atomic_write_json(path, body)


def run_accuracies(rows: Sequence[dict], n_subsets: int = 5) -> pd.DataFrame:
    """Per-run accuracy (method, run, accuracy) for box plots: the protocol's runs when a method has several samples
    per problem; with one sample, ``n_subsets`` disjoint, equally sized problem subsets (in file order) stand in
    for runs."""
    if n_subsets < 1:
        raise ValueError(f"n_subsets={n_subsets}: expected ≥ 1")
    df = frame(rows)
    df = df[df["scorable"]]
    out = []
    for name, m in df.groupby("method", sort=False):
        if m["sample"].nunique() > 1:
            acc = m.groupby("sample")["correct"].mean()
        else:
            ids = list(dict.fromkeys(m["problem_id"]))
            group = {pid: i * n_subsets // len(ids) for i, pid in enumerate(ids)}
            acc = m.groupby(m["problem_id"].map(group))["correct"].mean()
        out += [{"method": name, "run": int(k), "accuracy": float(v)} for k, v in acc.items()]
    return pd.DataFrame(out, columns=["method", "run", "accuracy"])


def median_wall_rows(passes: Sequence[Sequence[dict]]) -> list[dict]:
    """Per (method, problem, sample): the row whose measured ``wall_s`` is the median over several timing passes of
    the same grid (spread in time, so that a noisy machine's slow spells do not hit every pass of one problem)."""
    by_key: dict[tuple, list[dict]] = {}
    for rows in passes:
        for r in rows:
            by_key.setdefault(tuple(r[k] for k in KEY), []).append(r)
    counts = {len(v) for v in by_key.values()}
    if counts != {len(passes)}:
        raise ValueError(f"timing passes hold different grids (rows per key: {sorted(counts)}); run every pass fully")
    return [sorted(v, key=lambda r: r["wall_s"])[len(v) // 2] for v in by_key.values()]


def time_per_problem(rows: Sequence[dict]) -> pd.Series:
    """Measured seconds per problem by method: each batch's wall time over its size (throughput, not latency)."""
    df = pd.DataFrame([{"method": r["method"], "s": r["batch_wall_s"] / r["batch_size"]} for r in rows])
    return df.groupby("method", sort=False)["s"].mean()


def speedup_over(times: pd.DataFrame, baseline: str, column: str = "wall_s") -> pd.Series:
    """Per method (in order of appearance): the ``baseline`` method's mean ``column`` seconds over the method's, on
    the (problem, sample) keys both have (NaN where they share none). ``times``: one row per method, problem and
    sample, e.g. measured ``wall_s`` or ``simulator.simulate_rows``' ``sim_s``."""
    missing = [c for c in ("method", "problem_id", "sample", column) if c not in times.columns]
    if missing:
        raise ValueError(f"speedup_over needs columns method, problem_id, sample, {column}; missing {missing}")
    s = times.pivot_table(index=["problem_id", "sample"], columns="method", values=column, aggfunc="mean")
    if baseline not in s.columns:
        raise ValueError(f"no {column} for the baseline {baseline!r}; methods with times: {list(s.columns)}")
    out = {}
    for method in dict.fromkeys(times["method"]):
        both = s[[baseline, method]].dropna().to_numpy()
        out[method] = float(both[:, 0].mean() / both[:, 1].mean()) if len(both) else math.nan
    return pd.Series(out, name=f"speed-up over {baseline} ({column})", dtype=float)
