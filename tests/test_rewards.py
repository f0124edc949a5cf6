"""splitlib.rewards: the paper's reward exactly (quirks included), its repaired variant, rl4e, the registry."""

from __future__ import annotations

import pickle

import pytest

from splitlib import rewards as R
from splitlib.registry import Registry, UnknownNameError
from splitlib.tags import CLOSE, OPEN
from splitlib.trace import Segment, Trace

SUFFIX = "\n</think>\n<answer>\n\\boxed{5}\n</answer>"
# A well-formed completion: scaffold, one span, boxed answer 5.
GOOD = "<think>\nFirst the easy part. " + OPEN + "The hard step." + CLOSE + " Done." + SUFFIX


def span(inner: str) -> str:
    return OPEN + inner + CLOSE


def with_coverage(inner_chars: int, total_chars: int) -> str:
    """One span of ``inner_chars`` padded with filler to ``total_chars`` characters, tags included."""
    text = span("b" * inner_chars)
    assert total_chars >= len(text)
    return text + "a" * (total_chars - len(text))


def paper_max_completion() -> str:
    """Full scaffold, 8 spans, character coverage exactly 0.4: the paper's best possible format terms."""
    inner, total = 20, 400  # 8·20 / 400 = 0.4
    body = span("x" * inner) * 8
    filler = total - len("<think>\n") - len(body) - len(SUFFIX)
    text = "<think>\n" + body + "y" * filler + SUFFIX
    assert len(text) == total
    return text


def one(name: str, completion: object, **kwargs: object) -> float | None:
    return R.REWARDS[name]([completion], **kwargs)[0]


# -- the shape functions against PAPER_FACTS §6's worked values -------------------------------------------------
@pytest.mark.parametrize(("r", "term"), [(0.0, 0.0), (0.05, 0.25), (0.2, 1.0), (0.4, 2.0), (0.7, 0.0), (1.0, -2.0)])
def test_coverage_term_worked_values(r: float, term: float) -> None:
    assert 2 * R.coverage_shape(r) == pytest.approx(term, abs=1e-12)


PAPER_COUNT = {**dict.fromkeys(range(4), 0.0), **dict.fromkeys(range(4, 8), 1.0), 8: 2.0,
               **dict.fromkeys(range(9, 13), 1.0), **dict.fromkeys(range(13, 17), 0.0),
               **dict.fromkeys(range(17, 21), -1.0), 21: -2.0}


@pytest.mark.parametrize(("n", "term"), sorted(PAPER_COUNT.items()))
def test_paper_count_term_floor_divides(n: int, term: float) -> None:
    assert R.paper_count_term(n) == term


@pytest.mark.parametrize(("n", "term"), [(0, 0.0), (1, 0.25), (3, 0.75), (4, 1.0), (8, 2.0), (9, 1.75), (16, 0.0),
                                         (17, -0.25)])
def test_fixed_count_term_is_smooth(n: int, term: float) -> None:
    assert R.fixed_count_term(n) == term


# -- paper_tag_count ---------------------------------------------------------------------------------------------
# (case id, completion, expected paper_tag_count)
PAPER_TAG_COUNT_CASES = [
    ("empty", "", 0.0),
    ("plain_text", "no tags, no scaffold", 0.0),
    ("full_scaffold", "<think>\nx" + SUFFIX, 2.0),
    ("think_opened_twice", "<think>\n<think>\nx" + SUFFIX, 1.5),
    ("boxed_anywhere", "just \\boxed{1}", 0.5),
    ("coverage_0.05", with_coverage(21, 420), 0.25),
    ("coverage_0.2", with_coverage(21, 105), 1.0),
    ("coverage_0.4", with_coverage(42, 105), 2.0),
    ("coverage_0.7", with_coverage(70, 100), 0.0),
    ("four_empty_spans", span("") * 4, 1.0),
    ("eight_empty_spans", span("") * 8, 2.0),
    ("nine_empty_spans", span("") * 9, 1.0),
    ("thirteen_empty_spans", span("") * 13, 0.0),
    ("seventeen_empty_spans", span("") * 17, -1.0),
    ("unclosed_opener", OPEN + "abc", -2.0),
    ("stray_closer", "abc" + CLOSE, -2.0),
    # quirk: nested tags with equal counts are not penalised, and the non-greedy regex credits "a<bigmodel>b"
    ("nested_equal_counts", OPEN + "a" + OPEN + "b" + CLOSE + CLOSE, 2 * (12 / 44) / 0.4),
]


@pytest.mark.parametrize(("completion", "expected"), [c[1:] for c in PAPER_TAG_COUNT_CASES],
                         ids=[c[0] for c in PAPER_TAG_COUNT_CASES])
