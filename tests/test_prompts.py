"""splitlib.prompts: every stage's text in the rehearsal profile (the stand-in R1 tokenizer) compared character for
character with strings written out by hand from the authors' formats (PAPER_FACTS §2, §10, their evaluation
service); the styles' ids; ``splitreason prompt`` printing exactly those strings; the profiles' choices."""

from __future__ import annotations

import dataclasses

import pytest
import yaml
from transformers import AutoTokenizer

from splitlib import cli, pipeline, prompts, provenance, tags
from splitlib import notebook_params as nbp
from splitlib.annotate.llm import SNIPPET_CLOSE, SNIPPET_OPEN, SNIPPETS_TEMPLATE, TRACE_CLOSE, TRACE_OPEN
from splitlib.handoff import encode_text
from splitlib.params import ParamError
from splitlib.registry import UnknownNameError
from splitlib.rehearsal import build_standins
from splitlib.training import grpo_dataset, sft_dataset
from splitlib.training.rollout import prompt_token_ids

BOS, EOS = "<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>"
PROBLEM = "A shop packs 12 boxes of 4 pens. How many pens?"
TRACE = "<think>\nEach box holds 4 pens.\n<bigmodel>12 * 4 = 48</bigmodel>\n</think>\n\\boxed{48}"
HINT = "You always use <bigmodel>...</bigmodel> to mark parts of the reasoning process that are important."
# The GRPO recipe's system_prompt with its YAML escapes resolved (PAPER_FACTS §10), written out by hand.
SYSTEM = ("You are a helpful AI Assistant that provides well-reasoned and detailed responses. You first think about "
          "the reasoning process as an internal monologue and then provide the user with the answer. Respond in the "
          "following format: <think>\n...\n</think>\n<answer>\n...\n</answer>. \n Put your final answer within "
          "\\boxed{}. You always use <bigmodel>...</bigmodel> to mark parts of the reasoning process that are "
          "important.")

# What the authors' code renders for the fixed row, by hand:
SFT_TEXT = ("<｜begin▁of▁sentence｜><｜User｜>A shop packs 12 boxes of 4 pens. How many pens?<｜Assistant｜><think>\n"
            "Each box holds 4 pens.\n<bigmodel>12 * 4 = 48</bigmodel>\n</think>\n\\boxed{48}<｜end▁of▁sentence｜>")
GRPO_TEXT = "<｜begin▁of▁sentence｜>" + SYSTEM + "<｜User｜>A shop packs 12 boxes of 4 pens. How many pens?<｜Assistant｜>"
EVAL_SMALL = ("<｜begin▁of▁sentence｜><｜User｜>A shop packs 12 boxes of 4 pens. How many pens?\n" + HINT
              + "\n\n Put your final answer within \\boxed{}.<｜Assistant｜>\n<think>\n")
EVAL_PLAIN = ("<｜begin▁of▁sentence｜><｜User｜>A shop packs 12 boxes of 4 pens. How many pens?"
              "\n\n Put your final answer within \\boxed{}.<｜Assistant｜>\n<think>\n")
LM_EVAL_SMALL = ("<｜begin▁of▁sentence｜><｜User｜>A shop packs 12 boxes of 4 pens. How many pens?\n\n" + HINT
                 + "\n\\n Put your final answer within \\boxed{}.<｜Assistant｜>\n<think>\n")


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """Stand-ins built once where ``splitreason prompt`` looks for them (seed 0, the rehearsal profile's)."""
    root = tmp_path_factory.mktemp("cache")
    build_standins(root / "rehearsal-standins-seed0", seed=0, progress=False)
    return root


@pytest.fixture(scope="module")
def tok(cache):
    return AutoTokenizer.from_pretrained(cache / "rehearsal-standins-seed0" / "models" / "DeepSeek-R1-Distill-Qwen-1.5B")


def rehearsal_style(stage: str) -> prompts.PromptStyle:
    notebook = {"sft": "02_sft", "grpo": "03_grpo", "eval": "05_evaluate"}[stage]
    params = yaml.safe_load((pipeline.profile_dir("rehearsal") / f"{notebook}.yaml").read_text())
    return prompts.style(stage, params["prompt_style"])


