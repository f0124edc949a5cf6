"""The claim helpers of splitlib.evaluate (notebooks 04–06): matching a random baseline at the learned offload,
the best learned method, gap recovered with a paired CI, per-run accuracies for box plots, Markdown tables,
model references inside a run directory."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from splitlib import evaluate as ev
from splitlib.runs import MissingInputError


def row(method: str, problem: str, correct: bool, sample: int = 0, offload: float = 0.1, policy: str = "split",
        **extra) -> dict:
    return {"method": method, "problem_id": problem, "sample": sample, "correct": correct, "scorable": True,
            "truncated": False, "offload_token_fraction": offload, "offload_char_fraction": offload,
            "tokens_small": 90, "tokens_big": 10, "handoffs": 1, "rejected_requests": 0, "wall_s": 1.0,
            "policy": policy, "sweep": None, "grader_version": "g", "batch_wall_s": 4.0, "batch_size": 4, **extra}


def method_rows(method: str, n_right: int, n: int = 20, offload: float = 0.1, policy: str = "split") -> list[dict]:
    """``n`` problems, the first ``n_right`` right."""
    return [row(method, f"p{i}", i < n_right, offload=offload, policy=policy) for i in range(n)]


def summary_of(rows: list[dict]) -> pd.DataFrame:
    return ev.aggregate(rows, ev.make_protocol("custom", temperature=0.0, top_p=1.0, max_new_tokens=8, samples=1,
                                               aggregate="pass@1", n_boot=200))


@pytest.fixture
def claim_rows() -> list[dict]:
    return (method_rows("small", 4) + method_rows("big", 18, offload=1.0, policy="big_only")
            + method_rows("learned", 16, offload=0.12)
            + method_rows("random r9", 6, offload=0.11, policy="random_switch")
            + method_rows("random r4", 8, offload=0.2, policy="random_switch"))


# -- matching and choosing -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("target, tolerance, expected", [
    (0.12, 0.02, "random r9"),  # nearest, within ±2 points
    (0.18, 0.02, "random r4"),
    (0.155, 0.02, None),  # 4.5 points from both
    (0.155, 0.05, "random r9"),  # nearer of the two within a wider tolerance
    (0.13, 0.02, "random r9"),  # exactly 2 points away counts
])
def test_match_random_picks_the_nearest_point_within_tolerance(claim_rows, target, tolerance, expected):
    s = summary_of(claim_rows)
    assert ev.match_random(s, target, ["random r9", "random r4"], tolerance) == expected


def test_match_random_without_random_methods_is_none(claim_rows):
    assert ev.match_random(summary_of(claim_rows), 0.1, []) is None


def test_best_method_respects_the_offload_limit_and_breaks_ties_by_less_offload():
    rows = method_rows("a", 10, offload=0.3) + method_rows("b", 8, offload=0.1) + method_rows("c", 8, offload=0.05)
    s = summary_of(rows)
    assert ev.best_method(s, ["a", "b", "c"]) == "a"
    assert ev.best_method(s, ["a", "b", "c"], max_offload=0.15) == "c"  # b and c tie: less offload wins
    assert ev.best_method(s, ["a"], max_offload=0.15) is None


@pytest.mark.parametrize("offload, ratio", [(0.05, 19.0), (0.1, 9.0), (0.5, 1.0), (1.0, 0.0)])
def test_random_ratio_for_inverts_p_big(offload, ratio):
    assert ev.random_ratio_for(offload) == pytest.approx(ratio)


@pytest.mark.parametrize("bad", [0.0, -0.1, 1.5])
def test_random_ratio_for_refuses_impossible_offloads(bad):
    with pytest.raises(ValueError, match="offload"):
        ev.random_ratio_for(bad)


# -- gap recovered and the claim --------------------------------------------------------------------------------------
def test_gap_recovered_ci_brackets_the_point_and_is_seeded(claim_rows):
    g = ev.gap_recovered_ci(claim_rows, "learned", "small", "big", n_boot=500, seed=3)
    assert g["gap_recovered"] == pytest.approx((0.8 - 0.2) / (0.9 - 0.2))
    assert g["ci_low"] <= g["gap_recovered"] <= g["ci_high"] and g["n_problems"] == 20
    assert ev.gap_recovered_ci(claim_rows, "learned", "small", "big", n_boot=500, seed=3) == g


def test_gap_recovered_ci_without_a_gap_is_nan():
    rows = method_rows("small", 5) + method_rows("big", 5) + method_rows("learned", 7)
    g = ev.gap_recovered_ci(rows, "learned", "small", "big", n_boot=100)
    assert math.isnan(g["gap_recovered"]) and math.isnan(g["ci_low"])


def test_claim_holds_when_learned_beats_matched_random(claim_rows):
    s = summary_of(claim_rows)
    c = ev.claim(claim_rows, s, "learned", "random r9", "small", "big", n_boot=1000)
    assert c["holds"], c["checks"]
    assert c["difference"]["diff"] == pytest.approx(0.5) and c["difference"]["ci_low"] > 0
    assert c["offload"] == {"learned": pytest.approx(0.12), "random r9": pytest.approx(0.11)}
    text = ev.claim_markdown(c)
    assert "**holds**" in text and "learned − random: +50.0%" in text


def test_claim_fails_and_says_why(claim_rows):
    s = summary_of(claim_rows)
    c = ev.claim(claim_rows, s, "learned", "random r4", "small", "big", max_offload=0.1, n_boot=500)
    assert not c["holds"]
    assert not c["checks"]["learned_offload_at_most_max"] and not c["checks"]["random_matched_within_tolerance"]
    none = ev.claim(claim_rows, s, "learned", None, "small", "big", n_boot=200)
    assert none["difference"] is None and not none["holds"]
    assert "no point within the matching tolerance" in ev.claim_markdown(none)


# -- presentation -----------------------------------------------------------------------------------------------------
def test_run_accuracies_use_runs_or_disjoint_problem_subsets():
    one = method_rows("m", 10, n=20)  # p0..p9 right
    acc = ev.run_accuracies(one, n_subsets=4)
    assert list(acc["accuracy"]) == [1.0, 1.0, 0.0, 0.0] and list(acc["run"]) == [0, 1, 2, 3]
    runs_ = [row("r", f"p{i}", s == 1, sample=s) for s in range(3) for i in range(5)]
    assert list(ev.run_accuracies(runs_, n_subsets=4)["accuracy"]) == [0.0, 1.0, 0.0]  # the protocol's runs


def test_results_markdown_has_one_line_per_method_and_the_time_given(claim_rows):
    s = summary_of(claim_rows)
    spp = ev.time_per_problem(claim_rows)
    assert spp["small"] == pytest.approx(1.0)  # batch 4.0 s / 4 problems
    text = ev.results_markdown(s, spp)
    lines = text.strip().splitlines()
    assert len(lines) == 2 + 5 and lines[2].startswith("| small | 20.0% [")
    assert "| 1.000 |" in lines[2]


# -- inputs -----------------------------------------------------------------------------------------------------------
def test_resolve_model_ref_checks_run_paths_and_names_the_notebook(tmp_path):
    (tmp_path / "02_sft" / "model").mkdir(parents=True)
    (tmp_path / "02_sft" / "model" / "config.json").write_text("{}")
    assert ev.resolve_model_ref(tmp_path, "02_sft/model") == str(tmp_path / "02_sft" / "model")
    with pytest.raises(MissingInputError, match="03_grpo/offload/model/config.json — run notebooks/03_grpo.ipynb"):
        ev.resolve_model_ref(tmp_path, "03_grpo/offload/model")
    assert ev.resolve_model_ref(tmp_path, "deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B").startswith("deepseek-ai/")


def test_methods_from_rows_rebuild_the_methods():
    m = ev.Method("split b5", policy="split", small="grpo", big="big", policy_params={"max_offload_fraction": 0.05},
                  sweep="budget")
    r = row("split b5", "p0", True, small_model="grpo", big_model="big", policy_params=m.policy_params, sweep="budget")
    assert ev.methods_from_rows([r], ["split b5"]) == [m]
    with pytest.raises(ValueError, match="not in the rows"):
        ev.methods_from_rows([r], ["nope"])


def test_median_wall_rows_keep_each_keys_median_pass():
    passes = [[row("m", "p0", True, wall_s=w0), row("m", "p1", True, wall_s=w1)]
              for w0, w1 in ((0.3, 0.9), (0.1, 0.2), (0.5, 0.4))]
    got = ev.median_wall_rows(passes)
    assert [(r["problem_id"], r["wall_s"]) for r in got] == [("p0", 0.3), ("p1", 0.4)]
    with pytest.raises(ValueError, match="different grids"):
        ev.median_wall_rows([passes[0], passes[1][:1]])
