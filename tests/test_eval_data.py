"""Benchmark loaders on small local fixtures in each source's schema (hub offline: see conftest)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from splitlib import eval_data
from splitlib.eval_data import EvalDataError
from splitlib.toy.world import generate

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


@pytest.fixture
def cache(tmp_path: Path) -> Path:
    return tmp_path / "hf_cache"  # keep datasets' arrow cache out of the home directory


def test_aime24_simplescaling_schema_from_a_jsonl_directory(tmp_path, cache):
    root = tmp_path / "aime24_nofigures"
    _jsonl(root / "aime24_nofigures.jsonl", AIME_ROWS)
    rows = eval_data.load_aime24(root, cache_dir=cache)
    assert rows == [
        {"id": "60", "question": AIME_ROWS[0]["problem"], "answer": "204"},
        {"id": "61", "question": AIME_ROWS[1]["problem"], "answer": "113"},
    ]


def test_aime24_h4_schema_from_a_parquet_hub_layout(tmp_path, cache):
    rows_in = [{**r, "year": "2024"} for r in AIME_ROWS]  # HuggingFaceH4/aime_2024 adds a year column
    root = tmp_path / "aime_2024"
    _parquet(root / "data" / "train-00000-of-00001.parquet", rows_in)
    rows = eval_data.load_aime24(root, split="train", cache_dir=cache)
    assert [r["id"] for r in rows] == ["60", "61"]
    assert [r["answer"] for r in rows] == ["204", "113"]  # the answer column, never the worked solution


def test_math500_schema_keeps_unique_id_subject_and_level(tmp_path, cache):
    root = tmp_path / "MATH-500"
    _parquet(root / "data" / "test-00000-of-00001.parquet", MATH500_ROWS)
    rows = eval_data.load_math500(root, cache_dir=cache)
    assert rows[0] == {"id": "test/algebra/1.json", "question": "What is $1/2+0$?", "answer": "\\frac{1}{2}",
                       "subject": "Algebra", "level": 1}
    assert rows[1]["id"] == "test/prealgebra/7.json"


def test_a_single_file_loads_as_the_requested_split(tmp_path, cache):
    path = _parquet(tmp_path / "math500.parquet", MATH500_ROWS)
    assert len(eval_data.load_math500(path, split="test", cache_dir=cache)) == 2
    path = _jsonl(tmp_path / "aime.jsonl", AIME_ROWS)
    assert len(eval_data.load_aime24(path, cache_dir=cache)) == 2


def test_toy_test_file_round_trips_problem_rows(tmp_path, cache):
    problems = generate(4, seed=3, prefix="test")
    path = _jsonl(tmp_path / "run" / "data" / "test.jsonl", [p.to_json() for p in problems])
    rows = eval_data.load_toy_test(path, cache_dir=cache)
    assert rows == [{"id": p.id, "question": p.question, "answer": p.answer} for p in problems]


def test_registry_dispatches_and_limit_truncates(tmp_path, cache):
    path = _jsonl(tmp_path / "test.jsonl", [p.to_json() for p in generate(5, seed=1)])
    assert len(eval_data.load_benchmark("toy", path=path, limit=2, cache_dir=cache)) == 2
    with pytest.raises(EvalDataError, match="aime24, math500, toy"):
        eval_data.load_benchmark("gsm8k")


def test_missing_local_path_is_a_clear_error(tmp_path, cache):
    with pytest.raises(EvalDataError, match="no_such_dir"):
        eval_data.load_aime24(tmp_path / "no_such_dir", cache_dir=cache)


def test_hub_id_offline_is_a_clear_error(cache):
    with pytest.raises(EvalDataError, match="HF_DATASETS_OFFLINE"):
        eval_data.load_math500("nobody-here/no-such-dataset", cache_dir=cache)


def test_missing_toy_file_names_the_notebook_that_makes_it(tmp_path):
    with pytest.raises(EvalDataError, match="00_models"):
        eval_data.load_toy_test(tmp_path / "data" / "test.jsonl")


def test_wrong_schema_names_the_missing_column(tmp_path, cache):
    path = _jsonl(tmp_path / "x.jsonl", [{"id": 1, "question": "q", "answer": "1"}])  # toy schema, not AIME
    with pytest.raises(EvalDataError, match="'problem'"):
        eval_data.load_aime24(path, cache_dir=cache)


def test_unknown_split_and_file_type_are_clear_errors(tmp_path, cache):
    root = tmp_path / "MATH-500"
    _parquet(root / "data" / "test-00000-of-00001.parquet", MATH500_ROWS)
    with pytest.raises(EvalDataError, match="split 'train'"):
        eval_data.load_math500(root, split="train", cache_dir=cache)
    txt = tmp_path / "aime.txt"
    txt.write_text("not a table")
    with pytest.raises(EvalDataError, match="unknown file type"):
        eval_data.load_aime24(txt, cache_dir=cache)


def test_duplicate_ids_are_rejected(tmp_path, cache):
    path = _jsonl(tmp_path / "dup.jsonl", [AIME_ROWS[0], AIME_ROWS[0]])
    with pytest.raises(EvalDataError, match="duplicate problem ids"):
        eval_data.load_aime24(path, cache_dir=cache)
