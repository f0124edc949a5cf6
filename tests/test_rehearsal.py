"""The rehearsal stand-ins: hub-format models, tokenizer and data sets that the paper's code path loads offline.

One build per module (about a second after the imports); a second build with the same seed checks determinism,
reuse and rebuilding.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from splitlib import data, grading, prompts, provenance, tags
from splitlib.params import ParamError
from splitlib.rehearsal import StandinSizes, build_standins, standin_paths, summary
from splitlib.rehearsal.annotator import ANSWER
from splitlib.rehearsal.problems import CHECK_SENTENCE
from splitlib.rehearsal.tokenizer import ASSISTANT, BOS, EOS, USER

SEED = 0


@pytest.fixture(scope="module")
def hub(tmp_path_factory) -> dict:
    """The stand-ins built with the default sizes under a fresh root."""
    return build_standins(tmp_path_factory.mktemp("hub"), seed=SEED, progress=False)


@pytest.fixture(scope="module")
def paths(hub) -> dict[str, Path]:
    return {role: Path(p) for role, p in hub["paths"].items()}


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    """A datasets cache of our own, so that loading never touches the user's."""
    return tmp_path_factory.mktemp("datasets_cache")


@pytest.fixture(scope="module")
def small_tok(paths):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(paths["small"])


@pytest.fixture(scope="module")
def openr1_rows(paths, cache) -> list[dict]:
    return data.load_openr1(paths["openr1"], config="default", cache_dir=cache)


# -- layout -------------------------------------------------------------------------------------------------------
def test_paths_mirror_the_hub_ids_and_every_written_file_exists(hub, paths):
    assert paths == standin_paths(hub["root"])
    assert paths["small"].name == "DeepSeek-R1-Distill-Qwen-1.5B" and paths["small"].parent.name == "models"
    assert paths["big"].name == "DeepSeek-R1-Distill-Qwen-32B" and paths["annotator"].name == "deepseek-chat"
    assert {p.name for role, p in paths.items() if role not in ("small", "big", "annotator")} == {
        "OpenR1-Math-220k", "aime24_nofigures", "MATH-500", "OpenR1_Math_SpeculativeReasoning",
        "OpenR1_Math_SpecR_GRPO"}
    assert all((Path(hub["root"]) / f).is_file() for f in hub["files"])
    assert hub["reused"] is False and set(hub["build_wall_s"]) >= {"tokenizer_s", "small_s", "big_s", "datasets_s"}
    json.dumps(hub)  # JSON-able


def test_summary_has_one_row_per_standin_and_names_notebook_00_when_missing(hub, tmp_path):
    rows = {r["role"]: r for r in summary(hub["root"])}
    assert set(rows) == set(hub["paths"])
    assert (rows["small"]["layers"], rows["big"]["layers"], rows["small"]["dtype"]) == (1, 2, "bfloat16")
    assert rows["openr1"]["rows"] == 48 and rows["math500"]["rows"] == 40 and rows["sft"]["files"] == 2
    with pytest.raises(FileNotFoundError, match="00_models"):
        summary(tmp_path)


def test_sizes_are_checked_before_anything_is_built(tmp_path):
    with pytest.raises(ParamError, match="sizes.bogus"):
        build_standins(tmp_path, sizes={"bogus": 1}, progress=False)
    with pytest.raises(ValueError, match="heads must divide"):
        StandinSizes(hidden_size=64, num_attention_heads=3)
    assert not any(tmp_path.iterdir())


