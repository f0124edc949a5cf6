"""Data loaders: training traces and evaluation benchmarks, as lists of row dicts.

Every loader takes ``source``: a hub id, a local directory, or one local data file (parquet, JSON lines, JSON,
CSV) in the same schema, and reads it through ``datasets.load_dataset`` (``load_table``), so the paper profile
names the hub datasets while tests and offline machines point at local copies. ``limit`` keeps the first rows.
Failures raise ``DataError`` naming the source, what was expected and the fix; a missing toy file is a
``runs.MissingInputError`` naming notebook 00.

Training traces, rows ``{"id", "question", "answer", "trace"}`` (the input of ``splitlib.annotate.annotate_all``):

- ``load_toy``: the toy world written by notebook 00 (``outputs/<run>/data/{train,test}.jsonl``; rows also carry
  ``hard_spans``);
- ``load_openr1``: OpenR1-Math-220k (PAPER_FACTS §4); rows also carry the worked ``solution``.

GRPO prompts, rows ``{"id", "question", "answer", "solution"}``:

- ``load_specr``: the authors' GRPO subset ``akhauriyash/OpenR1_Math_SpecR_GRPO`` (5,000 rows; the paper's run) or
  their annotated SFT set ``akhauriyash/OpenR1_Math_SpeculativeReasoning`` (the later "Mini" run), every row.

Evaluation benchmarks, rows ``{"id", "question", "answer"}`` plus a few named extras (``load_benchmark`` picks one
from ``BENCHMARKS`` by name). Field names per source, checked against the dataset cards:

| source | question | answer | id | split |
|---|---|---|---|---|
| ``simplescaling/aime24_nofigures`` (the paper's, §7) | ``problem`` | ``answer`` | ``id`` (60–89) | train |
| ``HuggingFaceH4/aime_2024`` | ``problem`` | ``answer`` | ``id`` | train |
| ``HuggingFaceH4/MATH-500`` | ``problem`` | ``answer`` | ``unique_id`` | test |
| toy ``outputs/<run>/data/test.jsonl`` (``Problem.to_json()``) | ``question`` | ``answer`` | ``id`` | — |

Benchmarks grade against the short ``answer`` column. Training rows carry both ``answer`` and ``solution``; which one
is the gold of GRPO's accuracy reward is the gold rule (``splitlib.grading.GOLD_RULES``, ``gold_text``). Ids
become strings.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from splitlib import runs
from splitlib.registry import Registry
from splitlib.toy.world import Problem

if TYPE_CHECKING:
    import datasets

log = logging.getLogger(__name__)

OPENR1_ID = "open-r1/OpenR1-Math-220k"
OPENR1_COLUMNS = ("problem", "answer", "solution", "generations", "correctness_math_verify", "uuid")
# The authors' data sets (PAPER_FACTS §1, §10): the GRPO subset their paper's run read (recipe at commit 77fcaa9:
# 14 generations, 2,048 tokens), and the annotated SFT set that their later recipe (HEAD: 21 generations, 4,096
# tokens, hub model "..._Mini") reads instead. Both have the OpenR1 columns; GRPO reads ``problem`` and ``solution``.
SPECR_GRPO_ID = "akhauriyash/OpenR1_Math_SpecR_GRPO"
SPECR_SFT_ID = "akhauriyash/OpenR1_Math_SpeculativeReasoning"
SPECR_COLUMNS = ("problem", "answer", "solution", "uuid")
AIME24_SOURCES: tuple[str, ...] = ("simplescaling/aime24_nofigures", "HuggingFaceH4/aime_2024")
MATH500_ID = "HuggingFaceH4/MATH-500"
_BUILDER_BY_SUFFIX = {".jsonl": "json", ".json": "json", ".parquet": "parquet", ".csv": "csv"}
_TOY_MADE_BY = "notebooks/00_models.ipynb"


class DataError(ValueError):
    """A data set could not be loaded or does not have the expected shape; the message says how to fix it."""


# -- loading ----------------------------------------------------------------------------------------------------
def load_table(source: str | Path, split: str, *, config: str | None = None,
               cache_dir: str | Path | None = None) -> datasets.Dataset:
    """``datasets.load_dataset`` on a hub id, a local directory, or a single local file (which becomes ``split``;
    ``config`` is then ignored)."""
    import datasets  # imported here: slow to import, and only loaders need it

    target = Path(source)
    args: tuple[str | None, ...] = (str(source), config)
    kwargs: dict[str, Any] = {"split": split, "cache_dir": str(cache_dir) if cache_dir else None}
    if target.is_file():
        builder = _BUILDER_BY_SUFFIX.get(target.suffix.lower())
        if builder is None:
            raise DataError(f"{target}: unknown file type {target.suffix!r}; expected one of "
                            f"{', '.join(_BUILDER_BY_SUFFIX)} (or a directory, or a hub id)")
        args, kwargs["data_files"] = (builder,), {split: str(target)}
    try:
        return datasets.load_dataset(*args, **kwargs)
    except (FileNotFoundError, ConnectionError) as err:  # datasets' "not found" and "offline/unreachable" errors
        raise DataError(
            f"cannot load {str(source)!r} (split {split!r}): {err}. Pass a local directory or file in the "
            "source's schema, or a hub id on a machine that can reach the hub (HF_DATASETS_OFFLINE unset)."
        ) from err
    except ValueError as err:  # e.g. an unknown split or config name
        raise DataError(f"cannot load split {split!r} of {str(source)!r}: {err}") from err
    except datasets.exceptions.DatasetGenerationError as err:  # a local file it could not parse: say where
        bad = _first_bad_json_line(target) if target.is_file() and kwargs.get("data_files") and \
            target.suffix.lower() in (".jsonl", ".json") else None
        where = f"line {bad[0]} is not a JSON object ({bad[1]}); fix or remove that line" if bad else str(err.__cause__ or err)
        raise DataError(f"cannot read {target}: {where}") from err


def _first_bad_json_line(path: Path) -> tuple[int, str] | None:
    """The first line of a JSON-lines file that is not a JSON object: (line number, why), or None."""
    with path.open(encoding="utf-8", errors="replace") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                value = json.loads(line)
            except json.JSONDecodeError as err:
                return n, err.msg
            if not isinstance(value, dict):
                return n, f"a {type(value).__name__}, not an object"
    return None


def _check_limit(limit: int | None) -> None:
    if limit is not None and limit < 1:
        raise DataError(f"limit={limit}: expected a positive number of rows, or None for all")


# -- training traces --------------------------------------------------------------------------------------------
def load_toy(source: str | Path, split: str = "train", *, limit: int | None = None) -> list[dict[str, Any]]:
    """Toy rows from ``{split}.jsonl`` in ``source``, the run's data folder ``outputs/<run>/data`` (or that JSONL
    file itself): ``Problem.to_json()`` rows, in file order."""
    _check_limit(limit)
    p = Path(source)
    file = p / f"{split}.jsonl" if p.is_dir() or not p.suffix else p
    runs.require(file, made_by=_TOY_MADE_BY)
    rows = []
    for n, raw in enumerate(runs.iter_jsonl(file), 1):
        if limit is not None and len(rows) >= limit:
            break
        try:
            problem = Problem.from_json(raw)
        except KeyError as err:
            raise DataError(f"{file}: row {n} lacks {err}; expected rows written by Problem.to_json() "
                            f"(rerun {_TOY_MADE_BY})") from None
        rows.append(problem.to_json())
    return rows


def load_openr1(source: str | Path = OPENR1_ID, split: str = "train", *, limit: int | None = None,
                config: str | None = None, only_correct: bool = False, min_chars: int = 1024,
                cache_dir: str | Path | None = None) -> list[dict[str, Any]]:
    """The first generation of each problem as a trace, in dataset order.

    Kept when the trace is longer than ``min_chars`` characters (paper: > 1,024) and, with ``only_correct``,
    when math-verify judged that generation correct (the paper did not filter; PAPER_FACTS §4). ``limit``: stop
    after that many kept rows. ``config``: the hub config (None: the data set's default one). Ids are the data
    set's ``uuid`` (``{split}-{index}`` when missing or repeated).
    """
    _check_limit(limit)
    ds = load_table(source, split, config=config, cache_dir=cache_dir)
    missing = [c for c in ("problem", "answer", "generations") if c not in ds.column_names]
    if missing or (only_correct and "correctness_math_verify" not in ds.column_names):
        raise DataError(f"{source}: not the OpenR1-Math-220k schema; missing columns "
                        f"{missing or ['correctness_math_verify']} (has {ds.column_names}); pass a copy of "
                        f"{OPENR1_ID} or a file with its columns")
    ds = ds.select_columns([c for c in OPENR1_COLUMNS if c in ds.column_names])
    rows: list[dict[str, Any]] = []
    seen: set[str] = set()
    for index, item in enumerate(ds):
        row = _openr1_row(item, index, split, only_correct, min_chars, seen)
        if row is not None:
            rows.append(row)
            seen.add(row["id"])
            if limit is not None and len(rows) >= limit:
                break
    log.info("OpenR1: %d traces kept from %s/%s (min_chars=%d, only_correct=%s)", len(rows), source, split,
             min_chars, only_correct)
    return rows


def _openr1_row(item: dict, index: int, split: str, only_correct: bool, min_chars: int,
                seen: set[str]) -> dict[str, Any] | None:
    generations = item.get("generations") or []
    if not generations or not isinstance(generations[0], str):
        return None
    trace = generations[0]
    if len(trace) <= min_chars:
        return None
    if only_correct:
        verdicts = item.get("correctness_math_verify") or []
        if not verdicts or verdicts[0] is not True:
            return None
    return {"id": _row_id(item, index, split, seen), "question": item["problem"], "answer": item["answer"],
            "solution": item.get("solution"), "trace": trace}


def _row_id(item: dict, index: int, split: str, seen: set[str]) -> str:
    """The data set's ``uuid``, or ``{split}-{index}`` when it is missing or already taken."""
    uid = item.get("uuid")
    return uid if uid and uid not in seen else f"{split}-{index}"


# -- GRPO prompts -----------------------------------------------------------------------------------------------
def load_specr(source: str | Path = SPECR_GRPO_ID, split: str = "train", *, limit: int | None = None,
               config: str | None = None, cache_dir: str | Path | None = None) -> list[dict[str, Any]]:
    """The authors' GRPO prompts, ``{"id", "question", "answer", "solution"}`` per row, in dataset order.

    ``source``: their GRPO subset (``SPECR_GRPO_ID``, the default) or SFT set (``SPECR_SFT_ID``), a local copy of
    either. Every row is kept, as their ``grpo.py`` keeps every row of the split: no length or correctness filter;
    ``limit`` keeps the first rows. ``question`` is ``problem`` (their ``dataset_prompt_column``); ``solution`` is
    the worked solution their accuracy reward parses as the gold (gold rule ``solution``), ``answer`` the short
    answer (gold rule ``answer``). Ids are the data set's ``uuid`` (``{split}-{index}`` when missing or repeated).
    """
    _check_limit(limit)
    ds = load_table(source, split, config=config, cache_dir=cache_dir)
    missing = [c for c in SPECR_COLUMNS[:3] if c not in ds.column_names]
    if missing:
        raise DataError(f"{source}: not the schema of the authors' GRPO/SFT sets; missing columns {missing} (has "
                        f"{ds.column_names}); pass a copy of {SPECR_GRPO_ID} or {SPECR_SFT_ID}, or a file with "
                        "columns problem, answer, solution")
    ds = ds.select_columns([c for c in SPECR_COLUMNS if c in ds.column_names])
    n = len(ds) if limit is None else min(limit, len(ds))
    rows: list[dict[str, Any]] = []
    seen: set[str] = set()
    for index, item in enumerate(ds.select(range(n))):
        row_id = _row_id(item, index, split, seen)
        seen.add(row_id)
        rows.append({"id": row_id, "question": item["problem"], "answer": item["answer"],
                     "solution": item["solution"]})
    log.info("SpecR: %d GRPO prompts from %s/%s", len(rows), source, split)
    return rows


# -- evaluation benchmarks --------------------------------------------------------------------------------------
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


def to_rows(table: datasets.Dataset, schema: Schema, source: str, limit: int | None = None) -> list[dict]:
    """Map a table to ``{"id", "question", "answer", *extras}`` rows; checks columns and id uniqueness."""
    missing = [c for c in schema.required if c not in table.column_names]
    if missing:
        raise DataError(f"{source}: missing columns {missing} (has {table.column_names}); expected a table with "
                        f"question column {schema.question!r}, answer {schema.answer!r}, id {schema.id!r}")
    n = len(table) if limit is None else min(limit, len(table))
    rows = [_benchmark_row(table[i], i, schema) for i in range(n)]
    duplicates = sorted(i for i, n in Counter(r["id"] for r in rows).items() if n > 1)
    if duplicates:
        raise DataError(f"{source}: duplicate problem ids {duplicates[:5]}; ids key resumable evaluation records, "
                        "so make them unique")
    log.info("loaded %d problems from %s", len(rows), source)
    return rows


def _benchmark_row(record: dict, index: int, schema: Schema) -> dict:
    row = {
        "id": str(index if schema.id is None else record[schema.id]),
        "question": str(record[schema.question]),
        "answer": str(record[schema.answer]).strip(),
    }
    row.update({k: record[k] for k in schema.extras if k in record})
    return row


def load_aime24(source: str | Path = AIME24_SOURCES[0], split: str = "train", *, limit: int | None = None,
                cache_dir: str | Path | None = None) -> list[dict]:
    """AIME 2024 (30 problems). Both hub sources share a schema; a local copy of either loads the same way."""
    _check_limit(limit)
    return to_rows(load_table(source, split, cache_dir=cache_dir), AIME_SCHEMA, str(source), limit)


def load_math500(source: str | Path = MATH500_ID, split: str = "test", *, limit: int | None = None,
                 cache_dir: str | Path | None = None) -> list[dict]:
    """MATH-500; rows keep ``subject`` and ``level`` for per-subject breakdowns."""
    _check_limit(limit)
    return to_rows(load_table(source, split, cache_dir=cache_dir), MATH500_SCHEMA, str(source), limit)


def _load_toy_test(source: str | Path | None = None, *, limit: int | None = None,
                   cache_dir: str | Path | None = None) -> list[dict]:
    """The toy world's held-out problems from the file ``source`` (``outputs/<run>/data/test.jsonl``)."""
    if source is None:
        raise DataError(f"benchmark 'toy' needs source: the run's test file, outputs/<run>/data/test.jsonl "
                        f"(written by {_TOY_MADE_BY})")
    _check_limit(limit)
    p = runs.require(source, made_by=_TOY_MADE_BY)
    return to_rows(load_table(p, "test", cache_dir=cache_dir), TOY_SCHEMA, str(p), limit)


BENCHMARKS: Registry[Callable[..., list[dict]]] = Registry(
    "benchmark", {"aime24": load_aime24, "math500": load_math500, "toy": _load_toy_test}
)


def load_benchmark(name: str, source: str | Path | None, *, limit: int | None = None,
                   cache_dir: str | Path | None = None) -> list[dict]:
    """The benchmark registered under ``name`` (``BENCHMARKS``), read from ``source``.

    ``source``: toy: the test file, e.g. ``outputs/<run>/data/test.jsonl``; aime24 / math500: a hub id or a local
    copy, None for the paper's hub data set (``AIME24_SOURCES[0]``, ``MATH500_ID``).
    """
    loader = BENCHMARKS[name]
    args = () if source is None else (source,)
    return loader(*args, limit=limit, cache_dir=cache_dir)