def test_paper_tag_count(completion: str, expected: float) -> None:
    assert one("paper_tag_count", completion) == pytest.approx(expected, abs=1e-12)


# -- format ------------------------------------------------------------------------------------------------------
# (case id, completion, paper_format, paper_fixed_format)
FORMAT_CASES = [
    ("good", GOOD, 2.0, 2.0),
    ("no_tags_free_nesting_point", "plain reasoning \\boxed{5}", 1.0, 0.0),
    ("scaffold_without_tags", "<think>\nx" + SUFFIX, 2.0, 1.0),
    ("stray_closer_only", "x" + CLOSE + "y", 1.0, 0.0),
    ("stray_closer_after_pair", span("a") + CLOSE, 1.0, 0.0),
    ("nested", OPEN + "a" + OPEN + "b" + CLOSE + CLOSE, 0.0, 0.0),
    ("unclosed", "x" + OPEN + "y", 0.0, 0.0),
    ("blank_span", "x" + span("  ") + "y", 1.0, 0.0),
    ("two_good_spans", span("a") + " and " + span("b"), 1.0, 1.0),
    # quirk: `$` under MULTILINE matches before any newline, so trailing text after "</answer>\n" passes
    ("trailing_text_after_answer", "<think>\nx" + SUFFIX + "\nmore text", 2.0, 0.0),
    ("trailing_newline_after_answer", "<think>\nx" + SUFFIX + "\n", 2.0, 1.0),
    ("no_newline_before_think_close", "<think>\nx</think>\n<answer>\n5\n</answer>", 1.0, 0.0),
]


@pytest.mark.parametrize(("completion", "paper", "fixed"), [c[1:] for c in FORMAT_CASES],
                         ids=[c[0] for c in FORMAT_CASES])
def test_format(completion: str, paper: float, fixed: float) -> None:
    assert one("paper_format", completion) == paper
    assert one("paper_fixed_format", completion) == fixed


# -- paper_fixed_tag_count ---------------------------------------------------------------------------------------
# (case id, completion, kwargs, expected)
FIXED_TAG_COUNT_CASES = [
    ("plain_text", "no tags", {}, 0.0),
    ("untagged_char_coverage_0.2", span("b" * 20) + "a" * 80, {}, 0.25 + 1.0),
    ("untagged_char_coverage_0.4", span("b" * 40) + "a" * 60, {}, 0.25 + 2.0),
    ("all_offloaded", span("b" * 10), {}, 0.25 - 2.0),
    ("measured_token_fraction_wins", span("b" * 20) + "a" * 80, {"offload_token_fraction": [0.05]}, 0.25 + 0.25),
    ("nine_spans", span("") * 9, {}, 1.75),
    ("stray_closer", span("b") + CLOSE + "a", {}, 0.25 - 2.0),
    ("nested", OPEN + "a" + OPEN + "b" + CLOSE + CLOSE, {}, 0.5 - 2.0),
    ("unclosed", "x" + OPEN + "y", {}, 0.25 - 2.0),
    # scaffold 0.5 + 0.5; coverage over the 118 untagged characters
    ("scaffold_and_span", "<think>\n" + span("b" * 20) + "a" * 80 + "\n</think>\n", {},
     1.0 + 0.25 + 2 * R.coverage_shape(20 / 118)),
]


@pytest.mark.parametrize(("completion", "kwargs", "expected"), [c[1:] for c in FIXED_TAG_COUNT_CASES],
                         ids=[c[0] for c in FIXED_TAG_COUNT_CASES])
def test_paper_fixed_tag_count(completion: str, kwargs: dict, expected: float) -> None:
    assert one("paper_fixed_tag_count", completion, **kwargs) == pytest.approx(expected, abs=1e-12)


def test_paper_and_fixed_disagree_on_coverage_denominator() -> None:
    text = span("b" * 20) + "a" * 80  # 20 of 100 untagged characters; 20 of 121 with the tags
    assert one("paper_tag_count", text) == pytest.approx(2 * (20 / 121) / 0.4)
    assert one("paper_fixed_tag_count", text) == pytest.approx(0.25 + 1.0)


@pytest.fixture(scope="module")
def word_tokenizer():
    tokenizers = pytest.importorskip("tokenizers")
    transformers = pytest.importorskip("transformers")
    words = ["[UNK]", "a", "b", "c", "d", "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"]
    model = tokenizers.models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="[UNK]")
    tok = tokenizers.Tokenizer(model)
    tok.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    return transformers.PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]")


