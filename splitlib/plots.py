"""Figures (Figure 5 and friends). Every function returns a ``matplotlib.figure.Figure`` built without pyplot,
so nothing here touches a display or global figure state, and nothing is written to disk."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FuncFormatter, NullFormatter
from matplotlib.transforms import offset_copy

from splitlib.evaluate import accuracy_vs_offload, dodge_offsets, method_styles
from splitlib.hardware import HardwareProfile
from splitlib.paper_results import constant
from splitlib.simulator import TABLE_BIGS, sweep

_STEP, _MAX = constant("figure5_offload_step"), constant("figure5_offload_max")
FIGURE5_OFFLOADS = tuple(np.round(np.arange(round(_MAX / _STEP) + 1) * _STEP, 4))  # c = 0, 0.01, …, 0.30 (paper)
FIGURE5_MARKED_OFFLOADS = tuple(constant("figure5_marked_offloads"))  # the paper's dashed lines, Figure 5 (right)
_MARK_COLORS = ("#F7374F", "#88304E", "#522546")  # the dashed lines, smallest offload first (as printed)
_SOURCE_COLORS = ("black", "tab:blue", "tab:green", "tab:purple")  # box outlines per source, Figure 5 (left)
_STYLE = "whitegrid"


def _new_axes(figsize: tuple[float, float]):
    with sns.axes_style(_STYLE):
        fig = Figure(figsize=figsize, layout="constrained")
        ax = fig.add_subplot()
    return fig, ax


def _require_columns(df: pd.DataFrame, columns: Sequence[str], what: str) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ValueError(f"{what} needs columns {list(columns)}; missing {missing} (has {list(df.columns)})")


def figure5_left(per_run: pd.DataFrame, ax: Axes | None = None, ylabel: str = "Accuracy (%)",
                 tick_labels: Mapping[str, str] | None = None, title: str | None = None) -> Figure:
    """Box plot of per-run accuracy (in %) by offloading mode, as the paper draws it: one box per mode in order of
    first appearance, whiskers to the furthest run within 1.5 IQR, no outlier markers.

    Several sources ("paper", "this run") sit side by side within a mode, one colour each, with a legend.
    ``tick_labels`` renames modes on the x axis (e.g. the paper's "None\\n(0.0%)"). ``title`` defaults to the paper's
    for one source. Drawn on ``ax`` if given."""
    _require_columns(per_run, ("mode", "accuracy", "source"), "figure5_left")
    fig, ax = _new_axes((7, 4.5)) if ax is None else (ax.figure, ax)
    modes, sources = list(dict.fromkeys(per_run["mode"])), list(dict.fromkeys(per_run["source"]))
    width = 0.6 / len(sources)
    for j, source in enumerate(sources):
        part = per_run[per_run["source"] == source]
        present = [i for i, m in enumerate(modes) if (part["mode"] == m).any()]
        color = _SOURCE_COLORS[j % len(_SOURCE_COLORS)]
        ax.boxplot([100 * part.loc[part["mode"] == modes[i], "accuracy"].to_numpy(dtype=float) for i in present],
                   positions=[i + (j - (len(sources) - 1) / 2) * width for i in present], widths=0.9 * width,
                   showfliers=False, manage_ticks=False, boxprops={"linewidth": 1.5, "color": color},
                   whiskerprops={"color": color}, capprops={"color": color},
                   medianprops={"linewidth": 2, "color": "tab:orange"})
    names = [(tick_labels or {}).get(m, m) for m in modes]
    longest = max(len(line) for name in names for line in name.splitlines())
    ax.set_xticks(range(len(modes)), names, rotation=20 if longest > 14 else 0)
    if len(sources) > 1:
        ax.legend([Line2D([], [], color=_SOURCE_COLORS[j % len(_SOURCE_COLORS)], linewidth=1.5)
                   for j in range(len(sources))], sources, fontsize="small")
    title = title or ("AIME24 accuracy" if len(sources) == 1 else "accuracy per run, by source")
    ax.set(xlabel="Offloading mode", ylabel=ylabel, title=title, xlim=(-0.6, len(modes) - 0.4))
    ax.grid(False)
    return fig


def figure5_right(profile: HardwareProfile | str, small: str = "1.5B", bigs: Sequence[str] = TABLE_BIGS,
                  offloads: Sequence[float] = FIGURE5_OFFLOADS, mode: str = "paper",
                  extra_curves: Mapping[str, tuple[Sequence[float], Sequence[float]]] | None = None,
                  ax: Axes | None = None, marked_offloads: Sequence[float] = FIGURE5_MARKED_OFFLOADS) -> Figure:
    """Simulated speed-up over each big model alone (x) against the fraction of the generation written by the small
    model (1 − offload, y), one line per big model ("SplitReasoner <big>"), as the paper draws it: dashed horizontal
    lines at ``marked_offloads``, labelled at the right edge.

    ``extra_curves`` maps a label to (small-model fractions, speed-ups), e.g. measured points, drawn with markers.
    Drawn on ``ax`` if given.
    """
    df = sweep(offloads, profile, small, bigs, mode)
    fig, ax = _new_axes((6.5, 4.5)) if ax is None else (ax.figure, ax)
    colors = colormaps["CMRmap"](np.linspace(0, 1, max(len(bigs), int(1.5 * len(bigs)))))
    for color, (big, rows) in zip(colors, df.groupby("big", sort=False)):
        ax.plot(rows["speedup"], 1 - rows["offload"], label=f"SplitReasoner {big}", color=color, linewidth=2.5)
    for label, (fraction, speedup) in (extra_curves or {}).items():
        ax.plot(speedup, fraction, marker="o", linestyle=":", label=label)
    for c, color in zip(sorted(marked_offloads), _MARK_COLORS):
        ax.axhline(1 - c, color=color, linestyle="--", linewidth=1.5)
        ax.annotate(f"{100 * c:g}% offload", xy=(1, 1 - c), xycoords=("axes fraction", "data"), xytext=(-6, -4),
                    textcoords="offset points", ha="right", va="top", fontweight="bold", fontsize="small", color=color)
    ax.set(xlabel=f"Speed-up over the big model ({mode} simulator)", ylabel=f"Fraction generated by {small}",
           title="Two-model pipelined inference, simulated")
    ax.legend(loc="lower right", fontsize="small")
    return fig


def figure5(per_run: pd.DataFrame, profile: HardwareProfile | str, small: str = "1.5B",
            bigs: Sequence[str] = TABLE_BIGS, mode: str = "paper",
            extra_curves: Mapping[str, tuple[Sequence[float], Sequence[float]]] | None = None,
            ylabel: str = "Accuracy (%)", tick_labels: Mapping[str, str] | None = None) -> Figure:
    """Both panels of Figure 5 side by side, in the paper's layout: accuracy per offloading mode (left), simulated
    speed-up against the small model's share of the generation (right)."""
    with sns.axes_style(_STYLE):
        fig = Figure(figsize=(14, 5), layout="constrained")
        left, right = fig.subplots(1, 2)
    figure5_left(per_run, ax=left, ylabel=ylabel, tick_labels=tick_labels)
    figure5_right(profile, small, bigs, mode=mode, extra_curves=extra_curves, ax=right)
    return fig


def relative_errors(sim: Sequence[float], measured: Sequence[float]) -> dict[str, float]:
    """Median and 90th percentile of |sim − measured| / measured."""
    sim_arr, meas_arr = np.asarray(sim, dtype=float), np.asarray(measured, dtype=float)
    if sim_arr.shape != meas_arr.shape or sim_arr.size == 0:
        raise ValueError(f"need equally long, non-empty sequences; got {sim_arr.size} simulated, "
                         f"{meas_arr.size} measured")
    if np.any(meas_arr <= 0):
        raise ValueError("measured times must be positive seconds; drop rows with wall_s <= 0")
    err = np.abs(sim_arr - meas_arr) / meas_arr
    return {"median": float(np.median(err)), "p90": float(np.percentile(err, 90))}


def sim_vs_measured(df: pd.DataFrame, hue: str | None = None) -> Figure:
    """Scatter of simulated ``sim_s`` against measured ``wall_s`` with the y = x line; errors in the title."""
    _require_columns(df, ("sim_s", "wall_s") + ((hue,) if hue else ()), "sim_vs_measured")
    errors = relative_errors(df["sim_s"], df["wall_s"])
    fig, ax = _new_axes((5, 5))
    sns.scatterplot(data=df, x="wall_s", y="sim_s", hue=hue, ax=ax)
    hi = float(max(df["sim_s"].max(), df["wall_s"].max())) * 1.05
    ax.plot([0, hi], [0, hi], color="grey", linestyle="--", linewidth=1, label="y = x")
    ax.set(xlim=(0, hi), ylim=(0, hi), xlabel="measured wall s", ylabel="simulated s",
           title=f"|relative error|: median {errors['median']:.1%}, p90 {errors['p90']:.1%}")
    return fig


def accuracy_vs_offload_at(table: pd.DataFrame, target: float, offload: str = "offload_token_fraction") -> Figure:
    """``evaluate.accuracy_vs_offload`` of every method, larger, with a dotted line at the ``target`` offload (the
    learned method's), in the legend beside the axes: the results figure of notebook 05."""
    fig = accuracy_vs_offload(table, offload=offload)
    fig.set_size_inches(9, 5)
    ax = fig.axes[0]
    legend_title = ax.get_legend().get_title().get_text()
    ax.axvline(100 * target, color="0.5", linestyle=":", linewidth=1.2, zorder=0, label="the learned method's offload")
    ax.set_title("accuracy vs offload (dotted: the learned method's offload)")
    ax.legend(fontsize="small", title=legend_title, title_fontsize="small", loc="upper left",
              bbox_to_anchor=(1.02, 1), borderaxespad=0)
    return fig


_FILLS = ("none", "full", "left", "bottom")  # one fill style per kind of speed-up


def accuracy_vs_speedup(table: pd.DataFrame, speedups: Mapping[str, Mapping[str, float] | pd.Series],
                        baseline: str = "big only", methods: Sequence[str] | None = None,
                        labels: Mapping[str, str] | None = None,
                        title: str = "accuracy against speed-up per method") -> Figure:
    """Accuracy (with CI bars) against speed-up over ``baseline``, per method and kind of speed-up.

    ``table``: ``evaluate.aggregate``'s frame (method, accuracy, ci_low, ci_high, sweep); ``speedups``: kind (say
    "simulated (serial)", "measured (batch 1)") → {method: speed-up}, e.g. ``evaluate.speedup_over``. Colour and
    marker per method as in ``accuracy_vs_offload``, fill per kind (the first hollow); one method's kinds joined
    by a thin line, a sweep's points of the first kind by a line of its colour. Methods without a speed-up are left
    out; log x axis, a dashed line at 1 (as fast as the baseline). ``methods``: only these, in this order (default:
    every method of the table); ``labels``: method → text written beside its first-kind point (names of nearby points
    stacked and joined to their point by a thin line).
    """
    _require_columns(table, ("method", "accuracy", "ci_low", "ci_high"), "accuracy_vs_speedup")
    if methods is not None:
        table = table.set_index("method").loc[[m for m in methods if m in set(table["method"])]].reset_index()
    if not speedups or len(speedups) > len(_FILLS):
        raise ValueError(f"speedups: expected 1–{len(_FILLS)} kinds, got {list(speedups)}")
    fig, ax = _new_axes((9, 5))
    styles = method_styles(table)
    points = pd.DataFrame([{**rec, "kind": kind, "speedup": float(by[rec["method"]])}
                           for kind, by in speedups.items() for rec in table.to_dict("records")
                           if rec["method"] in by and np.isfinite(by[rec["method"]]) and by[rec["method"]] > 0])
    if points.empty:
        raise ValueError(f"no method of the table {list(table['method'])} has a speed-up in {list(speedups)}")
    first = points[points["kind"] == next(iter(speedups))]
    for name, part in first.dropna(subset=["sweep"]).groupby("sweep", sort=False) if "sweep" in first else ():
        part = part.sort_values("speedup")
        ax.plot(part["speedup"], 100 * part["accuracy"], color=styles[part["method"].iat[0]]["color"], alpha=0.6,
                linewidth=1.2, zorder=1, label=f"{name} sweep")
    for method, part in points.groupby("method", sort=False):
        if len(part) > 1:
            ax.plot(part["speedup"], 100 * part["accuracy"], color=styles[method]["color"], linewidth=0.8,
                    linestyle=":", zorder=1)
    shifts = _speedup_points(ax, points, styles, dict(zip(speedups, _FILLS)))
    _label_points(ax, points, shifts, styles, labels or {})
    ax.axvline(1, color="0.5", linestyle="--", linewidth=1, zorder=0)
    ax.set_xscale("log")
    lo, hi = ax.get_xlim()
    if labels:  # room on the right for the labels of the fastest points, inside the axes
        lo, hi = ax.set_xlim(lo, hi * (hi / lo) ** 0.3)
    ax.set_xticks([t for t in (0.1, 0.2, 0.5, 1, 1.5, 2, 3, 5, 10, 20, 50, 100) if lo <= t <= hi], minor=False)
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}×"))
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set(xlabel=f"speed-up over {baseline} (log scale)", ylabel="accuracy (%)",
           title=title)
    _speedup_legend(ax, styles, points, dict(zip(speedups, _FILLS)))
    return fig


