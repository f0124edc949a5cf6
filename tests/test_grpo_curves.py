"""Notebook 03's per-step curves: the ``tag_failure`` metric reward, ``report.grpo_curves`` with reward components,
the curves figure's panels, and the held-out split-decoding evaluation during GRPO (``splitlib.training.heldout``)."""

import math
from types import SimpleNamespace

import pytest

from splitlib.rewards import REWARDS, tag_failure
from splitlib.tag_failures import tag_outcome
from splitlib.training import report
from splitlib.training.figures import grpo_curves_figure
from splitlib.training.heldout import HeldoutCallback, HeldoutConfig, heldout_metrics
from splitlib.training.launch import grpo_settings, heldout_settings
from splitlib.training.rollout import offload_decoder

TRACE = "A: 0+1=1\nB: 1+2=3\nC: 3+3=6,{o} bonus 7{c}\nD: 7+4=1\nAnswer: \\boxed{{1}}"


# -- the tag_failure metric -------------------------------------------------------------------------------------
@pytest.mark.parametrize(("completion", "failure"), [
    (TRACE.format(o="<bigmodel>", c="</bigmodel>"), 0.0),  # the hard step offloaded
    (TRACE.format(o="", c=""), 1.0),  # the hard step written by the small model
    (TRACE.format(o="<bigmodel>", c=""), 1.0),  # unbalanced
    ("<bigmodel>A: 0+1=1</bigmodel>\nAnswer: \\boxed{1}", 0.0),  # balanced, no hard step
    ("A: 0+1=1</bigmodel>\nAnswer: \\boxed{1}", 1.0),  # a stray closer
])
def test_tag_failure_is_one_for_unbalanced_tags_or_a_hard_step_not_offloaded(completion, failure):
    assert tag_failure([completion]) == [failure]
    assert tag_outcome(completion, hard_steps=True)["failure"] == bool(failure)  # one definition, shared with 05


def test_tag_failure_is_registered_and_reads_chat_completions():
    assert REWARDS["tag_failure"] is tag_failure
    text = TRACE.format(o="", c="")
    assert tag_failure([[{"role": "assistant", "content": text}]]) == [1.0]


def test_evaluation_arms_still_expose_tag_outcome():
    from splitlib.evaluate import arms

    assert arms.tag_outcome is tag_outcome


# -- curves -----------------------------------------------------------------------------------------------------
STEPS = [{"step": 1, "reward": 0.5, "rollout/offload_fraction_mean": 0.2, "rollout/accuracy": 0.75,
          "rewards/rl4e/mean": 0.4, "rewards/paper_fixed_format/mean": 0.5, "rewards/tag_failure/mean": 0.25},
         {"step": 2, "reward": 0.7, "rollout/offload_fraction_mean": 0.3, "rollout/accuracy": 1.0,
          "rewards/rl4e/mean": 0.6, "rewards/paper_fixed_format/mean": 0.4, "rewards/tag_failure/mean": 0.0}]
WEIGHTS = {"rl4e": 1.0, "paper_fixed_format": 0.25, "tag_failure": 0.0}
HELDOUT = [{"step": 0, "accuracy": 0.5, "offload_token_fraction": 0.1, "tag_failure_rate": 0.25, "n": 4, "wall_s": 1},
           {"step": 2, "accuracy": 0.75, "offload_token_fraction": 0.2, "tag_failure_rate": 0.0, "n": 4, "wall_s": 1}]


def test_grpo_curves_have_a_column_per_reward_component_and_the_tag_failure_rate():
    curves = report.grpo_curves(STEPS)
    assert curves["reward/rl4e"].tolist() == [0.4, 0.6]
    assert curves["reward/paper_fixed_format"].tolist() == [0.5, 0.4]
    assert curves["tag_failure"].tolist() == [0.25, 0.0]
    assert math.isnan(report.grpo_curves([{"step": 1, "reward": 0.1}]).loc[0, "tag_failure"])  # not logged
    summary = report.curve_summary(curves, share=0.5)
    assert (summary["tag_failure_first"], summary["tag_failure_last"]) == (0.25, 0.0)


def test_heldout_curve_and_summary_give_step_zero_and_the_end():
    curve = report.heldout_curve(HELDOUT)
    assert curve["step"].tolist() == [0, 2]
    out = report.heldout_summary(curve)
    assert (out["heldout_accuracy_first"], out["heldout_accuracy_last"]) == (0.5, 0.75)
    assert report.heldout_summary(report.heldout_curve([]))["heldout_accuracy_last"] is None


