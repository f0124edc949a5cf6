"""Figures of notebook 01. Every function returns a ``matplotlib.figure.Figure`` built without pyplot (no
display, no global state, no files), from the data functions of ``splitlib.annotate.analysis``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure
from matplotlib.ticker import PercentFormatter

_STYLE = "whitegrid"


def _figure(figsize: tuple[float, float], ncols: int = 1):
    with sns.axes_style(_STYLE):
        fig = Figure(figsize=figsize, layout="constrained")
        axes = fig.subplots(1, ncols, squeeze=False)[0]
    return fig, axes


def offload_fraction_histogram(fractions: pd.DataFrame, target: float | None = 0.2,
                               target_unit: Literal["chars", "tokens"] = "chars", bins: int = 30) -> Figure:
    """Histograms of the per-trace offloaded fraction in tokens and characters (``analysis.offload_fractions``);
    a panel without data says so. ``target``: a dashed reference line (the annotator's target), on the panel of
    ``target_unit`` only (what the annotator counts: the surprisal annotator's ``unit``; characters for the LLM)."""
    if target_unit not in ("chars", "tokens"):
        raise ValueError(f"target_unit={target_unit!r}: expected 'chars' or 'tokens'")
    fig, axes = _figure((9, 3.5), ncols=2)
    for ax, column, unit in zip(axes, ("tokens", "chars"), ("tokens", "characters")):
        values = fractions[column].dropna().to_numpy() if column in fractions else np.array([])
        if values.size:
            ax.hist(values, bins=bins, range=(0, max(1e-9, float(values.max()), target or 0) * 1.05), color="#4c72b0")
            ax.axvline(float(values.mean()), color="black", linewidth=1, label=f"mean {values.mean():.1%}")
        else:
            ax.text(0.5, 0.5, f"no {unit} fractions recorded", ha="center", va="center", transform=ax.transAxes)
        if target is not None and column == target_unit:
            ax.axvline(target, color="tab:red", linestyle="--", linewidth=1, label=f"target {target:.0%} of {unit}")
        ax.xaxis.set_major_formatter(PercentFormatter(1.0))
        ax.set(xlabel=f"offloaded share of {unit}", ylabel="traces", title=f"per-trace offload ({unit})")
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize="small", loc="upper left")
    return fig


_LINE_STYLES = ("-", "--", ":", "-.")


def position_profile_figure(profiles: Mapping[str, np.ndarray] | np.ndarray, unit: str = "characters") -> Figure:
    """Mean offload mask against normalised position in the trace (paper Figure 7); one line per profile.

    Bins no trace reaches (NaN: traces shorter than the bins) are skipped, the line joining its neighbours; later
    profiles are drawn thinner and dashed on top of earlier ones, so identical curves stay visible."""
    curves = {"": profiles} if isinstance(profiles, np.ndarray) else dict(profiles)
    fig, (ax,) = _figure((8, 3.5))
    for i, (label, profile) in enumerate(curves.items()):
        profile = np.asarray(profile, dtype=float)
        x = (np.arange(len(profile)) + 0.5) / len(profile)
        ok = np.isfinite(profile)
        ax.plot(x[ok], profile[ok], label=label or None, linestyle=_LINE_STYLES[i % len(_LINE_STYLES)],
                linewidth=max(3.0 - 0.8 * i, 1.0), alpha=0.85, zorder=2 + i)
    n_bins = len(next(iter(curves.values())))
    ax.set(xlabel="normalised position in the trace", ylabel=f"mean offload mask ({unit})", xlim=(0, 1),
           ylim=(-0.03, 1.03), title=f"where offloaded spans sit ({n_bins} bins)")
    if any(curves):
        ax.legend(fontsize="small", title="annotator", loc="upper left", bbox_to_anchor=(1.01, 1), borderaxespad=0)
    return fig


def oracle_scores_figure(scores: Mapping[str, Mapping[str, float]]) -> Figure:
    """Grouped bars of precision / recall / F1 against the toy oracle, one group per annotator, each bar labelled
    with its value; legend beside the bars."""
    df = pd.DataFrame([{"annotator": name, "metric": metric, "value": s[metric]}
                       for name, s in scores.items() for metric in ("precision", "recall", "f1")])
    fig, (ax,) = _figure((7, 3.5))
    sns.barplot(data=df, x="annotator", y="value", hue="metric", ax=ax)
    for bars in ax.containers:
        ax.bar_label(bars, fmt="%.2f", fontsize="small", padding=2)
    ax.set(ylim=(0, 1.1), ylabel="score against the oracle", title="agreement with the ground-truth hard steps")
    sns.move_legend(ax, "upper left", bbox_to_anchor=(1.01, 1), borderaxespad=0, fontsize="small")
    return fig
