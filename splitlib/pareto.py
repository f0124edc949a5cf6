"""Accuracy against speed-up over big-only for the trained checkpoints (notebook 06's Pareto figure): which methods
notebook 06 times (roles, ``@arms`` among them), the points, which of them no other point beats on both axes (the
Pareto frontier), the figure and the ``pareto`` block of 06's metrics.

A point is on the frontier when no other point is at least as fast and at least as accurate and strictly better in
one of the two; the frontier is computed on the simulated speed-up, which every point has (the measured one only the
methods timed at batch 1).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from splitlib import plots

ARMS_ROLE = "@arms"  # every checkpoint notebook 05 evaluated with split decoding (its ``grpo`` block)
SIMULATED, MEASURED = "simulated (serial)", "measured (batch 1)"  # notebook 06's kinds of speed-up


def arm_methods(grpo: Mapping[str, Any]) -> list[str]:
    """The split-decoding methods of 05's ``grpo`` block (``split sft``, ``split grpo-offload``, …), in its order;
    its paired-difference entries have no method and are skipped."""
    return [v["method"] for v in grpo.values() if isinstance(v, Mapping) and "method" in v]


def resolve_methods(refs: Sequence[str], roles: Mapping[str, str | None], grpo: Mapping[str, Any]) -> list[str]:
    """Method names for ``refs``: a name as it is, a role of ``roles`` (``@small``, ``@big``, ``@learned``,
    ``@random``) as its method (left out when None), ``@arms`` as every method of ``arm_methods(grpo)``; each once,
    in order of first mention."""
    names: list[str | None] = []
    for ref in refs:
        if ref == ARMS_ROLE:
            names += arm_methods(grpo)
        elif ref.startswith("@"):
            if ref not in roles:
                raise ValueError(f"unknown role {ref!r}: expected a method name, {ARMS_ROLE} or one of {list(roles)}")
            names.append(roles[ref])
        else:
            names.append(ref)
    return list(dict.fromkeys(n for n in names if n))


def on_frontier(speedup: Sequence[float], accuracy: Sequence[float]) -> np.ndarray:
    """Per point: True when no other point is at least as fast and as accurate and strictly better in one (points
    with a NaN coordinate are never on it and dominate nothing). Equal points are all on it."""
    x, y = np.asarray(speedup, dtype=float), np.asarray(accuracy, dtype=float)
    ok = np.isfinite(x) & np.isfinite(y)
    beats = lambda i: ok & (x >= x[i]) & (y >= y[i]) & ((x > x[i]) | (y > y[i]))
    return np.array([bool(ok[i]) and not beats(i).any() for i in range(x.size)], dtype=bool)


def random_sweep(table: pd.DataFrame, claim: Mapping[str, Any]) -> list[str]:
    """The methods of the claim's ``random`` method's sweep (04's random-switch ratios), in table order; just that
    method when it is no sweep's point; none without one."""
    sweeps = table.set_index("method")["sweep"] if "sweep" in table else pd.Series(dtype=object)
    name = sweeps.get(claim.get("random"))
    if not isinstance(name, str):
        return [claim["random"]] if claim.get("random") in sweeps.index else []
    return [m for m, s in sweeps.items() if s == name]


def pareto_methods(table: pd.DataFrame, grpo: Mapping[str, Any], claim: Mapping[str, Any]) -> list[str]:
    """The figure's methods: small-only, every checkpoint of the ``grpo`` block, the claim's learned method (e.g. a
    budget variant of one), big-only, then every point of the random-switch sweep (the sweep of the claim's
    ``random`` method), those present in ``table``."""
    wanted = [claim.get("small"), *arm_methods(grpo), claim.get("learned"), claim.get("big"),
              *random_sweep(table, claim)]
    return [m for m in dict.fromkeys(wanted) if m in set(table["method"])]


def pareto_points(table: pd.DataFrame, speedups: pd.DataFrame, methods: Sequence[str]) -> pd.DataFrame:
    """One row per method of ``methods``: accuracy, its CI, offloaded token fraction, simulated and measured
    speed-up (NaN where not timed; ``speedups``: 06's frame with columns ``SIMULATED`` and maybe ``MEASURED``,
    indexed by method) and whether it is on the frontier (simulated speed-up)."""
    rows = table.set_index("method").loc[list(methods)]
    sim = speedups[SIMULATED].reindex(methods)
    meas = speedups[MEASURED].reindex(methods) if MEASURED in speedups else pd.Series(np.nan, index=list(methods))
    df = pd.DataFrame({"method": list(methods), "accuracy": rows["accuracy"].to_numpy(),
                       "ci_low": rows["ci_low"].to_numpy(), "ci_high": rows["ci_high"].to_numpy(),
                       "offload_token_fraction": rows["offload_token_fraction"].to_numpy(),
                       "speedup_simulated": sim.to_numpy(dtype=float), "speedup_measured": meas.to_numpy(dtype=float)})
    return df.assign(on_frontier=on_frontier(df["speedup_simulated"], df["accuracy"]))


def pareto_block(points: pd.DataFrame) -> list[dict[str, Any]]:
    """``pareto_points`` as JSON-able records for 06's metrics (``ci`` = [low, high]; a missing measured speed-up is
    None)."""
    none_if_nan = lambda v: None if v is None or not np.isfinite(v) else float(v)
    return [{"method": r["method"], "accuracy": float(r["accuracy"]),
             "ci": [none_if_nan(r["ci_low"]), none_if_nan(r["ci_high"])],
             "offload_token_fraction": float(r["offload_token_fraction"]),
             "speedup_simulated": none_if_nan(r["speedup_simulated"]),
             "speedup_measured": none_if_nan(r["speedup_measured"]), "on_frontier": bool(r["on_frontier"])}
            for r in points.to_dict("records")]


def point_label(method: str) -> str:
    """A point's label: the checkpoint for a split method (``split grpo-rl4e_1`` -> ``grpo-rl4e_1``), else the
    method."""
    return method.removeprefix("split ")


RL4E_SWEEP = "rl4e latency weight"  # the rl4e arms, one per latency weight, drawn as a sweep in the Pareto figure


def pareto_figure(table: pd.DataFrame, points: pd.DataFrame, claim: Mapping[str, Any]) -> Figure:
    """``plots.accuracy_vs_speedup`` of ``points``' methods (simulated hollow, measured filled) over ``claim["big"]``:
    the random-switch points (``random_sweep``) as their sweep, the rl4e arms (``split grpo-rl4e_<w>``) as a sweep
    of their own, every other point named beside it, and the frontier of the simulated points as a step line."""
    speedups = {SIMULATED: points.set_index("method")["speedup_simulated"]}
    if points["speedup_measured"].notna().any():
        speedups[MEASURED] = points.set_index("method")["speedup_measured"]
    sweeps = table.set_index("method")["sweep"] if "sweep" in table else pd.Series(dtype=object)
    random = set(random_sweep(table, claim))
    sweep_of = {m: sweeps.get(m) if m in random else RL4E_SWEEP if _is_rl4e_arm(m) else None for m in table["method"]}
    drawn = table.assign(sweep=table["method"].map(sweep_of))  # the learned budget point stands alone here
    fig = plots.accuracy_vs_speedup(drawn, speedups, baseline=claim["big"], methods=list(points["method"]),
                                    labels={m: point_label(m) for m in points["method"] if m not in random},
                                    title="accuracy against speed-up: SFT, GRPO arms, random switching")
    _draw_frontier(fig.axes[0], points[points["on_frontier"]])
    return fig


def _is_rl4e_arm(method: str) -> bool:
    """``split grpo-rl4e_<w>`` (not a budget or other variant of it)."""
    return method.startswith("split grpo-rl4e_") and " " not in method.removeprefix("split ")


def _draw_frontier(ax, front: pd.DataFrame) -> None:
    """The frontier as a step line (at speed-up x, the best accuracy reachable at least that fast), first in the
    legend."""
    front = front.sort_values(["speedup_simulated", "accuracy"], ascending=[True, False])
    line = ax.step(front["speedup_simulated"], 100 * front["accuracy"], where="pre", color="0.25", linewidth=1.6,
                   linestyle="--", alpha=0.8, zorder=1.5)[0]
    legend = ax.get_legend()
    handles, texts = list(legend.legend_handles), [t.get_text() for t in legend.get_texts()]
    ax.legend([Line2D([], [], color=line.get_color(), linestyle="--", linewidth=1.6), *handles],
              ["Pareto frontier (simulated)", *texts], fontsize="small", loc="upper left", bbox_to_anchor=(1.02, 1),
              borderaxespad=0)
