"""Samples-file records: reading them (one row per key), what determined each row (its provenance), and moving rows
that no longer match out of the way.

- ``read_samples(path)``: the rows of a samples file, one per (method, problem_id, sample): the last written wins,
  and a warning says how many duplicates were dropped (two writers, or a copy appended twice).
- ``method_parts`` / ``row_parts``: a row's provenance — the models' hashes, backend kinds, decode settings (from
  the decoder's ``provenance(route)`` when it has one; otherwise the model references the runner knows), policy,
  sampling settings and seed, prompt template id, grader version and the problem's text and answer.
  ``provenance.key(parts)`` of it is the row's ``provenance_key``: a row is reused only under the same key.
- ``stale_summary``: what changed, grouped, for the log; ``move_out``: stale rows go to ``<name>.stale.jsonl``
  beside the samples file, which is rewritten atomically without them (nothing is lost).
- ``method_provenance(rows)``: per method, the parts its rows share (seed and problem left out) and their key, for
  ``metrics.json``.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from splitlib import grading, prompts, provenance, runs
from splitlib.evaluate.methods import KEY, Method
from splitlib.evaluate.protocols import EvalProtocol

log = logging.getLogger(__name__)

PER_ROW = ("problem",)  # parts that differ from row to row (besides the seed in ``sampling``)


def row_key(row: Mapping[str, Any]) -> tuple:
    return tuple(row[k] for k in KEY)


def deduplicate(rows: Sequence[dict], source: str | Path = "rows") -> tuple[list[dict], list[dict]]:
    """``(kept, superseded)``: one row per key (the last written, in the place of the key's first row), and the
    earlier rows it replaced. Warns when there were any."""
    kept: dict[tuple, dict] = {}
    superseded = []
    for row in rows:
        k = row_key(row)
        if k in kept:
            superseded.append(kept[k])
        kept[k] = row
    if superseded:
        log.warning("%s: %d duplicate rows (same method, problem_id, sample) ignored; the last written of each is "
                    "kept", source, len(superseded))
    return list(kept.values()), superseded


def read_samples(path: str | Path) -> list[dict]:
    """The rows of a samples file ([] if absent), one per (method, problem_id, sample): the last written wins."""
    return deduplicate(runs.read_jsonl(path), path)[0]


def method_parts(method: Method, protocol: EvalProtocol, decode_fn: Any) -> dict[str, Any]:
    """The provenance parts every row of ``method`` shares under ``protocol`` (the seed and problem come later).
    ``prompt``: the id of the prompt style the decoder renders (one that names none renders the project's)."""
    ask = getattr(decode_fn, "provenance", None)
    decoder = ask(method) if callable(ask) else {"model": {"small": method.small, "big": method.big}}
    return {"policy": method.policy, "policy_params": method.policy_params, "prompt": prompts.TEMPLATE_ID, **decoder,
            "sampling": {"temperature": protocol.temperature, "top_p": protocol.top_p,
                         "max_new_tokens": protocol.max_new_tokens},
            "grader": grading.GRADER_VERSION}


def row_parts(shared: Mapping[str, Any], problem: Mapping[str, Any], seed: int) -> dict[str, Any]:
    """One row's provenance: the method's shared parts, the row's seed and the problem's text and answer."""
    return {**shared, "sampling": {**shared["sampling"], "seed": seed},
            "problem": provenance.value_hash({"question": problem["question"], "answer": problem["answer"]})}


def flat_changes(old: Mapping[str, Any] | None, new: Mapping[str, Any]) -> dict[str, tuple[Any, Any]]:
    """``provenance.changed`` with dict-valued parts opened one level: ``decode.big_chunk_tokens: 8 -> 4``."""
    out = {}
    for name, (a, b) in provenance.changed(old, new).items():
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            out.update({f"{name}.{sub}": d for sub, d in provenance.changed(a, b).items()})
        else:
            out[name] = (a, b)
    return out


def stale_summary(stale: Sequence[tuple[dict, dict]]) -> str:
    """``(row, parts now)`` pairs as one line: how many rows changed in which parts, with one example each."""
    groups: dict[tuple[str, ...], list] = {}
    for row, parts in stale:
        if row.get("provenance") is None:
            groups.setdefault(("(no provenance: written before rows were keyed)",), []).append(None)
            continue
        diff = flat_changes(row["provenance"], parts)
        groups.setdefault(tuple(diff), []).append(diff)
    lines = []
    for names, diffs in groups.items():
        described = list(dict.fromkeys(provenance.describe_changes(d) if d is not None else names[0] for d in diffs))
        more = " (e.g.; values differ by row)" if len(described) > 1 else ""
        lines.append(f"{len(diffs)} rows: {described[0]}{more}")
    return "; ".join(lines)


def stale_path(path: str | Path) -> Path:
    """``samples.jsonl`` -> ``samples.stale.jsonl``."""
    p = Path(path)
    return p.with_name(f"{p.stem}.stale{p.suffix}")


def move_out(path: str | Path, kept: Sequence[dict], moved: Sequence[dict]) -> Path:
    """Append ``moved`` to the stale file, then rewrite ``path`` atomically with ``kept`` only. A crash in between
    leaves the rows in both files (moved again next time); never in neither."""
    target = stale_path(path)
    runs.append_jsonl(target, moved)
    runs.write_jsonl(path, kept)
    return target


def method_provenance(rows: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per method: ``{"parts", "key", "rows"}`` of what its rows share (per-row seed and problem left out); a
    method whose rows disagree gets ``"variants"`` (each with its rows' count) instead and a warning."""
    seen: dict[str, Counter] = {}
    parts_of: dict[str, Any] = {}
    for row in rows:
        parts = _shared(row.get("provenance"))
        k = provenance.key(parts) if parts is not None else None
        seen.setdefault(row["method"], Counter())[k] += 1
        parts_of[k] = parts
    out = {}
    for method, counts in seen.items():
        if len(counts) == 1:
            ((k, n),) = counts.items()
            out[method] = {"parts": parts_of[k], "key": k, "rows": n}
        else:
            log.warning("method %s: its rows were made under %d different provenance keys", method, len(counts))
            out[method] = {"variants": [{"parts": parts_of[k], "key": k, "rows": n} for k, n in counts.items()]}
    return out


def _shared(parts: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if parts is None:
        return None
    shared = {k: v for k, v in parts.items() if k not in PER_ROW}
    if isinstance(shared.get("sampling"), Mapping):
        shared["sampling"] = {k: v for k, v in shared["sampling"].items() if k != "seed"}
    return shared
