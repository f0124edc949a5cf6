"""splitlib.grading: answer extraction from the generation only, math-verify equivalence, truncation, timeouts."""

from __future__ import annotations

import dataclasses
import signal
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from splitlib import grading
from splitlib.grading import GRADER_VERSION, Grade, extract_answer, grade
from splitlib.registry import UnknownNameError

# (case id, generation, fallback, expected extracted answer)
EXTRACT_CASES = [
    ("boxed", "so the result is \\boxed{42}.", "none", "42"),
    ("unboxed_strict", "the answer is 42", "none", None),
    ("unboxed_phrase_fallback", "so the final answer is $42$.", "answer_phrase", "42"),
    ("phrase_fallback_answer_colon", "Answer: 17\n", "answer_phrase", "17"),
    ("phrase_fallback_nothing_found", "no conclusion here", "answer_phrase", None),
    ("box_beats_phrase", "the answer is 3 ... \\boxed{5}", "answer_phrase", "5"),
    ("several_boxes_last_wins", "try \\boxed{3}, no: \\boxed{5}", "none", "5"),
    ("nested_braces", "\\boxed{\\frac{1}{2}}", "none", "\\frac{1}{2}"),
    ("deeply_nested_braces", "\\boxed{\\sqrt{\\frac{a^{2}}{b}}}", "none", "\\sqrt{\\frac{a^{2}}{b}}"),
    ("escaped_braces", "\\boxed{\\{1, 2\\}}", "none", "\\{1, 2\\}"),
    ("box_in_box_outermost", "\\boxed{\\boxed{5}}", "none", "\\boxed{5}"),
    ("space_before_brace", "\\boxed {12}", "none", "12"),
    ("whitespace_trimmed", "\\boxed{  12 }", "none", "12"),
    ("unclosed_last_box_skipped", "\\boxed{3} and then \\boxed{\\frac{1", "none", "3"),
    ("only_unclosed_box", "\\boxed{\\frac{1}{2}", "none", None),
    ("empty_box_skipped", "\\boxed{7}. Remember to use \\boxed{}.", "none", "7"),
    ("tags_removed_first", "\\boxed{<bigmodel>42</bigmodel>}", "none", "42"),
    ("fbox_is_not_an_answer", "\\fbox{9}", "none", None),
    ("empty_generation", "", "none", None),
    ("whitespace_generation", "  \n ", "answer_phrase", None),
]


@pytest.mark.parametrize(("generation", "fallback", "expected"), [c[1:] for c in EXTRACT_CASES],
                         ids=[c[0] for c in EXTRACT_CASES])
def test_extract_answer(generation: str, fallback: grading.Fallback, expected: str | None) -> None:
    assert extract_answer(generation, fallback) == expected


def test_unknown_fallback_names_the_choices() -> None:
    with pytest.raises(UnknownNameError, match="unknown answer fallback 'llm_judge'; allowed: none, answer_phrase"):
        extract_answer("\\boxed{1}", "llm_judge")  # type: ignore[arg-type]


# (case id, generation, gold, truncated, correct, reason)
GRADE_CASES = [
    ("integer", "\\boxed{42}", "42", False, True, "correct"),
    ("wrong_integer", "\\boxed{41}", "42", False, False, "wrong"),
    ("leading_zeros_in_gold", "\\boxed{7}", "007", False, True, "correct"),
    ("leading_zeros_in_answer", "\\boxed{007}", "7", False, True, "correct"),
    ("frac_vs_decimal", "\\boxed{\\frac{1}{2}}", "0.5", False, True, "correct"),
    ("short_frac_gold_vs_decimal", "\\boxed{0.5}", "\\frac12", False, True, "correct"),
    ("dfrac_vs_slash", "\\boxed{\\dfrac{3}{4}}", "3/4", False, True, "correct"),
    ("frac_wrong_value", "\\boxed{\\frac{1}{3}}", "0.5", False, False, "wrong"),
    ("radical_simplifies", "\\boxed{2\\sqrt{3}}", "\\sqrt{12}", False, True, "correct"),
    ("assignment_vs_value", "\\boxed{x = 3}", "3", False, True, "correct"),
    ("gold_in_dollars", "\\boxed{\\frac{1}{2}}", "$\\frac{1}{2}$", False, True, "correct"),
    ("thousands_separator", "\\boxed{1,000}", "1000", False, True, "correct"),
    ("set_answer", "\\boxed{\\{1,2\\}}", "\\{2,1\\}", False, True, "correct"),
    ("last_box_wins_correct", "\\boxed{3} hmm, actually \\boxed{5}", "5", False, True, "correct"),
    ("last_box_wins_wrong", "\\boxed{3} hmm, actually \\boxed{5}", "3", False, False, "wrong"),
    ("tags_inside_answer", "<bigmodel>so \\boxed{12}</bigmodel>", "12", False, True, "correct"),
    ("truncated_with_right_box", "\\boxed{42} and still going", "42", True, False, "truncated"),
    ("truncated_mid_box", "\\boxed{4", "42", True, False, "truncated"),
    ("empty_generation", "", "42", False, False, "empty_generation"),
    ("no_box", "so it is 42", "42", False, False, "no_answer"),
    ("answer_unparseable", "\\boxed{???}", "42", False, False, "answer_unparseable"),
    ("gold_unparseable", "\\boxed{42}", "???", False, False, "gold_unparseable"),
    ("gold_empty", "\\boxed{42}", "", False, False, "gold_unparseable"),
]