# -- the authors' formats, character for character ------------------------------------------------------------------
def test_sft_example_is_the_authors_conversation_with_one_think(tok):
    prompt, completion = prompts.sft_texts(tok, PROBLEM, TRACE, rehearsal_style("sft"))
    assert prompt + completion == SFT_TEXT
    assert (prompt, completion) == (SFT_TEXT[: SFT_TEXT.index("<think>")], TRACE + EOS)
    assert SFT_TEXT.count("<think>") == 1 and HINT not in SFT_TEXT  # no doubled <think>, no hint, no system prompt


def test_sft_dataset_row_tokenizes_to_the_whole_example_with_one_bos(tok):
    [row] = sft_dataset([{"id": "r0", "question": PROBLEM, "annotated": TRACE}], tok, prompt_style="authors")
    assert row == {"prompt": SFT_TEXT[len(BOS): SFT_TEXT.index("<think>")], "completion": TRACE + EOS}
    ids = tok(row["prompt"])["input_ids"] + tok(row["completion"], add_special_tokens=False)["input_ids"]
    assert ids == tok(SFT_TEXT, add_special_tokens=False)["input_ids"] and ids.count(tok.bos_token_id) == 1


def test_grpo_prompt_has_the_recipes_system_prompt_and_ends_at_the_assistant_tag(tok):
    chosen = rehearsal_style("grpo")
    assert prompts.build_prompt(tok, PROBLEM, "small", chosen) == GRPO_TEXT
    assert GRPO_TEXT.endswith("<｜Assistant｜>")  # the model writes <think>\n itself: the format reward sees it
    [row] = grpo_dataset([{"question": PROBLEM, "answer": "48"}], tok, chosen)
    assert row == {"prompt": GRPO_TEXT[len(BOS):], "solution": "48", "gold_rule": "answer"}
    big = prompts.build_prompt(tok, PROBLEM, "big", chosen)
    assert big == GRPO_TEXT.replace(" " + HINT, "")  # offload rollouts: the big model never sees the hint


def test_evaluation_prompts_are_the_authors_service_strings(tok):
    chosen = rehearsal_style("eval")
    assert prompts.build_prompt(tok, PROBLEM, "small", chosen) == EVAL_SMALL  # split decoding
    assert prompts.build_prompt(tok, PROBLEM, "big", chosen) == EVAL_PLAIN  # big only, random switch, hand-offs
    assert prompts.build_prompt(tok, PROBLEM, "small", chosen, offloading=False) == EVAL_PLAIN  # small only
    lm_eval = prompts.style("eval", "authors_lm_eval")
    assert prompts.build_prompt(tok, PROBLEM, "small", lm_eval) == LM_EVAL_SMALL


def test_the_rollout_prompt_ids_are_the_decoders_small_prompt(tok):
    for chosen in (prompts.style("grpo", "authors"), prompts.style("grpo"), None):
        expected = encode_text(tok, prompts.build_prompt(tok, PROBLEM, "small", chosen))
        assert prompt_token_ids(tok, PROBLEM, chosen) == expected


def test_the_project_style_is_the_prompt_the_project_always_rendered(tok):
    project = f"{BOS}<｜User｜>{PROBLEM}\n{HINT}\n{prompts.INSTRUCTION}<｜Assistant｜><think>\n"
    assert prompts.build_prompt(tok, PROBLEM, "small") == project
    for stage in prompts.STAGES:
        assert prompts.build_prompt(tok, PROBLEM, "small", prompts.style(stage)) == project
    assert prompts.sft_texts(tok, PROBLEM, "t", prompts.style("sft")) == (project, "t" + EOS)


def test_the_authors_template_renders_as_the_standin_tokenizers_own(tok):
    turns = [{"role": "system", "content": "S\n"}, {"role": "user", "content": "Q?"},
             {"role": "assistant", "content": "A."}, {"role": "user", "content": "again"}]
    for generation in (False, True):
        for n in range(1, len(turns) + 1):
            mine = tok.apply_chat_template(turns[:n], tokenize=False, add_generation_prompt=generation,
                                           chat_template=prompts.AUTHORS_CHAT_TEMPLATE)
            assert mine == tok.apply_chat_template(turns[:n], tokenize=False, add_generation_prompt=generation)


def test_placeholders_are_filled_once(tok):
    text = prompts.build_prompt(tok, "Is {hint} a word?", "big", prompts.style("eval", "authors"))
    assert "Is {hint} a word?" in text and HINT not in text


