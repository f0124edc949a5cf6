"""Figures of notebooks 02 and 03. Every function returns a ``matplotlib.figure.Figure`` built without pyplot (no
display, no global state, no files), from the data functions of ``splitlib.training.report``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator, PercentFormatter

from splitlib.training.report import COMPONENT

_CORRECT = {True: ("correct", "tab:green"), False: ("wrong", "tab:gray")}
_ALIGNMENT = {"span_precision": "spans on a\nhard step", "clause_recall": "hard steps\ninside a span",
              "exact_fraction": "spans exactly\na hard step"}


def _categories(df: pd.DataFrame) -> pd.Series:
    tagged = df["balanced"] & (df["n_tags"] > 0)
    return pd.Series(np.select([tagged, df["balanced"]], ["tags, well-formed", "no tags"], "malformed tags"),
                     index=df.index)


def _usage_bars(ax: Axes, df: pd.DataFrame) -> None:
    """Generations per tag-use category, split by whether the answer is correct; each bar labelled."""
    order = ["tags, well-formed", "no tags", "malformed tags"]
    counts = pd.crosstab(_categories(df), df["correct"].astype(bool)).reindex(index=order, columns=[True, False],
                                                                              fill_value=0)
    left = np.zeros(len(order))
    for correct in (True, False):
        label, colour = _CORRECT[correct]
        ax.barh(order, counts[correct], left=left, color=colour, label=label)
        left += counts[correct].to_numpy()
    for y, total in enumerate(left):
        ax.text(total, y, f" {int(total)} ({total / len(df):.0%})", va="center", fontsize="small")
    ax.set_xlim(0, max(left.max(), 1) * 1.35)
    ax.invert_yaxis()
    ax.set(xlabel="generations", title=f"tag use of {len(df)} generations")
    ax.legend(title="answer", fontsize="small", loc="lower right")


def _per_generation(ax: Axes, df: pd.DataFrame, rng: np.random.Generator) -> None:
    """Tags against offloaded share per well-formed generation (jittered sideways), coloured by correctness."""
    ok = df[df["balanced"]]
    for correct, part in ok.groupby(ok["correct"].astype(bool)):
        label, colour = _CORRECT[bool(correct)]
        x = part["n_tags"] + rng.uniform(-0.2, 0.2, len(part))
        ax.scatter(x, part["offload_char_fraction"], s=12, alpha=0.4, color=colour, label=label)
    share = ok["offload_char_fraction"]
    if len(ok):  # whole numbers of spans, and the share seen from 0 (a constant share would fill the axis)
        ax.set(xlim=(ok["n_tags"].min() - 0.6, ok["n_tags"].max() + 0.6), ylim=(0, max(0.05, share.max() * 1.2)))
    ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
    ax.yaxis.set_major_formatter(PercentFormatter(1.0))
    title = (f"well-formed: {ok['n_tags'].mean():.1f} spans, {share.mean():.1%} offloaded (means)" if len(ok)
             else "no well-formed generation")
    ax.set(xlabel="<bigmodel> spans per generation (jittered)", ylabel="offloaded share of characters", title=title)


def _alignment(ax: Axes, alignment: Mapping[str, Any]) -> None:
    values = [alignment.get(k) for k in _ALIGNMENT]
    bars = ax.bar(list(_ALIGNMENT.values()), [0.0 if v is None else v for v in values], color="tab:blue")
    ax.bar_label(bars, labels=["n/a" if v is None else f"{v:.0%}" for v in values], fontsize="small", padding=2)
    ax.yaxis.set_major_formatter(PercentFormatter(1.0))
    ax.set(ylim=(0, 1.12), ylabel=f"share (of {alignment.get('n_spans', 0)} spans)",
           title="toy: do the spans sit on the hard steps?")


def tag_usage_figure(records: Sequence[Mapping[str, Any]], usage: Mapping[str, Any] | None = None,
                     seed: int = 0) -> Figure:
    """How the small model alone uses the tags (paper Fig. 8), from ``report.generation_records``: generations
    per category (well-formed with tags / no tags / malformed) split by correctness; spans against offloaded share
    per generation; and, with ``usage["toy_alignment"]`` (``report.tag_usage_summary(toy=True)``), whether the
    spans sit on the toy's hard steps. ``seed``: the sideways jitter of the points."""
    if not records:
        raise ValueError("tag_usage_figure needs at least one generation record")
    df = pd.DataFrame(records)
    alignment = (usage or {}).get("toy_alignment")
    fig = Figure(figsize=(15 if alignment else 10.5, 3.6), layout="constrained")
    axes = fig.subplots(1, 3 if alignment else 2, width_ratios=[1.3, 1, 0.9][: 3 if alignment else 2])
    _usage_bars(axes[0], df)
    _per_generation(axes[1], df, np.random.default_rng(seed))
    if alignment:
        _alignment(axes[2], alignment)
    return fig