def test_token_coverage_with_a_tokenizer(word_tokenizer) -> None:
    text = "a b " + span("x" * 40) + " c d"  # 1 of 5 tokens, but 40 of 48 untagged characters
    assert R.token_coverage_ratio(text, word_tokenizer) == pytest.approx(0.2)
    assert one("paper_fixed_tag_count", text, tokenizer=word_tokenizer) == pytest.approx(0.25 + 1.0)
    assert one("paper_fixed_tag_count", text) == pytest.approx(0.25 + 2 * R.coverage_shape(40 / 48))


# -- accuracy and the totals -------------------------------------------------------------------------------------
# (case id, completion, gold, expected paper_accuracy)
ACCURACY_CASES = [
    ("boxed_right", "so \\boxed{5}", "5", 1.0),
    ("boxed_wrong", "so \\boxed{6}", "5", 0.0),
    ("fraction", "\\boxed{\\frac{1}{2}}", "0.5", 1.0),
    ("leading_zeros", "\\boxed{7}", "007", 1.0),
    ("unboxed_not_extracted", "The answer is 5", "5", 0.0),
    ("gold_unparseable", "\\boxed{5}", "???", None),
    ("short_frac_gold_unparseable_as_released", "\\boxed{0.5}", "\\frac12", None),
    # quirk of boxed="all": every box is joined into a set, so an intermediate box spoils the final one
    ("two_boxes_become_a_set", "\\boxed{3} then \\boxed{5}", "5", 0.0),
]


@pytest.mark.parametrize(("completion", "gold", "expected"), [c[1:] for c in ACCURACY_CASES],
                         ids=[c[0] for c in ACCURACY_CASES])
def test_paper_accuracy(completion: str, gold: str, expected: float | None) -> None:
    assert one("paper_accuracy", completion, solution=[gold]) == expected


def test_answer_kwarg_is_accepted_and_missing_gold_is_an_error() -> None:
    assert one("paper_accuracy", "\\boxed{5}", answer=["5"]) == 1.0
    with pytest.raises(ValueError, match="'solution'"):
        R.paper_accuracy(["\\boxed{5}"])
    with pytest.raises(ValueError, match="one value per completion"):
        R.paper_accuracy(["\\boxed{5}", "\\boxed{6}"], solution=["5"])


def test_paper_total_on_the_good_completion() -> None:
    coverage = 2 * R.coverage_shape(len("The hard step.") / len(GOOD))
    assert one("paper", GOOD, solution=["5"]) == pytest.approx(1.0 + 2.0 + (2.0 + 0.0 + coverage))


def test_paper_maximum_is_9() -> None:
    assert one("paper", paper_max_completion(), solution=["5"]) == pytest.approx(9.0)


def test_paper_total_skips_unparseable_gold_like_trl_nansum() -> None:
    assert one("paper_accuracy", GOOD, solution=["???"]) is None
    expected = one("paper_format", GOOD) + one("paper_tag_count", GOOD)
    assert one("paper", GOOD, solution=["???"]) == pytest.approx(expected)


def test_paper_fixed_total() -> None:
    cov = 2 * R.coverage_shape(len("The hard step.") / (len(GOOD) - len(OPEN) - len(CLOSE)))
    assert one("paper_fixed", GOOD, solution=["5"]) == pytest.approx(1.0 + 2.0 + (2.0 + 0.25 + cov))


# -- rl4e --------------------------------------------------------------------------------------------------------
def _segment(model: str, n: int, text: str, finish: str) -> Segment:
    return Segment(model=model, token_ids=tuple(range(n)), text=text, prefill_tokens=0, decode_tokens=n,
                   discarded_tokens=0, check_tokens=0, wall_s=0.0, finish=finish)


def make_trace(finish: str = "eos") -> Trace:
    segments = (_segment("small", 90, "a" * 90 + OPEN, "handoff"), _segment("big", 10, "b" * 10, "takeback"),
                _segment("small", 100, CLOSE + "c" * 100 + " \\boxed{5}", finish))
    text = "".join(s.text for s in segments)
    return Trace(segments=segments, text=text, prompt_tokens={"small": 50, "big": 45}, handoffs=1,
                 rejected_requests=0, finish=finish, wall_s=1.0)


# (case id, completion, gold, kwargs, expected) with the default config: latency 0.5, budget 2.0, target 0.05
RL4E_CASES = [
    ("right_within_budget", "\\boxed{5}", "5", {"offload_fraction": [0.05]}, 1.0),
    ("right_over_budget", "\\boxed{5}", "5", {"offload_fraction": [0.10]}, 1.0 - 2.0 * 0.05),
    ("wrong_no_offload", "\\boxed{6}", "5", {"offload_fraction": [0.0]}, 0.0),
    ("char_coverage_when_no_fraction", span("b" * 20) + "a" * 71 + "\\boxed{5}", "5", {}, 1.0 - 2.0 * 0.15),
    ("unparseable_gold", "\\boxed{5}", "???", {}, None),
    ("trace_fake_latency", make_trace().text, "5", {"traces": [make_trace()], "latency_fn": lambda t: 0.4}, 0.8),
    ("trace_as_json_dict", make_trace().text, "5", {"traces": [make_trace().to_json()], "latency_fn": lambda t: 0.4},
     0.8),
    ("truncated_trace_counts_wrong", make_trace("length").text, "5",
     {"traces": [make_trace("length")], "latency_fn": lambda t: 0.4}, -0.2),
]


