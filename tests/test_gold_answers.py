"""GRPO's gold answers, data and batch as the authors had them: the gold rules (``splitlib.grading.GOLD_RULES``)
through the paper's accuracy reward, grading and rl4e; the authors' GRPO prompts (``splitlib.data.load_specr``) on
the rehearsal stand-ins; the paper GRPO preset's batch and loss (``splitlib.training.configs``)."""

from __future__ import annotations

import pytest
import sympy

from splitlib import data, grading
from splitlib import rewards as R
from splitlib.registry import UnknownNameError
from splitlib.toy.world import generate
from splitlib.training import configs

# (case id, worked solution, short answer, the object both parse to, equivalent answers, wrong answers)
# Gold rule "solution" reads the worked solution as the authors' accuracy reward reads it (math-verify's extraction:
# last box first); gold rule "answer" reads the short answer as LaTeX. Both must reach the same object.
GOLD_TABLE = [
    ("radical", r"Hence $s=2\sqrt{3}$, so the side is \boxed{2\sqrt{3}}.", r"2\sqrt{3}", 2 * sympy.sqrt(3),
     [r"\sqrt{12}", r"\sqrt{3}\cdot 2", r"2\sqrt{3}"], ["2", r"3\sqrt{2}", r"2\sqrt{2}", r"\sqrt{3}"]),
    ("fraction_with_pi", r"Thus $\theta=\frac{\pi}{4}$: \boxed{\frac{\pi}{4}}", r"\frac{\pi}{4}", sympy.pi / 4,
     [r"\pi/4", r"\frac{1}{4}\pi", r"0.25\pi", r"\frac{\pi}{4}"], [r"\frac{\pi}{2}", r"\frac{1}{4}", r"\pi", "45"]),
    # math-verify reads "(1,2)" as the open interval and compares it with a pair as the ordered pair (1, 2)
    ("tuple", r"So $(x,y)=(1,2)$, i.e. \boxed{(1,2)}.", "(1,2)", sympy.Interval.open(1, 2),
     ["(1, 2)", r"\left(1,2\right)"], ["(2,1)", "(1,3)", "[1,2]", "1", "2"]),
    ("interval", r"The solution set is \boxed{[0, 1)}.", "[0, 1)", sympy.Interval.Ropen(0, 1),
     ["[0,1)", r"\left[0, 1\right)"], ["(0,1)", "[0,1]", "(0,1]", "0", "1"]),
    ("plain_integer", r"Adding, $3+4=\boxed{7}$.", "7", sympy.Integer(7),
     ["7", "007", "7.0", r"\frac{14}{2}"], ["8", "-7", "0.7"]),
    ("several_boxes_the_last_wins", r"Part (a): \boxed{3}. Part (b): \boxed{5}.", "5", sympy.Integer(5),
     ["5"], ["3", "8", "3,5"]),
    ("boxes_joined_by_or_are_one_set", r"So $x=\boxed{2}$ or $x=\boxed{-3}$.", "2, -3", sympy.FiniteSet(-3, 2),
     ["2, -3", "-3, 2", r"\{-3, 2\}"], ["2", "-3", "3"]),
    ("a_box_beats_later_latex", r"We find \boxed{5}. Check: $5^2 = 25$.", "5", sympy.Integer(5), ["5"], ["25"]),
    ("no_box_answer_line", "Adding the parts gives twelve.\n\nAnswer: 12.", "12", sympy.Integer(12), ["12"], ["13"]),
]
IDS = [c[0] for c in GOLD_TABLE]


def same(parsed: object, expected: sympy.Basic) -> bool:
    """The same mathematical object: math-verify keeps some products unevaluated (pi/4 as pi * 4**-1) and has a
    FiniteSet of its own, so compare sets by members and expressions by their difference."""
    if isinstance(expected, sympy.FiniteSet):
        return isinstance(parsed, sympy.FiniteSet) and set(parsed.args) == set(expected.args)
    if isinstance(expected, sympy.Set):
        return parsed == expected
    return isinstance(parsed, sympy.Expr) and sympy.simplify(parsed - expected) == 0