@dataclass(frozen=True)
class _Panel:
    title: str
    column: str
    ylabel: str
    share: bool  # a share in [0, 1]: percent ticks, seen from 0
    heldout: bool = False  # drawn from the held-out evaluations (markers at the evaluated steps)


def _panels(components: Mapping[str, float], heldout: bool) -> list[_Panel]:
    """Total reward, each weighted reward component, the rollouts' offload, accuracy and tag failures, and (with
    held-out evaluations) their accuracy, tag failures and offloaded tokens."""
    panels = [_Panel("total reward (weighted)", "reward", "reward", False)]
    panels += [_Panel(f"reward {name} (weight {w:g})", COMPONENT + name, "mean (unweighted)", False)
               for name, w in components.items() if w != 0]
    panels += [_Panel("rollouts: offloaded share (characters)", "offload_fraction", "offloaded share", True),
               _Panel("rollouts: accuracy", "accuracy", "accuracy", True),
               _Panel("rollouts: tag failures", "tag_failure", "share of rollouts", True)]
    if heldout:
        panels += [_Panel("held-out: accuracy (split, greedy)", "accuracy", "accuracy", True, True),
                   _Panel("held-out: tag failures", "tag_failure_rate", "share of problems", True, True),
                   _Panel("held-out: offloaded tokens", "offload_token_fraction", "offloaded share", True, True)]
    return panels


def _draw_panel(ax: Axes, panel: _Panel, frames: Mapping[str, pd.DataFrame], smooth_steps: int) -> None:
    """One line per arm; per-step curves (sampled rollouts: noisy) as their running mean over ``smooth_steps``
    steps, the raw values faint behind it; held-out evaluations as they are, markers at the evaluated steps."""
    for i, (arm, c) in enumerate(frames.items()):  # arms differ in line and marker too (equal curves overlap)
        ok = c[panel.column].notna() if panel.column in c else pd.Series(False, index=c.index)
        if not ok.any():
            continue
        x, y = c.loc[ok, "step"], c.loc[ok, panel.column]
        if not panel.heldout and smooth_steps > 1:
            raw = ax.plot(x, y, linewidth=0.6, alpha=0.25)
            ax.plot(x, y.rolling(smooth_steps, min_periods=1).mean(), color=raw[0].get_color(),
                    linestyle=("-", "--", ":", "-.")[i % 4], marker="os^Dv"[i % 5], markersize=3, label=arm)
        else:
            ax.plot(x, y, marker="os^Dv"[i % 5], markersize=6 if panel.heldout else 3,
                    linestyle=("-", "--", ":", "-.")[i % 4], label=arm)
    if not ax.lines:
        ax.text(0.5, 0.5, "not logged", ha="center", va="center", transform=ax.transAxes)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
    if panel.share:  # shares from 0 (a little room below, so that a 0 curve is not hidden in the axis)
        top = 1.05 if panel.column == "accuracy" else max(ax.get_ylim()[1], 0.05)
        ax.set_ylim(-0.03 * top, top)
        ax.yaxis.set_major_formatter(PercentFormatter(1.0))
    ax.set(xlabel="step", ylabel=panel.ylabel, title=panel.title)


def grpo_curves_figure(curves: Mapping[str, pd.DataFrame], reward_weights: Mapping[str, float] | None = None,
                       heldout: Mapping[str, pd.DataFrame] | None = None, ncols: int = 3,
                       smooth_steps: int = 4) -> Figure:
    """Per GRPO step, one line per arm (``report.grpo_curves``): total reward, each reward of nonzero weight in
    ``reward_weights`` (name -> weight), the rollouts' offloaded share, accuracy and tag failures; with ``heldout``
    (arm -> ``report.heldout_curve``), the held-out split-decoding accuracy, tag failures and offloaded tokens at
    the evaluated steps. Per-step curves are drawn as running means over ``smooth_steps`` steps (1: raw), the raw
    values faint behind them. Integer step ticks, a y label on every panel, one legend beside the panels."""
    has_heldout = any(len(h) for h in (heldout or {}).values())
    panels = _panels(dict(reward_weights or {}), has_heldout)
    nrows = -(-len(panels) // ncols)
    fig = Figure(figsize=(4.6 * ncols, 3.2 * nrows), layout="constrained")
    axes = np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False)).ravel()
    for ax, panel in zip(axes, panels):
        _draw_panel(ax, panel, heldout if panel.heldout else curves, smooth_steps)
    for ax in axes[len(panels):]:
        ax.remove()  # the grid's unused cells
    handles, labels = next(((a.get_legend_handles_labels()) for a in axes if a.lines), ([], []))
    if handles:
        fig.legend(handles, labels, title="GRPO arm", loc="outside right upper", fontsize="small")
    if smooth_steps > 1:
        fig.suptitle(f"per-step curves: running mean over {smooth_steps} steps (raw values faint)"
                     + ("; held-out: greedy split decoding at the evaluated steps" if has_heldout else ""),
                     fontsize="medium")
    return fig
