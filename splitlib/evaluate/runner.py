"""The resumable runner: methods × problems × samples → one graded row per sample in a JSONL samples file.

``evaluate(...)`` decodes and grades, appending one row per (method, problem, sample) to ``out_path``. It resumes:
keys already in the file are skipped, rows are appended batch by batch (an interrupted run loses at most the batch in
flight), and a torn last line from a kill is cut off (``splitlib.runs``). Grading happens in the calling thread, so
math-verify's signal-based timeouts work when that is the main thread. Per-sample seeds are derived from (run seed,
method, problem, sample), so any subset reruns identically.
"""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from splitlib import grading, runs
from splitlib.decoder_service import DecodeFn
from splitlib.evaluate.methods import KEY, Method
from splitlib.evaluate.protocols import EvalProtocol
from splitlib.seeds import derive_seed
from splitlib.trace import Trace

log = logging.getLogger(__name__)


class EvalResumeError(ValueError):
    """An existing samples file was written with other settings than this call asks for."""


@dataclass(frozen=True)
class _Job:
    method: Method
    problem: Mapping[str, Any]
    sample: int
    seed: int

    @property
    def key(self) -> tuple[str, str, int]:
        return (self.method.name, self.problem["id"], self.sample)


def _as_problem(p: Any) -> dict:
    """A loader row (``{"id", "question", "answer"}``) or an object with those attributes (``toy.world.Problem``)."""
    get = p.get if isinstance(p, Mapping) else lambda k: getattr(p, k, None)
    row = {k: get(k) for k in ("id", "question", "answer")}
    missing = [k for k, v in row.items() if v is None]
    if missing:
        raise ValueError(f"problem {row['id']!r} lacks {missing}; use splitlib.eval_data loaders")
    return {"id": str(row["id"]), "question": str(row["question"]), "answer": str(row["answer"])}


def _unique(names: Sequence[str], what: str) -> None:
    dup = sorted(n for n, count in Counter(names).items() if count > 1)
    if dup:
        raise ValueError(f"duplicate {what} {dup}: each must be unique (they key the samples file)")


def _plan(methods: Sequence[Method], problems: Sequence[dict], protocol: EvalProtocol) -> list[_Job]:
    """Every (method, sample, problem) in a fixed order: methods, then runs, then problems."""
    return [_Job(m, p, s, derive_seed(protocol.seed, m.name, p["id"], s))
            for m in methods for s in range(protocol.samples) for p in problems]


def _check_resume(existing: Mapping[tuple, dict], jobs: Sequence[_Job], protocol: EvalProtocol, path: Path) -> None:
    """Rows already in the file must come from the same method definitions, sampling settings and seeds."""
    sampling = {k: v for k, v in protocol.record().items() if k != "protocol"}  # settings, not the protocol's name
    for job in jobs:
        row = existing.get(job.key)
        if row is None:
            continue
        expected = {**job.method.record(), **sampling, "seed": job.seed}
        diff = {k: (row.get(k), v) for k, v in expected.items() if row.get(k) != v}
        if diff:
            raise EvalResumeError(
                f"{path} already holds {job.key} with other settings (file, now): {diff}. Use a new out_path, "
                "a new method name, or the settings the file was written with."
            )


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
    """Grade one trace (its generation only, never the prompt) and build its samples-file row."""
    verdict = grading.grade(trace.text, job.problem["answer"], truncated=trace.truncated)
    return {
        "method": job.method.name, "problem_id": job.problem["id"], "sample": job.sample, "seed": job.seed,
        **job.method.record(), **protocol.record(),
        "answer": job.problem["answer"], "extracted": verdict.extracted, "correct": verdict.correct,
        "reason": verdict.reason, "scorable": verdict.scorable, "grader_version": grading.GRADER_VERSION,
        **trace.summary(), "truncated": verdict.truncated,
        "batch_wall_s": batch_wall_s, "batch_size": batch_size, "decoder": decoder,
        "generation": trace.text, "trace": trace.to_json(),
    }


def _run_batch(batch: list[_Job], decode_fn: DecodeFn, protocol: EvalProtocol) -> list[dict]:
    method = batch[0].method
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


def _warn_on_changes(existing: Mapping[tuple, dict], decode_fn: DecodeFn, path: Path) -> None:
    """Decoder settings and grader versions are recorded, not enforced (directories move between machines, a
    grader fix applies to old generations through ``regrade``): a change is logged."""
    if not existing:
        return
    now = _decoder_settings(decode_fn)
    if {json.dumps(r.get("decoder"), sort_keys=True) for r in existing.values()} != {json.dumps(now, sort_keys=True)}:
        log.warning("%s: rows were decoded with other decoder settings than now (%s); the file mixes them", path, now)
    graders = {r.get("grader_version") for r in existing.values()} - {grading.GRADER_VERSION}
    if graders:
        log.warning("%s: rows graded by %s; the current grader is %s — regrade(rows) re-scores them",
                    path, sorted(map(str, graders)), grading.GRADER_VERSION)


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
    jobs = _plan(methods, problems, protocol)
    existing = {tuple(r[k] for k in KEY): r for r in runs.read_jsonl(path)}
    _check_resume(existing, jobs, protocol, path)
    _warn_on_changes(existing, decode_fn, path)
    todo = [j for j in jobs if j.key not in existing]
    preload = getattr(decode_fn, "preload", None)
    if todo and preload is not None:  # start engines before the clock of the first batch starts
        preload(list({j.method.name: j.method for j in todo}.values()))
    log.info("%s: %d of %d samples to run (%d already done)", path, len(todo), len(jobs), len(jobs) - len(todo))
    with tqdm(total=len(todo), disable=not progress, desc="evaluate", unit="sample") as bar:
        for batch in _batches(todo, batch_size):
            runs.append_jsonl(path, _run_batch(batch, decode_fn, protocol))
            bar.update(len(batch))
    done = {tuple(r[k] for k in KEY): r for r in runs.read_jsonl(path)}
    return [done[j.key] for j in jobs]


def regrade(rows: Sequence[dict], fallback: grading.Fallback = "none") -> list[dict]:
    """Rows graded again from their stored generation (e.g. after a grader change); nothing is decoded."""
    out = []
    for row in rows:
        v = grading.grade(row["generation"], row["answer"], truncated=row["truncated"], fallback=fallback)
        out.append({**row, "extracted": v.extracted, "correct": v.correct, "reason": v.reason,
                    "scorable": v.scorable, "grader_version": grading.GRADER_VERSION})
    return out