def accuracy(completion: str, gold: str, rule: str) -> float | None:
    return R.paper_accuracy([completion], solution=[gold], gold_rule=[rule])[0]


@pytest.mark.parametrize(("solution", "answer", "expected"), [c[1:4] for c in GOLD_TABLE], ids=IDS)
def test_both_gold_rules_parse_to_the_right_object(solution: str, answer: str, expected: sympy.Basic) -> None:
    assert same(grading.parse_gold(solution, "solution")[0], expected)
    assert same(grading.parse_gold(answer, "answer")[0], expected)


@pytest.mark.parametrize(("solution", "answer", "good", "bad"), [(c[1], c[2], c[4], c[5]) for c in GOLD_TABLE],
                         ids=IDS)
@pytest.mark.parametrize("rule", ["solution", "answer"])
def test_paper_accuracy_credits_equivalent_answers_only(solution, answer, good, bad, rule) -> None:
    gold = solution if rule == "solution" else answer
    assert [accuracy(f"so \\boxed{{{a}}}", gold, rule) for a in good] == [1.0] * len(good)
    assert [accuracy(f"so \\boxed{{{a}}}", gold, rule) for a in bad] == [0.0] * len(bad)


@pytest.mark.parametrize(("solution", "answer", "good", "bad"), [(c[1], c[2], c[4], c[5]) for c in GOLD_TABLE],
                         ids=IDS)
@pytest.mark.parametrize("rule", ["solution", "answer"])
def test_grading_credits_equivalent_answers_only(solution, answer, good, bad, rule) -> None:
    gold = solution if rule == "solution" else answer
    assert [grading.grade(f"\\boxed{{{a}}}", gold, gold_rule=rule).correct for a in good] == [True] * len(good)
    assert [grading.grade(f"\\boxed{{{a}}}", gold, gold_rule=rule).reason for a in bad] == ["wrong"] * len(bad)


def test_a_pair_gold_also_accepts_the_bare_pair_as_math_verify_designs() -> None:
    # math-verify compares an open-interval gold with a two-element set or tuple as the ordered pair
    for completion in ("\\boxed{1,2}", "\\boxed{\\{1,2\\}}"):
        assert accuracy(completion, r"\boxed{(1,2)}", "solution") == 1.0


# -- why the rule exists: a short answer read the released way (as a worked solution) --------------------------
# (case id, short answer, what the released reading makes of it)
RELEASED_READING_OF_SHORT_ANSWERS = [
    ("radical_cut_to_its_coefficient", r"2\sqrt{3}", [2, "2"]),
    ("fraction_with_pi_not_found", r"\frac{\pi}{4}", []),
    ("tuple_not_found", "(1,2)", []),
    ("interval_cut_to_its_end", "[0, 1)", [1, "1"]),
]


@pytest.mark.parametrize(("answer", "parsed"), [c[1:] for c in RELEASED_READING_OF_SHORT_ANSWERS],
                         ids=[c[0] for c in RELEASED_READING_OF_SHORT_ANSWERS])
def test_short_answers_read_as_solutions_go_wrong(answer: str, parsed: list) -> None:
    assert grading.parse_gold(answer, "solution") == parsed


def test_without_gold_rule_each_reward_keeps_its_reading() -> None:
    # paper_accuracy: the released reading ("solution"), so a bare radical gold credits its coefficient ...
    assert R.paper_accuracy(["\\boxed{2}", "\\boxed{2\\sqrt{3}}"], solution=["2\\sqrt{3}"] * 2) == [1.0, 0.0]
    # ... and the gold rule "answer" repairs it; rl4e reads short answers ("answer") unless told otherwise
    assert R.paper_accuracy(["\\boxed{2}", "\\boxed{2\\sqrt{3}}"], solution=["2\\sqrt{3}"] * 2,
                            gold_rule=["answer"] * 2) == [0.0, 1.0]
    assert R.rl4e(["\\boxed{2\\sqrt{3}}"], solution=["2\\sqrt{3}"], offload_fraction=[0.0]) == [1.0]
    worked = "So the side is \\boxed{2\\sqrt{3}}."
    assert R.rl4e(["\\boxed{2\\sqrt{3}}"], solution=[worked], gold_rule=["solution"], offload_fraction=[0.0]) == [1.0]