def _speedup_points(ax: Axes, points: pd.DataFrame, styles: Mapping[str, Mapping],
                    fills: Mapping[str, str]) -> list[float]:
    """One marker (CI bars) per row of ``points``; coinciding ones side by side (``evaluate.dodge_offsets``, whose
    horizontal shifts in points are returned)."""
    shifts = dodge_offsets(np.log(points["speedup"]), points["accuracy"])
    for rec, shift in zip(points.to_dict("records"), shifts):
        y, style = 100 * rec["accuracy"], styles[rec["method"]]
        yerr = None if np.isnan(rec["ci_low"]) else [[max(y - 100 * rec["ci_low"], 0)], [max(100 * rec["ci_high"] - y, 0)]]
        ax.errorbar([rec["speedup"]], [y], yerr=yerr, linestyle="none", capsize=3, color=style["color"],
                    marker=style["marker"], markersize=8, fillstyle=fills[rec["kind"]], markerfacecoloralt="white",
                    markeredgecolor=style["color"], zorder=2,
                    transform=offset_copy(ax.transData, fig=ax.figure, x=shift, units="points"))
    ax.update_datalim([(s, 100 * v) for s, *vs in points[["speedup", "accuracy", "ci_low", "ci_high"]].to_numpy()
                       for v in vs if not np.isnan(v)])  # artists drawn with an offset don't count towards limits
    ax.autoscale_view()
    return shifts


