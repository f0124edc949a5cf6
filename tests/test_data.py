"""Trace loaders: OpenR1-Math-220k through ``datasets.load_dataset`` on local copies in the hub schema (the
hub itself is unreachable from tests), and the toy world files written by notebook 00."""

from __future__ import annotations

import json

import pytest

from splitlib import runs
from splitlib.data import load_openr1, load_toy
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
    return str(tmp_path_factory.mktemp("hf_cache"))


def test_openr1_first_generation_longer_than_1024_chars(hub_copy, cache):
    rows = load_openr1(path_or_id=str(hub_copy), cache_dir=cache)
    assert [r["id"] for r in rows] == ["uuid-0", "uuid-2", "uuid-4", "train-5"]
    assert rows[0] == {"id": "uuid-0", "question": "problem 0", "answer": "0", "trace": LONG + "0"}
    assert all(len(r["trace"]) > 1024 for r in rows)


def test_openr1_only_correct_uses_the_first_generations_verdict(hub_copy, cache):
    rows = load_openr1(path_or_id=str(hub_copy), only_correct=True, cache_dir=cache)
    assert [r["question"] for r in rows] == ["problem 0", "problem 4", "problem 5"]


def test_openr1_n_and_min_chars(hub_copy, cache):
    assert len(load_openr1(path_or_id=str(hub_copy), n=2, cache_dir=cache)) == 2
    rows = load_openr1(path_or_id=str(hub_copy), min_chars=0, cache_dir=cache)
    assert [r["trace"] for r in rows][:2] == [LONG + "0", SHORT]


@pytest.mark.parametrize("suffix", ["parquet", "jsonl"])
def test_openr1_single_local_file(tmp_path, cache, suffix):
    from datasets import Dataset

    path = tmp_path / f"openr1.{suffix}"
    ds = Dataset.from_list(ROWS)
    ds.to_parquet(str(path)) if suffix == "parquet" else ds.to_json(str(path))
    rows = load_openr1(path_or_id=str(path), cache_dir=cache)
    assert [r["id"] for r in rows] == ["uuid-0", "uuid-2", "uuid-4", "train-5"]


def test_openr1_unknown_config_fails_loudly(hub_copy, cache):
    with pytest.raises(ValueError):
        load_openr1(path_or_id=str(hub_copy), config="extended", cache_dir=cache)  # no extended/ files here


def test_openr1_wrong_schema_names_the_missing_columns(tmp_path, cache):
    path = tmp_path / "other.jsonl"
    path.write_text(json.dumps({"question": "q", "trace": "t"}) + "\n")
    with pytest.raises(ValueError, match="problem"):
        load_openr1(path_or_id=str(path), cache_dir=cache)


def test_load_toy_reads_notebook_00_files(tmp_path):
    problems = generate(5, seed=3)
    runs.write_jsonl(tmp_path / "data" / "test.jsonl", [p.to_json() for p in problems])
    rows = load_toy(tmp_path / "data", split="test")
    assert rows == [p.to_json() for p in problems]
    assert rows == load_toy(tmp_path / "data" / "test.jsonl")
    assert set(rows[0]) >= {"id", "question", "answer", "trace", "hard_spans"}


def test_load_toy_missing_file_names_notebook_00(tmp_path):
    with pytest.raises(FileNotFoundError, match="00_models"):
        load_toy(tmp_path / "data")
