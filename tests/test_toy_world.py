"""The toy world: seeded problems with correct ground-truth labels, the toy tokenizer's invariants, and tiny
models that transformers and vLLM load from a saved directory exactly as they load hub models."""

from __future__ import annotations

import json
import random
import re
import string

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from splitlib import prompts, tags
from splitlib.toy.tokenizer import ASSISTANT, BOS, USER
from splitlib.toy.world import Problem, ToyWorldConfig, generate, generate_split

SMOKE_WORLD = ToyWorldConfig(n_steps=6, coded_steps=(1, 3, 5))  # params/smoke/00_models.yaml
WORLDS = {
    "default": ToyWorldConfig(),
    "smoke": SMOKE_WORLD,
    "no_coded_steps": ToyWorldConfig(n_steps=5, coded_steps=()),
    "longest_first_and_last_coded": ToyWorldConfig(n_steps=26, coded_steps=(0, 25)),
    "unsorted_coded_steps": ToyWorldConfig(n_steps=8, coded_steps=(6, 1, 3)),
}
# A world with only 9 distinct questions (one bonus digit): train/test collisions are certain.
TINY_QUESTION_SPACE = ToyWorldConfig(n_steps=2, coded_steps=(1,))


# ---------------------------------------------------------------------------------------------------------
# an independent solver: everything is recomputed from the question text alone
_QUESTION = re.compile(
    r"Bonus: (?P<bonus>[1-9](?: [1-9])*|none)\. Start at 0; step k adds k mod 10, for (?P<n>\d+) steps; "
    r"after steps (?P<coded>.+) the value becomes the next bonus number from the list\.$"
)
_STEP = re.compile(r"(?P<label>[A-Z]): (?P<x>\d)\+(?P<k>\d)=(?P<s>\d)(?:, bonus (?P<bonus>\d))?")
_HARD_CLAUSE = re.compile(r" bonus \d")


def check_problem_against_question(problem: Problem) -> None:
    """Assert every step, the answer and the hard spans of ``problem`` follow from its question text."""
    q = _QUESTION.fullmatch(problem.question)
    assert q, f"unparseable question: {problem.question!r}"
    bonus = [] if q["bonus"] == "none" else [int(b) for b in q["bonus"].split()]
    coded = [] if q["coded"] == "no step" else q["coded"].split(", ")
    assert len(coded) == len(bonus)
    x, n, used = 0, int(q["n"]), 0
    *steps, answer_line = problem.trace.split("\n")
    assert len(steps) == n
    for i, line in enumerate(steps):
        m = _STEP.fullmatch(line)
        assert m, f"step {i} malformed: {line!r}"
        assert m["label"] == string.ascii_uppercase[i]
        assert (int(m["x"]), int(m["k"]), int(m["s"])) == (x, (i + 1) % 10, (x + (i + 1)) % 10), line
        x = int(m["s"])
        assert (m["bonus"] is not None) == (m["label"] in coded), f"bonus clause present/absent wrongly: {line!r}"
        if m["bonus"] is not None:
            assert int(m["bonus"]) == bonus[used], line  # the bonus digits are used in the listed order
            x, used = bonus[used], used + 1
    assert answer_line == f"Answer: \\boxed{{{x}}}"
    assert problem.answer == str(x)
    clauses = tuple((m.start(), m.end()) for m in _HARD_CLAUSE.finditer(problem.trace))
    assert problem.hard_spans == clauses, "hard spans must be exactly the ' bonus D' clauses"


# ---------------------------------------------------------------------------------------------------------
# generator
@pytest.mark.parametrize("world", WORLDS.values(), ids=WORLDS.keys())
def test_every_step_answer_and_hard_span_follows_from_the_question(world):
    for problem in generate(60, seed=11, cfg=world):
        check_problem_against_question(problem)


def test_default_world_labels_are_correct_on_the_shared_problems(toy_problems):
    for problem in toy_problems:
        check_problem_against_question(problem)


def test_bonus_digits_are_nonzero_and_one_per_coded_step(toy_problems):
    for problem in toy_problems[:50]:
        digits = problem.question.split(".")[0].removeprefix("Bonus: ").split()
        assert len(digits) == len(ToyWorldConfig().coded_steps) and all(d in "123456789" for d in digits)


def test_same_seed_gives_identical_problems_whatever_the_global_rng():
    random.seed(1)
    first = generate(40, seed=5)
    random.seed(2)
    second = generate(40, seed=5)
    assert first == second


@pytest.mark.parametrize("world", [WORLDS["default"], SMOKE_WORLD], ids=["default", "smoke"])
def test_different_seeds_give_different_problems(world):
    a = {p.question for p in generate(40, seed=5, cfg=world)}
    b = {p.question for p in generate(40, seed=6, cfg=world)}
    assert a != b
    assert len(a & b) < 10  # 729 or 6561 bonus lists: a few overlaps at most