def _label_points(ax: Axes, points: pd.DataFrame, shifts: Sequence[float], styles: Mapping[str, Mapping],
                  labels: Mapping[str, str]) -> None:
    """``labels[method]`` in the method's colour beside its first-kind marker, joined to it by a thin line. Labels of
    points close to each other (within 15 % of the data's span across, 6 % up) form one column 12 pt apart, right
    of the group's rightmost marker (whose label comes first), running down from the upper half of the axes and up
    from the lower."""
    first = (points["kind"] == points["kind"].iat[0]).to_numpy()
    idx = [i for i, m in enumerate(points["method"]) if first[i] and m in labels]
    if not idx:
        return
    logx, y = np.log(points["speedup"].to_numpy(dtype=float)), points["accuracy"].to_numpy(dtype=float)
    span = [max(float(np.ptp(v)), 1e-12) for v in (logx, y)]

    def close(i: int, j: int) -> bool:
        return abs(logx[j] - logx[i]) <= 0.15 * span[0] and abs(y[j] - y[i]) <= 0.06 * span[1]  # labels are wide

    for group in _groups(idx, close):
        near = [j for j in range(len(points)) if any(close(i, j) for i in group)]
        right = max(near, key=lambda j: (logx[j], shifts[j]))
        step = -12.0 if y[group[0]] >= np.min(y) + span[1] / 2 else 12.0
        for k, i in enumerate(sorted(group, key=lambda i: (-logx[i], -shifts[i]))):  # rightmost first: no crossings
            color = styles[points["method"].iat[i]]["color"]
            ax.annotate(labels[points["method"].iat[i]], xy=(np.exp(logx[i]), 100 * y[i]),
                        xycoords=offset_copy(ax.transData, fig=ax.figure, x=shifts[i], units="points"),
                        xytext=(np.exp(logx[right]), 100 * y[group[0]]),
                        textcoords=offset_copy(ax.transData, fig=ax.figure, x=12 + max(shifts[j] for j in near),
                                               y=k * step, units="points"),
                        fontsize="small", color=color, va="center", ha="left", annotation_clip=False,
                        arrowprops={"arrowstyle": "-", "color": color, "linewidth": 0.6, "shrinkA": 1, "shrinkB": 4})