def test_a_template_whose_conversation_does_not_extend_its_prompt_is_refused(tok):
    odd = dataclasses.replace(prompts.style("sft", "authors"), opening="\n<think>\n")  # TRACE opens <think> directly
    with pytest.raises(ValueError, match="cannot be split into prompt and completion"):
        prompts.sft_texts(tok, PROBLEM, TRACE, odd)


# -- ids, registry ----------------------------------------------------------------------------------------------------
PINNED_IDS = {  # change only on purpose: a new id makes every record keyed by the old one stale
    ("sft", "project"): "f4003fb7a571165a", ("sft", "authors"): "06fea17634c0338f",
    ("grpo", "project"): "1f0d68c2bbf4f124", ("grpo", "authors"): "8dee3641295872e6",
    ("eval", "project"): "4e239e69d402c242", ("eval", "authors"): "f2d291e5e726e00a",
    ("eval", "authors_lm_eval"): "5d4f57327e4a47b7",
}


def test_style_ids_are_stable_and_differ_between_styles():
    ids = {(stage, name): prompts.style(stage, name).id for stage in prompts.STAGES for name in prompts.STYLES[stage]}
    assert ids == PINNED_IDS
    assert len(set(ids.values())) == len(ids)


def test_the_project_evaluation_style_keeps_the_template_id_rows_were_keyed_by():
    legacy = {"instruction": prompts.INSTRUCTION, "hint": tags.HINT, "render": prompts.RENDER_VERSION}
    assert prompts.style("eval").id == prompts.TEMPLATE_ID == provenance.value_hash(legacy)


@pytest.mark.parametrize("field,value", [("instruction", "x"), ("hint", "y"), ("opening", "\n"), ("system_small", "s"),
                                         ("user_small", "{problem}"), ("chat_template", "{{ bos_token }}")])
def test_every_text_and_rule_changes_the_id(field, value):
    base = prompts.style("eval", "authors")
    assert dataclasses.replace(base, **{field: value}).id != base.id
    assert dataclasses.replace(base, name="renamed", description="other words").id == base.id


def test_style_lookup_names_the_allowed_styles_and_checks_the_stage():
    assert prompts.style("eval") is prompts.DEFAULT_STYLE
    with pytest.raises(UnknownNameError, match="authors, authors_lm_eval"):
        prompts.style("eval", "nope")
    with pytest.raises(ValueError, match="is for stage 'eval', not 'sft'"):
        prompts.style("sft", prompts.style("eval", "authors"))
    assert prompts.style_names("sft", "eval") == ["project", "authors"]


def test_a_decoder_must_render_the_chosen_style():
    prompts.check_decoder_style({}, prompts.style("eval"))  # a decoder that names no prompt renders the project's
    with pytest.raises(ValueError, match="DecoderService\\(prompt_style=...\\)"):
        prompts.check_decoder_style({}, prompts.style("eval", "authors"))
    prompts.check_decoder_style({"prompt": prompts.style("eval", "authors").id}, prompts.style("eval", "authors"))


# -- the profiles --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("profile,expected", [("paper", "authors"), ("rehearsal", "authors"), ("toy", "project"),
                                              ("smoke", "project")])
def test_profiles_choose_their_prompt_style_and_04_and_05_share_it(profile, expected):
    chosen = {nb: yaml.safe_load((pipeline.profile_dir(profile) / f"{nb}.yaml").read_text())["prompt_style"]
              for nb in ("02_sft", "03_grpo", "04_random_switch", "05_evaluate")}
    assert set(chosen.values()) == {expected}


@pytest.mark.parametrize("notebook,value", [("02_sft", "authors_lm_eval"), ("03_grpo", "nope"),
                                            ("05_evaluate", "nope")])
def test_an_unknown_prompt_style_is_a_parameter_error(notebook, value):
    path = pipeline.profile_dir("smoke") / f"{notebook}.yaml"
    with pytest.raises(ParamError, match=f"prompt_style={value!r}.*prompt style of splitlib.prompts"):
        nbp.load_yaml(notebook, path, {"prompt_style": value})


