"""Evaluation benchmarks as rows ``{"id", "question", "answer"}`` (plus a few named extras).

Every loader goes through ``datasets.load_dataset``, so the argument is a hub id *or* a local directory or file
in the same schema (parquet, JSON lines, JSON, CSV): the paper profile names the hub datasets, tests and offline
machines point at local copies. Field names per source (checked against the dataset cards):

| source | question | answer | id | split |
|---|---|---|---|---|
| ``simplescaling/aime24_nofigures`` (the paper's, §7) | ``problem`` | ``answer`` | ``id`` (60–89) | train |
| ``HuggingFaceH4/aime_2024`` | ``problem`` | ``answer`` | ``id`` | train |
| ``HuggingFaceH4/MATH-500`` | ``problem`` | ``answer`` | ``unique_id`` | test |
| toy ``outputs/<run>/data/test.jsonl`` (``Problem.to_json()``) | ``question`` | ``answer`` | ``id`` | — |

The gold is always the short ``answer`` column, never a worked ``solution``. Ids become strings.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import datasets

log = logging.getLogger(__name__)

AIME24_SOURCES: tuple[str, ...] = ("simplescaling/aime24_nofigures", "HuggingFaceH4/aime_2024")
_BUILDER_BY_SUFFIX = {".jsonl": "json", ".json": "json", ".parquet": "parquet", ".csv": "csv"}


class EvalDataError(ValueError):
    """A benchmark could not be loaded or does not have the expected columns; the message says how to fix it."""


@dataclass(frozen=True)
class Schema:
    """Which columns of a source hold the question, the gold answer and the id; ``extras`` are kept as they are."""

    question: str
    answer: str
    id: str | None  # None: the row index is the id
    extras: tuple[str, ...] = ()

    @property
    def required(self) -> tuple[str, ...]:
        return tuple(c for c in (self.question, self.answer, self.id) if c is not None)


AIME_SCHEMA = Schema(question="problem", answer="answer", id="id")
MATH500_SCHEMA = Schema(question="problem", answer="answer", id="unique_id", extras=("subject", "level"))
TOY_SCHEMA = Schema(question="question", answer="answer", id="id")


# -- loading ----------------------------------------------------------------------------------------------------
def load_table(path_or_id: str | Path, split: str, cache_dir: str | Path | None = None) -> datasets.Dataset:
    """``datasets.load_dataset`` on a hub id, a local directory, or a single local file (which becomes ``split``)."""
    target = Path(path_or_id)
    args: tuple[str, ...] = (str(path_or_id),)
    kwargs: dict[str, Any] = {"split": split, "cache_dir": str(cache_dir) if cache_dir else None}
    if target.is_file():
        builder = _BUILDER_BY_SUFFIX.get(target.suffix.lower())
        if builder is None:
            raise EvalDataError(f"{target}: unknown file type {target.suffix!r}; expected one of "
                                f"{', '.join(_BUILDER_BY_SUFFIX)} (or a directory, or a hub id)")
        args, kwargs["data_files"] = (builder,), {split: str(target)}
    try:
        return datasets.load_dataset(*args, **kwargs)
    except (FileNotFoundError, ConnectionError) as err:  # datasets' "not found" and "offline/unreachable" errors
        raise EvalDataError(
            f"cannot load {str(path_or_id)!r} (split {split!r}): {err}. Pass a local directory or file in the "
            "source's schema, or a hub id on a machine that can reach the hub (HF_DATASETS_OFFLINE unset)."
        ) from err
    except ValueError as err:  # e.g. an unknown split name
        raise EvalDataError(f"cannot load split {split!r} of {str(path_or_id)!r}: {err}") from err


def to_rows(table: datasets.Dataset, schema: Schema, source: str, limit: int | None = None) -> list[dict]:
    """Map a table to ``{"id", "question", "answer", *extras}`` rows; checks columns and id uniqueness."""
    missing = [c for c in schema.required if c not in table.column_names]
    if missing:
        raise EvalDataError(f"{source}: missing columns {missing} (has {table.column_names}); expected a table with "
                            f"question column {schema.question!r}, answer {schema.answer!r}, id {schema.id!r}")
    n = len(table) if limit is None else min(limit, len(table))
    rows = [_row(table[i], i, schema) for i in range(n)]
    duplicates = sorted(i for i, n in Counter(r["id"] for r in rows).items() if n > 1)
    if duplicates:
        raise EvalDataError(f"{source}: duplicate problem ids {duplicates[:5]}; ids key resumable evaluation records")
    log.info("loaded %d problems from %s", len(rows), source)
    return rows


def _row(record: dict, index: int, schema: Schema) -> dict:
    row = {
        "id": str(index if schema.id is None else record[schema.id]),
        "question": str(record[schema.question]),
        "answer": str(record[schema.answer]).strip(),
    }
    row.update({k: record[k] for k in schema.extras if k in record})
    return row


# -- the benchmarks ---------------------------------------------------------------------------------------------
def load_aime24(source: str | Path = AIME24_SOURCES[0], split: str = "train", *, limit: int | None = None,
                cache_dir: str | Path | None = None) -> list[dict]:
    """AIME 2024 (30 problems). Both hub sources share a schema; a local copy of either loads the same way."""
    return to_rows(load_table(source, split, cache_dir), AIME_SCHEMA, str(source), limit)


def load_math500(path_or_id: str | Path = "HuggingFaceH4/MATH-500", split: str = "test", *,
                 limit: int | None = None, cache_dir: str | Path | None = None) -> list[dict]:
    """MATH-500; rows keep ``subject`` and ``level`` for per-subject breakdowns."""
    return to_rows(load_table(path_or_id, split, cache_dir), MATH500_SCHEMA, str(path_or_id), limit)


def load_toy_test(path: str | Path, *, limit: int | None = None, cache_dir: str | Path | None = None) -> list[dict]:
    """The toy world's held-out problems, ``outputs/<run>/data/test.jsonl`` (one ``Problem.to_json()`` a line)."""
    p = Path(path)
    if not p.exists():
        raise EvalDataError(f"missing {p} — run notebooks/00_models.ipynb first (it writes data/test.jsonl)")
    return to_rows(load_table(p, "test", cache_dir), TOY_SCHEMA, str(p), limit)


BENCHMARKS: dict[str, Callable[..., list[dict]]] = {
    "aime24": load_aime24,
    "math500": load_math500,
    "toy": load_toy_test,
}


def load_benchmark(name: str, **kwargs: Any) -> list[dict]:
    """Load a benchmark by registry name; ``kwargs`` go to its loader (source/path, split, limit, cache_dir)."""
    if name not in BENCHMARKS:
        raise EvalDataError(f"benchmark={name!r}: expected one of {', '.join(BENCHMARKS)}")
    return BENCHMARKS[name](**kwargs)
