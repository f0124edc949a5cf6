"""Annotation: the fuzzy matcher against its brute-force reference, the LLM annotator against a
fault-injecting OpenAI-compatible server (and, marked slow, a real vLLM server), crash-safe resumable runs,
THE INVARIANT (untagged annotated text == original), the surprisal and oracle annotators, and the analysis
functions notebook 01 plots."""

from __future__ import annotations

import copy
import json
import random
import re
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from fault_server import (
    SENTENCE,
    TEXT,
    FakeChat,
    assert_exactly_one_row_each,
    read_out,
    rows_for,
    sorted_rows,
)
from matplotlib.figure import Figure

from splitlib import notebook_params as nbp
from splitlib import runs, tags
from splitlib.annotate import (
    ANNOTATED,
    ANNOTATORS,
    FAILURES,
    STATS,
    Annotation,
    AnnotationAborted,
    AnnotationFailure,
    MatchConfig,
    RetryPolicy,
    annotate_all,
    annotator_params,
    generic_steps,
    get_annotator,
    locate,
    locate_snippets,
    offload_fraction_histogram,
    offload_fractions,
    oracle_scores_figure,
    position_profile,
    position_profile_figure,
    render_ansi,
    render_html,
    score_against_oracle,
    score_rows,
)
from splitlib.annotate.llm import SNIPPET_CLOSE, SNIPPET_OPEN, parse_snippets
from splitlib.annotate.matching import best_window, best_window_reference, locate_reference
from splitlib.annotate.surprisal import STEP_SPLITTERS, SurprisalConfig
from splitlib.data import load_toy
from splitlib.params import ParamError
from splitlib.registry import UnknownNameError
from splitlib.toy.world import generate, step_spans

# =============================================================================================================
# matcher
AT = TEXT.index(SENTENCE)


def test_exact_snippet_is_found_with_ratio_one():
    m = locate(SENTENCE, TEXT)
    assert (m.start, m.end, m.ratio, m.refined) == (AT, AT + len(SENTENCE), 1.0, False)


def test_snippet_with_typos_lands_on_its_sentence():
    typo = SENTENCE.replace("insight", "insigth").replace("sixteen", "sixtean")  # same length
    m = locate(typo, TEXT)
    assert 0.9 < m.ratio < 1.0
    assert (m.start, m.end) == (AT, AT + len(SENTENCE))


def test_snippet_below_half_similarity_is_rejected():
    assert locate("QQQQ ZZZZ 9999 #### @@@@ !!!!", TEXT) is None
    assert locate("x" * (len(TEXT) + 1), TEXT) is None  # longer than the text: no window


def test_edges_are_refined_to_the_snippets_head_and_tail_below_095():
    padded = SENTENCE.replace("four squared", "four (that is two plus two, doubled) squared")
    m = locate(padded, TEXT)
    assert 0.5 <= m.ratio < 0.95 and m.refined
    assert TEXT[m.start : m.end] == SENTENCE  # the window was longer than the sentence; edges snapped back


def test_refinement_moves_an_edge_at_most_edge_radius_characters():
    text = "abcde" + "-" * 60 + "0123456789 middle part here vwxyz"
    snippet = "abcde middle part here vwxyz"
    cfg = MatchConfig(min_ratio=0.3)
    m = locate(snippet, text, cfg)
    assert m is not None and m.ratio < 0.95
    assert text[m.end - 5 : m.end] == "vwxyz"  # the tail snapped
    assert text[m.start : m.start + 5] != "abcde"  # the head occurrence is > 50 characters away: left alone


@pytest.mark.parametrize("gap, n_spans", [(0, 1), (10, 1), (11, 2)])
def test_spans_at_most_10_characters_apart_are_merged(gap, n_spans):
    a, b = "alpha beta gamma", "delta epsilon zeta"
    text = "intro text. " + a + "x" * gap + b + " outro text."
    found = locate_snippets([a, b], text)
    assert len(found.spans) == n_spans
    assert found.spans[0][0] == text.index(a) and found.spans[-1][1] == text.index(b) + len(b)


def test_a_repeated_snippet_takes_successive_occurrences():
    text = "C: 7+3=0, code 0>6\nD: 6+4=0\nE: 0+5=5\nF: 5+6=1, code 0>6\n"
    found = locate_snippets([" code 0>6", "code 0>6"], text, MatchConfig(merge_gap=0))
    starts = [m.start for m in found.matches]
    assert starts[0] != starts[1] and len(found.spans) == 2


def test_snippets_shorter_than_min_snippet_chars_are_left_unmatched():
    assert locate_snippets(["x", SENTENCE], TEXT, MatchConfig(min_snippet_chars=3)).n_found == 1


