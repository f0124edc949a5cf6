"""splitlib.data: trace loaders (OpenR1-Math-220k, the toy world files written by notebook 00) and benchmark
loaders (AIME24, MATH-500, toy test), all on local copies in each source's schema (hub offline: see conftest)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from splitlib import data, runs
from splitlib.data import DataError, load_openr1, load_toy
from splitlib.registry import UnknownNameError
from splitlib.runs import MissingInputError
from splitlib.toy.world import generate

LONG, SHORT = "w" * 1100, "s" * 1000
# The hub card's config layout (open-r1/OpenR1-Math-220k README): config "default" -> data/train-*.
HUB_README = """---
configs:
- config_name: default
  data_files:
  - split: train
    path: data/train-*
- config_name: extended
  data_files:
  - split: train
    path: extended/train-*
---
"""


def openr1_row(i: int, generations: list[str], verdicts: list[bool], uuid: str | None = None) -> dict:
    """One row with every column of the real schema."""
    return {
        "problem": f"problem {i}", "solution": f"solution {i}", "answer": str(i), "problem_type": "Algebra",
        "question_type": "math-word-problem", "source": "olympiads", "uuid": uuid if uuid is not None else f"uuid-{i}",
        "is_reasoning_complete": [True] * len(generations), "generations": generations,
        "correctness_math_verify": verdicts, "correctness_llama": None, "finish_reasons": None,
        "correctness_count": sum(verdicts),
        "messages": [{"role": "user", "content": f"problem {i}"}, {"role": "assistant", "content": generations[-1]}],
    }


ROWS = [
    openr1_row(0, [LONG + "0", SHORT], [True, False]),  # kept
    openr1_row(1, [SHORT, LONG], [False, True]),  # first generation too short: dropped (never the second)
    openr1_row(2, [LONG + "2"], [False]),  # kept unless only_correct
    openr1_row(3, ["x" * 1024], [True]),  # exactly 1,024 characters: dropped (paper keeps > 1,024)
    openr1_row(4, [LONG + "4", LONG], [True, True]),  # kept
    openr1_row(5, [LONG + "5"], [True], uuid="uuid-0"),  # repeated uuid: gets a positional id
]


@pytest.fixture(scope="module")
def hub_copy(tmp_path_factory):
    """A local folder laid out like the hub repository (README configs + data/train-*.parquet)."""
    from datasets import Dataset

    root = tmp_path_factory.mktemp("openr1")
    (root / "data").mkdir()
    (root / "README.md").write_text(HUB_README)
    Dataset.from_list(ROWS).to_parquet(str(root / "data" / "train-00000-of-00001.parquet"))
    return root


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return str(tmp_path_factory.mktemp("hf_cache"))  # keep datasets' arrow cache out of the home directory


def test_openr1_first_generation_longer_than_1024_chars(hub_copy, cache):
    rows = load_openr1(str(hub_copy), cache_dir=cache)
    assert [r["id"] for r in rows] == ["uuid-0", "uuid-2", "uuid-4", "train-5"]
    assert rows[0] == {"id": "uuid-0", "question": "problem 0", "answer": "0", "solution": "solution 0",
                       "trace": LONG + "0"}
    assert all(len(r["trace"]) > 1024 for r in rows)


def test_openr1_only_correct_uses_the_first_generations_verdict(hub_copy, cache):
    rows = load_openr1(str(hub_copy), only_correct=True, cache_dir=cache)
    assert [r["question"] for r in rows] == ["problem 0", "problem 4", "problem 5"]


def test_openr1_limit_counts_kept_rows_and_min_chars(hub_copy, cache):
    assert [r["id"] for r in load_openr1(str(hub_copy), limit=2, cache_dir=cache)] == ["uuid-0", "uuid-2"]
    with pytest.raises(DataError, match="limit=0"):
        load_openr1(str(hub_copy), limit=0, cache_dir=cache)
    rows = load_openr1(str(hub_copy), min_chars=0, cache_dir=cache)
    assert [r["trace"] for r in rows][:2] == [LONG + "0", SHORT]


@pytest.mark.parametrize("suffix", ["parquet", "jsonl"])
def test_openr1_single_local_file(tmp_path, cache, suffix):
    from datasets import Dataset

    path = tmp_path / f"openr1.{suffix}"
    ds = Dataset.from_list(ROWS)
    ds.to_parquet(str(path)) if suffix == "parquet" else ds.to_json(str(path))
    rows = load_openr1(str(path), cache_dir=cache)
    assert [r["id"] for r in rows] == ["uuid-0", "uuid-2", "uuid-4", "train-5"]


def test_openr1_config_none_reads_the_default_config(hub_copy, cache):
    assert load_openr1(str(hub_copy), cache_dir=cache) == load_openr1(str(hub_copy), config="default",
                                                                      cache_dir=cache)


def test_openr1_unknown_config_fails_loudly(hub_copy, cache):
    with pytest.raises(ValueError):
        load_openr1(str(hub_copy), config="extended", cache_dir=cache)  # no extended/ files here


def test_openr1_wrong_schema_names_the_missing_columns(tmp_path, cache):
    path = tmp_path / "other.jsonl"
    path.write_text(json.dumps({"question": "q", "trace": "t"}) + "\n")
    with pytest.raises(DataError, match="problem"):
        load_openr1(str(path), cache_dir=cache)


# -- the authors' GRPO prompts (their GRPO subset and SFT set: OpenR1 columns, + annotated_generations in the SFT set)
def specr_row(i: int, uuid: str | None = None) -> dict:
    row = openr1_row(i, [LONG + str(i)], [True], uuid)
    return {**row, "solution": f"So the answer is $\\boxed{{{i}}}$.", "annotated_generations": [row["generations"][0]]}


SPECR_ROWS = [specr_row(0), {**specr_row(1), "generations": [SHORT]}, specr_row(2, uuid="uuid-0"), specr_row(3)]


@pytest.fixture(scope="module")
def specr_copy(tmp_path_factory):
    """A local folder in the hub layout of the authors' GRPO subset (config default -> data/train-*)."""
    from datasets import Dataset

    root = tmp_path_factory.mktemp("specr_grpo")
    (root / "data").mkdir()
    (root / "README.md").write_text(HUB_README)
    Dataset.from_list(SPECR_ROWS).to_parquet(str(root / "data" / "train-00000-of-00001.parquet"))
    return root