# -- tokenizer ----------------------------------------------------------------------------------------------------
def test_tokenizer_has_the_hub_tokens_and_not_the_control_tags(paths, small_tok):
    from tokenizers import Tokenizer

    raw = Tokenizer.from_file(str(paths["small"] / "tokenizer.json"))
    config = json.loads((paths["small"] / "tokenizer_config.json").read_text())
    assert config["tokenizer_class"] == "LlamaTokenizerFast" and config["add_bos_token"] is True
    assert type(small_tok).__name__ == "Qwen2Tokenizer"  # transformers' fix-up for the hub's class, as for the real one
    assert (small_tok.bos_token, small_tok.eos_token, small_tok.pad_token) == (BOS, EOS, EOS)
    assert set(small_tok.all_special_tokens) == {BOS, EOS}
    added = small_tok.get_added_vocab()
    assert {USER, ASSISTANT, "<｜EOT｜>", "<think>", "</think>"} <= set(added)  # added, not special (as on the hub)
    assert 512 <= len(small_tok) <= 1024
    for tag in tags.TAGS:
        assert tag not in small_tok.get_vocab() and len(small_tok(tag, add_special_tokens=False)["input_ids"]) > 1
    text = "Okay, 37 × 24 = 888.\n\n<think>\nso \\boxed{923}</think>"
    ids = small_tok(text)["input_ids"]
    assert ids == raw.encode(text).ids and ids[0] == small_tok.bos_token_id  # BOS added, as the hub's post-processor
    assert small_tok.convert_ids_to_tokens(small_tok("2024", add_special_tokens=False)["input_ids"]) == list("2024")
    assert small_tok.decode(ids, skip_special_tokens=True) == text


def test_chat_template_renders_the_recipes_format(small_tok):
    messages = [{"role": "system", "content": "SYS"}, {"role": "user", "content": "Q?"},
                {"role": "assistant", "content": "A."}]
    rendered = small_tok.apply_chat_template(messages, tokenize=False)
    assert rendered == f"{BOS}SYS{USER}Q?{ASSISTANT}A.{EOS}"
    prompt = small_tok.apply_chat_template(messages[1:2], tokenize=False, add_generation_prompt=True)
    assert prompt == f"{BOS}{USER}Q?{ASSISTANT}"  # no <think>\n in the generation prompt
    built = prompts.build_prompt(small_tok, "What is 2+3?", "small")
    assert built == f"{BOS}{USER}What is 2+3?\n{tags.HINT}\n{prompts.INSTRUCTION}{ASSISTANT}<think>\n"


# -- models -------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("role,layers", [("small", 1), ("big", 2)])
def test_models_are_hub_format_bfloat16_qwen2(paths, small_tok, role, layers):
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = paths[role]
    config = json.loads((folder / "config.json").read_text())
    assert config["architectures"] == ["Qwen2ForCausalLM"] and config["model_type"] == "qwen2"
    assert config["torch_dtype"] == "bfloat16" and config["tie_word_embeddings"] is False
    assert config["num_hidden_layers"] == layers and config["hidden_size"] // config["num_attention_heads"] == 32
    assert config["max_position_embeddings"] >= 20480
    gen = json.loads((folder / "generation_config.json").read_text())
    assert (gen["bos_token_id"], gen["eos_token_id"]) == (small_tok.bos_token_id, small_tok.eos_token_id)
    assert (gen["do_sample"], gen["temperature"], gen["top_p"]) == (True, 0.6, 0.95)
    assert {t.dtype for t in load_file(folder / "model.safetensors").values()} == {torch.bfloat16}
    model = AutoModelForCausalLM.from_pretrained(folder).eval()
    tok = AutoTokenizer.from_pretrained(folder)
    assert model.dtype == torch.bfloat16 and model.config.vocab_size > len(tok)  # padded, as the hub's
    ids = tok(prompts.build_prompt(tok, "A shop has 12 boxes.", "small"), add_special_tokens=False,
              return_tensors="pt")
    out = model.generate(**ids, max_new_tokens=24, do_sample=False)[0, ids["input_ids"].shape[1]:].tolist()
    assert len(set(out)) >= 6 and max(out) < len(tok)  # varied, and never a padding row