def test_gold_rules_mix_per_completion_and_feed_the_paper_total() -> None:
    completions = ["\\boxed{\\frac{\\pi}{4}}"] * 2
    golds = ["\\frac{\\pi}{4}", "Hence \\boxed{\\frac{\\pi}{4}}."]
    assert R.paper_accuracy(completions, solution=golds, gold_rule=["answer", "solution"]) == [1.0, 1.0]
    format_and_tags = [a + b for a, b in zip(R.paper_format(completions), R.paper_tag_count(completions), strict=True)]
    totals = R.paper(completions, solution=golds, gold_rule=["answer", "solution"])
    assert totals == pytest.approx([1.0 + v for v in format_and_tags])
    assert R.paper_fixed(completions, solution=golds, gold_rule=["answer", "solution"])[0] is not None


def test_unparseable_golds_are_skipped_under_either_rule() -> None:
    assert accuracy("\\boxed{5}", "", "solution") is None
    assert accuracy("\\boxed{5}", "No computation here.", "solution") is None
    assert accuracy("\\boxed{5}", "???", "answer") is None
    assert grading.grade("\\boxed{5}", "No computation here.", gold_rule="solution").reason == "gold_unparseable"


def test_a_box_that_is_not_math_falls_back_to_its_text_as_released() -> None:
    solution = "Only the second statement holds, so the answer is \\boxed{\\text{B}}."
    assert grading.parse_gold(solution, "solution")[-1] == "\\text{B}"
    assert accuracy("\\boxed{\\text{B}}", solution, "solution") == 1.0
    assert accuracy("\\boxed{\\text{C}}", solution, "solution") == 0.0


def test_unknown_gold_rules_and_bad_columns_name_the_fix() -> None:
    with pytest.raises(UnknownNameError, match="unknown gold rule 'boxed'; allowed: answer, solution"):
        R.paper_accuracy(["\\boxed{1}"], solution=["1"], gold_rule=["boxed"])
    with pytest.raises(UnknownNameError, match="unknown gold rule 'boxed'"):
        grading.parse_gold("1", "boxed")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="one value per completion"):
        R.paper_accuracy(["\\boxed{1}", "\\boxed{2}"], solution=["1", "2"], gold_rule=["answer"])


def test_gold_text_reads_the_rules_column() -> None:
    row = {"id": "p1", "question": "q", "answer": "7", "solution": "3+4 = \\boxed{7}"}
    assert (grading.gold_text(row, "answer"), grading.gold_text(row, "solution")) == ("7", "3+4 = \\boxed{7}")
    assert grading.gold_text({"id": "t", "answer": 7}) == "7"
    toy = generate(1, seed=0)[0]  # a toy Problem: an object, not a mapping
    assert grading.gold_text(toy) == str(toy.answer)
    with pytest.raises(ValueError, match="use gold 'answer' for data without worked solutions"):
        grading.gold_text(toy, "solution")
    with pytest.raises(ValueError, match="gold rule 'solution' reads column 'solution', which row 't' lacks.*'answer'"):
        grading.gold_text({"id": "t", "question": "q", "answer": "7"}, "solution")
    with pytest.raises(UnknownNameError, match="allowed: answer, solution"):
        grading.gold_text(row, "final")  # type: ignore[arg-type]


# -- the authors' GRPO prompts on the rehearsal stand-ins ----------------------------------------------------------
@pytest.fixture(scope="module")
def standin_paths(tmp_path_factory) -> dict:
    from splitlib.rehearsal import build_standins

    return build_standins(tmp_path_factory.mktemp("hub"), progress=False)["paths"]