def _groups(items: Sequence[int], close) -> list[list[int]]:
    """``items`` grouped: each joins the first group whose first item it is ``close`` to, else starts one."""
    groups: list[list[int]] = []
    for i in items:
        group = next((g for g in groups if close(g[0], i)), None)
        if group is None:
            groups.append([i])
        else:
            group.append(i)
    return groups


def _speedup_legend(ax: Axes, styles: Mapping[str, Mapping], points: pd.DataFrame, fills: Mapping[str, str]) -> None:
    """Legend outside the axes: sweeps, methods (colour and marker), then kinds (fill)."""
    handles, labels = ax.get_legend_handles_labels()
    methods = list(dict.fromkeys(points["method"]))
    for method in sorted(methods, key=lambda m: (styles[m]["family"] != m, methods.index(m))):  # sweeps last
        s = styles[method]
        handles.append(Line2D([], [], color=s["color"], marker=s["marker"], linestyle="none", markersize=7))
        labels.append(method)
    for kind, fill in fills.items():
        handles.append(Line2D([], [], color="black", marker="o", linestyle="none", fillstyle=fill,
                              markerfacecoloralt="white", markersize=7))
        labels.append(kind)
    ax.legend(handles, labels, fontsize="small", loc="upper left", bbox_to_anchor=(1.02, 1), borderaxespad=0)