def test_specr_keeps_every_row_in_order_with_answer_and_solution(specr_copy, cache):
    rows = data.load_specr(str(specr_copy), cache_dir=cache)
    assert [r["id"] for r in rows] == ["uuid-0", "uuid-1", "train-2", "uuid-3"]  # short trace kept; repeated uuid
    assert rows[1] == {"id": "uuid-1", "question": "problem 1", "answer": "1",
                       "solution": "So the answer is $\\boxed{1}$."}


def test_specr_limit_keeps_the_first_rows(specr_copy, cache):
    assert [r["id"] for r in data.load_specr(str(specr_copy), limit=2, cache_dir=cache)] == ["uuid-0", "uuid-1"]
    assert len(data.load_specr(str(specr_copy), limit=99, cache_dir=cache)) == 4
    with pytest.raises(DataError, match="limit=0"):
        data.load_specr(str(specr_copy), limit=0, cache_dir=cache)


def test_specr_without_a_solution_column_names_it(tmp_path, cache):
    path = _jsonl(tmp_path / "x.jsonl", [{"problem": "p", "answer": "1", "uuid": "u"}])
    with pytest.raises(DataError, match=r"missing columns \['solution'\].*OpenR1_Math_SpecR_GRPO"):
        data.load_specr(path, cache_dir=cache)


