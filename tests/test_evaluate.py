"""Evaluation: protocols, seeds, resumable per-sample records, aggregation with CIs, plots.

The decoder is a hand-written fake (method, questions, seeds, sampling, max_new_tokens) -> traces; faults are
injected through it. The real decoder service runs in tests/test_decoder_service.py.
"""

from __future__ import annotations

import json
import math

import pytest
from matplotlib.figure import Figure

from splitlib import evaluate as ev
from splitlib import provenance
from splitlib.evaluate import Method
from splitlib.registry import UnknownNameError
from splitlib.runs import read_jsonl
from splitlib.sampling import Sampling
from splitlib.seeds import derive_seed
from splitlib.toy.world import generate
from splitlib.trace import Segment, Trace

PROBLEMS = [{"id": f"p{i}", "question": f"What is {i} + 1?", "answer": str(i + 1)} for i in range(6)]
GOLD = {p["question"]: p["answer"] for p in PROBLEMS}
SMALL = Method("small-only", policy="small_only", small="base")
SPLIT = Method("split", policy="split", small="grpo", big="big", policy_params={"max_offload_fraction": 0.05})
TINY_PAPER = ev.make_protocol("paper", samples=2, max_new_tokens=64)


# -- a fake decoder -------------------------------------------------------------------------------------------------
def segment(model: str, text: str, finish: str) -> Segment:
    n = max(len(text) // 4, 1)
    return Segment(model=model, token_ids=tuple(range(n)), text=text, prefill_tokens=0, decode_tokens=n,
                   discarded_tokens=0, check_tokens=0, wall_s=0.01, finish=finish)


def make_trace(answer: str, *, offload: str = "", finish: str = "eos") -> Trace:
    opening = "Let me think. <bigmodel>" if offload else "Let me think. "
    segs = [segment("small", opening, "handoff" if offload else finish)]
    if offload:
        segs += [segment("big", offload, "takeback"), segment("small", "</bigmodel>", finish)]
    text = "".join(s.text for s in segs) + f" So \\boxed{{{answer}}}"
    last = segs[-1]
    segs[-1] = Segment(**{**last.__dict__, "text": last.text + f" So \\boxed{{{answer}}}"})
    return Trace(segments=tuple(segs), text=text, prompt_tokens={"small": 10}, handoffs=int(bool(offload)),
                 rejected_requests=0, finish=finish, wall_s=0.05)


def is_right(method: Method, seed: int) -> bool:
    """Deterministic 'skill': the split method is right more often than the small one."""
    return seed % 4 != 0 if method.policy == "split" else seed % 4 == 0


class FakeDecoder:
    def __init__(self, fail_after_calls: int | None = None) -> None:
        self.calls: list[tuple[str, int]] = []
        self.fail_after_calls = fail_after_calls

    def __call__(self, method, questions, seeds, sampling, max_new_tokens):
        if self.fail_after_calls is not None and len(self.calls) >= self.fail_after_calls:
            raise KeyboardInterrupt("killed while decoding")  # what Ctrl-C / a dying engine looks like
        self.calls.append((method.name, len(questions)))
        assert isinstance(sampling, Sampling) and isinstance(max_new_tokens, int)
        offload = "42 = 6 * 7 " if method.policy == "split" else ""
        return [make_trace(GOLD[q] if is_right(method, s) else "-1", offload=offload) for q, s in zip(questions, seeds)]


def comparable(rows: list[dict]) -> list[dict]:
    """Rows sorted by key, measured timings dropped (they differ between any two runs)."""
    drop = ("wall_s", "batch_wall_s", "batch_size")
    out = [{k: v for k, v in r.items() if k not in drop} for r in rows]
    return sorted(out, key=lambda r: (r["method"], r["problem_id"], r["sample"]))


def keys(rows: list[dict]) -> list[tuple]:
    return [(r["method"], r["problem_id"], r["sample"]) for r in rows]


# -- protocols, methods, seeds --------------------------------------------------------------------------------------
def test_protocol_registry_holds_the_paper_and_deepseek_settings():
    paper, deepseek = ev.make_protocol("paper"), ev.make_protocol("deepseek")
    assert (paper.temperature, paper.max_new_tokens, paper.samples, paper.aggregate) == (0.0, 16384, 5, "runs")
    assert (deepseek.temperature, deepseek.top_p, deepseek.max_new_tokens, deepseek.aggregate) == (
        0.6, 0.95, 32768, "pass@1")
    assert ev.make_protocol("deepseek", samples=4).samples == 4
    custom = ev.make_protocol("custom", temperature=1.0, top_p=1.0, max_new_tokens=8, samples=3, aggregate="pass@1")
    assert custom.name == "custom"


@pytest.mark.parametrize(("name", "kwargs", "match"), [
    ("paper", {"temprature": 0.1}, "temprature"),
    ("paper", {"samples": 0}, "samples=0"),
    ("deepseek", {"top_p": 1.5}, "top_p=1.5"),
    ("custom", {"temperature": 0.0}, "needs top_p"),
    ("beam", {}, "paper, deepseek, custom"),
])
def test_bad_protocol_settings_name_the_key(name, kwargs, match):
    with pytest.raises(ValueError, match=match):
        ev.make_protocol(name, **kwargs)


def test_unknown_protocols_raise_the_registry_error_listing_custom_too():
    with pytest.raises(UnknownNameError, match="expected one of paper, deepseek, custom"):
        ev.make_protocol("beam")
    assert ev.PROTOCOLS.names() == ["paper", "deepseek"]


def test_method_params_must_be_json_and_are_copied():
    params = {"ratio": 19}
    m = Method("rs", policy="random_switch", small="base", big="big", policy_params=params)
    params["ratio"] = 9
    assert m.policy_params == {"ratio": 19}
    with pytest.raises(ValueError, match="JSON"):
        Method("bad", policy="split", small="sft", policy_params={"x": object()})
    assert list(ev.methods_table([SMALL, SPLIT])["method"]) == ["small-only", "split"]


# -- running and resuming -------------------------------------------------------------------------------------------
def test_one_graded_row_per_method_problem_sample(tmp_path):
    out = tmp_path / "samples.jsonl"
    rows = ev.evaluate([SMALL, SPLIT], PROBLEMS, TINY_PAPER, FakeDecoder(), out, progress=False, batch_size=4)
    assert len(rows) == 2 * len(PROBLEMS) * 2 == len(read_jsonl(out))
    assert len(set(keys(rows))) == len(rows)
    row = next(r for r in rows if r["method"] == "split")
    assert {k: row[k] for k in ("protocol", "temperature", "top_p", "max_new_tokens")} == {
        "protocol": "paper", "temperature": 0.0, "top_p": 1.0, "max_new_tokens": 64}
    assert row["seed"] == derive_seed(0, "split", row["problem_id"], row["sample"])
    for key in ("seed", "answer", "extracted", "correct", "truncated", "reason", "tokens_small", "tokens_big",
                "offload_token_fraction", "offload_char_fraction", "handoffs", "rejected_requests", "wall_s",
                "finish", "grader_version", "generation", "trace", "policy", "policy_params", "small_model",
                "big_model", "temperature", "max_new_tokens"):
        assert key in row, key
    assert row["correct"] == is_right(SPLIT, row["seed"])
    assert row["offload_token_fraction"] > 0 and row["handoffs"] == 1
    assert Trace.from_json(row["trace"]).text == row["generation"]  # the trace is kept for the simulator


def test_batches_hold_one_method_and_at_most_batch_size(tmp_path):
    dec = FakeDecoder()
    ev.evaluate([SMALL, SPLIT], PROBLEMS, TINY_PAPER, dec, tmp_path / "s.jsonl", progress=False, batch_size=5)
    assert dec.calls == [("small-only", 5), ("small-only", 5), ("small-only", 2),
                         ("split", 5), ("split", 5), ("split", 2)]


def test_interrupted_run_resumes_to_the_uninterrupted_result(tmp_path):
    whole = ev.evaluate([SMALL, SPLIT], PROBLEMS, TINY_PAPER, FakeDecoder(), tmp_path / "whole.jsonl",
                        progress=False, batch_size=5)
    out = tmp_path / "resumed.jsonl"
    with pytest.raises(KeyboardInterrupt):
        ev.evaluate([SMALL, SPLIT], PROBLEMS, TINY_PAPER, FakeDecoder(fail_after_calls=4), out,
                    progress=False, batch_size=5)
    assert len(read_jsonl(out)) == 5 + 5 + 2 + 5  # whole batches only
    rerun = FakeDecoder()
    resumed = ev.evaluate([SMALL, SPLIT], PROBLEMS, TINY_PAPER, rerun, out, progress=False, batch_size=5)
    assert sum(n for _, n in rerun.calls) == len(whole) - 17  # only the missing samples were decoded
    on_disk = read_jsonl(out)
    assert len(set(keys(on_disk))) == len(on_disk) == len(whole)
    assert comparable(on_disk) == comparable(whole) == comparable(resumed)


def test_a_torn_last_line_from_a_kill_is_dropped_and_redone(tmp_path):
    whole = ev.evaluate([SPLIT], PROBLEMS, TINY_PAPER, FakeDecoder(), tmp_path / "whole.jsonl", progress=False)
    out = tmp_path / "torn.jsonl"
    ev.evaluate([SPLIT], PROBLEMS[:3], TINY_PAPER, FakeDecoder(), out, progress=False)
    full_line = out.read_text().splitlines()[-1]
    lines = out.read_text().splitlines(keepends=True)[:-1]
    out.write_text("".join(lines) + full_line[: len(full_line) // 2])  # the kill hit mid-write
    ev.evaluate([SPLIT], PROBLEMS, TINY_PAPER, FakeDecoder(), out, progress=False)
    text = out.read_text()
    assert text.endswith("\n") and all(json.loads(line) for line in text.splitlines())
    assert comparable(read_jsonl(out)) == comparable(whole)


def test_rerun_of_a_complete_file_decodes_nothing(tmp_path):
    out = tmp_path / "s.jsonl"
    first = ev.evaluate([SMALL], PROBLEMS, TINY_PAPER, FakeDecoder(), out, progress=False)
    again = FakeDecoder()
    assert ev.evaluate([SMALL], PROBLEMS, TINY_PAPER, again, out, progress=False) == first
    assert again.calls == []


def test_a_subset_reruns_identically(tmp_path):
    whole = ev.evaluate([SPLIT], PROBLEMS, TINY_PAPER, FakeDecoder(), tmp_path / "a.jsonl", progress=False)
    part = ev.evaluate([SPLIT], PROBLEMS[2:4], TINY_PAPER, FakeDecoder(), tmp_path / "b.jsonl", progress=False)
    wanted = {("split", p["id"], s) for p in PROBLEMS[2:4] for s in range(2)}
    assert comparable(part) == comparable([r for r in whole if (r["method"], r["problem_id"], r["sample"]) in wanted])


@pytest.mark.parametrize(("change", "named"), [("protocol", "sampling.max_new_tokens: 64 -> 128"),
                                               ("method", "model.small: grpo -> sft"), ("seed", "sampling.seed")])
def test_resuming_with_other_settings_recomputes_the_rows_and_keeps_the_old_ones_aside(tmp_path, change, named,
                                                                                       caplog):
    out = tmp_path / "s.jsonl"
    before = ev.evaluate([SPLIT], PROBLEMS[:2], TINY_PAPER, FakeDecoder(), out, progress=False)
    protocol, method = TINY_PAPER, SPLIT
    if change == "protocol":
        protocol = ev.make_protocol("paper", samples=2, max_new_tokens=128)
    elif change == "method":
        method = Method("split", policy="split", small="sft", big="big", policy_params=SPLIT.policy_params)
    else:
        protocol = ev.make_protocol("paper", samples=2, max_new_tokens=64, seed=1)
    dec = FakeDecoder()
    with caplog.at_level("WARNING", logger="splitlib.evaluate"):
        rows = ev.evaluate([method], PROBLEMS[:2], protocol, dec, out, progress=False)
    assert sum(n for _, n in dec.calls) == 4  # every row decoded again
    assert "4 of 4 rows were made by other models or settings" in caplog.text and named in caplog.text
    assert read_jsonl(ev.stale_path(out)) == before and comparable(read_jsonl(out)) == comparable(rows)


def test_more_samples_extend_an_existing_file(tmp_path):
    out = tmp_path / "s.jsonl"
    ev.evaluate([SPLIT], PROBLEMS, ev.make_protocol("deepseek", samples=2, max_new_tokens=64), FakeDecoder(), out,
                progress=False)
    dec = FakeDecoder()
    rows = ev.evaluate([SPLIT], PROBLEMS, ev.make_protocol("deepseek", samples=3, max_new_tokens=64), dec, out,
                       progress=False)
    assert len(rows) == 18 and sum(n for _, n in dec.calls) == 6


def test_duplicate_method_names_and_problem_ids_are_refused(tmp_path):
    with pytest.raises(ValueError, match="method names"):
        ev.evaluate([SPLIT, SPLIT], PROBLEMS, TINY_PAPER, FakeDecoder(), tmp_path / "s.jsonl", progress=False)
    with pytest.raises(ValueError, match="problem ids"):
        ev.evaluate([SPLIT], PROBLEMS + PROBLEMS[:1], TINY_PAPER, FakeDecoder(), tmp_path / "s.jsonl", progress=False)


def test_toy_problem_objects_are_accepted(tmp_path):
    problems = generate(2, seed=0)
    dec = lambda method, questions, seeds, sampling, max_new_tokens: [make_trace("0") for _ in questions]
    rows = ev.evaluate([SMALL], problems, TINY_PAPER, dec, tmp_path / "s.jsonl", progress=False)
    assert [r["problem_id"] for r in rows[:2]] == [p.id for p in problems]
    assert [r["answer"] for r in rows[:2]] == [p.answer for p in problems]


# -- grading inside evaluate ----------------------------------------------------------------------------------------
def test_grading_sees_the_generation_only(tmp_path):
    problem = {"id": "q", "question": "The answer is \\boxed{7}. What is 3 + 4?", "answer": "7"}
    echo = lambda method, questions, seeds, sampling, max_new_tokens: [
        Trace(segments=(segment("small", "I am not sure.", "eos"),), text="I am not sure.", prompt_tokens={},
              handoffs=0, rejected_requests=0, finish="eos", wall_s=0.0) for _ in questions]
    (row, *_) = ev.evaluate([SMALL], [problem], TINY_PAPER, echo, tmp_path / "s.jsonl", progress=False)
    assert (row["correct"], row["reason"], row["extracted"]) == (False, "no_answer", None)


def test_truncated_generations_count_as_wrong_and_are_reported(tmp_path):
    def dec(method, questions, seeds, sampling, max_new_tokens):
        return [make_trace(GOLD[q], finish="length" if i % 2 else "eos") for i, q in enumerate(questions)]

    rows = ev.evaluate([SMALL], PROBLEMS[:4], ev.make_protocol("paper", samples=1), dec, tmp_path / "s.jsonl",
                       progress=False)
    assert [(r["correct"], r["truncated"], r["reason"]) for r in rows] == [
        (True, False, "correct"), (False, True, "truncated")] * 2
    (summary,) = ev.aggregate(rows, ev.make_protocol("paper", samples=1)).to_dict("records")
    assert summary["accuracy"] == 0.5 and summary["truncated_share"] == 0.5


def test_regrade_recomputes_from_the_stored_generation(tmp_path):
    rows = ev.evaluate([SPLIT], PROBLEMS[:2], TINY_PAPER, FakeDecoder(), tmp_path / "s.jsonl", progress=False)
    tampered = [{**r, "correct": not r["correct"], "grader_version": "old"} for r in rows]
    regraded = ev.regrade(tampered)
    assert [r["correct"] for r in regraded] == [r["correct"] for r in rows]
    assert {r["grader_version"] for r in regraded} == {rows[0]["grader_version"]}


# -- aggregation on hand-made rows ----------------------------------------------------------------------------------
def hand_row(method: str, problem: str, sample: int, correct: bool, **extra) -> dict:
    return {"method": method, "problem_id": problem, "sample": sample, "correct": correct, "scorable": True,
            "truncated": False, "offload_token_fraction": 0.1, "offload_char_fraction": 0.2, "tokens_small": 90,
            "tokens_big": 10, "handoffs": 1, "rejected_requests": 0, "wall_s": 2.0, "policy": "split",
            "sweep": None, "grader_version": "g", **extra}


def runs_rows(method: str, per_run_correct: list[int], n_problems: int = 4) -> list[dict]:
    """Run r gets its first ``per_run_correct[r]`` problems right."""
    return [hand_row(method, f"p{i}", r, i < k) for r, k in enumerate(per_run_correct) for i in range(n_problems)]


@pytest.mark.parametrize(("level", "dof", "expected"), [
    (0.95, 1, 12.7062047), (0.95, 2, 4.3026527), (0.95, 4, 2.7764451), (0.95, 29, 2.0452296), (0.99, 4, 4.6040949),
    (0.90, 3, 2.3533634),
])
def test_t_quantile_matches_tables(level, dof, expected):
    assert ev.t_quantile(level, dof) == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize(("level", "dof"), [(0.95, 0), (1.0, 4), (0.0, 4)])
def test_t_quantile_refuses_impossible_settings(level, dof):
    with pytest.raises(ValueError, match="t_quantile"):
        ev.t_quantile(level, dof)


def test_runs_protocol_gives_mean_sd_and_t_interval():
    rows = runs_rows("m", [1, 2, 3])  # per-run accuracy 0.25, 0.50, 0.75
    (s,) = ev.aggregate(rows, ev.make_protocol("paper", samples=3)).to_dict("records")
    half = 4.3026527 * 0.25 / math.sqrt(3)
    assert s["accuracy"] == pytest.approx(0.5) and s["run_sd"] == pytest.approx(0.25)
    assert (s["ci_low"], s["ci_high"]) == pytest.approx((0.5 - half, 0.5 + half))
    assert (s["n_problems"], s["samples_per_problem"], s["n_rows"]) == (4, 3, 12)
    assert s["offload_char_fraction"] == pytest.approx(0.2) and s["tokens_big"] == 10 and s["wall_s"] == 2.0
    run_acc = ev.per_run_accuracy(rows)
    assert list(run_acc["accuracy"]) == [0.25, 0.5, 0.75]


def test_pass_at_1_bootstrap_interval_brackets_the_mean_and_is_seeded():
    rows = [hand_row("m", f"p{i}", s, (i + s) % 3 != 0) for i in range(20) for s in range(4)]
    protocol = ev.make_protocol("deepseek", samples=4, n_boot=500)
    first = ev.aggregate(rows, protocol).iloc[0]
    assert first["ci_low"] < first["accuracy"] < first["ci_high"]
    assert first["ci_method"] == "bootstrap over problems"
    assert ev.aggregate(rows, protocol).iloc[0]["ci_low"] == first["ci_low"]


def test_unscorable_rows_are_left_out_of_accuracy_but_counted():
    rows = runs_rows("m", [4]) + [hand_row("m", "bad", 0, False, scorable=False)]
    (s,) = ev.aggregate(rows, ev.make_protocol("paper", samples=1)).to_dict("records")
    assert s["accuracy"] == 1.0 and s["n_unscorable"] == 1 and s["n_problems"] == 4
    assert math.isnan(s["ci_low"])  # one run: no spread to build an interval from


def test_methods_keep_their_order_of_appearance():
    rows = runs_rows("zeta", [1]) + runs_rows("alpha", [2])
    assert list(ev.aggregate(rows, ev.make_protocol("paper", samples=1))["method"]) == ["zeta", "alpha"]


def test_paired_difference_when_a_beats_b_on_every_problem():
    rows = []
    for i in range(10):
        a_right = 3 + i % 2  # of 4 samples: A gets 3–4 right, B 0–2
        b_right = i % 3
        rows += [hand_row("A", f"p{i}", s, s < a_right) for s in range(4)]
        rows += [hand_row("B", f"p{i}", s, s < b_right) for s in range(4)]
    d = ev.paired_difference(rows, "A", "B", n_boot=2000, seed=1)
    assert d["diff"] > 0 and 0 < d["ci_low"] <= d["diff"] <= d["ci_high"] and d["n_problems"] == 10
    r = ev.paired_difference(rows, "B", "A", n_boot=2000, seed=1)
    assert r["diff"] == pytest.approx(-d["diff"]) and r["ci_high"] < 0
    same = ev.paired_difference(rows, "A", "A")
    assert (same["diff"], same["ci_low"], same["ci_high"]) == (0.0, 0.0, 0.0)
    with pytest.raises(ValueError, match="C"):
        ev.paired_difference(rows, "A", "C")


def test_gap_recovered():
    assert ev.gap_recovered(0.4, 0.2, 0.6) == pytest.approx(0.5)
    assert ev.gap_recovered(0.2, 0.2, 0.6) == 0.0
    assert math.isnan(ev.gap_recovered(0.3, 0.2, 0.2))


def test_write_metrics_is_valid_json_with_per_run_accuracy(tmp_path):
    rows = runs_rows("m", [1, 3]) + runs_rows("one-run", [2])[:4]
    path = ev.write_metrics(rows, ev.make_protocol("paper", samples=2), tmp_path / "metrics.json",
                            extra={"benchmark": "toy"})
    body = json.loads(path.read_text())  # strict JSON: NaN written as null
    assert body["protocol"]["aggregate"] == "runs" and body["benchmark"] == "toy"
    assert body["methods"]["m"]["run_accuracy"] == [0.25, 0.75]
    assert body["methods"]["one-run"]["ci_low"] is None
    assert body["grader_versions"] == ["g"]


def test_presentation_helpers_return_a_styler_and_a_figure():
    rows = (runs_rows("small", [1, 1]) + runs_rows("big", [4, 3])
            + [{**r, "sweep": "budget", "offload_char_fraction": f} for f, m in ((0.05, "b5"), (0.1, "b10"))
               for r in runs_rows(m, [2, 3])])
    df = ev.aggregate(rows, ev.make_protocol("paper", samples=2))
    assert "b10" in ev.results_table(df).to_html()
    fig = ev.accuracy_vs_offload(df)
    assert isinstance(fig, Figure)
    ax = fig.axes[0]
    assert len(ax.lines) >= 1 + 4  # the sweep's connecting line, one marker per method
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["budget sweep", "small", "big", "b5", "b10"]


# -- warnings on resume ----------------------------------------------------------------------------------------------
def test_rows_from_an_older_grader_are_regraded_on_resume_without_decoding(tmp_path, caplog):
    out = tmp_path / "s.jsonl"
    rows = ev.evaluate([SPLIT], PROBLEMS[:1], TINY_PAPER, FakeDecoder(), out, progress=False)
    made_by = {**rows[0]["provenance"], "grader": "old-grader"}
    old = [{**r, "correct": not r["correct"], "grader_version": "old-grader",
            "provenance": {**made_by, "sampling": r["provenance"]["sampling"]},
            "provenance_key": provenance.key({**made_by, "sampling": r["provenance"]["sampling"]})} for r in rows]
    out.write_text("".join(json.dumps(r) + "\n" for r in old))
    dec = FakeDecoder()
    with caplog.at_level("WARNING", logger="splitlib.evaluate"):
        again = ev.evaluate([SPLIT], PROBLEMS[:1], TINY_PAPER, dec, out, progress=False)
    assert "grader: old-grader -> " in caplog.text and dec.calls == []
    assert comparable(again) == comparable(rows) == comparable(read_jsonl(out))
    assert read_jsonl(ev.stale_path(out)) == old
