"""Presentation of evaluation results (no I/O): a styled table and a figure for notebooks, Markdown for results.md
and the README."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.figure import Figure
from matplotlib.transforms import offset_copy


def results_table(df: pd.DataFrame) -> Any:
    """``aggregate``'s frame styled for a notebook: percentages, CIs, tokens, seconds."""
    cols = ["method", "accuracy", "ci_low", "ci_high", "offload_char_fraction", "offload_token_fraction",
            "tokens_small", "tokens_big", "wall_s", "truncated_share", "n_problems", "samples_per_problem"]
    pct = "{:.1%}".format
    fmt = {c: pct for c in ("accuracy", "ci_low", "ci_high", "offload_char_fraction", "offload_token_fraction",
                            "truncated_share")}
    fmt |= {"tokens_small": "{:,.0f}", "tokens_big": "{:,.0f}", "wall_s": "{:.2f}"}
    return df[cols].style.format(fmt, na_rep="–").hide(axis="index")


_MARKERS = "osD^vP*Xhp<>"


def _palette(n: int) -> list[Any]:
    """``n`` distinct colours: tab10 without its grey (kept for reference lines), else evenly spaced hues."""
    base = [c for i, c in enumerate(colormaps["tab10"].colors) if i != 7]
    return base[:n] if n <= len(base) else [colormaps["hsv"](i / n) for i in range(n)]


def method_styles(df: pd.DataFrame) -> dict[str, dict[str, Any]]:
    """Per method: ``color``, ``marker`` and ``family``. A family is a sweep (all its points share one colour and
    differ by marker) or a method on its own (its own colour and marker), so no two methods look alike. Colours go
    to the methods on their own in order, then to the sweeps by name."""
    sweeps = df["sweep"] if "sweep" in df else pd.Series([None] * len(df), index=df.index)
    sweep_of = {m: s for m, s in zip(df["method"], sweeps) if isinstance(s, str) and s}
    alone = [m for m in dict.fromkeys(df["method"]) if m not in sweep_of]
    families = alone + sorted(set(sweep_of.values()))  # the same colours whatever the order of the rows
    colours = dict(zip(families, _palette(len(families))))
    members = {f: [m for m in dict.fromkeys(df["method"]) if sweep_of.get(m, m) == f] for f in families}
    members |= {m: alone for m in alone}  # markers run over all the methods on their own
    return {m: {"color": colours[f], "marker": _MARKERS[members[f].index(m) % len(_MARKERS)], "family": f}
            for m, f in ((m, sweep_of.get(m, m)) for m in dict.fromkeys(df["method"]))}


def dodge_offsets(x: Sequence[float], y: Sequence[float], step_pt: float = 8.0, tol: float = 0.015) -> list[float]:
    """Horizontal offsets (points) that set (nearly) coinciding points side by side: points within ``tol`` of the
    data's span on both axes form a group, spread ``step_pt`` apart around their position; others get 0."""
    xs, ys = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    span = [max(float(np.nanmax(v) - np.nanmin(v)), 1e-12) if v.size else 1.0 for v in (xs, ys)]
    groups: list[list[int]] = []
    for i in range(xs.size):
        near = (g for g in groups if abs(xs[g[0]] - xs[i]) <= tol * span[0] and abs(ys[g[0]] - ys[i]) <= tol * span[1])
        group = next(near, None)
        if group is None:
            groups.append([i])
        else:
            group.append(i)
    offsets = [0.0] * xs.size
    for g in groups:
        for j, i in enumerate(g):
            offsets[i] = (j - (len(g) - 1) / 2) * step_pt
    return offsets