def test_curves_figure_has_a_panel_per_weighted_reward_and_the_heldout_panels():
    curves = {"offload": report.grpo_curves(STEPS), "paper": report.grpo_curves(STEPS)}
    heldout = {"offload": report.heldout_curve(HELDOUT), "paper": report.heldout_curve([])}
    fig = grpo_curves_figure(curves, WEIGHTS, heldout)
    titles = [ax.get_title() for ax in fig.axes]
    assert titles == ["total reward (weighted)", "reward rl4e (weight 1)", "reward paper_fixed_format (weight 0.25)",
                      "rollouts: offloaded share (characters)", "rollouts: accuracy", "rollouts: tag failures",
                      "held-out: accuracy (split, greedy)", "held-out: tag failures", "held-out: offloaded tokens"]
    assert all(ax.get_ylabel() for ax in fig.axes) and fig.legends
    assert len(fig.axes[6].lines) == 1  # the paper arm was not evaluated: no line
    assert len(grpo_curves_figure(curves).axes) == 4  # no weights, no held-out: total, offload, accuracy, failures


# -- held-out evaluation ----------------------------------------------------------------------------------------
def test_heldout_settings_are_absent_when_off_so_earlier_models_stay_reusable():
    p = {"eval_every": 0, "heldout_problems": 64, "dataset": "toy"}
    assert heldout_settings(p, []) is None
    assert "heldout" not in grpo_settings("paper", {"sft_model": "x"}, None, ["rl4e"], [1.0], {})
    on = heldout_settings({**p, "eval_every": 8}, [{"question": "q", "answer": "1"}])
    assert on["every"] == 8 and on["n"] == 1


def test_heldout_metrics_count_truncated_answers_wrong_and_tag_failures():
    good = SimpleNamespace(text=TRACE.format(o="<bigmodel>", c="</bigmodel>"), truncated=False,
                           offload_token_fraction=0.2)
    bad = SimpleNamespace(text=TRACE.format(o="", c=""), truncated=True, offload_token_fraction=0.0)
    out = heldout_metrics([good, bad], [{"answer": "1"}, {"answer": "1"}], hard_steps=True)
    assert out == {"accuracy": 0.5, "offload_token_fraction": 0.1, "tag_failure_rate": 0.5, "n": 2}


def test_heldout_callback_evaluates_at_step_zero_every_k_steps_and_the_end(tiny_models, tiny_model_dirs,
                                                                           toy_tokenizer, toy_problems):
    problems = tuple(p.to_json() for p in toy_problems[200:203])
    config = HeldoutConfig(problems=problems, big_dir=str(tiny_model_dirs["big"]), every_steps=2,
                           decoder={"decode": {"big_chunk_tokens": 4, "max_offload_tokens": 8}})
    model = tiny_models["small"]
    args = SimpleNamespace(max_completion_length=12)
    runs = []
    for _ in range(2):  # deterministic: greedy, fixed problem keys
        callback = HeldoutCallback(config, toy_tokenizer)
        callback.on_train_begin(args, SimpleNamespace(global_step=0), None, model=model)
        for step in (1, 2, 3):
            callback.on_step_end(args, SimpleNamespace(global_step=step), None, model=model)
        callback.on_train_end(args, SimpleNamespace(global_step=3), None, model=model)
        runs.append([{k: v for k, v in r.items() if k != "wall_s"} for r in callback.results])
    assert [r["step"] for r in runs[0]] == [0, 2, 3]
    assert runs[0] == runs[1] and all(r["n"] == 3 for r in runs[0])
    assert not model.training  # its mode restored


def test_heldout_callback_shares_a_given_decoder_and_leaves_it_open(tiny_models, tiny_model_dirs, toy_tokenizer,
                                                                     toy_problems):
    decoder = offload_decoder(tiny_model_dirs["big"])
    config = HeldoutConfig(problems=(toy_problems[0].to_json(),), big_dir="unused", every_steps=1)
    callback = HeldoutCallback(config, toy_tokenizer, decoder=decoder)
    callback.on_train_end(SimpleNamespace(max_completion_length=8), SimpleNamespace(global_step=0), None,
                          model=tiny_models["small"])
    assert callback.results[0]["step"] == 0 and decoder[0].loaded  # the owner closes it
    decoder[0].close()


def test_heldout_config_refuses_nothing_to_evaluate():
    with pytest.raises(ValueError, match="every_steps=0"):
        HeldoutConfig(problems=({"question": "q", "answer": "1"},), big_dir="b", every_steps=0)
    with pytest.raises(ValueError, match="no held-out problems"):
        HeldoutConfig(problems=(), big_dir="b", every_steps=1)


def test_run_grpo_returns_the_heldout_evaluations_of_a_paper_mode_arm(tiny_model_dirs, toy_problems, tmp_path):
    from splitlib.training.grpo import run_grpo

    config = HeldoutConfig(problems=(toy_problems[250].to_json(),), big_dir=str(tiny_model_dirs["big"]),
                           every_steps=1)
    metrics = run_grpo(tiny_model_dirs["small"], None, toy_problems[:4], tmp_path / "grpo", mode="paper",
                       reward_names=["paper", "tag_failure"], reward_weights=[1.0, 0.0],
                       params={"preset": "smoke", "device": "cpu", "seed": 0}, progress=False, heldout=config)
    assert [r["step"] for r in metrics["heldout"]] == [0, 1, 2]  # SFT, each step (the end is step 2)
    assert "rewards/tag_failure/mean" in metrics["steps"][0]