def test_problem_ids_carry_prefix_seed_and_index():
    assert [p.id for p in generate(3, seed=9, prefix="x")] == ["x-9-0", "x-9-1", "x-9-2"]


def test_problem_json_round_trip_is_lossless(toy_problems):
    for problem in toy_problems[:20]:
        assert Problem.from_json(json.loads(json.dumps(problem.to_json()))) == problem


def test_hard_steps_are_5_to_20_percent_of_trace_tokens_in_the_default_world(toy_problems, toy_tokenizer):
    hard = total = 0
    for problem in toy_problems:
        enc = toy_tokenizer(problem.trace, add_special_tokens=False, return_offsets_mapping=True)
        for s, e in enc["offset_mapping"]:
            total += 1
            hard += any(a <= s and e <= b for a, b in problem.hard_spans)
    assert 0.05 <= hard / total <= 0.20, f"hard fraction {hard / total:.3f}"


@pytest.mark.parametrize(
    "world, n_train, n_test",
    [(WORLDS["default"], 200, 100), (TINY_QUESTION_SPACE, 2, 2)],
    ids=["default", "colliding_question_space"],
)
def test_train_and_test_are_disjoint_and_sized_as_asked(world, n_train, n_test):
    train, test = generate_split(n_train, n_test, seed=0, cfg=world)
    assert (len(train), len(test)) == (n_train, n_test)
    assert not {p.question for p in train} & {p.question for p in test}
    assert len({p.id for p in train + test}) == n_train + n_test
    assert generate_split(n_train, n_test, seed=0, cfg=world) == (train, test)


def test_colliding_question_space_really_collides():
    """Guards the test above: with 9 questions, a plain draw of 20 "test" problems hits the training set."""
    train = {p.question for p in generate(4, seed=0, cfg=TINY_QUESTION_SPACE, prefix="train")}
    raw_test = generate(20, seed=1_000_003, cfg=TINY_QUESTION_SPACE, prefix="test")
    assert any(p.question in train for p in raw_test)


@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        ({"n_steps": 1, "coded_steps": ()}, "n_steps=1"),
        ({"n_steps": 27}, "n_steps=27"),
        ({"n_steps": 10, "coded_steps": (10,)}, "coded_steps=(10,)"),
        ({"coded_steps": (-1,)}, "coded_steps=(-1,)"),
        ({"coded_steps": (2, 2)}, "coded_steps=(2, 2)"),
    ],
    ids=["too_few_steps", "too_many_steps", "coded_step_past_end", "negative_coded_step", "duplicate_coded_step"],
)
def test_world_config_rejects_impossible_settings_naming_them(kwargs, fragment):
    with pytest.raises(ValueError, match=re.escape(fragment)):
        ToyWorldConfig(**kwargs)


def test_asking_for_more_disjoint_problems_than_the_world_has_fails_at_once():
    with pytest.raises(ValueError, match=r"9 per bonus digit.*add coded steps"):
        generate_split(5, 5, seed=0, cfg=TINY_QUESTION_SPACE)


# ---------------------------------------------------------------------------------------------------------
# tokenizer
def _texts(problems, tokenizer):
    """Prompt (both roles) + trace, and the same with the hard spans tagged."""
    for p in problems:
        tagged = tags.apply_spans(p.trace, list(p.hard_spans))
        for role in ("small", "big"):
            prompt = prompts.build_prompt(tokenizer, p.question, role)
            yield prompt + p.trace
            yield prompt + tagged


def test_decode_of_encode_is_the_identity_on_prompts_and_traces(toy_problems, toy_tokenizer):
    for text in _texts(toy_problems[:100], toy_tokenizer):
        ids = toy_tokenizer(text, add_special_tokens=False)["input_ids"]
        assert toy_tokenizer.decode(ids) == text


@pytest.mark.parametrize("tag", tags.TAGS)
def test_control_tags_are_single_non_special_ids(toy_tokenizer, tag):
    tag_id = toy_tokenizer.convert_tokens_to_ids(tag)
    assert toy_tokenizer(tag, add_special_tokens=False)["input_ids"] == [tag_id]
    assert toy_tokenizer(f"=0,{tag} code", add_special_tokens=False)["input_ids"].count(tag_id) == 1
    assert tag_id not in toy_tokenizer.all_special_ids
    assert tag_id != toy_tokenizer.unk_token_id


