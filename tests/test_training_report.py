"""splitlib.training.report (what notebooks 02/03 check and report) and the ``tagged_char_fraction`` metric reward."""

from __future__ import annotations

import copy
import math

import pandas as pd
import pytest
import torch
from safetensors.torch import save_file

from splitlib import rewards, tags
from splitlib.toy.world import generate
from splitlib.training import report

PROBLEM = generate(1, seed=0)[0]
TOY_TRACE = PROBLEM.trace
BONUS, BONUS_END = PROBLEM.hard_spans[0]  # the first hard step: a bonus clause


def tagged(text: str, start: int, end: int) -> str:
    return tags.apply_spans(text, [(start, end)])


# -- weights_changed --------------------------------------------------------------------------------------------
def test_weights_changed_is_false_for_a_copy_and_true_after_one_nudge(tiny_models, tmp_path) -> None:
    model = copy.deepcopy(tiny_models["small"])
    model.save_pretrained(tmp_path / "a")
    model.save_pretrained(tmp_path / "b")
    same = report.weights_changed(tmp_path / "a", tmp_path / "b")
    assert (same["changed"], same["max_abs_diff"], same["n_changed"]) == (False, 0.0, 0)
    assert same["n_tensors"] > 0 and same["resized"] == []
    with torch.no_grad():
        next(p for n, p in model.named_parameters() if "mlp" in n)[0, 0] += 0.25
    model.save_pretrained(tmp_path / "c")
    moved = report.weights_changed(tmp_path / "a", tmp_path / "c")
    assert moved["changed"] and moved["n_changed"] == 1
    assert moved["max_abs_diff"] == pytest.approx(0.25, abs=1e-6)


def test_weights_changed_compares_resized_tensors_on_their_common_slice(tmp_path) -> None:
    base = {"emb": torch.zeros(4, 2), "w": torch.ones(3)}
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    save_file(base, str(tmp_path / "a" / "model.safetensors"))
    save_file({"emb": torch.cat([torch.zeros(4, 2), torch.ones(2, 2)]), "w": torch.ones(3), "extra": torch.ones(1)},
              str(tmp_path / "b" / "model.safetensors"))
    out = report.weights_changed(tmp_path / "a", tmp_path / "b")
    assert out["resized"] == ["emb"] and out["only_in_b"] == ["extra"]
    assert out["max_abs_diff"] == 0.0  # the common rows are equal; the new rows make it "changed"
    assert out["changed"] and out["n_changed"] == 1


def test_weights_changed_needs_safetensors(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="safetensors"):
        report.weights_changed(tmp_path, tmp_path)


# -- generations of the small model alone -----------------------------------------------------------------------
@pytest.mark.parametrize("engine", ["generate", "hf"])
def test_small_only_generations_keep_tags_and_agree_across_engines(tiny_model_dirs, engine) -> None:
    questions = ["Bonus: 3. Step k adds k mod 10, for 4 steps; after steps B also add the next bonus number. Start: 1."]
    texts = report.small_only_generations(tiny_model_dirs["small"], questions * 2, 12, engine, 2, progress=False)
    assert len(texts) == 2 and texts[0] == texts[1] and texts[0]
    reference = report.small_only_generations(tiny_model_dirs["small"], questions, 12, "generate", 1, progress=False)
    assert texts[0].startswith(reference[0][:5])  # same greedy path (the decoder may stop at EOS / strip nothing)


def test_small_only_generations_rejects_unknown_engines(tiny_model_dirs) -> None:
    with pytest.raises(ValueError, match="engine='fast'"):
        report.small_only_generations(tiny_model_dirs["small"], ["q"], 4, "fast")


# -- toy alignment ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "generations, expected",
    [
        ([tags.apply_spans(TOY_TRACE, list(PROBLEM.hard_spans))], (1.0, 1.0, 1.0)),  # exactly the hard steps
        ([tagged(TOY_TRACE, BONUS - 1, BONUS_END)], (1.0, 1 / len(PROBLEM.hard_spans), 0.0)),  # one, and the comma
        ([tagged(TOY_TRACE, 0, 8)], (0.0, 0.0, 0.0)),  # an easy step
        ([TOY_TRACE], (None, 0.0, None)),  # no tags: nothing to be precise about
        ([TOY_TRACE.replace(" bonus", " <bigmodel>bonus", 1)], (None, None, None)),  # malformed: not scored
    ],
    ids=["exact", "wider", "wrong_step", "untagged", "malformed"],
)
def test_toy_tag_alignment(generations, expected) -> None:
    out = report.toy_tag_alignment(generations)
    assert (out["span_precision"], out["clause_recall"], out["exact_fraction"]) == expected


