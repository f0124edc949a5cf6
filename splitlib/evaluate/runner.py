"""The resumable runner: methods × problems × samples → one graded row per sample in a JSONL samples file.

``evaluate(...)`` decodes and grades, appending one row per (method, problem, sample) to ``out_path``. It resumes:
rows already in the file are reused when they were made by the same models and settings — each row carries its
``provenance`` (model hashes, backend kinds, decode settings, policy, sampling settings and seed, prompt template
id, grader version, problem; see ``records``) and its ``provenance_key``, and a row is reused only under the key
this call would give it. Other rows are stale: they move to ``<samples>.stale.jsonl`` and are recomputed (regraded
from their generation when only the grader changed), and the log says how many and what changed. Rows are appended
batch by batch (an interrupted run loses at most the batch in flight), and a torn last line from a kill is cut off
(``splitlib.runs``). Grading happens in the calling thread, so math-verify's signal-based timeouts work when that is
the main thread. Per-sample seeds are derived from (run seed, method, problem, sample), so any subset reruns
identically.
"""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from splitlib import grading, provenance, runs
from splitlib.decoder_service import DecodeFn
from splitlib.evaluate.methods import Method
from splitlib.evaluate.protocols import EvalProtocol
from splitlib.evaluate.records import (
    deduplicate,
    method_parts,
    move_out,
    read_samples,
    row_key,
    row_parts,
    stale_path,
    stale_summary,
)
from splitlib.progressbar import progress_bar
from splitlib.seeds import derive_seed
from splitlib.trace import Trace

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Job:
    method: Method
    problem: Mapping[str, Any]
    sample: int
    seed: int
    provenance: Mapping[str, Any]  # what determines this row (row_parts)
    provenance_key: str = field(init=False)  # its hash, computed once

    def __post_init__(self) -> None:
        object.__setattr__(self, "provenance_key", provenance.key(self.provenance))

    @property
    def key(self) -> tuple[str, str, int]:
        return (self.method.name, self.problem["id"], self.sample)


def _as_problem(p: Any) -> dict:
    """A loader row (``{"id", "question", "answer"}``) or an object with those attributes (``toy.world.Problem``)."""
    get = p.get if isinstance(p, Mapping) else lambda k: getattr(p, k, None)
    row = {k: get(k) for k in ("id", "question", "answer")}
    missing = [k for k, v in row.items() if v is None]
    if missing:
        raise ValueError(f"problem {row['id']!r} lacks {missing}; load them with splitlib.data (or evaluate.load_problems)")
    return {"id": str(row["id"]), "question": str(row["question"]), "answer": str(row["answer"])}


def _unique(names: Sequence[str], what: str) -> None:
    dup = sorted(n for n, count in Counter(names).items() if count > 1)
    if dup:
        raise ValueError(f"duplicate {what} {dup}: each must be unique (they key the samples file)")


def _plan(methods: Sequence[Method], problems: Sequence[dict], protocol: EvalProtocol,
          decode_fn: DecodeFn) -> list[_Job]:
    """Every (method, sample, problem) in a fixed order: methods, then runs, then problems. What determines a
    method's rows is asked of the decoder once per method (it hashes each model once)."""
    jobs = []
    for m in methods:
        shared = method_parts(m, protocol, decode_fn)
        for s in range(protocol.samples):
            for p in problems:
                seed = derive_seed(protocol.seed, m.name, p["id"], s)
                jobs.append(_Job(m, p, s, seed, row_parts(shared, p, seed)))
    return jobs


def _set_aside_stale(path: Path, jobs: Sequence[_Job]) -> dict[tuple, dict]:
    """The reusable rows of ``path`` by key. Rows of this call's jobs made under another provenance key, and older
    duplicates of a key, move to the stale file; a stale row whose only change is the grader is regraded from its
    generation (and appended anew), every other stale row is left to be decoded again."""
    kept, superseded = deduplicate(runs.read_jsonl(path), path)
    wanted = {j.key: j for j in jobs}
    stale = {row_key(r): r for r in kept
             if row_key(r) in wanted and r.get("provenance_key") != wanted[row_key(r)].provenance_key}
    if stale:
        log.warning("%s: %d of %d rows were made by other models or settings and are recomputed (moved to %s): %s",
                    path, len(stale), len(jobs), stale_path(path),
                    stale_summary([(r, wanted[k].provenance) for k, r in stale.items()]))
    fresh = [r for r in kept if row_key(r) not in stale]
    if stale or superseded:
        move_out(path, fresh, superseded + list(stale.values()))
    regraded = [_regraded(r, wanted[k]) for k, r in stale.items() if _only_grader_changed(r, wanted[k])]
    if regraded:
        runs.append_jsonl(path, regraded)
    return {row_key(r): r for r in fresh + regraded}


def _only_grader_changed(row: dict, job: _Job) -> bool:
    return row.get("provenance") is not None and set(provenance.changed(row["provenance"], job.provenance)) == {
        "grader"}


def _regraded(row: dict, job: _Job) -> dict:
    """A row whose generation still holds, graded again by the current grader under the job's provenance."""
    return {**regrade([row])[0], "provenance": dict(job.provenance), "provenance_key": job.provenance_key}


