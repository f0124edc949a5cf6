"""Figures of notebook 01. Every function returns a ``matplotlib.figure.Figure`` built without pyplot (no
display, no global state, no files), from the data functions of ``splitlib.annotate.analysis``."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure

_STYLE = "whitegrid"


def _figure(figsize: tuple[float, float], ncols: int = 1):
    with sns.axes_style(_STYLE):
        fig = Figure(figsize=figsize, layout="constrained")
        axes = fig.subplots(1, ncols, squeeze=False)[0]
    return fig, axes


def offload_fraction_histogram(fractions: pd.DataFrame, target: float | None = 0.2, bins: int = 30) -> Figure:
    """Histograms of the per-trace offloaded fraction in tokens and characters (``analysis.offload_fractions``);
    a panel without data says so. ``target``: a dashed reference line (the annotator's target)."""
    fig, axes = _figure((9, 3.5), ncols=2)
    for ax, column, unit in zip(axes, ("tokens", "chars"), ("tokens", "characters")):
        values = fractions[column].dropna().to_numpy() if column in fractions else np.array([])
        if values.size:
            ax.hist(values, bins=bins, range=(0, max(1e-9, float(values.max())) * 1.05), color="#4c72b0")
            ax.axvline(float(values.mean()), color="black", linewidth=1, label=f"mean {values.mean():.1%}")
        else:
            ax.text(0.5, 0.5, f"no {unit} fractions recorded", ha="center", va="center", transform=ax.transAxes)
        if target is not None:
            ax.axvline(target, color="grey", linestyle="--", linewidth=1, label=f"target {target:.0%}")
        ax.set(xlabel=f"offloaded fraction of {unit}", ylabel="traces", title=f"per-trace offload ({unit})")
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize="small")
    return fig


def position_profile_figure(profiles: Mapping[str, np.ndarray] | np.ndarray, unit: str = "characters") -> Figure:
    """Mean offload mask against normalised position in the trace (paper Figure 7); one line per profile."""
    curves = {"": profiles} if isinstance(profiles, np.ndarray) else dict(profiles)
    fig, (ax,) = _figure((7, 3.5))
    for label, profile in curves.items():
        x = (np.arange(len(profile)) + 0.5) / len(profile)
        ax.plot(x, profile, label=label or None)
    ax.set(xlabel="normalised position in the trace", ylabel=f"mean offload mask ({unit})", xlim=(0, 1),
           title=f"where offloaded spans sit ({len(next(iter(curves.values())))} bins)")
    if any(curves):
        ax.legend(fontsize="small")
    return fig


def oracle_scores_figure(scores: Mapping[str, Mapping[str, float]]) -> Figure:
    """Grouped bars of precision / recall / F1 against the toy oracle, one group per annotator."""
    df = pd.DataFrame([{"annotator": name, "metric": metric, "value": s[metric]}
                       for name, s in scores.items() for metric in ("precision", "recall", "f1")])
    fig, (ax,) = _figure((6, 3.5))
    sns.barplot(data=df, x="annotator", y="value", hue="metric", ax=ax)
    ax.set(ylim=(0, 1), ylabel="score against the oracle", title="agreement with the ground-truth hard steps")
    return fig
