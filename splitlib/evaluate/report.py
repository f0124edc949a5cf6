"""Presentation of evaluation results (no I/O): a styled table and a figure for notebooks, Markdown for results.md
and the README."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import pandas as pd
from matplotlib.figure import Figure


def results_table(df: pd.DataFrame) -> Any:
    """``aggregate``'s frame styled for a notebook: percentages, CIs, tokens, seconds."""
    cols = ["method", "accuracy", "ci_low", "ci_high", "offload_char_fraction", "offload_token_fraction",
            "tokens_small", "tokens_big", "wall_s", "truncated_share", "n_problems", "samples_per_problem"]
    pct = "{:.1%}".format
    fmt = {c: pct for c in ("accuracy", "ci_low", "ci_high", "offload_char_fraction", "offload_token_fraction",
                            "truncated_share")}
    fmt |= {"tokens_small": "{:,.0f}", "tokens_big": "{:,.0f}", "wall_s": "{:.2f}"}
    return df[cols].style.format(fmt, na_rep="–").hide(axis="index")


def accuracy_vs_offload(df: pd.DataFrame, offload: str = "offload_char_fraction") -> Figure:
    """Accuracy (with CI bars) against offload, one marker per method; points of a budget sweep joined by a line."""
    fig = Figure(figsize=(6, 4), layout="constrained")
    ax = fig.add_subplot()
    markers = "osD^vP*Xhp<>"
    for sweep, points in df.dropna(subset=["sweep"]).groupby("sweep", sort=False):
        points = points.sort_values(offload)
        ax.plot(points[offload] * 100, points["accuracy"] * 100, color="0.6", linewidth=1, zorder=1)
    for i, rec in enumerate(df.to_dict("records")):
        x, y = rec[offload] * 100, rec["accuracy"] * 100
        yerr = [[max(y - rec["ci_low"] * 100, 0)], [max(rec["ci_high"] * 100 - y, 0)]]
        ax.errorbar([x], [y], yerr=None if math.isnan(rec["ci_low"]) else yerr, marker=markers[i % len(markers)],
                    linestyle="none", capsize=3, label=rec["method"], zorder=2)
    unit = "characters" if offload == "offload_char_fraction" else "tokens"
    ax.set(xlabel=f"offloaded to the big model (% of {unit})", ylabel="accuracy (%)")
    ax.legend(fontsize="small")
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