def _batches(jobs: Sequence[_Job], batch_size: int) -> Iterator[list[_Job]]:
    """Consecutive jobs of one method, at most ``batch_size`` at a time."""
    batch: list[_Job] = []
    for job in jobs:
        if batch and (len(batch) == batch_size or job.method is not batch[0].method):
            yield batch
            batch = []
        batch.append(job)
    if batch:
        yield batch


def score_sample(job: _Job, trace: Trace, protocol: EvalProtocol, batch_wall_s: float, batch_size: int,
                 decoder: dict | None = None) -> dict:
    """Grade one trace (its generation only, never the prompt) and build its samples-file row, with the job's
    provenance and its key."""
    verdict = grading.grade(trace.text, job.problem["answer"], truncated=trace.truncated)
    return {
        "method": job.method.name, "problem_id": job.problem["id"], "sample": job.sample, "seed": job.seed,
        **job.method.record(), **protocol.record(),
        "answer": job.problem["answer"], "extracted": verdict.extracted, "correct": verdict.correct,
        "reason": verdict.reason, "scorable": verdict.scorable, "grader_version": grading.GRADER_VERSION,
        **trace.summary(), "truncated": verdict.truncated,
        "batch_wall_s": batch_wall_s, "batch_size": batch_size, "decoder": decoder,
        "generation": trace.text, "trace": trace.to_json(),
        "provenance": dict(job.provenance), "provenance_key": job.provenance_key,
    }


def _run_batch(batch: list[_Job], decode_fn: DecodeFn, protocol: EvalProtocol) -> list[dict]:
    method = batch[0].method
    preload = getattr(decode_fn, "preload", None)
    if preload is not None:  # this method's engines, loaded before the clock starts; a service with max_loaded
        preload([method])  # releases there the models of earlier methods that this one does not use
    warm_up = getattr(decode_fn, "warm_up", None)
    if warm_up is not None:  # a path's one-off costs paid, and prefix caches emptied, before the clock starts
        warm_up(method, [j.problem["question"] for j in batch], protocol.sampling, protocol.max_new_tokens)
    start = time.perf_counter()
    traces = decode_fn(method, [j.problem["question"] for j in batch], [j.seed for j in batch], protocol.sampling,
                       protocol.max_new_tokens)
    wall_s = time.perf_counter() - start
    if len(traces) != len(batch):
        raise RuntimeError(f"decode_fn returned {len(traces)} traces for {len(batch)} questions (method {method.name})")
    decoder = _decoder_settings(decode_fn)
    return [score_sample(j, t, protocol, wall_s, len(batch), decoder) for j, t in zip(batch, traces, strict=True)]


def _decoder_settings(decode_fn: DecodeFn) -> dict | None:
    settings = getattr(decode_fn, "settings", None)
    return json.loads(json.dumps(settings, default=str)) if settings is not None else None


def evaluate(methods: Sequence[Method], problems: Sequence[Any], protocol: EvalProtocol, decode_fn: DecodeFn,
             out_path: str | Path, progress: bool = True, batch_size: int = 16) -> list[dict]:
    """Decode and grade every (method, problem, sample) not yet in ``out_path``; return the grid's rows.

    ``decode_fn``: a ``splitlib.decoder_service.DecoderService`` (or any ``DecodeFn``); each method is its route.
    ``batch_size`` questions go to ``decode_fn`` at once (the engine decodes them concurrently); each finished batch
    is appended to the file before the next starts.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size}: expected ≥ 1")
    problems = [_as_problem(p) for p in problems]
    _unique([m.name for m in methods], "method names")
    _unique([p["id"] for p in problems], "problem ids")
    path = Path(out_path)
    jobs = _plan(methods, problems, protocol, decode_fn)
    existing = _set_aside_stale(path, jobs)
    todo = [j for j in jobs if j.key not in existing]
    preload = getattr(decode_fn, "preload", None)
    if todo and preload is not None:  # start engines before the clock of the first batch starts
        preload(list({j.method.name: j.method for j in todo}.values()))
    log.info("%s: %d of %d samples to run (%d already done)", path, len(todo), len(jobs), len(jobs) - len(todo))
    with progress_bar(total=len(todo), disable=not progress, desc="evaluate", unit="sample") as bar:
        for batch in _batches(todo, batch_size):
            runs.append_jsonl(path, _run_batch(batch, decode_fn, protocol))
            bar.update(len(batch))
    done = {row_key(r): r for r in read_samples(path)}
    return [done[j.key] for j in jobs]


def regrade(rows: Sequence[dict], fallback: grading.Fallback = "none") -> list[dict]:
    """Rows graded again from their stored generation (e.g. after a grader change); nothing is decoded."""
    out = []
    for row in rows:
        v = grading.grade(row["generation"], row["answer"], truncated=row["truncated"], fallback=fallback)
        out.append({**row, "extracted": v.extracted, "correct": v.correct, "reason": v.reason,
                    "scorable": v.scorable, "grader_version": grading.GRADER_VERSION})
    return out