def accuracy_vs_offload(df: pd.DataFrame, offload: str = "offload_char_fraction") -> Figure:
    """Accuracy (with CI bars) against offload, one point per method (``method_styles``); the points of a sweep
    joined by a line of their colour; coinciding points drawn side by side (``dodge_offsets``); legend outside."""
    fig = Figure(figsize=(8, 4.5), layout="constrained")
    ax = fig.add_subplot()
    styles = method_styles(df)
    for sweep, points in df.dropna(subset=["sweep"]).groupby("sweep", sort=False):
        points = points.sort_values(offload)
        ax.plot(points[offload] * 100, points["accuracy"] * 100, color=styles[points["method"].iat[0]]["color"],
                linewidth=1.2, alpha=0.7, zorder=1, label=f"{sweep} sweep")
    recs = df.to_dict("records")
    dx = dodge_offsets([r[offload] for r in recs], [r["accuracy"] for r in recs])
    for rec, shift in zip(recs, dx):
        x, y = rec[offload] * 100, rec["accuracy"] * 100
        yerr = [[max(y - rec["ci_low"] * 100, 0)], [max(rec["ci_high"] * 100 - y, 0)]]
        ax.errorbar([x], [y], yerr=None if math.isnan(rec["ci_low"]) else yerr, linestyle="none", capsize=3,
                    color=styles[rec["method"]]["color"], marker=styles[rec["method"]]["marker"], markersize=7,
                    markeredgecolor="black", markeredgewidth=0.5, label=rec["method"], zorder=2,
                    transform=offset_copy(ax.transData, fig=fig, x=shift, units="points"))
    ax.update_datalim([(r[offload] * 100, 100 * v) for r in recs for v in (r["accuracy"], r["ci_low"], r["ci_high"])
                       if not math.isnan(v)])  # artists drawn with an offset don't count towards the limits
    ax.autoscale_view()
    unit = "characters" if offload == "offload_char_fraction" else "tokens"
    ax.set(xlabel=f"offloaded to the big model (% of {unit})", ylabel="accuracy (%)")
    title = "method" + ("\n(coinciding points side by side)" if any(dx) else "")
    ax.legend(fontsize="small", title=title, title_fontsize="small", loc="upper left", bbox_to_anchor=(1.02, 1),
              borderaxespad=0)
    return fig


def results_markdown(df: pd.DataFrame, s_per_problem: Mapping[str, float] | None = None) -> str:
    """``aggregate``'s frame as a Markdown table (for results.md and the README)."""
    head = ("| method | accuracy [95 % CI] | offload tokens | offload chars | tokens small / big | "
            "s / problem | truncated | n |")
    lines = [head, "|" + "---|" * 8]
    for r in df.to_dict("records"):
        ci = "" if math.isnan(r["ci_low"]) else f" [{r['ci_low']:.1%}, {r['ci_high']:.1%}]"
        spp = r["wall_s"] if s_per_problem is None else s_per_problem.get(r["method"], r["wall_s"])
        lines.append(f"| {r['method']} | {r['accuracy']:.1%}{ci} | {r['offload_token_fraction']:.1%} | "
                     f"{r['offload_char_fraction']:.1%} | {r['tokens_small']:.0f} / {r['tokens_big']:.0f} | "
                     f"{spp:.3f} | {r['truncated_share']:.1%} | {r['n_problems']} |")
    return "\n".join(lines) + "\n"


def _fmt(value: Any, spec: str) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else format(value, spec)


def claim_markdown(c: dict) -> str:
    """``claim``'s result as a few Markdown lines (for results.md and the README)."""
    acc, off, gap = c["accuracy"], c["offload"], c["gap_recovered"]
    unit = "tokens" if c["offload_measure"] == "offload_token_fraction" else "characters"
    lines = [(f"- small alone ({c['small']}): {_fmt(acc[c['small']], '.1%')}; "
              f"big alone ({c['big']}): {_fmt(acc[c['big']], '.1%')}"),
             (f"- learned ({c['learned']}): {_fmt(acc[c['learned']], '.1%')} at {_fmt(off[c['learned']], '.1%')} "
              f"offload ({unit}); gap recovered {_fmt(gap['gap_recovered'], '.2f')} "
              f"[95 % CI {_fmt(gap['ci_low'], '.2f')}, {_fmt(gap['ci_high'], '.2f')}]")]
    if c["random"] is None:
        lines.append("- random switching: no point within the matching tolerance of the learned offload")
    else:
        d, rgap = c["difference"], c["random_gap_recovered"]
        lines += [(f"- random ({c['random']}): {_fmt(acc[c['random']], '.1%')} at {_fmt(off[c['random']], '.1%')} "
                   f"offload; gap recovered {_fmt(rgap['gap_recovered'], '.2f')}"),
                  (f"- learned − random: {_fmt(d['diff'], '+.1%')} [95 % CI {_fmt(d['ci_low'], '+.1%')}, "
                   f"{_fmt(d['ci_high'], '+.1%')}] (paired over {d['n_problems']} problems)")]
    t = c["thresholds"]
    failed = [k for k, ok in c["checks"].items() if not ok]
    lines.append(f"- claim (offload ≤ {t['max_offload']:.0%}, gap recovered ≥ {t['min_gap']:.2f}, random matched "
                 f"±{t['tolerance'] * 100:.0f} points, CI of the difference excludes 0): "
                 f"**{'holds' if c['holds'] else 'does not hold'}**"
                 + (f" (failed: {', '.join(failed)})" if failed else ""))
    return "\n".join(lines) + "\n"