def test_tags_survive_skip_special_tokens_while_chat_specials_vanish(toy_problems, toy_tokenizer):
    for text in _texts(toy_problems[:20], toy_tokenizer):
        ids = toy_tokenizer(text, add_special_tokens=False)["input_ids"]
        expected = text.replace(BOS, "").replace(USER, "").replace(ASSISTANT, "")
        assert toy_tokenizer.decode(ids, skip_special_tokens=True) == expected


@pytest.mark.parametrize("world", WORLDS.values(), ids=WORLDS.keys())
def test_tagging_hard_spans_leaves_every_other_token_id_unchanged(toy_tokenizer, world):
    tag_ids = set(toy_tokenizer.convert_tokens_to_ids(list(tags.TAGS)))
    for problem in generate(60, seed=3, cfg=world):
        plain = toy_tokenizer(problem.trace, add_special_tokens=False)["input_ids"]
        tagged = toy_tokenizer(tags.apply_spans(problem.trace, list(problem.hard_spans)),
                               add_special_tokens=False)["input_ids"]
        assert [i for i in tagged if i not in tag_ids] == plain
        assert len(tagged) == len(plain) + 2 * len(problem.hard_spans)


def test_tokens_between_tags_decode_to_exactly_the_hard_clause(toy_problems, toy_tokenizer):
    open_id, close_id = toy_tokenizer.convert_tokens_to_ids(list(tags.TAGS))
    for problem in toy_problems[:50]:
        ids = toy_tokenizer(tags.apply_spans(problem.trace, list(problem.hard_spans)),
                            add_special_tokens=False)["input_ids"]
        starts = [i for i, t in enumerate(ids) if t == open_id]
        ends = [i for i, t in enumerate(ids) if t == close_id]
        inner = [toy_tokenizer.decode(ids[s + 1 : e]) for s, e in zip(starts, ends)]
        assert inner == [problem.trace[s:e] for s, e in problem.hard_spans]


# ---------------------------------------------------------------------------------------------------------
# save / reload
def test_saved_tokenizer_reloads_through_autotokenizer_unchanged(toy_problems, toy_tokenizer, tiny_model_dirs):
    reloaded = AutoTokenizer.from_pretrained(tiny_model_dirs["small"])
    assert reloaded.chat_template == toy_tokenizer.chat_template
    for attr in ("bos_token_id", "eos_token_id", "pad_token_id"):
        assert getattr(reloaded, attr) == getattr(toy_tokenizer, attr), attr
    assert reloaded.convert_tokens_to_ids(list(tags.TAGS)) == toy_tokenizer.convert_tokens_to_ids(list(tags.TAGS))
    assert not set(reloaded.convert_tokens_to_ids(list(tags.TAGS))) & set(reloaded.all_special_ids)
    for text in _texts(toy_problems[:20], toy_tokenizer):
        assert reloaded(text, add_special_tokens=False)["input_ids"] == toy_tokenizer(
            text, add_special_tokens=False)["input_ids"]
    assert prompts.build_prompt(reloaded, "Q", "small") == prompts.build_prompt(toy_tokenizer, "Q", "small")


def test_reloaded_tokenizer_adds_no_token_beyond_the_model_vocabulary(toy_tokenizer, tiny_model_dirs):
    reloaded = AutoTokenizer.from_pretrained(tiny_model_dirs["small"])
    vocab_size = AutoModelForCausalLM.from_pretrained(tiny_model_dirs["small"]).config.vocab_size
    assert len(reloaded) == len(toy_tokenizer) == vocab_size
    assert reloaded.all_special_tokens == toy_tokenizer.all_special_tokens


@pytest.mark.parametrize("role, layers", [("small", 1), ("big", 2)])
def test_saved_model_reloads_through_automodel_with_identical_logits(
        toy_problems, toy_tokenizer, tiny_models, tiny_model_dirs, role, layers):
    reloaded = AutoModelForCausalLM.from_pretrained(tiny_model_dirs[role]).eval()
    assert type(reloaded).__name__ == "Qwen2ForCausalLM"
    assert (reloaded.config.num_hidden_layers, reloaded.config.hidden_size) == (layers, 32)
    texts = [prompts.build_prompt(toy_tokenizer, p.question, role) + p.trace for p in toy_problems[:4]]
    enc = toy_tokenizer(texts, add_special_tokens=False, padding=True, return_tensors="pt")
    with torch.inference_mode():
        expected = tiny_models[role](**enc).logits
        got = reloaded(**enc).logits
    assert torch.equal(got, expected)


# ---------------------------------------------------------------------------------------------------------
# vLLM on CPU loads the same directory
def _until_eos(ids: list[int], eos_id: int) -> list[int]:
    return ids[: ids.index(eos_id) + 1] if eos_id in ids else ids


