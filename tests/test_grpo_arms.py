"""GRPO arms: their names and settings (notebook 03), the configurable reward they vary, and the ``grpo`` block of
notebook 05 (tag failures, the paired difference)."""

import pandas as pd
import pytest

from splitlib.evaluate.arms import arm_key, grpo_block, grpo_table, tag_outcome
from splitlib.training.grpo import reward_functions
from splitlib.training.launch import grpo_arms, grpo_settings, needs_big

TRACE = "A: 0+1=1\nB: 1+2=3\nC: 3+3=6,{c} bonus 7{e}\nD: 7+4=1\nAnswer: \\boxed{{1}}"


def test_arms_are_the_modes_then_one_offload_arm_per_latency_weight():
    arms = grpo_arms({"modes": ["offload", "paper"], "rl4e_latency_weights": [0.0, 1.0, 0.25]})
    assert list(arms) == ["offload", "paper", "rl4e_0", "rl4e_1", "rl4e_0.25"]
    assert arms["rl4e_1"] == {"mode": "offload", "reward_overrides": {"rl4e": {"latency_weight": 1.0}}}
    off = {"eval_every": 0, "heldout_problems": 4}
    assert needs_big({"modes": ["paper"], "rl4e_latency_weights": [1.0], **off})
    assert not needs_big({"modes": ["paper"], "rl4e_latency_weights": [], **off})
    assert needs_big({"modes": ["paper"], "rl4e_latency_weights": [], **off, "eval_every": 2})  # held-out: split


def test_settings_of_an_arm_without_overrides_are_unchanged_so_earlier_models_stay_reusable():
    plain = grpo_settings("paper", {"sft_model": "x"}, None, ["rl4e"], [1.0], {})
    assert "reward_overrides" not in plain
    tuned = grpo_settings("paper", {"sft_model": "x"}, None, ["rl4e"], [1.0], {}, reward_overrides={"rl4e": {"latency_weight": 2.0}})
    assert tuned["reward_overrides"] == {"rl4e": {"latency_weight": 2.0}}


def test_reward_overrides_configure_rl4e_and_keep_its_name():
    (fn,) = reward_functions(["rl4e"], {"rl4e": {"latency_weight": 2.0}})
    assert fn.config.latency_weight == 2.0 and fn.__name__ == "rl4e"
    assert reward_functions(["rl4e"])[0].config.latency_weight == 0.5


@pytest.mark.parametrize(("overrides", "error"), [({"paper_accuracy": {"x": 1}}, "not among the rewards"),
                                                  ({"rl4e": {"no_such_field": 1}}, "no_such_field")])
def test_reward_overrides_refuse_what_they_cannot_set(overrides, error):
    with pytest.raises((ValueError, TypeError), match=error):
        reward_functions(["rl4e", "tagged_char_fraction"], overrides)


@pytest.mark.parametrize(("generation", "failure", "missed", "balanced"), [
    (TRACE.format(c="<bigmodel>", e="</bigmodel>"), False, 0, True),  # the hard step offloaded
    (TRACE.format(c="", e=""), True, 1, True),  # the hard step written by the small model
    (TRACE.format(c="<bigmodel>", e=""), True, 1, False),  # unbalanced
])
def test_tag_outcome_fails_unbalanced_tags_and_hard_steps_not_offloaded(generation, failure, missed, balanced):
    out = tag_outcome(generation, hard_steps=True)
    assert (out["failure"], out["hard_missed"], out["balanced"]) == (failure, missed, balanced)
    assert out["hard_steps"] == 1 and not out["runaway"]


def test_a_span_over_a_line_break_is_a_runaway():
    out = tag_outcome("A: 0+1=1\n<bigmodel>B: 1+2=3\nC: 3+3=6</bigmodel>", hard_steps=False)
    assert out["runaway"] and not out["failure"]


def test_grpo_block_keys_accuracy_failures_and_the_paired_difference():
    good, bad = TRACE.format(c="<bigmodel>", e="</bigmodel>"), TRACE.format(c="", e="")
    rows = [{"method": f"split {m}", "problem_id": str(i), "sample": 0, "correct": c, "scorable": True, "generation": g}
            for i in range(4) for m, c, g in (("grpo-offload", True, good), ("grpo-paper", i < 2, bad))]
    summary = pd.DataFrame([{"method": "split grpo-offload", "accuracy": 1.0, "ci_low": 1.0, "ci_high": 1.0,
                             "offload_token_fraction": 0.1},
                            {"method": "split grpo-paper", "accuracy": 0.5, "ci_low": 0.0, "ci_high": 1.0,
                             "offload_token_fraction": 0.0}])
    block = grpo_block(rows, summary, ["grpo-offload", "grpo-paper", "sft"], hard_steps=True, n_boot=200)
    assert set(block) == {"grpo_offload", "grpo_paper", "grpo_offload_minus_grpo_paper"}
    assert block["grpo_offload"]["tag_failure_rate"] == 0.0 and block["grpo_paper"]["tag_failure_rate"] == 1.0
    assert block["grpo_offload_minus_grpo_paper"]["diff"] == pytest.approx(0.5)
    assert [arm_key(n) for n in ("grpo-rl4e_1", "grpo-paper", "sft")] == ["rl4e_1", "grpo_paper", "sft"]
    table = grpo_table(block)  # notebook 05's view: one row per checkpoint, the paired difference left out
    assert list(table.index) == ["grpo_offload", "grpo_paper"] and table.loc["grpo_paper", "accuracy"] == 0.5