@pytest.mark.parametrize(("generation", "gold", "truncated", "correct", "reason"), [c[1:] for c in GRADE_CASES],
                         ids=[c[0] for c in GRADE_CASES])
def test_grade(generation: str, gold: str, truncated: bool, correct: bool, reason: str) -> None:
    result = grade(generation, gold, truncated=truncated)
    assert (result.correct, result.reason, result.truncated) == (correct, reason, truncated)


def test_truncated_grade_keeps_the_extracted_answer_for_inspection() -> None:
    result = grade("\\boxed{42} and still going", "42", truncated=True)
    assert result == Grade(correct=False, extracted="42", truncated=True, reason="truncated")


def test_gold_unparseable_is_not_scorable() -> None:
    assert not grade("\\boxed{1}", "???").scorable
    assert grade("\\boxed{1}", "2").scorable


def test_answer_in_prompt_is_never_picked_up() -> None:
    prompt = "Find x if x + 1 = 100. Example format: \\boxed{99}\nPut the final answer within \\boxed{}."
    generation = "x + 1 = 100, so x is ninety-nine. I could not finish."
    # Grading the prompt together with the generation (the paper's evaluation bug) would find the prompt's box ...
    assert extract_answer(prompt + generation) == "99"
    # ... the API takes the generation alone, so there is nothing to extract and nothing is credited.
    assert extract_answer(generation) is None
    assert grade(generation, "99") == Grade(correct=False, extracted=None, truncated=False, reason="no_answer")


def test_answer_phrase_fallback_is_opt_in_for_grade() -> None:
    generation = "Therefore the final answer is 12."
    assert grade(generation, "12").reason == "no_answer"
    assert grade(generation, "12", fallback="answer_phrase").correct


def test_grade_is_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        grade("\\boxed{1}", "1").correct = False  # type: ignore[misc]


def test_grader_version_names_math_verify() -> None:
    assert GRADER_VERSION.startswith("splitreason-grader/") and "math-verify 0.9" in GRADER_VERSION


# -- timeouts ----------------------------------------------------------------------------------------------------
def test_main_thread_uses_math_verify_timeout() -> None:
    if signal.getitimer(signal.ITIMER_REAL)[0] > 0:
        pytest.skip("an outer SIGALRM timer is running (e.g. pytest-timeout)")
    assert grading.math_verify_timeout_s() == grading.MATH_VERIFY_TIMEOUT_S


def test_worker_threads_grade_without_signals() -> None:
    def work(gold: str) -> tuple[int | None, bool]:
        return grading.math_verify_timeout_s(), grade("\\boxed{\\frac{1}{2}}", gold).correct

    with ThreadPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(work, ["0.5", "1/2", "0.25"]))
    assert results == [(None, True), (None, True), (None, False)]
    assert threading.current_thread() is threading.main_thread()


def test_outer_alarm_is_left_running() -> None:
    fired: list[int] = []
    previous = signal.signal(signal.SIGALRM, lambda signum, frame: fired.append(signum))
    try:
        signal.setitimer(signal.ITIMER_REAL, 300.0)
        assert grading.math_verify_timeout_s() is None
        assert grade("\\boxed{7}", "007").correct
        assert signal.getitimer(signal.ITIMER_REAL)[0] > 0  # math-verify did not cancel the caller's timer
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    assert fired == []