def _random_case(rng: random.Random) -> tuple[str, str]:
    words = ["the", "of", "and", "to", "we", "so", "x", "y", "=", "+", "2", "3", "squared", "root", "solve",
             "therefore", "equation", "since"]
    text = " ".join(rng.choice(words) for _ in range(rng.randrange(5, 90)))
    m = rng.randrange(1, 50)
    if rng.random() < 0.7 and len(text) > m:
        i = rng.randrange(len(text) - m)
        chars = list(text[i : i + m])
        for _ in range(rng.randrange(0, m // 3 + 1)):  # substitutions, deletions, insertions
            j = rng.randrange(len(chars))
            op = rng.random()
            if op < 0.4:
                chars[j] = rng.choice("abxyz= ")
            elif op < 0.7 and len(chars) > 1:
                del chars[j]
            else:
                chars.insert(j, rng.choice("qv+"))
        return "".join(chars), text
    return "".join(rng.choice("abcdefxyz =+") for _ in range(m)), text


def test_fast_matcher_equals_brute_force_reference_on_random_cases():
    rng = random.Random(2024)
    fast_s = ref_s = 0.0
    for case in range(150):
        snippet, text = _random_case(rng)
        t0 = time.perf_counter()
        fast = best_window(snippet, text)
        t1 = time.perf_counter()
        ref = best_window_reference(snippet, text)
        ref_s += time.perf_counter() - t1
        fast_s += t1 - t0
        got = None if fast is None else (fast.start, fast.ratio, fast.exhaustive)
        want = None if ref is None else (ref.start, ref.ratio, True)
        assert got == want, f"case {case}: {snippet!r}"
        assert locate(snippet, text) == locate_reference(snippet, text)
    print(f"\nmatcher on 150 random cases: fast {fast_s * 1e3:.0f} ms, brute force {ref_s * 1e3:.0f} ms")


def test_fast_matcher_scores_few_windows_on_a_long_trace():
    rng = random.Random(7)
    words = ["the", "of", "and", "to", "we", "so", "x", "y", "=", "+", "2", "3", "squared", "root", "solve",
             "therefore", "equation", "since", "hence"]
    text = " ".join(rng.choice(words) for _ in range(2500))
    snippet = text[7000:7200].replace(" so ", " xo ").replace("the", "teh", 1)
    t0 = time.perf_counter()
    w = best_window(snippet, text)
    fast_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    ref = best_window_reference(snippet, text[6800:7400])  # brute force on a 600-character slice only
    slice_s = time.perf_counter() - t0
    assert (w.start, w.ratio) == (ref.start + 6800, ref.ratio) and w.exhaustive
    per_window_s = slice_s / (600 - len(snippet) + 1)
    print(f"\nlong trace ({len(text)} chars, 200-char snippet): fast {fast_s * 1e3:.0f} ms ({w.n_evals} windows "
          f"scored); brute force ≈ {per_window_s * (len(text) - 199):.1f} s extrapolated")


# =============================================================================================================
# the LLM annotator against the fault server (tests/fault_server.py)
REPO = Path(__file__).resolve().parent.parent
SECRET = "sk-test-not-a-real-key-31337"
FAST_RETRY = RetryPolicy(backoff_s=0.01, max_backoff_s=0.05)


@pytest.fixture
def fake():
    server = FakeChat()
    yield server
    server.close()


@pytest.fixture
def llm(fake, monkeypatch):
    monkeypatch.setenv("FAKE_API_KEY", SECRET)

    def make(**params):
        return get_annotator("llm", base_url=fake.base_url, model="fake", api_key_env="FAKE_API_KEY", **params)

    return make


FAULT_SCRIPT = {
    "ok": ["ok"], "typo": ["typo"], "absent": ["absent"], "none": ["none"], "noneThenOk": ["none", "ok"],
    "r429": ["429"], "r429ThenOk": ["429", "ok"], "r500": ["500"], "r500Twice": ["500", "500", "ok"],
    "r401": ["401"], "timeout": ["timeout"], "timeoutThenOk": ["timeout", "ok"], "malformed": ["malformed"],
    "noChoices": ["no_choices"], "drop": ["drop"],
}
EXPECTED_REASON = {
    "absent": "snippet_not_found", "none": "no_snippets", "r429": "http_429_exhausted",
    "r500": "http_500_exhausted", "r401": "http_401", "timeout": "timeout_exhausted",
    "malformed": "malformed_response", "noChoices": "malformed_response", "drop": "connection_exhausted",
}


def test_every_input_ends_in_exactly_one_file_whatever_the_server_does(fake, llm, tmp_path, toy_tokenizer):
    fake.script = dict(FAULT_SCRIPT)
    rows = rows_for(list(FAULT_SCRIPT))
    retry = RetryPolicy(backoff_s=0.01, max_backoff_s=0.05, seed=3)
    summary = annotate_all(rows, llm(), tmp_path, concurrency=4, max_failure_fraction=1.0, timeout_s=1.0,
                           max_retries=2, retry=retry, tokenizer=toy_tokenizer, progress=False)
    annotated, failures = assert_exactly_one_row_each(rows, tmp_path)
    assert {i[2:]: r["reason"] for i, r in failures.items()} == EXPECTED_REASON
    assert set(annotated) == {f"t-{c}" for c in FAULT_SCRIPT if c not in EXPECTED_REASON}
    for row in annotated.values():  # every success marked exactly the hard sentence
        assert tags.inner_texts(row["annotated"]) == [SENTENCE]
        assert tags.strip_tags(row["annotated"]) == row["trace"]
        assert 0 < row["offload_token_fraction"] <= 1
    assert annotated["t-noneThenOk"]["details"]["temperature"] == 0.3
    assert annotated["t-ok"]["details"] == {"n_snippets": 1, "n_found": 1, "n_refined": 0, "min_match_ratio": 1.0,
                                           "temperature": 0.0, "answers": 1}
    # unusable answers are asked again at 0.3 and 0.6; transport faults retry (max_retries=2) at one temperature
    temps = lambda case: [t for c, t in fake.requests if c == case]
    assert temps("absent") == [0.0, 0.3, 0.6]
    assert temps("r429") == [0.0] * 3 and temps("r401") == [0.0]
    assert summary.n_annotated + summary.n_failed == len(rows) and summary.failure_reasons["malformed_response"] == 2
    stats = json.loads((tmp_path / STATS).read_text())
    assert stats["n_rows"] == len(rows) and stats["failure_reasons"]["http_401"] == 1
    assert stats["offload_char_fraction"]["n"] == len(annotated)


def test_failure_rows_are_short_machine_readable_and_the_key_never_leaves_the_environment(fake, llm, tmp_path):
    fake.script = {"ok": ["ok"], "r500": ["500"], "malformed": ["malformed"], "drop": ["drop"]}
    rows = rows_for(list(fake.script))
    annotate_all(rows, llm(), tmp_path, concurrency=2, max_failure_fraction=1.0, max_retries=1, retry=FAST_RETRY,
                 progress=False)
    _, failures = read_out(tmp_path)
    for row in failures:
        assert set(row) == {"id", "reason", "annotator", "details"}
        assert re.fullmatch(r"[a-z0-9_]+", row["reason"])
        assert all(isinstance(v, int | float | str) and len(str(v)) < 40 for v in row["details"].values())
    assert fake.auth == {f"Bearer {SECRET}"}  # the key was used …
    for path in tmp_path.iterdir():  # … and written nowhere
        assert SECRET not in path.read_text()
    assert "FAKE_API_KEY" in (tmp_path / "annotator.json").read_text()  # the variable's NAME is recorded


def test_tagged_format_rejects_answers_that_alter_the_text(fake, llm, tmp_path):
    fake.script = {"taggedOk": ["tagged_ok"], "altered": ["altered"], "none": ["none"]}
    rows = rows_for(list(fake.script))
    annotate_all(rows, llm(response_format="tagged"), tmp_path, max_failure_fraction=1.0, retry=FAST_RETRY,
                 progress=False)
    annotated, failures = assert_exactly_one_row_each(rows, tmp_path)
    assert {i: r["reason"] for i, r in failures.items()} == {"t-altered": "text_altered", "t-none": "no_tagged_trace"}
    assert tags.inner_texts(annotated["t-taggedOk"]["annotated"]) == [SENTENCE[:10]]


def test_backoff_is_exponential_jittered_and_seeded(fake, llm):
    fake.script = {"flaky": ["429", "429", "429", "ok"]}
    row = rows_for(["flaky"])[0]
    waits: list[list[float]] = []
    for _ in range(2):
        fake.reset()
        waits.append([])
        policy = RetryPolicy(backoff_s=0.01, max_backoff_s=1.0, jitter=0.5, seed=11, sleep=waits[-1].append)
        assert llm().annotate(row, policy).spans
    assert waits[0] == waits[1] and len(waits[0]) == 3  # same seed and id: same waits
    for k, w in enumerate(waits[0]):
        assert 0.01 * 2**k <= w < 0.01 * 2**k * 1.5


def run_to_completion(rows, annotator, out, **kw) -> None:
    annotate_all(rows, annotator, out, max_failure_fraction=1.0, max_retries=1, retry=FAST_RETRY, progress=False,
                 **kw)


RESUME_SCRIPT = {f"c{i}": [["ok", "typo", "absent", "none", "500", "noneThenOk"][i % 6]] for i in range(18)}
RESUME_SCRIPT = {k: (["none", "ok"] if v == ["noneThenOk"] else v) for k, v in RESUME_SCRIPT.items()}


@pytest.fixture
def uninterrupted(fake, llm, tmp_path):
    fake.script = dict(RESUME_SCRIPT)
    rows = rows_for(list(RESUME_SCRIPT))
    run_to_completion(rows, llm(), tmp_path / "whole", concurrency=3)
    fake.reset()
    return rows, sorted_rows(tmp_path / "whole")


def test_resume_after_running_the_first_half_equals_an_uninterrupted_run(uninterrupted, fake, llm, tmp_path):
    rows, whole = uninterrupted
    out = tmp_path / "halves"
    run_to_completion(rows[:9], llm(), out, concurrency=3)
    with (out / ANNOTATED).open("a") as f:  # a kill in the middle of a write leaves a torn line
        f.write('{"id": "c17", "annot')
    fake.reset()  # a fresh server for the resumed process
    run_to_completion(rows, llm(), out, concurrency=3)
    assert sorted_rows(out) == whole


class Killed(BaseException):
    """Stands for a kill signal: not an Exception, so nothing records it as a failure."""


class DiesAfter:
    """Delegates to an annotator and dies on its ``n``-th call (a process killed mid-run)."""

    def __init__(self, inner, n: int) -> None:
        self.inner, self.n, self.calls, self.name = inner, n, 0, inner.name
        self.lock = threading.Lock()

    def describe(self):
        return self.inner.describe()

    def annotate(self, row, retry):
        with self.lock:
            self.calls += 1
            if self.calls == self.n:
                raise Killed
        return self.inner.annotate(row, retry)


def test_resume_after_a_crash_mid_run_equals_an_uninterrupted_run(uninterrupted, fake, llm, tmp_path):
    rows, whole = uninterrupted
    out = tmp_path / "crashed"
    with pytest.raises(Killed):
        run_to_completion(rows, DiesAfter(llm(), n=8), out, concurrency=3)
    annotated, failures = read_out(out)
    assert 0 < len(annotated) + len(failures) < len(rows)
    # A real kill ends the requests in flight with the process; here their threads outlive the "crash", so let them
    # finish before the fake server is reset (else a late retry of theirs consumes the fresh script's answers).
    for thread in threading.enumerate():
        if thread.name.startswith("annotate"):
            thread.join(timeout=30)
    fake.wait_idle()  # and their requests: one sent just before the crash may reach a handler only now
    fake.reset()  # requests in flight at the crash were answered but never written: they are asked again
    run_to_completion(rows, llm(), out, concurrency=3)
    assert sorted_rows(out) == whole


def test_max_failure_fraction_aborts_then_retry_failures_recovers(fake, llm, tmp_path):
    fake.script = {f"c{i}": ["absent"] for i in range(30)}
    rows = rows_for(list(fake.script))
    with pytest.raises(AnnotationAborted, match="snippet_not_found") as info:
        annotate_all(rows, llm(), tmp_path, concurrency=1, max_failure_fraction=0.5, min_items=6, retry=FAST_RETRY,
                     progress=False)
    assert info.value.summary["processed"] == 6 and info.value.summary["failure_reasons"] == {"snippet_not_found": 6}
    assert len(read_out(tmp_path)[1]) == 6 and json.loads((tmp_path / STATS).read_text())["n_failed"] == 6
    fake.script = {c: ["ok"] for c in fake.script}  # the cause is fixed
    summary = annotate_all(rows, llm(), tmp_path, concurrency=4, retry_failures=True, retry=FAST_RETRY, progress=False)
    annotated, failures = assert_exactly_one_row_each(rows, tmp_path)
    assert len(annotated) == 30 and not failures and summary.n_skipped == 0


def test_resuming_with_other_annotator_settings_is_refused(fake, llm, tmp_path):
    fake.script = {"ok": ["ok"]}
    rows = rows_for(["ok"])
    run_to_completion(rows, llm(), tmp_path)
    with pytest.raises(ValueError, match=r"other settings.*target_fraction: 0\.2 -> 0\.3.*new run name"):
        run_to_completion(rows, llm(target_fraction=0.3), tmp_path)


def test_resuming_over_rows_of_a_changed_trace_is_refused_before_any_request(fake, llm, tmp_path):
    fake.script = {"ok": ["ok"]}
    rows = rows_for(["ok"])
    run_to_completion(rows, llm(), tmp_path)
    changed = [dict(rows[0], trace=rows[0]["trace"] + " And one more step.")]  # the data was regenerated since
    fake.reset()
    with pytest.raises(ValueError, match="other text than the trace of the same id"):
        run_to_completion(changed, llm(), tmp_path)
    assert fake.requests == []  # refused before any annotation work


def test_the_served_model_name_set_in_notebook_parameters_reaches_the_server(fake, tmp_path):
    fake.script = {"ok": ["ok"]}
    for params in ({"base_url": fake.base_url, "model": "my-served-model"},
                   {"preset": "paper", "base_url": fake.base_url, "model": "my-served-model"}):  # overrides a preset
        P = load_01(tmp_path, annotator="llm", annotator_params=params, api_key_env=None)
        kwargs = annotator_params(P.annotator, P.annotator_params, target_fraction=P.target_fraction,
                                  api_key_env=P.api_key_env, small_model="outputs/x/models/small")
        if "preset" in params:
            kwargs["api_key_env"] = None  # a keyless local server in place of the preset's
        fake.reset()
        get_annotator(P.annotator, **kwargs).annotate(rows_for(["ok"])[0], FAST_RETRY)
        assert fake.models == ["my-served-model"]


def load_01(tmp_path: Path, **changes):
    """Notebook 01's parameters: the toy profile's file with ``changes``, validated as `splitreason run` does."""
    values = {**yaml.safe_load((REPO / "params" / "toy" / "01_annotate.yaml").read_text()), **changes}
    path = tmp_path / "01_annotate.yaml"
    path.write_text(yaml.safe_dump(values))
    return nbp.load_yaml("01_annotate", path)


@pytest.mark.parametrize("changes, message", [
    ({"annotator_params": {"steps": "toy", "bogus": 1}}, r"unknown parameter\(s\) annotator_params\.bogus"),
    ({"annotator_params": {"steps": "toy", "batch_size": "64"}}, r"annotator_params\.batch_size='64': expected int"),
    ({"annotator_params": {"aggregate": "median"}}, r"annotator_params\.aggregate='median': expected one of"),
    ({"annotator_params": {"model": "x"}}, r"without \['model'\].*small_model"),
    ({"annotator": "llm", "annotator_params": {"preset": "paper", "temperatures": [0, "hot"]}},
     r"annotator_params\.temperatures\[1\]='hot'"),
    ({"annotator": "llm", "annotator_params": {"preset": "papr"}}, r"unknown llm preset 'papr'; allowed: paper"),
    ({"annotator": "llm", "annotator_params": {"base_url": "http://127.0.0.1:1/v1"}},
     r"annotator_params\.model is missing"),
    ({"annotator": "llm", "annotator_params": {"preset": "paper", "match": {"min_ratio": "high"}}},
     r"annotator_params\.match\.min_ratio='high'"),
    ({"annotator": "oracle", "annotator_params": {"steps": "toy"}}, r"annotator_params\.steps.*no settings"),
], ids=["unknown", "ill_typed", "bad_choice", "surprisal_model", "temperature", "preset", "llm_no_model",
        "nested_match", "oracle"])
def test_annotator_params_are_checked_when_the_parameter_file_loads(tmp_path, changes, message):
    with pytest.raises(ParamError, match=message):
        load_01(tmp_path, **changes)


def test_llm_annotator_params_with_a_served_model_name_are_accepted(tmp_path):
    P = load_01(tmp_path, annotator="llm", annotator_params={"preset": "paper", "model": "deepseek-reasoner"},
                retry_failures=True)
    assert P.annotator_params["model"] == "deepseek-reasoner" and P.retry_failures is True


# provenance: a resume that would mix rows made otherwise is refused, saying what changed
def test_resuming_with_another_served_model_or_prompt_is_refused_naming_it(fake, llm, tmp_path):
    fake.script = {"ok": ["ok"]}
    rows = rows_for(["ok"])
    run_to_completion(rows, llm(), tmp_path)
    stats = json.loads((tmp_path / STATS).read_text())
    assert stats["annotator"]["model"] == "fake" and len(stats["annotator"]["prompt_sha256"]) == 16
    with pytest.raises(ValueError, match=r"model: fake -> other.*delete .*01_annotate/"):
        run_to_completion(rows, get_annotator("llm", base_url=fake.base_url, model="other",
                                              api_key_env="FAKE_API_KEY"), tmp_path)
    template = "Mark the hard parts ({percent}%, {n_chars} chars):\n[[TRACE]]\n{trace}\n[[/TRACE]]"
    with pytest.raises(ValueError, match=r"prompt_sha256: \w{16} -> \w{16}"):
        run_to_completion(rows, llm(prompt_template=template), tmp_path)
    with pytest.raises(ValueError, match=r"offload_tokenizer_hash: null -> \w{16}"):
        run_to_completion(rows, llm(), tmp_path, tokenizer=_tokenizer_stub())
    run_to_completion(rows, llm(), tmp_path)  # the same provenance resumes


def _tokenizer_stub():
    class Stub:
        chat_template = None

        def get_vocab(self):
            return {"a": 0, "b": 1}

    return Stub()


def test_resuming_with_other_small_model_weights_is_refused_naming_them(tiny_models, toy_tokenizer, toy_rows,
                                                                        tmp_path):
    def make(model):
        return get_annotator("surprisal", model=model, tokenizer=toy_tokenizer, steps="toy")

    annotate_all(toy_rows[:2], make(tiny_models["small"]), tmp_path, progress=False)
    recorded = json.loads((tmp_path / STATS).read_text())["annotator"]
    assert len(recorded["model_hash"]) == 16 and len(recorded["tokenizer_hash"]) == 16
    retrained = copy.deepcopy(tiny_models["small"])
    with torch.no_grad():
        next(retrained.parameters()).add_(1e-3)  # same folder name, other weights (notebook 00 ran again)
    with pytest.raises(ValueError, match=r"model_hash: \w{16} -> \w{16}"):
        annotate_all(toy_rows, make(retrained), tmp_path, progress=False)


# =============================================================================================================
# THE INVARIANT, enforced on whatever an annotator returns
class Fixed:
    """Returns the spans it was given (or raises): stands for a buggy annotator."""

    name = "fixed"

    def __init__(self, spans_by_id: dict, error: Exception | None = None) -> None:
        self.spans_by_id, self.error = spans_by_id, error

    def describe(self):
        return {"name": self.name}

    def annotate(self, row, retry):
        if self.error is not None:
            raise self.error
        return Annotation(spans=tuple(self.spans_by_id[row["id"]]))


@pytest.mark.parametrize("spans, trace, reason", [
    ([(0, 5), (3, 8)], "0123456789", "invalid_spans"),  # overlapping
    ([(5, 8), (0, 2)], "0123456789", "invalid_spans"),  # unsorted
    ([(4, 4)], "0123456789", "invalid_spans"),  # empty
    ([(2, 11)], "0123456789", "invalid_spans"),  # past the end
    ([(0, 3)], "abc <bigmodel> def", "text_altered"),  # the trace itself holds a tag: stripping would alter it
], ids=["overlap", "unsorted", "empty", "out_of_range", "trace_contains_a_tag"])
def test_an_annotation_breaking_the_invariant_becomes_a_failure(tmp_path, spans, trace, reason):
    row = {"id": "x", "question": "q", "answer": "a", "trace": trace}
    annotate_all([row], Fixed({"x": spans}), tmp_path, max_failure_fraction=1.0, progress=False)
    annotated, failures = read_out(tmp_path)
    assert not annotated and failures[0]["reason"] == reason


def test_an_annotator_crash_is_an_internal_error_row_not_a_dead_run(tmp_path):
    rows = rows_for(["a", "b"])
    summary = annotate_all(rows, Fixed({}, error=KeyError("boom")), tmp_path, max_failure_fraction=1.0,
                           progress=False)
    assert summary.failure_reasons == {"internal_error": 2}
    assert "boom" not in (tmp_path / FAILURES).read_text()


def test_duplicate_input_ids_are_refused_before_any_work(tmp_path):
    with pytest.raises(ValueError, match="duplicate"):
        annotate_all(rows_for(["a", "a"]), Fixed({}), tmp_path, progress=False)
    assert not (tmp_path / ANNOTATED).exists()


# =============================================================================================================
# registry and the paper preset
def test_registry_names_and_errors(monkeypatch):
    assert {"llm", "surprisal", "oracle"} <= set(ANNOTATORS.names())
    with pytest.raises(UnknownNameError, match="unknown annotator 'gpt5'; allowed: .*oracle"):
        get_annotator("gpt5")
    with pytest.raises(UnknownNameError, match="unknown llm preset 'papr'; allowed: paper"):
        get_annotator("llm", preset="papr")
    with pytest.raises(ParamError, match="unknown parameter.*bogus"):
        get_annotator("llm", base_url="http://127.0.0.1:1/v1", model="m", bogus=1)
    monkeypatch.delenv("DEEPSEEK_API_KEY", raising=False)
    with pytest.raises(ValueError, match="DEEPSEEK_API_KEY"):
        get_annotator("llm", preset="paper")


def test_paper_preset_is_deepseek_chat_and_records_no_key(monkeypatch):
    monkeypatch.setenv("DEEPSEEK_API_KEY", SECRET)
    annotator = get_annotator("llm", preset="paper")
    d = annotator.describe()
    assert (d["base_url"], d["model"], d["api_key_env"]) == ("https://api.deepseek.com", "deepseek-chat",
                                                            "DEEPSEEK_API_KEY")
    assert d["temperatures"] == (0.0, 0.3, 0.6) and d["target_fraction"] == 0.2
    assert SECRET not in json.dumps(d, default=str)
    prompt = annotator.prompt("trace {with braces}")
    assert "about 20% of the trace" in prompt and "trace {with braces}" in prompt


def test_parse_snippets_reads_only_fenced_blocks():
    reply = (f"intro\n{SNIPPET_OPEN}\n  first one  \n{SNIPPET_CLOSE}\n```\n{SNIPPET_OPEN}\nline a\nline b\n"
             f"{SNIPPET_CLOSE}\n```\n{SNIPPET_OPEN}\nnever closed")
    assert parse_snippets(reply) == ["first one", "line a\nline b"]


# =============================================================================================================
# oracle and surprisal on the toy world
@pytest.fixture(scope="module")
def toy_rows(tmp_path_factory):
    data = tmp_path_factory.mktemp("data")
    runs.write_jsonl(data / "train.jsonl", [p.to_json() for p in generate(6, seed=1)])
    return load_toy(data)


def test_oracle_marks_exactly_the_hard_steps(toy_rows, tmp_path, toy_tokenizer):
    annotate_all(toy_rows, get_annotator("oracle"), tmp_path, tokenizer=toy_tokenizer, progress=False)
    annotated, _ = assert_exactly_one_row_each(toy_rows, tmp_path)
    for row in toy_rows:
        assert annotated[row["id"]]["spans"] == row["hard_spans"]
        assert all(t.startswith(" bonus ") for t in tags.inner_texts(annotated[row["id"]]["annotated"]))
    assert score_rows(list(annotated.values()), {r["id"]: r["hard_spans"] for r in toy_rows})["f1"] == 1.0


@pytest.fixture(scope="module")
def surprisal(tiny_models, toy_tokenizer):
    return get_annotator("surprisal", model=tiny_models["small"], tokenizer=toy_tokenizer, steps="toy",
                         batch_size=4, max_batch_tokens=600)


@pytest.mark.parametrize("aggregate, unit", [("max", "chars"), ("mean", "tokens")])
def test_surprisal_marks_whole_steps_close_to_the_target_fraction(tiny_models, toy_tokenizer, toy_rows, tmp_path,
                                                                  aggregate, unit):
    annotator = get_annotator("surprisal", model=tiny_models["small"], tokenizer=toy_tokenizer, steps="toy",
                              aggregate=aggregate, unit=unit, target_fraction=0.25, batch_size=4)
    annotate_all(toy_rows, annotator, tmp_path, tokenizer=toy_tokenizer, progress=False)
    annotated, _ = assert_exactly_one_row_each(toy_rows, tmp_path)
    for row in annotated.values():
        trace, steps = row["trace"], step_spans(row["trace"])
        marked = [any(a <= s and e <= b for a, b in row["spans"]) for s, e in steps]
        inside = sum(e - s for (s, e), m in zip(steps, marked) if m)
        assert inside == sum(e - s for s, e in row["spans"]), "spans are unions of whole steps"
        if unit == "chars":
            frac, shares = row["offload_char_fraction"], [(e - s) / len(trace) for s, e in steps]
        else:
            offsets = toy_tokenizer(trace, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
            starts = [s for s, e in offsets if e > s]
            frac = row["offload_token_fraction"]
            shares = [sum(a <= s < b for s in starts) / len(starts) for a, b in steps]
        assert abs(frac - 0.25) <= max(shares) / 2 + 1e-9, "coverage ends within half a step of the target"


def test_surprisal_losses_are_the_teacher_forced_token_losses(surprisal, tiny_models, toy_tokenizer, toy_rows):
    enc = surprisal._encode(toy_rows[0])
    losses = surprisal._losses([enc])[id(enc)]
    ids = torch.tensor([enc.ids])
    labels = ids.clone()
    labels[0, : enc.n_prompt] = -100
    with torch.no_grad():
        want = tiny_models["small"](input_ids=ids, labels=labels).loss.item()
    assert len(losses) == len(enc.ids) - enc.n_prompt
    assert np.mean(losses) == pytest.approx(want, rel=1e-5)


def test_surprisal_losses_do_not_depend_on_the_loss_chunk_size(surprisal, toy_rows, monkeypatch):
    import splitlib.annotate.surprisal as module

    enc = surprisal._encode(toy_rows[1])
    whole = surprisal._losses([enc])[id(enc)]
    monkeypatch.setattr(module, "_LOSS_CHUNK", 7)
    assert surprisal._losses([enc])[id(enc)] == pytest.approx(whole, rel=1e-6)


def test_surprisal_batches_give_the_same_spans_as_single_rows(surprisal, toy_rows):
    batched = surprisal.annotate_batch(toy_rows)
    single = [surprisal.annotate(r) for r in toy_rows]
    assert [a.spans for a in batched] == [a.spans for a in single]


def test_surprisal_loads_a_saved_model_directory(tiny_model_dirs, surprisal, toy_rows):
    from_dir = get_annotator("surprisal", model=str(tiny_model_dirs["small"]), steps="toy", device="cpu")
    assert from_dir.annotate(toy_rows[0]).spans == surprisal.annotate(toy_rows[0]).spans


def test_surprisal_reports_too_long_traces(surprisal, toy_rows):
    row = dict(toy_rows[0], trace=toy_rows[0]["trace"] * 40)
    with pytest.raises(AnnotationFailure, match="too_long"):
        surprisal.annotate(row)


def test_generic_steps_are_sentences_within_lines():
    text = "First, x = 3.5 is given. Then we square it!\n\nNext? Yes.  "
    assert [text[s:e] for s, e in generic_steps(text)] == ["First, x = 3.5 is given.", " Then we square it!",
                                                           "Next?", " Yes."]
    assert set(STEP_SPLITTERS) == {"toy", "generic"}
    with pytest.raises(UnknownNameError, match="unknown step splitter 'words'; allowed: toy, generic"):
        SurprisalConfig(steps="words")


# =============================================================================================================
# analysis and figures
def test_score_against_oracle_in_characters_and_tokens(toy_tokenizer):
    text = "0123456789"
    assert score_against_oracle([(0, 5)], [(0, 5)], text) == {"precision": 1.0, "recall": 1.0, "f1": 1.0}
    s = score_against_oracle([(0, 4)], [(2, 10)], text)
    assert (s["precision"], s["recall"]) == (0.5, 0.25) and s["f1"] == pytest.approx(1 / 3)
    assert score_against_oracle([], [], text)["f1"] == 1.0 and score_against_oracle([], [(0, 1)], text)["f1"] == 0.0
    trace = generate(1, seed=4)[0]
    by_tokens = score_against_oracle(trace.hard_spans, trace.hard_spans, trace.trace, tokenizer=toy_tokenizer)
    assert by_tokens["f1"] == 1.0


def test_position_profile_averages_masks_over_normalised_position():
    rows = [{"trace": "a" * 400, "spans": [(0, 200)]}, {"trace": "b" * 1000, "spans": [(0, 1000)]}]
    profile = position_profile(rows, n_bins=200)
    assert profile.shape == (200,)
    assert np.allclose(profile[:100], 1.0) and np.allclose(profile[100:], 0.5)
    short = position_profile([{"trace": "abc", "spans": [(0, 1)]}], n_bins=200)  # fewer characters than bins
    assert np.nanmax(short) == 1.0 and np.isnan(short).sum() == 197


def test_render_html_and_ansi_highlight_spans_and_escape_text():
    annotated = tags.apply_spans("if a<b & c: done", [(3, 6)])
    page = render_html([annotated, annotated], titles=["one", "two"])
    assert page.count("<mark") == 2 and "a&lt;b" in page and "&amp;" in page and "<h4>two</h4>" in page
    assert render_ansi(annotated) == "if \x1b[30;43ma<b\x1b[0m & c: done"


def test_figures_are_matplotlib_figures():
    rows = [{"id": str(i), "trace": "x" * 50, "spans": [(0, 5 + i)], "offload_char_fraction": (5 + i) / 50,
             "offload_token_fraction": 0.1 + i / 100} for i in range(10)]
    assert isinstance(offload_fraction_histogram(offload_fractions(rows)), Figure)
    profiles = {"llm": position_profile(rows), "surprisal": position_profile(rows)}
    assert isinstance(position_profile_figure(profiles), Figure)
    assert isinstance(oracle_scores_figure({"llm": {"precision": 0.5, "recall": 0.4, "f1": 0.44}}), Figure)


# =============================================================================================================
# a real vLLM OpenAI-compatible server with a random-init toy model: its answers are poor, which exercises rejection
@pytest.fixture(scope="module")
def vllm_server(toy_tokenizer, tmp_path_factory):
    from splitlib.serve import VLLMServer
    from splitlib.toy.models import ToyModelConfig, build_model

    root = tmp_path_factory.mktemp("vllm_model")
    # head_dim 32: a size vLLM's CPU attention supports; 2,048 positions so the annotation prompt fits
    model = build_model(ToyModelConfig(hidden_size=64, num_hidden_layers=1, num_attention_heads=2,
                                       intermediate_size=128, max_position_embeddings=2048), toy_tokenizer, seed=0)
    model.save_pretrained(root / "model")
    toy_tokenizer.save_pretrained(root / "model")
    spec = {"model": str(root / "model"), "served_model_name": "toy", "port": 0, "startup_timeout_s": 240,
            "env": {"VLLM_CPU_KVCACHE_SPACE": "1"},
            "args": {"dtype": "float32", "enforce_eager": True, "max_model_len": 2048}}
    with VLLMServer(spec, root / "server.log") as server:
        yield server.base_url


@pytest.mark.slow
def test_llm_annotator_against_a_real_vllm_server(vllm_server, toy_rows, tmp_path):
    annotator = get_annotator("llm", base_url=vllm_server, model="toy", max_response_tokens=48)
    rows = toy_rows[:4]
    annotate_all(rows, annotator, tmp_path, concurrency=2, max_failure_fraction=1.0, timeout_s=60, max_retries=1,
                 progress=False)
    annotated, failures = assert_exactly_one_row_each(rows, tmp_path)
    content_reasons = {"no_snippets", "snippet_not_found"}  # the server answered; the answers were unusable
    assert {r["reason"] for r in failures.values()} <= content_reasons, failures
    for row in annotated.values():
        assert tags.strip_tags(row["annotated"]) == row["trace"]


# =============================================================================================================
# prompt_style: "authors" sends the authors' own prompt (annotated_dataset/data_generator.py) and reads their fences
AUTHORS_TRACE = ("First, restate the problem: we need the sum of the roots. Then by Vieta's formulas the sum of "
                 "the roots of x^2 - 5x + 6 is 5. Check: the roots are 2 and 3, and 2 + 3 = 5. So the answer is 5.")
AUTHORS_SNIPPETS = ["by Vieta's formulas the sum of the roots of x^2 - 5x + 6 is 5", "2 + 3 = 5"]  # > 10 apart


class StubChat:
    """An injected client that returns ``reply`` and records the messages it was sent."""

    def __init__(self, reply: str) -> None:
        self.reply, self.sent = reply, []
        self.chat = self.completions = self

    def create(self, **request):
        self.sent.append(request["messages"])
        return {"choices": [{"message": {"content": self.reply}}]}


def _authors(reply: str = "", **params):
    client = StubChat(reply)
    return get_annotator("llm", base_url="http://x", model="m", prompt_style="authors",
                         client=client, **params), client


def _authors_fenced(snippets) -> str:
    return "\n".join(f"-----SNIPPET START-----\n{s}\n-----SNIPPET END-----" for s in snippets)


def test_authors_prompt_is_their_system_and_user_message_with_the_trace_and_share():
    annotator, _ = _authors()
    system, user = annotator.messages(AUTHORS_TRACE + " {braces}")
    assert system["role"] == "system" and system["content"].startswith("You are DeepSeek-R1, a large reasoning model.")
    assert user["role"] == "user" and "Chain-of-thought (CoT):\n" + AUTHORS_TRACE + " {braces}\n" in user["content"]
    n_chars = int(0.2 * len(AUTHORS_TRACE + " {braces}"))
    for message in (system, user):
        assert "-----SNIPPET START-----\n<verbatim text>\n-----SNIPPET END-----" in message["content"]
        assert f"about {n_chars} characters" in message["content"] or f"roughly {n_chars} characters" in message[
            "content"]
    assert "about 20%\nof the entire CoT" in system["content"] and "totalling ~20%\n" in user["content"]
    assert annotator.prompt(AUTHORS_TRACE) == annotator.messages(AUTHORS_TRACE)[-1]["content"]


def test_authors_style_reply_in_their_fences_is_located_in_the_trace():
    annotator, client = _authors(_authors_fenced(AUTHORS_SNIPPETS))
    result = annotator.annotate({"id": "a", "trace": AUTHORS_TRACE}, FAST_RETRY)
    assert [AUTHORS_TRACE[s:e] for s, e in result.spans] == AUTHORS_SNIPPETS
    assert result.details["n_snippets"] == 2 and result.details["n_found"] == 2
    assert [m["role"] for m in client.sent[0]] == ["system", "user"]
    assert parse_snippets("---- SNIPPET START ----  padded  --- SNIPPET END ---", "authors") == ["padded"]


def test_authors_style_ignores_project_fences_and_project_style_ignores_theirs():
    project_reply = "\n".join(f"{SNIPPET_OPEN}\n{s}\n{SNIPPET_CLOSE}" for s in AUTHORS_SNIPPETS)
    annotator, client = _authors(project_reply)
    with pytest.raises(AnnotationFailure) as failure:
        annotator.annotate({"id": "a", "trace": AUTHORS_TRACE}, FAST_RETRY)
    assert failure.value.reason == "no_snippets" and len(client.sent) == 3  # one answer per temperature
    assert parse_snippets(_authors_fenced(AUTHORS_SNIPPETS)) == []


def test_project_style_describe_is_unchanged_and_authors_style_is_recorded():
    project = get_annotator("llm", base_url="http://x", model="m", client=StubChat(""))
    assert project.describe() == {
        "name": "llm", "base_url": "http://x", "model": "m", "api_key_env": None, "target_fraction": 0.2,
        "temperatures": (0.0, 0.3, 0.6), "max_response_tokens": 4096, "response_format": "snippets",
        "match": {"min_ratio": 0.5, "refine_below": 0.95, "edge_chars": 5, "edge_radius": 50, "merge_gap": 10,
                  "min_snippet_chars": 1, "max_ratio_evals": 2000},
        "prompt_sha256": "5d1e1f54c0a6632b"}  # as recorded before prompt_style existed
    assert [m["role"] for m in project.messages("t")] == ["user"]
    authors, _ = _authors()
    d = authors.describe()
    assert d["prompt_style"] == "authors" and d["prompt_sha256"] != project.describe()["prompt_sha256"]
    assert {k: v for k, v in d.items() if k not in ("prompt_style", "prompt_sha256")} == {
        k: v for k, v in project.describe().items() if k != "prompt_sha256"}


@pytest.mark.parametrize("params", [{"response_format": "tagged"}, {"prompt_template": "{trace}"},
                                    {"prompt_style": "theirs"}])
def test_authors_style_is_for_snippets_with_its_own_prompt_only(params):
    params = {"prompt_style": "authors", **params}
    with pytest.raises((ValueError, ParamError), match="prompt_style"):
        get_annotator("llm", base_url="http://x", model="m", client=StubChat(""), **params)
