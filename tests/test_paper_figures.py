"""The paper's figures regenerated from its published numbers (``paper_results``, ``paper_figures``,
``paper_overlay``, ``splitreason figures --paper``): the data against print and against the simulator, every
output file, a run's overlay, and notebook 06 with ``source: paper``."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from splitlib import cli, paper_figures, paper_overlay, paper_results, pipeline, plan, simulator
from splitlib import notebook_params as nbp
from splitlib.hardware import paper_a6000_profile

# Printed in the paper (PAPER_FACTS §8, Figure 6): mean accuracy (%) and mean evaluation time (s) per mode.
PRINTED_MEANS = {
    "None — 1.5B alone (0.0 %)": (17.3, 683), "Random (5.05 %)": (37.3, 1590), "Random (10.0 %)": (38.0, 2154),
    "Learned (1.352 %)": (41.3, 1128), "Learned (5.0 %), SplitR-32B": (45.6, 1751), "SplitR-14B": (45.3, 1640),
    "SplitR-8B": (44.0, 1190), "8B alone": (31.3, 1934), "14B alone": (52.0, 2090), "32B alone": (64.0, 3143),
}
PRINTED_TICKS = ["None\n(0.0%)", "Random\n(5.05%)", "Random\n(10.0%)", "Learned\n(1.352%)", "Learned\n(5.0%)"]


def closed_form_speedup(big: str, offload: float, p: int = 2048, d: int = 16384, chunk: int = 256) -> float:
    """The paper's simulator by hand for d a multiple of the chunk (no partial chunk, so no randomness)."""
    rates = {r.model: (r.prefill_tok_per_s, r.decode_tok_per_s) for r in paper_results.a6000_throughput().itertuples()}
    (ps, ds), (pb, db) = rates["1.5B"], rates[big]
    n_big = min(round(offload * d) // chunk, d // chunk)
    t = max(p / pb, p / ps) + n_big * max(chunk / db, chunk / ps) + (d // chunk - n_big) * max(chunk / ds, chunk / pb)
    return (p / pb + d / db) / t


# ---------------------------------------------------------------------------------------------------------
# the data
def test_the_published_runs_give_the_printed_means():
    table = paper_results.paper_results_table().set_index("mode")
    assert list(table.index) == list(PRINTED_MEANS)
    for mode, (acc, wall_s) in PRINTED_MEANS.items():
        assert (table.loc[mode, "mean_accuracy_pct"], table.loc[mode, "eval_wall_s"]) == (acc, wall_s), mode
    assert table.loc["Learned (5.0 %), SplitR-32B", "runs"] == 6 and set(table["runs"]) == {5, 6}


def test_figure5_left_data_is_the_published_accuracies_up_to_the_authors_rounding():
    drawn = paper_results.figure5_left_runs()
    assert list(dict.fromkeys(drawn["mode"])) == list(paper_results.FIGURE5_LEFT_MODES)
    for mode, part in drawn.groupby("mode", sort=False):
        published = sorted(paper_results.PAPER_AIME24[mode][0])
        assert np.allclose(sorted(part["accuracy"]), published, atol=0.0034), mode  # e.g. 0.43 for 0.4333


def test_every_value_has_a_source():
    for path in sorted(paper_results.DATA_DIR.glob("*.csv")):
        rows = list(csv.DictReader(path.open(encoding="utf-8")))
        assert rows and all(r["source"].strip() for r in rows), path.name
        assert all("33e455a" in r["source"] or "paper" in r["source"] for r in rows), path.name
    constants = json.loads((paper_results.DATA_DIR / "constants.json").read_text(encoding="utf-8"))
    assert all(set(v) == {"value", "source"} and v["source"] for v in constants.values())
    with pytest.raises(ValueError, match="unknown paper constant 'nope'; allowed: figure5_offload_step"):
        paper_results.constant("nope")


def test_the_a6000_profile_is_read_from_the_data_file():
    hw = paper_a6000_profile()
    assert (hw.model("32B").prefill_tok_per_s, hw.model("32B").decode_tok_per_s) == (2594.868088, 16.0)
    assert hw.meta["gpus"] == {"1.5B": 1, "7B": 1, "8B": 2, "14B": 2, "32B": 2, "70B": 2}
    assert list(hw.models) == list(paper_results.a6000_throughput()["model"])


# ---------------------------------------------------------------------------------------------------------
# the figures
def test_figure5_speedup_is_the_paper_simulator_exactly():
    df = paper_figures.figure5_speedup()
    assert list(df.columns) == ["big", "offload_percent", "speedup"] and len(df) == 5 * 31
    assert list(dict.fromkeys(df["big"])) == ["7B", "8B", "14B", "32B", "70B"]
    assert list(df["offload_percent"][:31]) == list(range(31))
    sim = simulator.sweep([o / 100 for o in range(31)], "a6000-paper", "1.5B", ["7B", "8B", "14B", "32B", "70B"])
    assert np.array_equal(df["speedup"].to_numpy(), sim["speedup"].to_numpy())
    by_hand = [closed_form_speedup(b, o / 100) for b, o in zip(df["big"], df["offload_percent"])]
    assert np.allclose(df["speedup"], by_hand, rtol=1e-12, atol=0)
    s32 = df[df["big"] == "32B"].set_index("offload_percent")["speedup"]
    assert 8 <= s32[1] <= 9 and s32[1] == s32[0]  # the caption's 8-9x at 1.35 %: less than one chunk offloaded


def test_figure5_is_drawn_in_the_paper_layout():
    fig = paper_figures.figure5()
    left, right = fig.axes
    assert [t.get_text() for t in left.get_xticklabels()] == PRINTED_TICKS
    assert not [line for line in left.lines if line.get_marker() not in ("None", None, "")]  # no outlier markers
    medians = sorted(round(float(line.get_ydata()[0]), 6) for line in left.lines if line.get_color() == "tab:orange")
    data = paper_results.figure5_left_runs().groupby("mode")["accuracy"].median()
    assert medians == sorted(round(100 * v, 6) for v in data)
    curves = [line for line in right.lines if line.get_label().startswith("SplitReasoner")]
    assert [c.get_label() for c in curves] == [f"SplitReasoner {b}" for b in ("7B", "8B", "14B", "32B", "70B")]
    table = paper_figures.figure5_speedup()
    for c, (_, rows) in zip(curves, table.groupby("big", sort=False)):
        assert np.array_equal(c.get_xdata(), rows["speedup"].to_numpy())  # x: speed-up
        assert np.allclose(c.get_ydata(), 1 - rows["offload_percent"] / 100)  # y: the small model's share
    dashed = sorted(round(float(line.get_ydata()[0]), 3) for line in right.lines if line.get_linestyle() == "--")
    assert dashed == [0.9, 0.95, 0.986]
    assert [t.get_text() for t in right.texts] == ["1.4% offload", "5% offload", "10% offload"]


def test_figure6_regenerates_print_but_for_two_documented_cells():
    frame = paper_figures.figure6_frame().set_index("model")
    printed = paper_results.figure6_table().set_index("model")
    assert (frame["accuracy_pct_regenerated"] == printed["accuracy_pct"]).all()
    differ = {(m, c) for c in ("nonpipelined_s", "pipelined_s") for m in frame.index
              if not pd.isna(printed.loc[m, c]) and frame.loc[m, f"{c}_regenerated"] != printed.loc[m, c]}
    assert differ == {("SplitR-32B", "nonpipelined_s"), ("SplitR-14B", "pipelined_s")}
    assert frame.loc["SplitR-14B", "pipelined_s_regenerated"] == 841  # printed 842: the authors' rounded factor
    split = frame.dropna(subset=["gain_authors"])
    assert (split["gain_simulator"].round(3) == split["gain_authors"]).all()
    summary = paper_figures.summary({})
    assert summary["paper_headline_in_8_9"] and len(summary["figure6_differences"]) == 2


def test_figure1_has_the_teaser_points_and_the_simulated_times():
    fig = paper_figures.figure1()
    left, right = fig.axes
    labels = left.get_legend_handles_labels()[1]
    assert labels == ["1.5B", "8B", "14B", "SplitReasoner 8B", "SplitReasoner 14B", "SplitReasoner 32B"]
    bars = {t.get_text(): p.get_width() for t, p in zip(right.get_yticklabels(), right.patches)}
    assert 6 < bars["32B alone"] / bars["SplitReasoner 32B, 5% offload"] < 7
    assert 5 < bars["32B alone"] / bars["SplitReasoner 32B, 10% offload"] < 5.2


# ---------------------------------------------------------------------------------------------------------
# splitreason figures --paper
def test_cli_figures_paper_writes_every_file(tmp_path, capsys):
    out = tmp_path / "f"
    assert cli.main(["figures", "--paper", "--out", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == sorted(paper_figures.OUTPUTS)
    assert (out / "figure5.png").stat().st_size > 50_000 and (out / "figure1.png").stat().st_size > 30_000
    assert (out / "figure5.pdf").read_bytes().startswith(b"%PDF")
    speedup = pd.read_csv(out / "figure5_speedup.csv")
    assert speedup.equals(paper_figures.figure5_speedup().reset_index(drop=True))
    table = (out / "figure6.md").read_text()
    assert all(f"| {m} |" in table for m in paper_results.figure6_table()["model"])
    readme = (out / "README.md").read_text()
    assert all(f"`{name}`" in readme for name in paper_figures.OUTPUTS if name != "README.md")
    assert "{" not in readme and "This run" not in readme
    assert "README.md says what each reproduces" in capsys.readouterr().out


def test_cli_figures_refuses_without_paper_and_names_a_missing_run(tmp_path, capsys):
    assert cli.main(["figures", "--out", str(tmp_path)]) == 2
    assert "say --paper" in capsys.readouterr().err
    assert cli.main(["figures", "--paper", "--out", str(tmp_path), "--run", str(tmp_path / "nowhere")]) == 2
    assert "no such run directory" in capsys.readouterr().err
    (tmp_path / "half" / "04_random_switch").mkdir(parents=True)
    (tmp_path / "half" / "04_random_switch" / "metrics.json").write_text('{"methods": {}}')
    assert cli.main(["figures", "--paper", "--out", str(tmp_path / "o"), "--run", str(tmp_path / "half")]) == 2
    err = capsys.readouterr().err
    assert "half/05_evaluate/metrics.json" in err and "notebooks/05_evaluate.ipynb" in err


def _fake_run(root: Path, with_06: bool = True) -> Path:
    """A run directory holding only what the overlay reads, in the notebooks' formats."""
    run = root / "toyrun"
    method = lambda acc, off, runs: {"accuracy": acc, "offload_token_fraction": off, "run_accuracy": runs}
    m04 = {"methods": {"random r19": method(0.3, 0.05, [0.3, 0.35]), "random r9": method(0.35, 0.1, [0.35, 0.4])},
           "s_per_problem": {"random r19": 0.5, "random r9": 0.6}}
    m05 = {"benchmark": "toy", "n_problems": 60,
           "claim": {"small": "small only", "big": "big only", "learned": "split grpo", "random": "random r19"},
           "methods": {"small only": method(0.2, 0.0, [0.2, 0.25]), "big only": method(0.9, 1.0, [0.9, 0.85]),
                       "split grpo": method(0.6, 0.08, [0.6, 0.55])},
           "s_per_problem": {"small only": 0.3, "big only": 1.5, "split grpo": 0.45}}
    m06 = {"learned": {"method": "split grpo", "offload_token_fraction": 0.08,
                       "speedup_over_big": {"measured (batch 1)": 2.5, "serial simulation of the same traces": 2.7}}}
    for name, body in (("04_random_switch", m04), ("05_evaluate", m05)) + ((("06_figure5", m06),) if with_06 else ()):
        (run / name).mkdir(parents=True)
        (run / name / "metrics.json").write_text(json.dumps(body))
    (run / "manifest.json").write_text(json.dumps({"profile": "toy"}))
    return run


def test_a_runs_points_go_over_the_paper_figures_marked_as_the_runs(tmp_path):
    run = _fake_run(tmp_path)
    out = tmp_path / "f"
    assert cli.main(["figures", "--paper", "--out", str(out), "--run", str(run)]) == 0
    points = paper_overlay.read_run(run, paper_overlay.left_refs(nbp.load_yaml(
        "06_figure5", pipeline.PARAMS_DIR / "toy" / "06_figure5.yaml").figure5_left))
    assert set(points.per_run["mode"]) == {"None — 1.5B alone (0.0 %)", "Random (5.05 %)", "Random (10.0 %)",
                                           "Learned (5.0 %), SplitR-32B", "32B alone"}
    fig = paper_figures.figure5(points)
    left, right = fig.axes
    diamonds = [line for line in left.lines if line.get_marker() == "D"]
    assert sum(len(d.get_ydata()) for d in diamonds) == 8  # four of the paper's modes × two runs; 32B alone has no box
    assert "toy benchmark, not AIME24" in left.get_legend().get_texts()[0].get_text()
    measured = [line for line in right.lines if line.get_label().startswith("this run: measured")]
    assert list(measured[0].get_xdata()) == [2.5] and list(measured[0].get_ydata()) == [pytest.approx(0.92)]
    assert len(paper_figures.figure1(points).axes) == 4  # the paper's two panels and the run's own axes
    assert "this run (toyrun: toy benchmark" in (out / "figure6.md").read_text()
    assert "## This run: toyrun" in (out / "README.md").read_text()


def test_a_run_without_06_measurements_gets_no_speedup_points(tmp_path):
    points = paper_overlay.read_run(_fake_run(tmp_path, with_06=False), {"Random (5.05 %)": "@random"})
    assert points.speedup.empty and list(points.per_run["method"]) == ["random r19", "random r19"]


# ---------------------------------------------------------------------------------------------------------
# notebook 06 with source: paper
def test_source_auto_is_run_only_when_05_ran(tmp_path):
    assert paper_figures.resolve_source("auto", tmp_path) == "paper"
    (tmp_path / "05_evaluate").mkdir()
    (tmp_path / "05_evaluate" / "metrics.json").write_text("{}")
    assert paper_figures.resolve_source("auto", tmp_path) == "run"
    assert paper_figures.resolve_source("paper", tmp_path) == "paper"
    with pytest.raises(ValueError, match="source='both'"):
        paper_figures.resolve_source("both", tmp_path)


def test_the_plan_of_notebook_06_alone_on_the_paper_profile_needs_no_model():
    f = nbp.load_yaml("06_figure5", pipeline.PARAMS_DIR / "paper" / "06_figure5.yaml")
    assert f.source == "auto"
    (stage,) = plan.stage_needs({"06_figure5": f}, None, cuda=False)
    assert (stage.device, stage.models) == ("cpu", [])
    assert plan.check([stage], plan.Hardware(gpus=0, gpu_memory_bytes=0, ram_bytes=8 * 2**30)) == []


@pytest.mark.slow
def test_notebook_06_on_the_paper_profile_draws_the_paper_figures_on_a_cpu(tmp_path):
    assert cli.main(["run", "--profile", "paper", "--only", "06", "--outputs-root", str(tmp_path)]) == 0
    out = tmp_path / "paper" / "06_figure5"
    assert set(paper_figures.OUTPUTS) <= {p.name for p in out.iterdir()}
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["source"] == "paper" and metrics["paper_headline_in_8_9"]
    assert not (tmp_path / "paper" / "05_evaluate").exists()
