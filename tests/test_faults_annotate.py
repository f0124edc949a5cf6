"""Fault injection for annotation runs: the llm annotator against a local server that answers 429 / 500, hangs,
drips its reply one byte at a time, sends garbage or alters the text — and runs that are interrupted (Ctrl-C,
kill -9 with a torn last line). The invariants held whatever happens:

- every input is accounted exactly once (one row in annotated.jsonl or failures.jsonl, no duplicate ids);
- a resumed run ends with files identical to an uninterrupted run's;
- a request ends by its deadline, however the server behaves (connect + wait + reading the whole reply);
- Ctrl-C (or any exception in the writing loop) returns within 3 s, requests in flight aborted;
- no server or exception text is written into the data rows.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from fault_server import (
    SENTENCE,
    SERVER_TEXT,
    FakeChat,
    assert_exactly_one_row_each,
    completion,
    read_out,
    rows_for,
    snippet_reply,
    sorted_rows,
)

from splitlib import runs, tags
from splitlib.annotate import (
    ANNOTATED,
    AnnotationAborted,
    AnnotationFailure,
    Cancelled,
    CancelSwitch,
    RetryPolicy,
    annotate_all,
    get_annotator,
)

REPO = Path(__file__).resolve().parent.parent
FAST = {"backoff_s": 0.01, "max_backoff_s": 0.05}


@pytest.fixture
def fake():
    server = FakeChat(sleep_s=3.0)
    yield server
    server.close()


def llm(fake: FakeChat, **params):
    return get_annotator("llm", base_url=fake.base_url, model="fake", **params)


def annotate_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("annotate")]


def wait_for(condition, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def n_lines(path: Path) -> int:
    return path.read_text().count("\n") if path.exists() else 0


# -- every input accounted once, whatever the server does ---------------------------------------------------------
SNIPPET_SCRIPT = {
    "ok": ["ok"], "typo": ["typo"], "absent": ["absent"], "r429": ["429"], "r429ThenOk": ["429", "ok"],
    "r500": ["500"], "r500ThenOk": ["500", "ok"], "hang": ["hang"], "hangThenOk": ["hang", "ok"], "drip": ["drip"],
    "garbage": ["garbage"], "garbageThenOk": ["garbage", "ok"], "malformed": ["malformed"], "drop": ["drop"],
}
SNIPPET_REASONS = {
    "absent": "snippet_not_found", "r429": "http_429_exhausted", "r500": "http_500_exhausted",
    "hang": "timeout_exhausted", "drip": "timeout_exhausted", "garbage": "malformed_response",
    "malformed": "malformed_response", "drop": "connection_exhausted",
}
TAGGED_SCRIPT = {"taggedOk": ["tagged_ok"], "altered": ["altered"], "alteredThenOk": ["altered", "tagged_ok"]}
TAGGED_REASONS = {"altered": "text_altered"}


@pytest.mark.parametrize("response_format, script, reasons", [
    ("snippets", SNIPPET_SCRIPT, SNIPPET_REASONS), ("tagged", TAGGED_SCRIPT, TAGGED_REASONS),
], ids=["snippets", "tagged"])
def test_every_input_is_accounted_once_and_no_error_text_reaches_a_row(fake, tmp_path, response_format, script,
                                                                         reasons):
    fake.script = dict(script)
    rows = rows_for(list(script))
    t0 = time.perf_counter()
    summary = annotate_all(rows, llm(fake, response_format=response_format), tmp_path, concurrency=len(rows),
                           max_failure_fraction=1.0, timeout_s=1.0, max_retries=1, retry=RetryPolicy(**FAST),
                           progress=False)
    wall_s = time.perf_counter() - t0
    annotated, failures = assert_exactly_one_row_each(rows, tmp_path)
    assert {i[2:]: r["reason"] for i, r in failures.items()} == reasons
    assert summary.n_annotated + summary.n_failed == len(rows) and summary.n_skipped == 0
    assert wall_s < 4.5, f"two 1 s deadlines per trace, all in parallel, took {wall_s:.1f} s"
    for row in annotated.values():  # THE INVARIANT, and exactly the hard sentence (or its first 10 characters)
        assert tags.strip_tags(row["annotated"]) == row["trace"]
        assert tags.inner_texts(row["annotated"]) in ([SENTENCE], [SENTENCE[:10]])
    for path in tmp_path.iterdir():  # server text and exception text never reach a file
        assert SERVER_TEXT not in path.read_text() and "Traceback" not in path.read_text()
    for row in failures.values():
        assert set(row) == {"id", "reason", "annotator", "details"}
        assert all(isinstance(v, int | float) or len(str(v)) < 40 for v in row["details"].values())


# -- deadlines ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("behaviour", ["drip", "hang"])
def test_a_request_ends_by_its_deadline_however_slowly_the_server_answers(fake, behaviour):
    fake.script = {behaviour: [behaviour]}
    row = rows_for([behaviour])[0]
    t0 = time.perf_counter()
    with pytest.raises(AnnotationFailure) as failure:
        llm(fake).annotate(row, RetryPolicy(timeout_s=1.0, max_retries=0))
    took_s = time.perf_counter() - t0
    whole_s = len(json.dumps(completion(snippet_reply(SENTENCE)))) * fake.drip_s if behaviour == "drip" else "∞"
    print(f"\n{behaviour}: 1 s deadline held at {took_s:.2f} s (the whole reply takes {whole_s} s)")
    assert failure.value.reason == "timeout_exhausted"
    assert 1.0 <= took_s < 2.0


def test_a_dripping_answer_that_fits_the_deadline_is_read(fake):
    fake.drip_s = 0.0005  # ~300 bytes in ~0.2 s: slow, but within the deadline
    fake.script = {"drip": ["drip"]}
    annotation = llm(fake).annotate(rows_for(["drip"])[0], RetryPolicy(timeout_s=5.0, max_retries=0))
    assert annotation.spans


# -- stopping -----------------------------------------------------------------------------------------------------
def test_a_cancelled_run_ends_its_backoff_waits_at_once(fake):
    fake.script = {"r429": ["429"]}
    cancel = CancelSwitch()
    policy = RetryPolicy(timeout_s=5.0, max_retries=5, backoff_s=30.0, max_backoff_s=60.0, cancel=cancel)
    threading.Timer(0.3, cancel.set).start()
    t0 = time.perf_counter()
    with pytest.raises(Cancelled):
        llm(fake).annotate(rows_for(["r429"])[0], policy)
    assert time.perf_counter() - t0 < 1.5  # not the 30 s backoff


CTRL_C_SCRIPT = {**{f"ok{i}": ["ok"] for i in range(6)}, **{f"hang{i}": ["hang"] for i in range(4)}}


def uninterrupted_run(fake: FakeChat, rows: list[dict], out: Path) -> tuple[list[dict], list[dict]]:
    fake.script = {case: (["ok"] if case.startswith("hang") else plan) for case, plan in CTRL_C_SCRIPT.items()}
    fake.reset()
    annotate_all(rows, llm(fake), out, concurrency=3, max_failure_fraction=1.0, progress=False)
    return sorted_rows(out)


def test_ctrl_c_returns_within_3_s_and_a_resume_equals_an_uninterrupted_run(fake, tmp_path):
    rows = rows_for(list(CTRL_C_SCRIPT))
    out = tmp_path / "interrupted"
    fake.script = dict(CTRL_C_SCRIPT)
    sent_at: list[float] = []

    def press_ctrl_c() -> None:  # once the quick traces are written and three requests hang
        wait_for(lambda: n_lines(out / ANNOTATED) >= 6, 30, "the quick traces")
        time.sleep(0.3)
        sent_at.append(time.monotonic())
        os.kill(os.getpid(), signal.SIGINT)

    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        threading.Thread(target=press_ctrl_c, daemon=True).start()
        with pytest.raises(KeyboardInterrupt):  # the paper's settings: 300 s per request, 5 retries
            annotate_all(rows, llm(fake), out, concurrency=3, timeout_s=300.0, max_retries=5, progress=False)
        returned_s = time.monotonic() - sent_at[0]
    finally:
        signal.signal(signal.SIGINT, previous)
    wait_for(lambda: not annotate_threads(), 3.0, "the workers to end (requests in flight aborted)")
    print(f"\nCtrl-C returned in {returned_s:.2f} s; workers ended {time.monotonic() - sent_at[0]:.2f} s after it")
    assert returned_s <= 3.0
    annotated, failures = read_out(out)
    assert len(annotated) == 6 and not failures  # finished rows kept; the dropped traces are not failures
    whole = uninterrupted_run(fake, rows, tmp_path / "whole")
    fake.reset()
    annotate_all(rows, llm(fake), out, concurrency=3, max_failure_fraction=1.0, progress=False)
    assert sorted_rows(out) == whole
    assert sorted(case for case, _ in fake.requests) == [f"hang{i}" for i in range(4)]  # only the missing ones


def test_an_abort_does_not_wait_for_the_requests_in_flight(fake, tmp_path):
    fake.script = {**{f"absent{i}": ["absent"] for i in range(4)}, **{f"hang{i}": ["hang"] for i in range(3)}}
    rows = rows_for([f"hang{i}" for i in range(3)] + [f"absent{i}" for i in range(4)])
    t0 = time.perf_counter()
    with pytest.raises(AnnotationAborted):
        annotate_all(rows, llm(fake), tmp_path, concurrency=5, max_failure_fraction=0.5, min_items=3,
                     timeout_s=300.0, max_retries=5, progress=False)
    assert time.perf_counter() - t0 < 3.0
    wait_for(lambda: not annotate_threads(), 3.0, "the workers to end")
    assert_accounted_at_most_once(rows, tmp_path)


def assert_accounted_at_most_once(rows: list[dict], out: Path) -> None:
    annotated, failures = read_out(out)
    ids = [r["id"] for r in annotated + failures]
    assert len(ids) == len(set(ids)) and set(ids) <= {r["id"] for r in rows}


# -- kill -9 in the middle of a run -------------------------------------------------------------------------------
CHILD = """
import json, sys
from splitlib.annotate import RetryPolicy, annotate_all, get_annotator
base_url, rows_path, out = sys.argv[1:]
rows = json.loads(open(rows_path).read())
annotator = get_annotator("llm", base_url=base_url, model="fake")
annotate_all(rows, annotator, out, concurrency=2, max_failure_fraction=1.0, max_retries=1,
             retry=RetryPolicy(backoff_s=0.01, max_backoff_s=0.05), progress=False)