# -- GRPO curves ------------------------------------------------------------------------------------------------
def test_grpo_curves_read_rollout_stats_in_offload_mode_and_metric_rewards_in_paper_mode() -> None:
    offload = [{"step": 1, "reward": 0.5, "rollout/offload_fraction_mean": 0.2, "rollout/accuracy": 0.75,
                "rewards/tagged_char_fraction/mean": 0.9, "rewards/paper_accuracy/mean": 0.1}]
    paper = [{"step": 1, "reward": 0.1, "rewards/tagged_char_fraction/mean": 0.3, "rewards/paper_accuracy/mean": 0.25},
             {"step": 2, "reward": 0.2}]
    a = report.grpo_curves(offload)
    assert a.loc[0, ["reward", "offload_fraction", "accuracy"]].tolist() == [0.5, 0.2, 0.75]
    b = report.grpo_curves(paper)
    assert b.loc[0, ["offload_fraction", "accuracy"]].tolist() == [0.3, 0.25]
    assert math.isnan(b.loc[1, "accuracy"])


def test_curve_summary_means_first_and_last_share_and_none_for_missing() -> None:
    curves = pd.DataFrame({"step": [1, 2, 3, 4], "reward": [0.0, 1.0, 2.0, 3.0],
                           "offload_fraction": [0.4, 0.4, 0.2, 0.2], "accuracy": [math.nan] * 4})
    out = report.curve_summary(curves, share=0.5)
    assert (out["reward_first"], out["reward_last"]) == (0.5, 2.5)
    assert (out["offload_fraction_first"], out["offload_fraction_last"]) == (0.4, 0.2)
    assert out["accuracy_first"] is None and out["accuracy_last"] is None
    assert report.curve_summary(curves.head(1))["reward_first"] == 0.0  # at least one step


# -- the metric reward ------------------------------------------------------------------------------------------
def test_tagged_char_fraction_measures_the_untagged_share_inside_spans() -> None:
    fn = rewards.REWARDS["tagged_char_fraction"]
    assert fn([tagged("abcdefghij", 0, 2), "abcdefghij", "ab<bigmodel>cd"]) == [0.2, 0.0, 0.0]


# -- generation records and their tag usage ----------------------------------------------------------------------
def test_generation_records_check_tags_and_grade_each_generation() -> None:
    problem = {"id": PROBLEM.id, "answer": PROBLEM.answer}
    spanned = tagged(TOY_TRACE, BONUS, BONUS_END)
    generations = [spanned, TOY_TRACE, "</bigmodel> no answer"]
    records = report.generation_records([problem] * 3, generations)
    assert [r["balanced"] for r in records] == [True, True, False]
    assert [r["n_tags"] for r in records] == [1, 0, 0]
    assert [r["correct"] for r in records] == [True, True, False]
    assert records[0]["offload_char_fraction"] == pytest.approx(tags.offload_char_fraction(spanned))
    assert records[2]["offload_char_fraction"] is None and records[0]["generation"] == spanned
    with pytest.raises(ValueError):
        report.generation_records([problem], generations)  # one problem per generation


def test_tag_usage_summary_adds_spans_accuracy_and_toy_alignment() -> None:
    problem = {"id": PROBLEM.id, "answer": PROBLEM.answer}
    records = report.generation_records([problem] * 2, [tagged(TOY_TRACE, BONUS, BONUS_END), TOY_TRACE])
    usage = report.tag_usage_summary(records)
    assert usage["n"] == 2 and usage["balanced_fraction"] == 1.0
    assert usage["balanced_with_tags_fraction"] == 0.5 and usage["accuracy_small_alone"] == 1.0
    assert "toy_alignment" not in usage
    toy = report.tag_usage_summary(records, toy=True)["toy_alignment"]
    assert toy == report.toy_tag_alignment([r["generation"] for r in records])