@pytest.mark.parametrize("role", ["grpo", "sft"])
def test_specr_rows_carry_golds_that_agree_under_both_rules(standin_paths, tmp_path, role) -> None:
    rows = data.load_specr(standin_paths[role], cache_dir=str(tmp_path / "cache"))
    assert len(rows) == 48 and set(rows[0]) == {"id", "question", "answer", "solution"}
    assert len({r["id"] for r in rows}) == len(rows)
    for row in rows:
        expected = sympy.Integer(int(row["answer"]))
        assert grading.parse_gold(grading.gold_text(row, "solution"), "solution")[0] == expected
        assert grading.parse_gold(grading.gold_text(row, "answer"), "answer")[0] == expected
    completions = [f"\\boxed{{{r['answer']}}}" for r in rows[:4]] + [f"\\boxed{{{int(rows[0]['answer']) + 1}}}"]
    golds = [r["solution"] for r in rows[:4]] + [rows[0]["solution"]]
    assert R.paper_accuracy(completions, solution=golds, gold_rule=["solution"] * 5) == [1.0] * 4 + [0.0]


# -- the paper GRPO preset: the paper run's batch and TRL 0.16's loss ----------------------------------------------
def test_paper_preset_is_the_paper_runs_batch_and_trl_016_loss(tmp_path) -> None:
    cfg = configs.grpo_config("paper", device="cpu", output_dir=str(tmp_path))
    trl_016_loss = (cfg.loss_type, cfg.use_bias_correction_kl, cfg.vllm_importance_sampling_correction)
    assert trl_016_loss == ("bnpo", False, False)
    assert (cfg.num_generations, cfg.per_device_train_batch_size, cfg.gradient_accumulation_steps) == (14, 8, 14)
    assert (cfg.generation_batch_size, cfg.steps_per_generation) == (112, 14)  # one process: 8 prompts x 14 per step
    assert (cfg.scale_rewards, cfg.num_iterations, cfg.epsilon, cfg.top_k) == ("group", 1, 0.2, 50)


@pytest.mark.parametrize(("processes", "accumulation"), [(1, 14), (2, 7), (7, 2), (14, 1)])
def test_paper_global_batch_is_112_completions_on_any_dividing_process_count(monkeypatch, processes, accumulation):
    monkeypatch.setenv("WORLD_SIZE", str(processes))
    merged = configs._merge(configs.GRPO_PRESETS, "paper", "cpu", {})
    assert merged["gradient_accumulation_steps"] == accumulation  # the paper's run: 8 x 7 processes x 2
    assert merged["per_device_train_batch_size"] * processes * accumulation == 112


def test_paper_global_batch_refuses_a_process_count_it_cannot_split_and_yields_to_overrides(monkeypatch, tmp_path):
    monkeypatch.setenv("WORLD_SIZE", "6")
    with pytest.raises(ValueError, match="global_batch_size=112: expected a multiple of .* 8 x 6"):
        configs._merge(configs.GRPO_PRESETS, "paper", "cpu", {})
    six_gpus = {"per_device_train_batch_size": 14, "global_batch_size": 84}  # 6 prompts x 14: a deviation
    merged = configs._merge(configs.GRPO_PRESETS, "paper", "cpu", six_gpus)
    assert merged["gradient_accumulation_steps"] == 1
    monkeypatch.setenv("WORLD_SIZE", "1")
    cfg = configs.grpo_config("paper", device="cpu", output_dir=str(tmp_path), global_batch_size=4,
                              per_device_train_batch_size=4, num_generations=2)
    assert (cfg.gradient_accumulation_steps, cfg.generation_batch_size) == (1, 4)  # a CPU rehearsal's scale


def test_trl_116_has_no_max_prompt_length(tmp_path) -> None:
    # TRL 0.16 left-truncated prompts to max_prompt_length (512 in the authors' recipe); TRL removed the field
    with pytest.raises(ValueError, match="max_prompt_length.*valid keys"):
        configs.grpo_config("paper", device="cpu", output_dir=str(tmp_path), max_prompt_length=512)


@pytest.mark.parametrize("preset", ["toy", "smoke"])
def test_toy_and_smoke_presets_keep_trl_defaults(tmp_path, preset) -> None:
    cfg = configs.grpo_config(preset, device="cpu", output_dir=str(tmp_path))
    assert (cfg.loss_type, cfg.use_bias_correction_kl, cfg.gradient_accumulation_steps) == ("dapo", True, 1)
    assert "global_batch_size" not in configs.GRPO_PRESETS[preset]
