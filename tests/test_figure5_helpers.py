"""Helpers notebook 06 uses: pricing evaluation rows' traces, hand-off costs from traces, both Figure 5 panels."""

from __future__ import annotations

import pandas as pd
import pytest
from matplotlib.figure import Figure

from splitlib import plots, simulator
from splitlib.hardware import HardwareProfile, ModelThroughput
from splitlib.paper_results import paper_per_run_accuracy
from splitlib.trace import Segment, Trace

PROFILE = HardwareProfile("t", "cpu", {"small": ModelThroughput(1000.0, 100.0), "big": ModelThroughput(500.0, 20.0)},
                          "test")


def seg(model: str, kept: int, prefill: int = 0, decode: int | None = None, check: int = 0, discarded: int = 0):
    return Segment(model=model, token_ids=tuple(range(kept)), text="x" * kept, prefill_tokens=prefill,
                   decode_tokens=kept + discarded if decode is None else decode, discarded_tokens=discarded,
                   check_tokens=check, wall_s=0.0, finish="eos")


def trace(*segments: Segment, wall_s: float = 1.0) -> Trace:
    return Trace(segments=tuple(segments), text="", prompt_tokens={"small": 10, "big": 10}, handoffs=0,
                 rejected_requests=0, finish="eos", wall_s=wall_s)


def test_simulate_rows_prices_each_stored_trace_serially():
    small_only = trace(seg("small", 100, prefill=10))
    split = trace(seg("small", 50, prefill=10), seg("big", 10, prefill=60, check=16, discarded=6), seg("small", 40))
    rows = [{"method": "s", "problem_id": "p0", "sample": 0, "policy": "small_only", "trace": small_only.to_json()},
            {"method": "x", "problem_id": "p0", "sample": 0, "policy": "split", "trace": split.to_json()}]
    df = simulator.simulate_rows(rows, PROFILE)
    assert list(df["method"]) == ["s", "x"] and list(df["wall_s"]) == [1.0, 1.0]
    assert df["sim_s"][0] == pytest.approx(10 / 1000 + 99 / 100)  # the prefill yields the first of 100 tokens
    assert df["sim_s"][1] == pytest.approx(simulator.simulate_trace(split, PROFILE, "small", "big"))
    assert df["offload_token_fraction"][1] == pytest.approx(0.1)


def test_switch_costs_from_traces_average_per_big_segment():
    t = trace(seg("small", 50), seg("big", 8, check=16, discarded=8), seg("small", 20), seg("big", 12, check=16))
    sw = simulator.switch_costs_from([t])
    assert (sw.span_tokens, sw.check_tokens, sw.discarded_tokens) == (10.0, 16.0, 4.0)
    assert simulator.switch_costs_from([trace(seg("small", 5))]) == simulator.SwitchCosts()


def test_figure5_draws_both_panels_on_one_figure():
    per_run = pd.concat([paper_per_run_accuracy(), pd.DataFrame(
        [{"mode": "Random (5.05 %)", "run": i, "accuracy": 0.1 * i, "source": "this run"} for i in range(3)])])
    fig = plots.figure5(per_run, "a6000-paper", extra_curves={"toy": ([1.0, 0.9], [1.5, 1.2])}, ylabel="acc")
    assert isinstance(fig, Figure) and len(fig.axes) == 2
    left, right = fig.axes
    assert left.get_ylabel() == "acc"
    labels = [t.get_text() for t in right.get_legend().get_texts()]
    assert labels[-1] == "toy" and "SplitReasoner 32B" in labels


def test_mean_profile_averages_time_per_token_pointwise():
    from splitlib.profiling import mean_profile

    def prof(rate: float, call_s: float) -> HardwareProfile:
        tp = ModelThroughput(rate, rate / 10, ((0.0, rate), (100.0, rate / 2)), ((0.0, rate / 10),), call_s)
        return HardwareProfile("p", "cpu", {"m": tp}, "measured", {"kind": "hf"})

    m = mean_profile([prof(100.0, 0.0), prof(300.0, 0.002)], name="mean")
    tp = m.model("m")
    assert tp.prefill_tok_per_s == pytest.approx(150.0)  # 1 / mean(1/100, 1/300)
    assert tp.prefill_curve == (pytest.approx((0.0, 150.0)), pytest.approx((100.0, 75.0)))
    assert tp.decode_tok_per_s == pytest.approx(15.0) and tp.prefill_call_s == pytest.approx(0.001)
    assert (m.name, m.meta) == ("mean", {"kind": "hf", "rounds": 2})
    other = HardwareProfile("q", "cpu", {"m": ModelThroughput(1.0, 1.0, ((5.0, 1.0), (100.0, 1.0)))}, "measured")
    with pytest.raises(ValueError, match="different contexts"):
        mean_profile([prof(100.0, 0.0), other])


def test_measure_interleaved_alternates_profiles_and_timed_work(tiny_model_dirs):
    from splitlib.backends import load_backend
    from splitlib.profiling import measure_interleaved

    backends = {role: load_backend("hf", str(d)) for role, d in tiny_model_dirs.items()}
    calls = []
    profiles = measure_interleaved(backends, "tiny", "cpu", rounds=2, between=calls.append, progress=False,
                                   contexts=(8, 16), prefill_sizes=(2, 6), decode_tokens=4, repeats=1)
    assert calls == [0, 1] and len(profiles) == 2 and set(profiles[1].models) == {"small", "big"}
    assert [c for c, _ in profiles[0].model("big").decode_curve] == [8.0, 16.0]
    with pytest.raises(ValueError, match="rounds=0"):
        measure_interleaved(backends, "tiny", "cpu", rounds=0, between=calls.append)


def test_accuracy_vs_offload_at_marks_the_target_offload():
    table = pd.DataFrame([
        {"method": "small only", "accuracy": 0.2, "ci_low": 0.1, "ci_high": 0.3, "offload_token_fraction": 0.0,
         "sweep": None},
        {"method": "learned", "accuracy": 0.8, "ci_low": 0.7, "ci_high": 0.9, "offload_token_fraction": 0.12,
         "sweep": None}])
    fig = plots.accuracy_vs_offload_at(table, 0.12)
    (ax,) = fig.axes
    assert tuple(fig.get_size_inches()) == (9, 5) and "dotted" in ax.get_title()
    dotted = [line for line in ax.get_lines() if line.get_linestyle() == ":"]
    assert len(dotted) == 1 and list(dotted[0].get_xdata()) == [12.0, 12.0]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["the learned method's offload", "small only",
                                                                   "learned"]
