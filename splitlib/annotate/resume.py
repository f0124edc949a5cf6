"""What a resumed annotation run may reuse: only rows made from the same inputs by the same annotator.

``annotator.json`` records the provenance of every row in an output folder: the annotator's settings
(``describe()``: for ``llm`` the served model name and the prompt template's hash, for ``surprisal`` the small
model's weights and tokenizer hashes) and the tokenizer that counts ``offload_token_fraction``. A resume whose
provenance differs is refused with what changed; rows whose trace text changed since are refused too (resuming
is keyed by id).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from splitlib import provenance, runs
from splitlib.annotate.base import Annotator, Row, tokenizer_hash

ANNOTATED, FAILURES, SETTINGS = "annotated.jsonl", "failures.jsonl", "annotator.json"


def provenance_record(annotator: Annotator, tokenizer: Any = None) -> dict[str, Any]:
    """What determines the rows besides their traces, as JSON reads it back."""
    record = {**annotator.describe(),
              "offload_tokenizer_hash": tokenizer_hash(tokenizer) if tokenizer is not None else None}
    return runs.json_value(record)


def check_provenance(out: Path, record: dict[str, Any]) -> None:
    """Record ``record`` in ``out/annotator.json``, or refuse when the folder's rows were made otherwise."""
    path = out / SETTINGS
    if not path.exists():
        runs.atomic_write_json(path, record)
        return
    diff = provenance.changed(json.loads(path.read_text()), record)
    if diff:
        raise ValueError(f"{out} holds annotations made with other settings or inputs than this run's "
                         f"({provenance.describe_changes(diff)}; recorded in {path}). Rows of different provenance "
                         f"are never mixed: to recompute, use a new run name or delete {out} (or the whole "
                         f"01_annotate/ folder); to resume these rows, restore what changed")


def check_same_traces(out: Path, traces: Sequence[Row]) -> None:
    """Resuming is keyed by id: refuse rows already in ``out`` whose trace differs from today's trace of that id
    (the data was regenerated since), instead of silently keeping annotations of other text."""
    by_id = {r["id"]: r["trace"] for r in traces}
    stale = [r["id"] for r in runs.read_jsonl(out / ANNOTATED) if by_id.get(r["id"], r["trace"]) != r["trace"]]
    if stale:
        raise ValueError(f"{len(stale)} rows in {out / ANNOTATED} annotate other text than the trace of the same id "
                         f"now (e.g. {stale[0]!r}): the data changed since they were written; use a new run name, "
                         f"or delete {out} to start over")


def forget_failures(out: Path, ids: set) -> int:
    """Drop failure rows of ``ids`` (atomically) so they are attempted again; returns how many."""
    rows = runs.read_jsonl(out / FAILURES)
    keep = [r for r in rows if r["id"] not in ids]
    if len(keep) != len(rows):
        runs.write_jsonl(out / FAILURES, keep)
    return len(rows) - len(keep)