"""
KILL_SCRIPT = {f"c{i}": [["slow", "absent", "500", "slow"][i % 4]] for i in range(24)}


def test_kill_9_mid_run_plus_a_torn_line_resumes_to_the_uninterrupted_files(fake, tmp_path):
    fake.script = dict(KILL_SCRIPT)
    rows = rows_for(list(KILL_SCRIPT))
    annotate_all(rows, llm(fake), tmp_path / "whole", concurrency=2, max_failure_fraction=1.0, max_retries=1,
                 retry=RetryPolicy(**FAST), progress=False)
    whole = sorted_rows(tmp_path / "whole")
    fake.reset()
    out = tmp_path / "killed"
    (tmp_path / "rows.json").write_text(json.dumps(rows))
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    log = (tmp_path / "child.log").open("w")
    child = subprocess.Popen([sys.executable, "-c", CHILD, fake.base_url, str(tmp_path / "rows.json"), str(out)],
                             cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: n_lines(out / ANNOTATED) >= 4 or child.poll() is not None, 90, "the child's first rows")
        child.kill()  # SIGKILL: no cleanup of any kind
        child.wait(10)
    finally:
        if child.poll() is None:
            child.kill()
        log.close()
    assert child.returncode == -signal.SIGKILL, (tmp_path / "child.log").read_text()[-2000:]
    written = len(runs.read_jsonl(out / ANNOTATED)) + len(runs.read_jsonl(out / "failures.jsonl"))
    assert 0 < written < len(rows), "the kill was not mid-run"
    with (out / ANNOTATED).open("a") as f:  # and a write torn by the kill
        f.write('{"id": "c23", "annot')
    fake.reset()
    annotate_all(rows, llm(fake), out, concurrency=2, max_failure_fraction=1.0, max_retries=1,
                 retry=RetryPolicy(**FAST), progress=False)
    assert_exactly_one_row_each(rows, out)
    assert sorted_rows(out) == whole