def test_specr_default_source_is_the_authors_grpo_subset(cache):
    assert data.SPECR_GRPO_ID == "akhauriyash/OpenR1_Math_SpecR_GRPO"
    with pytest.raises(DataError, match="akhauriyash/OpenR1_Math_SpecR_GRPO"):  # offline: names the hub id
        data.load_specr(cache_dir=cache)


def test_load_toy_reads_notebook_00_files(tmp_path):
    problems = generate(5, seed=3)
    runs.write_jsonl(tmp_path / "data" / "test.jsonl", [p.to_json() for p in problems])
    rows = load_toy(tmp_path / "data", split="test")
    assert rows == [p.to_json() for p in problems]
    assert rows == load_toy(tmp_path / "data" / "test.jsonl")
    assert load_toy(tmp_path / "data", "test", limit=2) == rows[:2]
    assert set(rows[0]) >= {"id", "question", "answer", "trace", "hard_spans"}


def test_load_toy_missing_file_names_notebook_00(tmp_path):
    with pytest.raises(MissingInputError, match="00_models"):
        load_toy(tmp_path / "data")


# -- evaluation benchmarks --------------------------------------------------------------------------------------
AIME_ROWS = [  # simplescaling/aime24_nofigures: id, problem, solution, answer, url
    {"id": 60, "problem": "Find $x$ if $x+1=205$.", "solution": "So $x=\\boxed{204}$.", "answer": "204",
     "url": "https://artofproblemsolving.com/wiki/index.php/2024_AIME_I_Problems/Problem_1"},
    {"id": 61, "problem": "Compute $m+n$.", "solution": "Thus $\\boxed{113}$.", "answer": "113",
     "url": "https://artofproblemsolving.com/wiki/index.php/2024_AIME_I_Problems/Problem_10"},
]
MATH500_ROWS = [  # HuggingFaceH4/MATH-500: problem, solution, answer, subject, level, unique_id
    {"problem": "What is $1/2+0$?", "solution": "$\\boxed{\\frac12}$", "answer": "\\frac{1}{2}",
     "subject": "Algebra", "level": 1, "unique_id": "test/algebra/1.json"},
    {"problem": "Evaluate $2^3$.", "solution": "$\\boxed{8}$", "answer": "8", "subject": "Prealgebra", "level": 2,
     "unique_id": "test/prealgebra/7.json"},
]