@pytest.mark.parametrize(("completion", "gold", "kwargs", "expected"), [c[1:] for c in RL4E_CASES],
                         ids=[c[0] for c in RL4E_CASES])
def test_rl4e(completion: str, gold: str, kwargs: dict, expected: float | None) -> None:
    result = one("rl4e", completion, solution=[gold], **kwargs)
    assert result == (None if expected is None else pytest.approx(expected))


def test_make_rl4e_weights_name_and_latency_hook() -> None:
    reward = R.make_rl4e(accuracy_weight=2.0, latency_weight=1.0, name="rl4e_w1", latency_fn=lambda t: 0.25)
    assert reward.__name__ == "rl4e_w1"
    assert reward([make_trace().text], solution=["5"], traces=[make_trace()]) == [pytest.approx(2.0 - 0.25)]
    # no trace: the budget term with this config's defaults
    assert reward(["\\boxed{5}"], solution=["5"], offload_fraction=[0.3]) == [pytest.approx(2.0 - 2.0 * 0.25)]


def test_make_rl4e_rejects_bad_settings() -> None:
    with pytest.raises(TypeError):
        R.make_rl4e(latency_wieght=1.0)
    with pytest.raises(ValueError, match="latency_weight"):
        R.make_rl4e(latency_weight=-1.0)
    with pytest.raises(ValueError, match="target_offload"):
        R.make_rl4e(target_offload=1.5)


def test_rl4e_prices_traces_with_the_simulator() -> None:
    simulator = pytest.importorskip("splitlib.simulator")
    assert hasattr(simulator, "simulate_trace")
    trace = make_trace()
    cost = R.simulated_latency_cost(trace, R.RL4EConfig())
    assert 0.0 < cost < 1.0  # 5 % offloaded: faster than the big model alone
    assert one("rl4e", trace.text, solution=["5"], traces=[trace]) == pytest.approx(1.0 - 0.5 * cost)


# -- inputs, registry, TRL compatibility -------------------------------------------------------------------------
@pytest.mark.parametrize("name", R.REWARDS.names())
def test_message_lists_score_like_strings(name: str) -> None:
    texts = [GOOD, "plain \\boxed{6}", span("b" * 20) + "a" * 80]
    kwargs = {"solution": ["5", "5", "5"]}
    messages = [[{"role": "assistant", "content": t}] for t in texts]
    parts = [[{"role": "assistant", "content": [{"type": "text", "text": t}]}] for t in texts]
    expected = R.REWARDS[name](texts, **kwargs)
    assert R.REWARDS[name](messages, **kwargs) == expected
    assert R.REWARDS[name](parts, **kwargs) == expected


@pytest.mark.parametrize("name", R.REWARDS.names())
def test_trl_call_convention(name: str) -> None:
    from trl.trainer.utils import get_callable_name

    fn = R.REWARDS[name]
    out = fn(completions=[GOOD, "\\boxed{6}"], solution=["5", "???"], prompts=["p1", "p2"],
             completion_ids=[[1, 2], [3]], trainer_state=None, log_metric=lambda name, value: None,
             log_extra=lambda column, values: None, problem=["q1", "q2"])
    assert len(out) == 2 and all(v is None or isinstance(v, float) for v in out)
    assert get_callable_name(fn) == name


def test_unknown_reward_lists_available_names() -> None:
    with pytest.raises(UnknownNameError, match="unknown reward 'papr'; allowed: .*paper_accuracy, paper_format"):
        R.REWARDS["papr"]


def test_register_refuses_duplicates(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(R, "REWARDS", Registry("reward", dict(R.REWARDS.items())))
    R.REWARDS.register("my_reward", R.paper_format)
    assert "my_reward" in R.REWARDS
    with pytest.raises(ValueError, match="registered twice"):
        R.REWARDS.register("paper", R.paper_format)


def test_bad_completion_type_is_an_error() -> None:
    with pytest.raises(TypeError, match="expected a str or a list of message dicts"):
        R.paper_format([42])


def test_rl4e_is_picklable() -> None:
    assert pickle.loads(pickle.dumps(R.REWARDS["rl4e"])).config == R.RL4EConfig()