# -- splitreason prompt -------------------------------------------------------------------------------------------
def run_cli(capsys, *args: str) -> tuple[int, str, str]:
    rc = cli.main(["prompt", "--profile", "rehearsal", "--problem", PROBLEM, *args])
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


@pytest.mark.parametrize("args,expected", [
    (["--stage", "sft", "--completion", TRACE], SFT_TEXT),
    (["--stage", "grpo"], GRPO_TEXT),
    (["--stage", "eval"], EVAL_SMALL),
    (["--stage", "eval", "--role", "big"], EVAL_PLAIN),
    (["--stage", "eval", "--alone"], EVAL_PLAIN),
    (["--stage", "eval", "--style", "authors_lm_eval"], LM_EVAL_SMALL),
    (["--stage", "grpo", "--completion", TRACE], GRPO_TEXT + TRACE),
])
def test_the_cli_prints_exactly_the_text_from_stand_ins_it_finds_in_the_cache(args, expected, cache, tmp_path, capsys):
    rc, out, _ = run_cli(capsys, *args, "--outputs-root", str(tmp_path), "--cache-dir", str(cache))
    assert (rc, out) == (0, expected)
    assert not (tmp_path / "rehearsal").exists()  # the run directory is left alone


def test_the_cli_reads_the_runs_own_stand_ins(cache, tmp_path, capsys):
    (tmp_path / "rehearsal").mkdir()
    (tmp_path / "rehearsal" / "hub").symlink_to(cache / "rehearsal-standins-seed0")
    rc, out, _ = run_cli(capsys, "--stage", "eval", "--outputs-root", str(tmp_path), "--cache-dir",
                         str(tmp_path / "none"))
    assert (rc, out) == (0, EVAL_SMALL) and not (tmp_path / "none").exists()


def test_the_cli_prints_the_annotators_user_message(capsys):
    rc, out, _ = run_cli(capsys, "--stage", "annotate", "--completion", TRACE)
    expected = SNIPPETS_TEMPLATE.format(
        trace=TRACE, percent=20, n_chars=round(0.2 * len(TRACE)), snippet_open=SNIPPET_OPEN,
        snippet_close=SNIPPET_CLOSE, trace_open=TRACE_OPEN, trace_close=TRACE_CLOSE, tag_open=tags.OPEN,
        tag_close=tags.CLOSE)
    assert (rc, out) == (0, expected) and out.endswith(f"{TRACE}\n{TRACE_CLOSE}")


@pytest.mark.parametrize("args,fragment", [
    (["--stage", "sft"], "give the annotated trace as --completion"),
    (["--stage", "eval", "--style", "nope"], "unknown evaluation prompt style 'nope'"),
    (["--stage", "annotate", "--profile", "smoke"], "annotates with 'surprisal', which sends no prompt"),
])
def test_the_cli_says_what_is_wrong_on_stderr_only(args, fragment, capsys):
    rc, out, err = run_cli(capsys, *args)
    assert (rc, out) == (2, "") and fragment in err


# -- the decoder renders the chosen style ---------------------------------------------------------------------------
@pytest.mark.parametrize("policy,offloading", [("split", True), ("small_only", False), ("random_switch", False)])
def test_the_decoder_service_decodes_from_the_chosen_styles_prompts(tiny_model_dirs, policy, offloading):
    from splitlib.decoder_service import DecoderService, Route
    from splitlib.policies import POLICIES
    from splitlib.sampling import Sampling

    chosen = prompts.style("eval", "authors")
    service = DecoderService({"base": tiny_model_dirs["small"], "big": tiny_model_dirs["big"]}, prompt_style=chosen)
    route = Route(policy, small="base", big="big" if "big" in POLICIES[policy].models else None)
    [trace] = service(route, [PROBLEM], [0], Sampling(temperature=0.0), 4)
    tok = AutoTokenizer.from_pretrained(tiny_model_dirs["small"])
    small = prompts.build_prompt(tok, PROBLEM, "small", chosen, offloading)
    assert trace.prompt_tokens["small"] == len(encode_text(tok, small)) and (HINT in small) is offloading
    assert service.provenance(route)["prompt"] == service.settings["prompt"] == chosen.id
    prompts.check_decoder_style(service.settings, chosen)
    assert DecoderService().settings["prompt"] == prompts.TEMPLATE_ID  # no style: the project's, as rows were keyed
    service.close()
