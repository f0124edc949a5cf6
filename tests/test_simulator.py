"""Latency simulator modes, sweeps, the CLI, the Figure 5 plots and the paper's result data."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure

from splitlib import cli, paper_results, plots
from splitlib.hardware import HardwareProfile, ModelThroughput, get_profile
from splitlib.registry import UnknownNameError
from splitlib.simulator import (
    MODES,
    SimConfig,
    SwitchCosts,
    paper_chunk_plan,
    simulate,
    simulate_trace,
    speedup_table,
    sweep,
    synthetic_work,
)
from splitlib.trace import Segment, Trace

P_SMALL, D_SMALL = 28868.4664, 141.0  # 1.5B on A6000 (PAPER_FACTS §9)
P_BIG, D_BIG = 2594.868088, 16.0  # 32B
PROMPT_S = max(2048 / P_BIG, 2048 / P_SMALL)


# ---------------------------------------------------------------------------------------------------------
# closed forms
@pytest.mark.parametrize(
    "mode, offload, expected_s",
    [
        ("paper", 0.0, PROMPT_S + 64 * max(256 / D_SMALL, 256 / P_BIG)),
        ("paper", 1.0, PROMPT_S + 64 * max(256 / D_BIG, 256 / P_SMALL)),
        ("continuous", 0.0, PROMPT_S + 16384 / D_SMALL),
        ("continuous", 1.0, PROMPT_S + 16384 / D_BIG),
        ("continuous", 0.0135, PROMPT_S + 0.0135 * 16384 / D_BIG + (1 - 0.0135) * 16384 / D_SMALL),
        ("serial", 0.0, 2048 / P_SMALL + 16383 / D_SMALL),  # the prompt prefill yields the first token
    ],
)
def test_closed_forms(mode, offload, expected_s):
    res = simulate(offload, "a6000-paper", "1.5B", "32B", mode=mode)
    assert res.simulated_s == pytest.approx(expected_s, rel=1e-12)


def test_big_and_small_alone_times_and_ratios():
    res = simulate(0.05, "a6000-paper", "1.5B", "32B", mode="paper")
    assert res.big_only_s == pytest.approx(2048 / P_BIG + 16384 / D_BIG)
    assert res.small_only_s == pytest.approx(2048 / P_SMALL + 16384 / D_SMALL)
    assert res.speedup == pytest.approx(res.big_only_s / res.simulated_s)
    assert res.slowdown_vs_small == pytest.approx(res.simulated_s / res.small_only_s)


def test_headline_32b_at_1_35_percent_is_8_to_9x():
    res = simulate(0.0135, "a6000-paper", "1.5B", "32B", mode="paper")
    assert 8.0 < res.speedup < 9.0
    # 221 requested big tokens are below one 256-token chunk and 16,384 has no partial chunk: nothing offloaded
    assert res.simulated_s == pytest.approx(simulate(0.0, "a6000-paper", "1.5B", "32B").simulated_s)
    assert simulate(0.0135, "a6000-paper", "1.5B", "32B", mode="continuous").speedup < res.speedup


def test_paper_5_to_10_percent_gives_roughly_4_to_6x():
    speedups = [simulate(c, "a6000-paper", "1.5B", "32B").speedup for c in (0.05, 0.10)]
    assert 4.0 < min(speedups) and max(speedups) < 7.0


# ---------------------------------------------------------------------------------------------------------
# the paper's chunk plan and its randomness
@pytest.mark.parametrize(
    "offload, d, chunk, whole_big, partial_possible",
    [
        (0.0135, 16384, 256, 0, True),  # 221 requested: remainder > 0, but the partial chunk is empty
        (0.05, 16384, 256, 3, True),  # 819 = 3·256 + 51
        (0.25, 1024, 256, 1, False),  # 256: exactly one chunk, no remainder
        (1.0, 1000, 256, 3, True),  # 1000 requested, only 3 whole chunks exist
    ],
)
def test_paper_chunk_plan(offload, d, chunk, whole_big, partial_possible):
    plans = [paper_chunk_plan(offload, d, chunk, np.random.default_rng(seed)) for seed in range(40)]
    assert all(is_big.sum() == whole_big and len(is_big) == d // chunk for is_big, _ in plans)
    partials = {partial for _, partial in plans}
    assert partials == ({True, False} if partial_possible else {False})


def test_paper_mode_is_deterministic_per_seed():
    kwargs = {"mode": "paper", "decode_tokens": 1000, "chunk": 256}
    times = {seed: simulate(0.1, "a6000-paper", "1.5B", "32B", seed=seed, **kwargs).simulated_s for seed in range(20)}
    assert all(simulate(0.1, "a6000-paper", "1.5B", "32B", seed=s, **kwargs).simulated_s == t for s, t in times.items())
    assert len(set(times.values())) == 2  # the 232-token partial chunk goes to either model


# ---------------------------------------------------------------------------------------------------------
# monotonicity: with a slower big model, more offload is never faster
@pytest.mark.parametrize("mode", sorted(MODES))
@pytest.mark.parametrize("big", ["7B", "32B", "70B"])
def test_more_offload_is_never_faster(mode, big):
    times = sweep(np.linspace(0, 1, 21), "a6000-paper", "1.5B", big, mode)["simulated_s"].to_numpy()
    assert np.all(np.diff(times) >= -1e-9), times


def test_overhead_without_switch_costs_equals_continuous():
    free = SwitchCosts(check_tokens=0, discarded_tokens=0, catchup_tokens=0)
    for c in (0.0, 0.05, 0.3):
        cont = simulate(c, "a6000-paper", "1.5B", "32B", mode="continuous").simulated_s
        no_cost = simulate(c, "a6000-paper", "1.5B", "32B", mode="overhead", switch=free).simulated_s
        assert no_cost == pytest.approx(cont)
        assert simulate(c, "a6000-paper", "1.5B", "32B", mode="overhead").simulated_s >= cont


@pytest.mark.parametrize("offload", [0.0, 0.0135, 0.05, 0.5, 1.0])
def test_synthetic_serial_generation_keeps_every_token(offload):
    work, n_big = synthetic_work(offload, SimConfig()), round(offload * 16384)
    assert sum(w.kept_tokens for w in work) == 16384
    assert sum(w.kept_tokens for w in work if w.model == "big") == n_big
    # the big model catches up on the prompt and every small token before its last span, once
    small_after_last_span = work[-1].kept_tokens if n_big and work[-1].model == "small" else 0
    expected = 2048 + (16384 - n_big) - small_after_last_span if n_big else 0
    assert sum(w.prefill_tokens for w in work if w.model == "big") == expected


# ---------------------------------------------------------------------------------------------------------
# serial mode on a hand-built trace
def _profile_with_overheads() -> HardwareProfile:
    small = ModelThroughput(1000.0, 100.0, prefill_call_s=0.01, decode_call_s=0.02)
    big = ModelThroughput(100.0, 10.0, prefill_call_s=0.1, decode_call_s=0.2)
    return HardwareProfile("hand", "paper", {"s": small, "b": big}, "test")


def _hand_trace() -> Trace:
    segs = (
        Segment("small", tuple(range(100)), "a", 50, 100, 0, 0, 1.0, "handoff"),  # prompt prefill + 100 decoded
        Segment("big", tuple(range(20)), "b", 150, 30, 10, 30, 2.0, "takeback"),  # catch-up 150, 10 discarded
        Segment("small", tuple(range(40)), "c", 0, 40, 0, 0, 0.5, "eos"),
    )
    return Trace(segs, "abc", {"small": 50, "big": 50}, 1, 0, "eos", 3.5)


def test_serial_trace_equals_hand_computed_seconds():
    # a segment that starts with a prefill takes its first token from it: 99 and 29 decode steps, not 100 and 30
    expected = (0.01 + 50 / 1000 + 0.02 + 99 / 100) + (0.1 + 150 / 100 + 0.2 + 29 / 10 + 0.01 + 30 / 1000) + (
        0.02 + 40 / 100
    )
    assert simulate_trace(_hand_trace(), _profile_with_overheads(), "s", "b") == pytest.approx(expected)


def test_serial_trace_on_the_paper_table():
    expected = 50 / P_SMALL + 99 / D_SMALL + 150 / P_BIG + 29 / D_BIG + 30 / P_SMALL + 40 / D_SMALL
    assert simulate_trace(_hand_trace(), "a6000-paper", "1.5B", "32B") == pytest.approx(expected)


def test_other_modes_see_a_trace_as_its_length_and_offload():
    trace = _hand_trace()
    expected = simulate(20 / 160, "a6000-paper", "1.5B", "32B", "continuous", 50, 160).simulated_s
    assert simulate_trace(trace, "a6000-paper", "1.5B", "32B", mode="continuous") == pytest.approx(expected)


# ---------------------------------------------------------------------------------------------------------
# errors, sweeps, tables
@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        ({"offload": 5.0}, "offload=5.0"),
        ({"mode": "pipelined"}, "'pipelined'.*continuous"),
        ({"big": "33B"}, "'33B'.*1.5B, 7B"),
        ({"decode_tokens": 0}, "decode_tokens=0"),
    ],
)
def test_bad_arguments_name_the_value(kwargs, fragment):
    args = {"offload": 0.05, "profile": "a6000-paper", "small": "1.5B", "big": "32B", **kwargs}
    with pytest.raises((ValueError, KeyError), match=fragment):
        simulate(**args)


def test_unknown_mode_names_the_registered_ones():
    with pytest.raises(UnknownNameError, match="unknown simulator mode 'pipelined'; allowed: paper, continuous"):
        simulate(0.05, "a6000-paper", "1.5B", "32B", mode="pipelined")
    with pytest.raises(UnknownNameError, match="unknown paper mode 'Oracle'; allowed: None — 1.5B alone"):
        paper_results.paper_per_run_accuracy(("Oracle",))


def test_speedup_table_shape():
    table = speedup_table()
    assert list(table.index) == [(m, b) for m in ("paper", "continuous") for b in ("7B", "8B", "14B", "32B", "70B")]
    assert list(table.columns) == [0.0, 1.35, 2.0, 5.0, 10.0, 20.0]
    assert 8 < table.loc[("paper", "32B"), 1.35] < 9
    assert table.loc[("paper", "70B"), 0.0] == pytest.approx(table.loc[("continuous", "70B"), 0.0])


# ---------------------------------------------------------------------------------------------------------
# CLI
def test_cli_json(capsys):
    assert cli.main(["simulate", "--offload", "0.0135", "0.05", "--big", "32B", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["offload"] for r in rows] == [0.0135, 0.05]
    assert 8 < rows[0]["speedup"] < 9 and rows[0]["mode"] == "paper"


def test_cli_table(capsys):
    assert cli.main(["simulate", "--profile", "a6000-paper", "--small", "1.5B", "--big", "32B", "--offload", "0.0135",
                     "--mode", "paper", "--seed", "3"]) == 0
    out = capsys.readouterr().out
    assert "1024.8" in out and "8.76x" in out


def test_cli_unknown_model_is_a_clear_error(capsys):
    assert cli.main(["simulate", "--big", "33B"]) == 2
    assert "allowed: 1.5B" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------------------
# plots and paper data
def test_figure5_left_one_axes():
    paper = paper_results.paper_per_run_accuracy()
    mine = paper.assign(source="this run")
    fig = plots.figure5_left(pd.concat([paper, mine]))
    assert isinstance(fig, Figure) and len(fig.axes) == 1
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == list(paper_results.FIGURE5_LEFT_MODES)


def test_figure5_left_needs_its_columns():
    with pytest.raises(ValueError, match="missing \\['source'\\]"):
        plots.figure5_left(pd.DataFrame({"mode": ["a"], "accuracy": [0.5]}))


def test_figure5_right_lines():
    fig = plots.figure5_right("a6000-paper", bigs=("14B", "32B"), offloads=(0.0, 0.1, 0.3),
                              extra_curves={"measured": ([0.95], [5.0])})
    ax = fig.axes[0]
    assert len(ax.lines) == 2 + 1 + 3  # big models, the extra curve, three dashed offload markers
    assert list(ax.lines[0].get_ydata()) == pytest.approx([1.0, 0.9, 0.7])  # the paper's layout: y = small share
    assert plots.FIGURE5_OFFLOADS[-1] == 0.30 and len(plots.FIGURE5_OFFLOADS) == 31


def test_relative_errors_and_sim_vs_measured():
    assert plots.relative_errors([1.1, 2.0, 2.0], [1.0, 2.0, 4.0]) == pytest.approx({"median": 0.1, "p90": 0.42})
    df = pd.DataFrame({"sim_s": [1.1, 2.0, 2.0], "wall_s": [1.0, 2.0, 4.0]})
    fig = plots.sim_vs_measured(df)
    assert "median 10.0%" in fig.axes[0].get_title() and len(fig.axes[0].lines) == 1
    with pytest.raises(ValueError, match="positive"):
        plots.relative_errors([1.0], [0.0])


def test_paper_per_run_accuracy_matches_the_reported_means():
    df = paper_results.paper_per_run_accuracy()
    assert set(df["source"]) == {"paper"} and list(dict.fromkeys(df["mode"])) == list(paper_results.FIGURE5_LEFT_MODES)
    table = paper_results.paper_results_table()
    for row in table.itertuples():
        runs = paper_results.PAPER_AIME24[row.mode][0]
        assert 100 * sum(runs) / len(runs) == pytest.approx(row.mean_accuracy_pct, abs=0.06), row.mode
    assert table.set_index("mode").loc["Learned (1.352 %)", "eval_wall_s"] == 1128


def test_get_profile_accepts_a_profile_object():
    hw = get_profile("a6000-paper")
    assert simulate(0.0, hw, "1.5B", "7B").speedup == simulate(0.0, "a6000-paper", "1.5B", "7B").speedup