# -- the annotator stand-in ---------------------------------------------------------------------------------------
class _HFChat:
    """An OpenAI-client-shaped object that answers with the annotator stand-in's greedy HF generation."""

    def __init__(self, folder: Path) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()  # as vLLM serves it
        self.tok = AutoTokenizer.from_pretrained(folder)
        self.chat = SimpleNamespace(completions=SimpleNamespace(create=self.create))
        self.last_ids: list[int] = []

    def create(self, *, messages, max_tokens, **_):
        text = self.tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        ids = self.tok(text, add_special_tokens=False, return_tensors="pt")
        out = self.model.generate(**ids, max_new_tokens=min(max_tokens, 16), do_sample=False)
        self.last_ids = out[0, ids["input_ids"].shape[1]:].tolist()
        content = self.tok.decode(self.last_ids, skip_special_tokens=True)
        return {"choices": [{"message": {"role": "assistant", "content": content}}]}


def test_annotator_answers_the_fixed_snippet_and_it_is_found_in_every_trace(paths, openr1_rows):
    from tokenizers.decoders import DecodeStream

    from splitlib.annotate.base import RetryPolicy
    from splitlib.annotate.llm import LLMAnnotator, LLMConfig, parse_snippets

    client = _HFChat(paths["annotator"])
    annotator = LLMAnnotator(LLMConfig(base_url="http://127.0.0.1:1/v1", model="deepseek-chat"), client=client)
    assert len(openr1_rows) == 48
    for row in openr1_rows:
        result = annotator.annotate(row, RetryPolicy())  # the project's request, parsing and fuzzy matching
        start = row["trace"].index(CHECK_SENTENCE)
        assert result.spans == ((start, start + len(CHECK_SENTENCE)),)
        assert client.last_ids[-1] == client.tok.eos_token_id and len(client.last_ids) == 4
    reply = client.tok.decode(client.last_ids, skip_special_tokens=True)
    assert reply == ANSWER and parse_snippets(reply) == [CHECK_SENTENCE]
    stream = DecodeStream(skip_special_tokens=True)  # vLLM's incremental detokenizer gives the same text
    assert "".join(stream.step(client.tok.backend_tokenizer, i) or "" for i in client.last_ids) == ANSWER


# -- data sets ----------------------------------------------------------------------------------------------------
def test_openr1_loads_through_the_project_loader_with_long_graded_traces(openr1_rows, paths, cache):
    assert all(len(r["trace"]) > 1024 and r["trace"].startswith("<think>\n") for r in openr1_rows)
    assert all(CHECK_SENTENCE in r["trace"] and "</think>\n\n" in r["trace"] for r in openr1_rows)
    assert len({r["id"] for r in openr1_rows}) == 48
    correct = data.load_openr1(paths["openr1"], config="default", only_correct=True, cache_dir=cache)
    assert 0 < len(correct) < len(openr1_rows)
    good = {r["id"] for r in correct}
    for row in openr1_rows[:16]:
        assert grading.grade(row["trace"].split("</think>")[-1], row["answer"]).correct == (row["id"] in good)


def test_benchmarks_load_through_the_project_loaders(paths, cache):
    aime = data.load_aime24(paths["aime24"], cache_dir=cache)
    math500 = data.load_math500(paths["math500"], cache_dir=cache)
    assert len(aime) == 30 and [r["id"] for r in aime] == [str(i) for i in range(60, 90)]
    assert all(0 <= int(r["answer"]) <= 999 for r in aime)
    assert len(math500) == 40 and all(isinstance(r["level"], int) and r["subject"] for r in math500)
    assert data.load_benchmark("aime24", paths["aime24"], limit=3, cache_dir=cache) == aime[:3]
    assert not {r["question"] for r in aime} & {r["question"] for r in math500}


HUB_COLUMNS = {
    "openr1": ["problem", "solution", "answer", "problem_type", "question_type", "source", "uuid",
               "is_reasoning_complete", "generations", "correctness_math_verify", "correctness_llama",
               "finish_reasons", "correctness_count", "messages"],
    "aime24": ["id", "problem", "solution", "answer", "url"],
    "math500": ["problem", "solution", "answer", "subject", "level", "unique_id"],
}
HUB_COLUMNS["sft"] = HUB_COLUMNS["grpo"] = [*HUB_COLUMNS["openr1"], "annotated_generations"]