def _jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _parquet(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_parquet(path)
    return path


def test_aime24_simplescaling_schema_from_a_jsonl_directory(tmp_path, cache):
    root = tmp_path / "aime24_nofigures"
    _jsonl(root / "aime24_nofigures.jsonl", AIME_ROWS)
    rows = data.load_aime24(root, cache_dir=cache)
    assert rows == [
        {"id": "60", "question": AIME_ROWS[0]["problem"], "answer": "204"},
        {"id": "61", "question": AIME_ROWS[1]["problem"], "answer": "113"},
    ]


def test_aime24_h4_schema_from_a_parquet_hub_layout(tmp_path, cache):
    rows_in = [{**r, "year": "2024"} for r in AIME_ROWS]  # HuggingFaceH4/aime_2024 adds a year column
    root = tmp_path / "aime_2024"
    _parquet(root / "data" / "train-00000-of-00001.parquet", rows_in)
    rows = data.load_aime24(root, split="train", cache_dir=cache)
    assert [r["id"] for r in rows] == ["60", "61"]
    assert [r["answer"] for r in rows] == ["204", "113"]  # the answer column, never the worked solution


def test_math500_schema_keeps_unique_id_subject_and_level(tmp_path, cache):
    root = tmp_path / "MATH-500"
    _parquet(root / "data" / "test-00000-of-00001.parquet", MATH500_ROWS)
    rows = data.load_math500(root, cache_dir=cache)
    assert rows[0] == {"id": "test/algebra/1.json", "question": "What is $1/2+0$?", "answer": "\\frac{1}{2}",
                       "subject": "Algebra", "level": 1}
    assert rows[1]["id"] == "test/prealgebra/7.json"


def test_a_single_file_loads_as_the_requested_split(tmp_path, cache):
    path = _parquet(tmp_path / "math500.parquet", MATH500_ROWS)
    assert len(data.load_math500(path, split="test", cache_dir=cache)) == 2
    path = _jsonl(tmp_path / "aime.jsonl", AIME_ROWS)
    assert len(data.load_aime24(path, cache_dir=cache)) == 2


def test_toy_test_file_round_trips_problem_rows(tmp_path, cache):
    problems = generate(4, seed=3, prefix="test")
    path = _jsonl(tmp_path / "run" / "data" / "test.jsonl", [p.to_json() for p in problems])
    rows = data.load_benchmark("toy", path, cache_dir=cache)
    assert rows == [{"id": p.id, "question": p.question, "answer": p.answer} for p in problems]


def test_registry_dispatches_and_limit_truncates(tmp_path, cache):
    path = _jsonl(tmp_path / "test.jsonl", [p.to_json() for p in generate(5, seed=1)])
    assert len(data.load_benchmark("toy", path, limit=2, cache_dir=cache)) == 2
    with pytest.raises(UnknownNameError, match="aime24, math500, toy"):
        data.load_benchmark("gsm8k", "x")


def test_missing_local_path_is_a_clear_error(tmp_path, cache):
    with pytest.raises(DataError, match="no_such_dir"):
        data.load_aime24(tmp_path / "no_such_dir", cache_dir=cache)


def test_hub_id_offline_is_a_clear_error(cache):
    with pytest.raises(DataError, match="HF_DATASETS_OFFLINE"):
        data.load_math500("nobody-here/no-such-dataset", cache_dir=cache)
    with pytest.raises(DataError, match="HuggingFaceH4/MATH-500"):  # source None: the paper's hub data set
        data.load_benchmark("math500", None, cache_dir=cache)


def test_missing_toy_file_names_the_notebook_that_makes_it(tmp_path):
    with pytest.raises(MissingInputError, match="00_models"):
        data.load_benchmark("toy", tmp_path / "data" / "test.jsonl")
    with pytest.raises(DataError, match="data/test.jsonl"):
        data.load_benchmark("toy", None)


def test_wrong_schema_names_the_missing_column(tmp_path, cache):
    path = _jsonl(tmp_path / "x.jsonl", [{"id": 1, "question": "q", "answer": "1"}])  # toy schema, not AIME
    with pytest.raises(DataError, match="'problem'"):
        data.load_aime24(path, cache_dir=cache)


def test_unknown_split_and_file_type_are_clear_errors(tmp_path, cache):
    root = tmp_path / "MATH-500"
    _parquet(root / "data" / "test-00000-of-00001.parquet", MATH500_ROWS)
    with pytest.raises(DataError, match="split 'train'"):
        data.load_math500(root, split="train", cache_dir=cache)
    txt = tmp_path / "aime.txt"
    txt.write_text("not a table")
    with pytest.raises(DataError, match="unknown file type"):
        data.load_aime24(txt, cache_dir=cache)


def test_duplicate_ids_are_rejected(tmp_path, cache):
    path = _jsonl(tmp_path / "dup.jsonl", [AIME_ROWS[0], AIME_ROWS[0]])
    with pytest.raises(DataError, match="duplicate problem ids"):
        data.load_aime24(path, cache_dir=cache)


@pytest.mark.parametrize("bad_line, why", [("this is garbage", "Expecting value"), ("[1, 2]", "a list, not an object")])
def test_a_bad_line_in_a_local_jsonl_is_named_by_file_and_line(tmp_path, cache, bad_line, why):
    path = tmp_path / "test.jsonl"
    good = json.dumps({"id": "a", "question": "1+1?", "answer": "2"})
    path.write_text(f"{good}\n{good}\n{bad_line}\n{good}\n")
    with pytest.raises(DataError, match=rf"{path}: line 3 is not a JSON object \({why}\)"):
        data.load_benchmark("toy", path, cache_dir=cache)
