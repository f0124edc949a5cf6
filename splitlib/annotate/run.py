"""Annotate many traces, crash-safe, resumable, and stoppable.

Every input id ends as exactly one row in ``annotated.jsonl`` or ``failures.jsonl`` (fsync'd appends of whole
lines, written from one thread). A re-run skips ids present in either file, so a killed run resumes with neither
duplicates nor gaps. Each annotation is checked against THE INVARIANT before it is written: the tagged text with
its tags removed is the original byte for byte, and its spans are flat and sorted; one that breaks it becomes a
failure with its reason, never a silent repair. ``annotator.json`` records the rows' provenance (``resume``);
resuming with a different one is refused, saying what changed.

Ctrl-C (or any exception in the writing loop) stops a run within moments: the retry waits end, the requests in
flight are aborted, queued work is dropped, and every row finished before is already on disk.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from contextlib import closing
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from splitlib import runs, tags
from splitlib.annotate.analysis import offload_token_fraction
from splitlib.annotate.base import Annotation, AnnotationFailure, Annotator, Cancelled, CancelSwitch, RetryPolicy, Row
from splitlib.annotate.resume import (
    ANNOTATED,
    FAILURES,
    check_provenance,
    check_same_traces,
    forget_failures,
    provenance_record,
)
from splitlib.progressbar import progress_bar

log = logging.getLogger(__name__)

STATS = "stats.json"
REQUIRED_FIELDS = ("id", "question", "answer", "trace")
_POLL_S = 0.5  # the writing loop wakes at least this often, so that Ctrl-C is seen even while nothing finishes


class AnnotationAborted(RuntimeError):
    """Too many failures: the run stopped early. ``summary`` holds the counts and reasons so far."""

    def __init__(self, summary: dict[str, Any]) -> None:
        reasons = ", ".join(f"{k} ×{v}" for k, v in summary["failure_reasons"].items())
        super().__init__(f"aborted after {summary['processed']} traces: {summary['failed']} failed "
                         f"(> max_failure_fraction={summary['max_failure_fraction']}); reasons: {reasons}. "
                         f"Fix the cause and re-run: finished rows are kept, failures can be retried "
                         f"with retry_failures=True")
        self.summary = summary


@dataclass(frozen=True)
class RunSummary:
    n_inputs: int
    n_skipped: int  # already in annotated.jsonl / failures.jsonl before this run
    n_annotated: int  # this run
    n_failed: int  # this run
    failure_reasons: dict[str, int] = field(default_factory=dict)  # this run
    stats: dict[str, Any] = field(default_factory=dict)  # the whole output folder (stats.json)


def check_annotation(row: Row, result: Annotation) -> tuple[str, list[tuple[int, int]]] | AnnotationFailure:
    """The tagged text and spans, or a failure when THE INVARIANT does not hold."""
    text, span_list = row["trace"], [tuple(s) for s in result.spans]
    try:
        annotated = tags.apply_spans(text, span_list)
    except tags.TagError:
        return AnnotationFailure("invalid_spans")
    if tags.strip_tags(annotated) != text:
        return AnnotationFailure("text_altered")  # e.g. the trace itself contains a tag string
    try:
        if tags.spans(annotated) != span_list:
            return AnnotationFailure("invalid_spans")
    except tags.TagError:
        return AnnotationFailure("invalid_spans")
    return annotated, span_list


def output_row(row: Row, result: Annotation | AnnotationFailure, annotator: str,
               tokenizer: Any = None) -> tuple[str, dict[str, Any]]:
    """(file name, row) for one result: an annotated row, or a failure row {id, reason, annotator, details}."""
    checked = check_annotation(row, result) if isinstance(result, Annotation) else result
    if isinstance(checked, AnnotationFailure):
        return FAILURES, {"id": row["id"], "reason": checked.reason, "annotator": annotator,
                          "details": checked.details}
    annotated, span_list = checked
    text = row["trace"]
    out = {"id": row["id"], "question": row["question"], "answer": row["answer"], "trace": text,
           "annotated": annotated, "spans": [list(s) for s in span_list],
           "offload_char_fraction": tags.offload_char_fraction(annotated),
           "annotator": annotator, "details": result.details}
    if tokenizer is not None:
        out["offload_token_fraction"] = offload_token_fraction(text, span_list, tokenizer)
    return ANNOTATED, out


def _safe_annotate(annotator: Annotator, row: Row, retry: RetryPolicy) -> Annotation | AnnotationFailure:
    try:
        return annotator.annotate(row, retry)
    except AnnotationFailure as failure:
        return failure
    except Cancelled:  # the run stopped: this trace stays pending, nothing is recorded
        raise
    except Exception:  # a bug or an unexpected library error: recorded, logged with its traceback, run goes on
        log.exception("annotator %s crashed on trace %s", annotator.name, row["id"])
        return AnnotationFailure("internal_error")


def _threaded(rows: Sequence[Row], annotator: Annotator, retry: RetryPolicy,
              concurrency: int) -> Iterator[tuple[Row, Annotation | AnnotationFailure]]:
    """Results in completion order with at most ``concurrency`` requests in flight. Closed early (Ctrl-C, an
    abort, a crash in the caller), it cancels: retry waits end, requests in flight are aborted, queued work is
    dropped, and it returns without waiting for the workers."""
    todo = iter(rows)
    pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="annotate")
    running: dict[Future, Row] = {}

    def submit_next() -> None:
        row = next(todo, None)
        if row is not None:
            running[pool.submit(_safe_annotate, annotator, row, retry)] = row

    try:
        for _ in range(concurrency):
            submit_next()
        while running:
            finished, _ = wait(running, timeout=_POLL_S, return_when=FIRST_COMPLETED)
            for future in finished:
                yield running.pop(future), future.result()
                submit_next()
    finally:
        if running:
            log.warning("stopping: %d traces in flight are dropped (a re-run annotates them)", len(running))
            retry.cancel.set()
        pool.shutdown(wait=False, cancel_futures=True)


def _batched(rows: Sequence[Row], annotator: Any) -> Iterator[tuple[Row, Annotation | AnnotationFailure]]:
    for i in range(0, len(rows), annotator.batch_size):
        chunk = rows[i : i + annotator.batch_size]
        try:
            results = annotator.annotate_batch(chunk)
        except Exception:  # as in _safe_annotate: the batch fails, the run goes on
            log.exception("annotator %s crashed on a batch starting at trace %s", annotator.name, chunk[0]["id"])
            results = [AnnotationFailure("internal_error")] * len(chunk)
        yield from zip(chunk, results)


def _validate_inputs(traces: Sequence[Row]) -> None:
    seen: set = set()
    for n, row in enumerate(traces):
        missing = [k for k in REQUIRED_FIELDS if k not in row]
        if missing:
            raise ValueError(f"trace #{n} lacks {missing}; rows need {list(REQUIRED_FIELDS)} "
                             "(splitlib.data.load_toy / load_openr1 make them)")
        if row["id"] in seen:
            raise ValueError(f"duplicate trace id {row['id']!r}: ids key the resumable output files")
        seen.add(row["id"])


def annotate_all(traces: Sequence[Row], annotator: Annotator, out_dir: str | Path, *, concurrency: int = 8,
                 max_failure_fraction: float = 0.5, min_items: int = 20, timeout_s: float = 300.0,
                 max_retries: int = 5, retry: RetryPolicy | None = None, tokenizer: Any = None,
                 retry_failures: bool = False, progress: bool = True) -> RunSummary:
    """Annotate every trace not yet in ``out_dir``; write rows, failures and ``stats.json``.

    Resuming is keyed by id; rows already there whose trace differs from today's, or a folder whose provenance
    (``annotator.json``) differs from this run's, are refused (``ValueError``) before any work.

    ``concurrency``: requests in flight (annotators without ``annotate_batch``); ``max_failure_fraction``: abort
    (``AnnotationAborted``) once at least ``min_items`` traces were processed in this run and more than this share
    failed; ``timeout_s``/``max_retries``: per request (override the rest of the policy with ``retry``);
    ``tokenizer``: also record ``offload_token_fraction``; ``retry_failures``: attempt earlier failures again.
    Ctrl-C returns within moments, leaving the folder ready to resume.
    """
    if concurrency < 1:
        raise ValueError(f"concurrency={concurrency}: expected >= 1")
    if not 0.0 <= max_failure_fraction <= 1.0:
        raise ValueError(f"max_failure_fraction={max_failure_fraction}: expected a fraction in [0, 1] "
                         "(1 = never abort)")
    _validate_inputs(traces)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    settings = provenance_record(annotator, tokenizer)
    check_provenance(out, settings)
    check_same_traces(out, traces)
    retry = replace(retry or RetryPolicy(), timeout_s=timeout_s, max_retries=max_retries, cancel=CancelSwitch())
    if retry_failures:
        log.info("retrying %d earlier failures", forget_failures(out, {r["id"] for r in traces}))
    done = runs.done_keys(out / ANNOTATED, "id") | runs.done_keys(out / FAILURES, "id")
    pending = [r for r in traces if r["id"] not in done]
    log.info("%d traces: %d done before, %d to annotate", len(traces), len(traces) - len(pending), len(pending))
    if hasattr(annotator, "annotate_batch"):
        results: Iterator = _batched(pending, annotator)
    else:
        results = _threaded(pending, annotator, retry, concurrency)
    reasons: Counter[str] = Counter()
    n_ok = 0
    # closing: on Ctrl-C, an abort or a crash the work in flight is cancelled now, not when the generator is collected
    with closing(results), progress_bar(total=len(pending), desc=f"annotate ({annotator.name})",
                                        disable=not progress) as bar:
        for row, result in results:
            name, record = output_row(row, result, annotator.name, tokenizer)
            runs.append_jsonl(out / name, [record])
            if name == FAILURES:
                reasons[record["reason"]] += 1
                log.warning("trace %s failed: %s", row["id"], record["reason"])
            else:
                n_ok += 1
            bar.update()
            bar.set_postfix(failed=sum(reasons.values()))
            processed, failed = n_ok + sum(reasons.values()), sum(reasons.values())
            if processed >= min_items and failed > max_failure_fraction * processed:
                write_stats(out, settings)
                raise AnnotationAborted({"processed": processed, "failed": failed, "failure_reasons": dict(reasons),
                                         "max_failure_fraction": max_failure_fraction})
    stats = write_stats(out, settings)
    return RunSummary(n_inputs=len(traces), n_skipped=len(traces) - len(pending), n_annotated=n_ok,
                      n_failed=sum(reasons.values()), failure_reasons=dict(reasons), stats=stats)


def summarize(values: Sequence[float]) -> dict[str, float] | None:
    """Distribution summary (None for no values)."""
    if not values:
        return None
    a = np.asarray(values, dtype=float)
    q = np.percentile(a, [10, 25, 50, 75, 90])
    return {"n": int(a.size), "mean": float(a.mean()), "std": float(a.std()), "min": float(a.min()),
            "p10": float(q[0]), "p25": float(q[1]), "median": float(q[2]), "p75": float(q[3]), "p90": float(q[4]),
            "max": float(a.max()), "share_at_most_0.2": float(np.mean(a <= 0.2))}


def compute_stats(out_dir: str | Path, settings: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Counts, failure reasons and offload-fraction distributions of everything in ``out_dir``."""
    out = Path(out_dir)
    annotated, failures = runs.read_jsonl(out / ANNOTATED), runs.read_jsonl(out / FAILURES)
    n = len(annotated) + len(failures)
    token_fracs = [r["offload_token_fraction"] for r in annotated if "offload_token_fraction" in r]
    return {
        "n_rows": n, "n_annotated": len(annotated), "n_failed": len(failures),
        "failure_fraction": len(failures) / n if n else 0.0,
        "failure_reasons": dict(sorted(Counter(r["reason"] for r in failures).items())),
        "offload_char_fraction": summarize([r["offload_char_fraction"] for r in annotated]),
        "offload_token_fraction": summarize(token_fracs),
        "spans_per_trace": summarize([len(r["spans"]) for r in annotated]),
        "annotator": dict(settings) if settings is not None else None,
    }


def write_stats(out_dir: str | Path, settings: Mapping[str, Any] | None = None) -> dict[str, Any]:
    stats = compute_stats(out_dir, settings)
    runs.atomic_write_json(Path(out_dir) / STATS, stats)
    return stats
