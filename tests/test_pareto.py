"""splitlib.pareto: the methods notebook 06 times (``@arms``), the Pareto frontier, its points, block and figure."""

from __future__ import annotations

import math

import pandas as pd
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.text import Text

from splitlib import pareto

GRPO = {  # 05's grpo block: one entry per checkpoint, plus the paired difference (no method)
    "sft": {"method": "split sft", "accuracy": 0.6},
    "grpo_offload": {"method": "split grpo-offload", "accuracy": 1.0},
    "grpo_paper": {"method": "split grpo-paper", "accuracy": 0.1},
    "rl4e_0": {"method": "split grpo-rl4e_0", "accuracy": 1.0},
    "rl4e_2": {"method": "split grpo-rl4e_2", "accuracy": 1.0},
    "grpo_offload_minus_grpo_paper": {"diff": 0.9, "ci": [0.8, 1.0], "n_problems": 10},
}
ARMS = ["split sft", "split grpo-offload", "split grpo-paper", "split grpo-rl4e_0", "split grpo-rl4e_2"]
ROLES = {"@small": "small only", "@big": "big only", "@learned": "split grpo-rl4e_0 budget 0.07", "@random": "random r19"}
CLAIM = {"small": "small only", "big": "big only", "learned": "split grpo-rl4e_0 budget 0.07", "random": "random r19"}


@pytest.mark.parametrize(("speedup", "accuracy", "expected"), [
    ([1, 2, 3], [0.9, 0.5, 0.1], [True, True, True]),  # a trade-off: nobody dominated
    ([1, 2, 3], [0.9, 0.9, 0.1], [False, True, True]),  # slower at equal accuracy: dominated
    ([2, 2], [0.5, 0.5], [True, True]),  # equal points: both on it
    ([1, 2, 1.5], [0.9, 0.5, 0.4], [True, True, False]),  # beaten on both axes
    ([1, math.nan, 3], [0.9, 1.0, 0.1], [True, False, True]),  # no speed-up: off it, dominates nothing
])
def test_on_frontier_marks_the_non_dominated_points(speedup, accuracy, expected):
    assert pareto.on_frontier(speedup, accuracy).tolist() == expected


def test_arms_role_resolves_to_every_checkpoint_of_the_grpo_block():
    assert pareto.arm_methods(GRPO) == ARMS
    names = pareto.resolve_methods(["@small", "@big", "@learned", "@random", "@arms"], ROLES, GRPO)
    assert names == ["small only", "big only", "split grpo-rl4e_0 budget 0.07", "random r19", *ARMS]


def test_resolve_methods_keeps_names_drops_missing_roles_and_duplicates():
    roles = {**ROLES, "@random": None}
    assert pareto.resolve_methods(["split sft", "@random", "@arms"], roles, GRPO) == ARMS
    assert pareto.resolve_methods(["@arms"], ROLES, {}) == []


def test_resolve_methods_names_an_unknown_role():
    with pytest.raises(ValueError, match="@arm"):
        pareto.resolve_methods(["@arm"], ROLES, GRPO)


def _table() -> pd.DataFrame:
    rows = [("small only", 0.1, 0.0, None, 3.7), ("big only", 1.0, 1.0, None, 1.0),
            ("split grpo-rl4e_0 budget 0.07", 1.0, 0.07, "budget (grpo-rl4e_0)", 2.5),
            ("random r19", 0.14, 0.06, "random switch", 3.0), ("random r9", 0.17, 0.1, "random switch", 2.8),
            ("split sft", 0.6, 0.09, None, 2.3), ("split grpo-offload", 1.0, 0.11, None, 2.24),
            ("split grpo-paper", 0.1, 0.06, None, 2.2), ("split grpo-rl4e_0", 1.0, 0.11, None, 2.24),
            ("split grpo-rl4e_2", 1.0, 0.11, None, 2.24)]
    df = pd.DataFrame(rows, columns=["method", "accuracy", "offload_token_fraction", "sweep", "sim"])
    return df.assign(ci_low=(df["accuracy"] - 0.05).clip(0, 1), ci_high=(df["accuracy"] + 0.05).clip(0, 1))


def _speedups(table: pd.DataFrame) -> pd.DataFrame:
    measured = {"small only": 3.6, "big only": 1.0, "split grpo-offload": 2.0, "split sft": 2.1}
    return pd.DataFrame({pareto.SIMULATED: table.set_index("method")["sim"],
                         pareto.MEASURED: pd.Series(measured)})


def test_pareto_methods_are_small_arms_learned_big_and_the_random_sweep():
    methods = pareto.pareto_methods(_table(), GRPO, CLAIM)
    assert methods == ["small only", *ARMS, "split grpo-rl4e_0 budget 0.07", "big only", "random r19", "random r9"]


def test_pareto_points_and_block():
    table = _table()
    points = pareto.pareto_points(table, _speedups(table), pareto.pareto_methods(table, GRPO, CLAIM))
    front = dict(zip(points["method"], points["on_frontier"]))
    assert front["split grpo-rl4e_0 budget 0.07"] and front["small only"] and front["random r19"]
    assert not front["big only"] and not front["split grpo-offload"] and not front["split grpo-paper"]
    block = {r["method"]: r for r in pareto.pareto_block(points)}
    assert block["split sft"]["speedup_measured"] == 2.1 and block["split grpo-paper"]["speedup_measured"] is None
    assert block["split sft"]["ci"] == [pytest.approx(0.55), pytest.approx(0.65)]
    assert set(block["big only"]) == {"method", "accuracy", "ci", "offload_token_fraction", "speedup_simulated",
                                      "speedup_measured", "on_frontier"}


def test_pareto_figure_labels_every_arm_and_draws_the_frontier():
    table = _table()
    points = pareto.pareto_points(table, _speedups(table), pareto.pareto_methods(table, GRPO, CLAIM))
    fig = pareto.pareto_figure(table, points, CLAIM)
    ax = fig.axes[0]
    texts = {t.get_text() for t in ax.texts}
    assert {pareto.point_label(m) for m in ARMS} <= texts and {"small only", "big only"} <= texts
    assert "grpo-rl4e_0" in texts and "random r19" not in texts  # sweep points: in the legend, not labelled
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend[0] == "Pareto frontier (simulated)" and "measured (batch 1)" in legend
    step = [line for line in ax.get_lines() if line.get_linestyle() == "--" and len(line.get_xdata()) > 2]
    assert step, "no frontier step line"
    # the three arms at one point (and every other label) get boxes of their own: no two labels overlap
    renderer = FigureCanvasAgg(fig).get_renderer()
    fig.draw(renderer)
    boxes = [Text.get_window_extent(t, renderer) for t in ax.texts]  # the text alone, not its leader line
    assert not [(a, b) for k, a in enumerate(boxes) for b in boxes[k + 1:] if a.overlaps(b)]
