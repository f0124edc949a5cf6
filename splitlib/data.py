"""Trace loaders. Every loader returns rows ``{"id", "question", "answer", "trace"}`` (toy rows also carry
``hard_spans``), the input of ``splitlib.annotate.annotate_all``.

- ``load_openr1``: OpenR1-Math-220k (PAPER_FACTS §4) through ``datasets.load_dataset`` — the hub id, a local
  copy of the repository, or one local data file (parquet / jsonl / json) in the same schema.
- ``load_toy``: the toy world written by notebook 00 (``outputs/<run>/data/{train,test}.jsonl``).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from splitlib import runs
from splitlib.toy.world import Problem

log = logging.getLogger(__name__)

OPENR1_ID = "open-r1/OpenR1-Math-220k"
OPENR1_COLUMNS = ("problem", "answer", "generations", "correctness_math_verify", "uuid")
_FILE_BUILDERS = {".parquet": "parquet", ".jsonl": "json", ".json": "json", ".csv": "csv"}


def _load_dataset(path_or_id: str, config: str | None, split: str, cache_dir: str | None):
    import datasets

    local = Path(path_or_id)
    if local.is_file():
        builder = _FILE_BUILDERS.get(local.suffix)
        if builder is None:
            raise ValueError(f"{local}: unknown data file type {local.suffix!r}; "
                             f"expected one of {sorted(_FILE_BUILDERS)}")
        return datasets.load_dataset(builder, data_files={split: str(local)}, split=split, cache_dir=cache_dir)
    return datasets.load_dataset(path_or_id, config, split=split, cache_dir=cache_dir)


def load_openr1(split: str = "train", n: int | None = None, only_correct: bool = False, min_chars: int = 1024,
                path_or_id: str = OPENR1_ID, config: str | None = "default",
                cache_dir: str | None = None) -> list[dict[str, Any]]:
    """The first generation of each problem as a trace, in dataset order.

    Kept when the trace is longer than ``min_chars`` characters (paper: > 1,024) and, with ``only_correct``,
    when math-verify judged that generation correct (the paper did not filter; PAPER_FACTS §4). ``n``: stop after
    that many rows. Ids are the dataset's ``uuid`` (``{split}-{index}`` when missing or repeated).
    """
    if n is not None and n < 1:
        raise ValueError(f"n={n}: expected a positive number of rows or None for all")
    ds = _load_dataset(str(path_or_id), config, split, cache_dir)
    missing = [c for c in ("problem", "answer", "generations") if c not in ds.column_names]
    if missing or (only_correct and "correctness_math_verify" not in ds.column_names):
        raise ValueError(f"{path_or_id}: not the OpenR1-Math-220k schema; missing columns "
                         f"{missing or ['correctness_math_verify']} (has {ds.column_names})")
    ds = ds.select_columns([c for c in OPENR1_COLUMNS if c in ds.column_names])
    rows: list[dict[str, Any]] = []
    seen: set[str] = set()
    for index, item in enumerate(ds):
        row = _openr1_row(item, index, split, only_correct, min_chars, seen)
        if row is not None:
            rows.append(row)
            seen.add(row["id"])
            if n is not None and len(rows) >= n:
                break
    log.info("OpenR1: %d traces kept from %s/%s (min_chars=%d, only_correct=%s)", len(rows), path_or_id, split,
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
    uid = item.get("uuid")
    row_id = uid if uid and uid not in seen else f"{split}-{index}"
    return {"id": row_id, "question": item["problem"], "answer": item["answer"], "trace": trace}


def load_toy(path: str | Path, split: str = "train") -> list[dict[str, Any]]:
    """Toy rows from ``outputs/<run>/data/{split}.jsonl`` (``path`` is that folder, or a JSONL file itself)."""
    p = Path(path)
    file = p / f"{split}.jsonl" if p.is_dir() or not p.suffix else p
    runs.require(file, made_by="notebooks/00_models.ipynb")
    rows = []
    for n, raw in enumerate(runs.iter_jsonl(file), 1):
        try:
            problem = Problem.from_json(raw)
        except KeyError as err:
            raise ValueError(f"{file}: row {n} lacks {err}; expected rows written by Problem.to_json()") from None
        rows.append(problem.to_json())
    return rows