@pytest.mark.parametrize("role,config,split,rows", [
    ("openr1", "default", "train", 48), ("sft", "default", "train", 48), ("grpo", "default", "train", 48),
    ("aime24", None, "train", 30), ("math500", None, "test", 40)])
def test_data_sets_load_as_hub_repositories_with_their_columns(paths, cache, role, config, split, rows):
    import datasets

    table = datasets.load_dataset(str(paths[role]), config, split=split, cache_dir=str(cache))
    assert table.column_names == HUB_COLUMNS[role] and len(table) == rows
    readme = (paths[role] / "README.md").read_text()
    assert readme.startswith("---\n")
    assert ("configs:" in readme) == (config is not None)  # parquet repos name their files; JSON-lines ones do not
    if role in ("openr1", "sft", "grpo"):
        f = table.features
        assert f["generations"].feature.dtype == "string" and f["correctness_math_verify"].feature.dtype == "bool"
        assert f["correctness_count"].dtype == "int64" and set(f["messages"].feature) == {"content", "role"}
    if role == "math500":
        assert table.features["level"].dtype == "int64"


def test_sft_rows_hold_the_annotated_trace_as_the_assistant_turn(paths, cache):
    import datasets

    from splitlib.rehearsal.datasets import RELEASED_CLOSE, RELEASED_OPEN, sft_message

    sft = datasets.load_dataset(str(paths["sft"]), "default", split="train", cache_dir=str(cache))
    grpo = datasets.load_dataset(str(paths["grpo"]), "default", split="train", cache_dir=str(cache))
    assert grpo["uuid"] == sft["uuid"][: len(grpo)]
    for row in sft:
        released = row["annotated_generations"][0]
        assert released.replace(RELEASED_OPEN, "").replace(RELEASED_CLOSE, "") == row["generations"][0]
        assistant = row["messages"][1]["content"]
        assert row["messages"][0] == {"content": row["problem"], "role": "user"}
        assert tags.check(assistant).balanced and "\n <bigmodel> \n" in assistant
        assert any(t.strip().startswith(CHECK_SENTENCE) for t in tags.inner_texts(assistant))
    as_released = sft_message(sft[0]["annotated_generations"][0], "as_released")
    assert "\n <bigmodel> \n" in as_released and RELEASED_CLOSE in as_released and tags.CLOSE not in as_released


# -- reuse and determinism ----------------------------------------------------------------------------------------
def _hashes(result: dict) -> dict[str, str]:
    return {f: provenance.file_hash(Path(result["root"]) / f) for f in result["files"]}


def test_same_seed_same_bytes_reuse_and_a_new_seed_rebuilds(hub, tmp_path):
    twin = build_standins(tmp_path / "hub", seed=SEED, progress=False)
    twin_hashes = _hashes(twin)
    assert twin["files"] == hub["files"] and twin_hashes == _hashes(hub)
    weights = Path(hub["root"]) / "models/DeepSeek-R1-Distill-Qwen-1.5B/model.safetensors"
    mtime = os.stat(weights).st_mtime_ns
    again = build_standins(hub["root"], seed=SEED, progress=False)
    assert again["reused"] is True and again["wall_s"] < 1.0 and os.stat(weights).st_mtime_ns == mtime
    assert again["files"] == hub["files"]
    other = build_standins(tmp_path / "hub", seed=SEED + 1, progress=False)
    assert other["reused"] is False
    changed = {f for f, h in _hashes(other).items() if twin_hashes.get(f) != h}
    assert {"models/DeepSeek-R1-Distill-Qwen-1.5B/model.safetensors",
            "datasets/OpenR1-Math-220k/data/train-00000-of-00001.parquet"} <= changed
