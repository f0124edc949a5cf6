"""The figures read correctly: every method its own look, coinciding points side by side, legends off the data,
reference lines on the right panel, lines without gaps, whole-number steps and a y label on every panel."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from splitlib import evaluate as ev
from splitlib import plots
from splitlib.annotate import offload_fraction_histogram, oracle_scores_figure, position_profile_figure
from splitlib.toy.diagnostics import gap_figure
from splitlib.training.figures import grpo_curves_figure, tag_usage_figure


def methods_table() -> pd.DataFrame:
    """15 methods as notebook 05 lists them: three checkpoints at one point, a budget sweep and a random sweep."""
    rows = [("small only", None, 0.0, 0.1), ("big only", None, 1.0, 1.0)]
    rows += [(f"split {c}", None, 0.1, 1.0) for c in ("grpo-offload", "grpo-paper", "sft")]
    rows += [(f"split grpo-offload budget {b}", "budget", b, 0.3) for b in (0.02, 0.04, 0.07)]
    rows += [(f"random r{r}", "random switch", 1 / (1 + r), 0.1 + 0.4 / r) for r in (49, 19, 9, 5.667, 4, 2.333, 1.5)]
    return pd.DataFrame([{"method": m, "sweep": s, "offload_token_fraction": o, "offload_char_fraction": o,
                          "accuracy": a, "ci_low": a - 0.05, "ci_high": min(a + 0.05, 1.0)} for m, s, o, a in rows])


def outside(legend) -> bool:
    """The legend is anchored beside the axes (to their right), not over the data."""
    anchor = legend.get_bbox_to_anchor().transformed(legend.axes.transAxes.inverted())
    return anchor.x0 >= 1.0


def display_x(container) -> float:
    line = container.lines[0]
    return float(line.get_transform().transform(line.get_xydata())[0][0])


# -- accuracy against offload (notebooks 04/05) and against speed-up (06) ---------------------------------------
def test_method_styles_give_every_method_its_own_look_and_each_sweep_one_colour():
    table = methods_table()
    styles = ev.method_styles(table)
    assert len({(s["color"], s["marker"]) for s in styles.values()}) == len(table) == 15
    colour = {m: s["color"] for m, s in styles.items()}
    random, budget = (table.loc[table["sweep"] == k, "method"] for k in ("random switch", "budget"))
    assert len({colour[m] for m in random}) == 1 and len({colour[m] for m in budget}) == 1
    assert colour[random.iat[0]] != colour[budget.iat[0]]
    alone = table.loc[table["sweep"].isna(), "method"]
    assert len({colour[m] for m in alone} | {colour[random.iat[0]], colour[budget.iat[0]]}) == len(alone) + 2
    sweeps_first = pd.concat([table[table["sweep"].notna()].iloc[::-1], table[table["sweep"].isna()]])
    assert {m: s["color"] for m, s in ev.method_styles(sweeps_first).items()} == colour  # 04's rows before 05's


def test_dodge_offsets_spread_only_coinciding_points():
    assert ev.dodge_offsets([0.1, 0.1, 0.1, 0.5], [1.0, 1.0, 1.0, 0.2], step_pt=8) == [-8.0, 0.0, 8.0, 0.0]
    assert ev.dodge_offsets([0.0, 1.0], [0.0, 1.0]) == [0.0, 0.0]


def test_accuracy_vs_offload_separates_coinciding_methods_and_colours_each_sweep():
    fig = plots.accuracy_vs_offload_at(methods_table(), 0.1)
    (ax,) = fig.axes
    by_label = {c.get_label(): c for c in ax.containers}
    xs = [display_x(by_label[f"split {c}"]) for c in ("grpo-offload", "grpo-paper", "sft")]
    assert len(set(np.round(xs, 3))) == 3  # the three checkpoints at one point are drawn side by side
    sweeps = {line.get_label(): line.get_color() for line in ax.lines if line.get_label().endswith("sweep")}
    assert set(sweeps) == {"budget sweep", "random switch sweep"} and len(set(map(str, sweeps.values()))) == 2
    assert outside(ax.get_legend()) and "side by side" in ax.get_legend().get_title().get_text()


def test_speedup_over_pairs_problems_and_names_a_missing_baseline():
    times = pd.DataFrame([{"method": m, "problem_id": p, "sample": 0, "wall_s": s}
                          for m, p, s in (("big", "a", 4.0), ("big", "b", 2.0), ("small", "a", 1.0),
                                          ("small", "b", 2.0), ("split", "a", 2.0), ("lost", "z", 1.0))])
    speedup = ev.speedup_over(times, "big")
    assert speedup["big"] == 1.0 and speedup["small"] == 2.0  # (4 + 2) / (1 + 2)
    assert speedup["split"] == 2.0 and math.isnan(speedup["lost"])  # only problem a is shared; none at all
    with pytest.raises(ValueError, match="baseline 'huge'"):
        ev.speedup_over(times, "huge")
    with pytest.raises(ValueError, match="sim_s"):
        ev.speedup_over(times, "big", "sim_s")


def test_accuracy_vs_speedup_draws_each_kind_with_its_fill_and_leaves_out_untimed_methods():
    table = methods_table()
    simulated = dict(zip(table["method"], np.linspace(1.0, 4.0, len(table))))
    measured = {"small only": 3.5, "big only": 1.0, "split grpo-offload": 2.0}
    fig = plots.accuracy_vs_speedup(table, {"simulated": simulated, "measured": measured})
    (ax,) = fig.axes
    fills = [c.lines[0].get_fillstyle() for c in ax.containers]
    assert fills.count("none") == len(table) and fills.count("full") == len(measured)
    assert ax.get_xscale() == "log" and "big only" in ax.get_xlabel()
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert {"simulated", "measured", "random switch sweep", "budget sweep"} <= set(labels)
    assert outside(ax.get_legend())
    only_measured = plots.accuracy_vs_speedup(table, {"measured": measured})
    assert len(only_measured.axes[0].containers) == len(measured)
    with pytest.raises(ValueError, match="no method"):
        plots.accuracy_vs_speedup(table, {"measured": {"unknown": 2.0}})


# -- notebook 01 ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("unit, panel", [("chars", 1), ("tokens", 0)])
def test_offload_histogram_draws_the_target_on_its_own_unit_only(unit, panel):
    fractions = pd.DataFrame({"id": ["a", "b"], "chars": [0.22, 0.23], "tokens": [0.1, 0.11]})
    fig = offload_fraction_histogram(fractions, target=0.2, target_unit=unit)
    dashed = [[line for line in ax.get_lines() if line.get_linestyle() == "--"] for ax in fig.axes]
    assert [len(d) for d in dashed] == [int(panel == 0), int(panel == 1)]
    with pytest.raises(ValueError, match="target_unit"):
        offload_fraction_histogram(fractions, target_unit="words")


def test_position_profile_joins_bins_without_data_and_keeps_identical_curves_visible():
    profile = np.array([0.0, np.nan, 1.0, np.nan, np.nan, 0.0])  # traces shorter than the bins
    fig = position_profile_figure({"surprisal": profile, "oracle": profile.copy()})
    ax = fig.axes[0]
    first, second = ax.get_lines()
    assert not np.isnan(first.get_ydata()).any() and len(first.get_ydata()) == 3
    assert first.get_linestyle() != second.get_linestyle() and first.get_linewidth() > second.get_linewidth()
    assert outside(ax.get_legend())


def test_oracle_scores_labels_the_bars_and_keeps_the_legend_beside_them():
    fig = oracle_scores_figure({"surprisal": {"precision": 1.0, "recall": 1.0, "f1": 1.0},
                                "oracle": {"precision": 1.0, "recall": 0.5, "f1": 0.67}})
    ax = fig.axes[0]
    assert outside(ax.get_legend()) and ax.get_ylim()[1] > 1.0
    assert "0.50" in [t.get_text() for t in ax.texts]


# -- notebooks 00, 02, 03 ---------------------------------------------------------------------------------------
def test_gap_figure_labels_every_panel_and_keeps_the_legend_off_the_bars():
    gap = pd.DataFrame({"accuracy": [0.1, 1.0], "easy_step_accuracy": [1.0, 1.0], "hard_step_accuracy": [0.1, 1.0],
                        "decode_s_per_token": [0.0007, 0.0028]}, index=pd.Index(["small", "big"], name="model"))
    fig = gap_figure(gap)
    assert isinstance(fig, Figure) and all(ax.get_ylabel() for ax in fig.axes)
    assert outside(fig.axes[1].get_legend())


def generation(n_tags: int, balanced: bool = True, correct: bool = False, share: float | None = 0.2) -> dict:
    return {"id": "x", "generation": "…", "balanced": balanced, "n_tags": n_tags,
            "offload_char_fraction": share if balanced else None, "correct": correct}


def test_tag_usage_figure_counts_categories_and_shows_the_toy_alignment():
    records = ([generation(4, correct=True)] * 3 + [generation(4)] * 5 + [generation(0, share=0.0)] * 2
               + [generation(1, balanced=False)])
    usage = {"toy_alignment": {"span_precision": 1.0, "clause_recall": 0.5, "exact_fraction": None, "n_spans": 32}}
    fig = tag_usage_figure(records, usage)
    bars, per_generation, alignment = fig.axes
    widths = [p.get_width() for p in bars.patches]  # correct then wrong, each over the three categories
    assert widths == [3, 0, 0, 5, 2, 1]
    assert [t.get_text() for t in alignment.texts] == ["100%", "50%", "n/a"]
    assert per_generation.get_xlim()[1] - per_generation.get_xlim()[0] > 1  # spans 0 and 4, whole-number ticks
    assert len(tag_usage_figure(records).axes) == 2


def test_grpo_curves_figure_has_whole_steps_and_a_y_label_on_every_panel():
    curve = pd.DataFrame({"step": [1, 2, 3], "reward": [0.1, 0.5, 0.4], "offload_fraction": [0.2, 0.25, 0.3],
                          "accuracy": [math.nan] * 3})
    fig = grpo_curves_figure({"offload": curve, "paper": curve.assign(reward=[0.0, 0.1, 0.2])})
    for ax in fig.axes:
        assert ax.get_ylabel() and isinstance(ax.xaxis.get_major_locator(), MaxNLocator)
        assert all(float(t).is_integer() for t in ax.get_xticks())
    assert [t.get_text() for t in fig.axes[2].texts] == ["not logged"] and fig.legends
