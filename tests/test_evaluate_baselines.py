"""splitlib.evaluate.baselines: the random baseline at the learned offload (notebook 05) — matched from 04's sweep
when one is close enough, else run aimed at the learned offload and corrected once; and the 04/05 setup check."""

from __future__ import annotations

import pytest

from splitlib import evaluate as ev
from splitlib.evaluate import baselines

PROTOCOL = ev.make_protocol("custom", temperature=0.0, top_p=1.0, max_new_tokens=8, samples=1, aggregate="pass@1",
                            n_boot=200)


def method_rows(method: str, n_right: int, offload: float, policy: str = "split", n: int = 20) -> list[dict]:
    return [{"method": method, "problem_id": f"p{i}", "sample": 0, "correct": i < n_right, "scorable": True,
             "truncated": False, "offload_token_fraction": offload, "offload_char_fraction": offload,
             "tokens_small": 90, "tokens_big": 10, "handoffs": 1, "rejected_requests": 0, "wall_s": 1.0,
             "policy": policy, "sweep": None, "grader_version": "g", "batch_wall_s": 4.0, "batch_size": 4}
            for i in range(n)]


OWN = method_rows("small only", 4, 0.0, "small_only") + method_rows("learned", 16, 0.12)
SWEEP = method_rows("random r9", 6, 0.30, "random_switch") + method_rows("random r4", 8, 0.45, "random_switch")


class AimedRuns:
    """Stands in for the notebook's evaluation: an aimed method realises ``factor`` times its expected offload."""

    def __init__(self, factor: float):
        self.factor, self.calls = factor, []

    def __call__(self, aimed: list[ev.Method]) -> list[dict]:
        self.calls.append([m.name for m in aimed])
        extra = [r for m in aimed for r in method_rows(m.name, 7, self.factor / (1 + m.policy_params["ratio"]),
                                                       "random_switch")]
        return OWN + extra


def baseline(run: AimedRuns, sweep: list[dict] = SWEEP, target: float = 0.12, **kwargs) -> baselines.RandomBaseline:
    return baselines.random_baseline(list(OWN), sweep, PROTOCOL, target, run, chunk=8, seed=3, **kwargs)


def test_a_sweep_point_within_tolerance_is_the_baseline_and_nothing_runs():
    run = AimedRuns(1.0)
    found = baseline(run, sweep=SWEEP + method_rows("random r7", 5, 0.13, "random_switch"))
    assert found.matched == "random r7" and run.calls == [] and found.aimed == () and found.realised == {}
    assert found.rows == OWN and set(found.summary["method"]) == {"small only", "learned", "random r9", "random r4",
                                                                   "random r7"}


def test_an_aimed_switch_that_lands_within_tolerance_is_the_baseline():
    run = AimedRuns(1.0)
    found = baseline(run)
    (aimed,) = found.aimed
    assert aimed.name == "random r7.333 (aimed)" and found.matched == aimed.name
    assert aimed.policy_params == {"ratio": pytest.approx(1 / 0.12 - 1), "chunk": 8, "seed": 3}
    assert (aimed.small, aimed.big, aimed.sweep, aimed.policy) == ("base", "big", "random switch", "random_switch")
    assert run.calls == [[aimed.name]] and found.realised == {aimed.name: pytest.approx(0.12)}
    assert aimed.name in set(found.summary["method"]) and len(found.rows) == len(OWN) + 20


def test_a_miss_is_corrected_once_by_the_ratio_of_target_to_realised_offload():
    run = AimedRuns(0.5)  # realises half of what it aims at
    found = baseline(run)
    first, second = found.aimed
    assert run.calls == [[first.name], [first.name, second.name]]
    assert found.realised[first.name] == pytest.approx(0.06) and found.realised[second.name] == pytest.approx(0.12)
    assert second.policy_params["ratio"] == pytest.approx(1 / 0.24 - 1) and found.matched == second.name


def test_aiming_stops_after_the_attempts_and_at_zero_realised_offload():
    missed = baseline(AimedRuns(0.05))  # the correction asks p_big > 1: capped at 1, still short
    assert len(missed.aimed) == 2 and missed.matched is None
    nothing = baseline(AimedRuns(0.0))
    assert len(nothing.aimed) == 1 and nothing.matched is None


@pytest.mark.parametrize("kwargs", [{"aim_if_missing": False}, {"target": 0.0}], ids=["not_asked", "no_offload"])
def test_no_aimed_run_when_not_asked_or_nothing_is_offloaded(kwargs):
    run = AimedRuns(1.0)
    assert baseline(run, **kwargs).matched is None and run.calls == []


def test_check_same_setup_names_what_differs_from_04():
    problems = [{"id": "p0"}, {"id": "p1"}]
    metrics = {"protocol": ev.make_protocol("custom", temperature=0.0, top_p=1.0, max_new_tokens=8, samples=1,
                                            aggregate="pass@1", n_boot=200).__dict__, "problem_ids": ["p0", "p1"]}
    baselines.check_same_setup(metrics, PROTOCOL, problems)
    with pytest.raises(ValueError, match="other problems than"):
        baselines.check_same_setup(metrics, PROTOCOL, problems[::-1])
    with pytest.raises(ValueError, match="other protocol and problems"):
        baselines.check_same_setup({**metrics, "protocol": {}}, PROTOCOL, problems[:1])


class _Decoder:
    """Stands in for a DecoderService: what it would say determines a route's rows."""

    def __init__(self, small_hash):
        self.small_hash = small_hash

    def provenance(self, route):
        return {"model": {"small": self.small_hash, "big": "bbb"}, "decode": {"big_chunk_tokens": 4}}


def test_check_same_setup_refuses_a_random_baseline_decoded_with_other_models_or_settings():
    from splitlib.evaluate.records import method_parts

    problems = [{"id": "p0"}, {"id": "p1"}]
    method = baselines.aimed_random_method(0.1, 8, 0)
    parts = method_parts(method, PROTOCOL, _Decoder("aaa"))
    metrics = {"protocol": PROTOCOL.__dict__, "problem_ids": ["p0", "p1"],
               "provenance": {method.name: {"parts": parts, "key": "k", "rows": 2}}}
    baselines.check_same_setup(metrics, PROTOCOL, problems, _Decoder("aaa"))  # its own ratio and chunk aside
    with pytest.raises(ValueError, match=r"decoded differently \(model.small: aaa there, ccc here\)"):
        baselines.check_same_setup(metrics, PROTOCOL, problems, _Decoder("ccc"))