@pytest.mark.slow
def test_vllm_greedy_output_equals_transformers_greedy_generate(toy_problems, toy_tokenizer, tiny_model_dirs,
                                                                monkeypatch):
    monkeypatch.setenv("VLLM_CPU_KVCACHE_SPACE", "1")
    monkeypatch.setenv("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    vllm = pytest.importorskip("vllm")
    model_dir = tiny_model_dirs["big"]
    prompt = prompts.build_prompt(toy_tokenizer, toy_problems[1].question, "big")
    prompt_ids = toy_tokenizer(prompt, add_special_tokens=False)["input_ids"]
    max_new_tokens = 24

    hf = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    with torch.inference_mode():
        out = hf.generate(torch.tensor([prompt_ids]), attention_mask=torch.ones(1, len(prompt_ids), dtype=torch.long),
                          max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=toy_tokenizer.pad_token_id)
    hf_ids = _until_eos(out[0, len(prompt_ids) :].tolist(), toy_tokenizer.eos_token_id)
    assert len(set(hf_ids)) > 5, "a degenerate continuation would make the comparison vacuous"

    llm = vllm.LLM(model=str(model_dir), dtype="float32", enforce_eager=True, max_model_len=512, seed=0)
    try:
        params = vllm.SamplingParams(temperature=0.0, max_tokens=max_new_tokens)
        (result,) = llm.generate([prompt], params, use_tqdm=False)
    finally:
        from splitlib.backends.vllm_engine import release_foreign_engine

        release_foreign_engine(llm)  # a raw engine's shutdown would tear down the state the suite's shared ones use
        del llm
    completion = result.outputs[0]
    assert list(result.prompt_token_ids) == prompt_ids  # vLLM tokenizes the chat prompt as transformers does
    assert _until_eos(list(completion.token_ids), toy_tokenizer.eos_token_id) == hf_ids



def test_decode_speeds_time_the_decoders_backend_in_alternating_rounds(tiny_models, toy_tokenizer, monkeypatch):
    from splitlib import profiling
    from splitlib.toy.diagnostics import decode_speeds

    prompts_by_role = {r: prompts.build_prompt(toy_tokenizer, "Bonus: 1 2 3 4. Start at 0;", r) for r in ("small", "big")}
    calls = []
    real = profiling.decode_s_per_token

    def spy(backend, context, n):
        role = "small" if backend.model is tiny_models["small"] else "big"
        calls.append((type(backend).__name__, role, n))
        return real(backend, context, n)

    monkeypatch.setattr(profiling, "decode_s_per_token", spy)
    speeds = decode_speeds(tiny_models, toy_tokenizer, prompts_by_role, n_tokens=8, rounds=3)
    roles = list(tiny_models)
    warm_up = [("HFBackend", r, 4) for r in roles]
    timed = [("HFBackend", r, 8) for r in roles + roles[::-1] + roles]  # the order flips every other round
    assert calls == warm_up + timed
    for r in roles:
        assert speeds[r]["decode_s_per_token"] > 0
        assert speeds[r]["decode_tok_per_s"] == pytest.approx(1 / speeds[r]["decode_s_per_token"])
    with pytest.raises(ValueError, match="rounds=0"):
        decode_speeds(tiny_models, toy_tokenizer, prompts_by_role, n_tokens=8, rounds=0)

def test_pretrain_is_seeded_and_restores_the_thread_count(tiny_models, toy_tokenizer):
    import copy

    from splitlib.toy import build as toy_build
    from splitlib.toy.models import PretrainConfig, pretrain

    world = ToyWorldConfig()
    cfg = PretrainConfig(steps=3, batch_size=4, lr=1e-3, warmup_steps=1, seed=5, threads=1)
    before = torch.get_num_threads()
    trained = []
    for _ in range(2):
        model = copy.deepcopy(tiny_models["small"])
        curve = pretrain(model, toy_tokenizer, world, cfg, toy_build.prompt_fn(toy_tokenizer, "small"), progress=False)
        assert torch.get_num_threads() == before  # training's own setting does not leak into later timing
        assert [row["step"] for row in curve] == [0, 2] and all(row["loss"] > 0 for row in curve)
        trained.append(model.state_dict())
    assert all(torch.equal(trained[0][k], trained[1][k]) for k in trained[0])  # same seed, same weights
    assert not torch.equal(trained[0]["model.embed_tokens.weight"], tiny_models["small"].state_dict()["model.embed_tokens.weight"])
    with pytest.raises(ValueError, match="threads=-1"):
        pretrain(copy.deepcopy(tiny_models["small"]), toy_tokenizer, world, PretrainConfig(steps=1, threads=-1),
                 toy_build.prompt_fn(toy_tokenizer, "small"), progress=False)
