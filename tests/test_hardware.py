"""Hardware profiles: the paper table, validation, JSON round trip, curves, the roofline estimate."""

from __future__ import annotations

import itertools
import json
import math

import pytest

from splitlib.hardware import (
    BUILTIN_PROFILES,
    HardwareProfile,
    ModelThroughput,
    get_profile,
    roofline_profile,
)
from splitlib.registry import UnknownNameError

PAPER_TABLE = {  # PAPER_FACTS §9, typed in again on purpose
    "1.5B": (28868.4664, 141),
    "7B": (7658.083194, 41.3),
    "8B": (7456.973294, 40.3),
    "14B": (3835.762802, 22),
    "32B": (2594.868088, 16),
    "70B": (2237.695188, 9),
}


def test_paper_profile_is_exactly_the_paper_table():
    hw = get_profile("a6000-paper")
    assert set(hw.models) == set(PAPER_TABLE)
    for key, (prefill, decode) in PAPER_TABLE.items():
        assert hw.model(key) == ModelThroughput(prefill, decode)
    assert hw.meta["gpus"] == {"1.5B": 1, "7B": 1, "8B": 2, "14B": 2, "32B": 2, "70B": 2}


@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        ({"prefill_tok_per_s": -1.0, "decode_tok_per_s": 10.0}, "prefill_tok_per_s=-1.0"),
        ({"prefill_tok_per_s": 100.0, "decode_tok_per_s": 0.0}, "decode_tok_per_s=0.0"),
        ({"prefill_tok_per_s": 100.0, "decode_tok_per_s": math.inf}, "decode_tok_per_s=inf"),
        ({"prefill_tok_per_s": 100.0, "decode_tok_per_s": 10.0, "decode_call_s": -0.1}, "decode_call_s=-0.1"),
        ({"prefill_tok_per_s": 100.0, "decode_tok_per_s": 10.0, "decode_curve": [(10, 5.0), (5, 4.0)]},
         "strictly increasing"),
        ({"prefill_tok_per_s": 100.0, "decode_tok_per_s": 10.0, "prefill_curve": [(0, 5.0), (5, -4.0)]},
         "at context 5.0"),
    ],
)
def test_bad_throughput_is_rejected_naming_the_value(kwargs, fragment):
    with pytest.raises(ValueError, match=fragment.replace("(", r"\(")):
        ModelThroughput(**kwargs)


def test_unknown_model_key_names_the_available_keys():
    with pytest.raises(UnknownNameError) as err:
        get_profile("a6000-paper").model("33B")
    assert "'33B'" in str(err.value) and "1.5B, 7B, 8B, 14B, 32B, 70B" in str(err.value)


def test_unknown_profile_names_the_builtins(tmp_path):
    with pytest.raises(ValueError, match="a6000-paper"):
        get_profile(str(tmp_path / "nope.json"))


def _measured_profile() -> HardwareProfile:
    small = ModelThroughput(1000.0, 100.0, prefill_curve=[(0, 1200.0), (4096, 800.0)],
                            decode_curve=[(0, 120.0), (4096, 80.0)], prefill_call_s=0.01, decode_call_s=0.02)
    big = ModelThroughput(100.0, 10.0, prefill_call_s=0.1, decode_call_s=0.2)
    return HardwareProfile("test-box", "CPU", {"small": small, "big": big}, "measured", {"note": "made up"})


def test_profile_json_round_trip(tmp_path):
    hw = _measured_profile()
    path = hw.save(tmp_path / "profile.json")
    assert HardwareProfile.load(path) == hw
    assert get_profile(path) == hw
    assert HardwareProfile.from_json(json.loads(json.dumps(hw.to_json()))) == hw


def test_profile_json_without_required_keys_is_rejected():
    with pytest.raises(ValueError, match="models"):
        HardwareProfile.from_json({"name": "x", "device": "y", "source": "z"})


def test_without_curves_times_are_tokens_over_rate_plus_call_overhead():
    m = ModelThroughput(1000.0, 100.0, prefill_call_s=0.5, decode_call_s=0.25)
    assert m.prefill_s(2000) == pytest.approx(0.5 + 2.0)
    assert m.decode_s(50, context_tokens=10_000) == pytest.approx(0.25 + 0.5)
    assert m.decode_s(50, calls=0) == pytest.approx(0.5)
    assert m.prefill_s(0) == 0.0 and m.decode_s(0) == 0.0


def test_curves_interpolate_and_decode_integrates_over_context():
    m = ModelThroughput(1.0, 1.0, prefill_curve=[(0, 200.0), (1000, 100.0)], decode_curve=[(0, 200.0), (1000, 100.0)])
    assert m.prefill_rate(500) == pytest.approx(150.0)
    assert m.decode_rate(5000) == pytest.approx(100.0)  # flat beyond the last point
    assert m.prefill_s(1000) == pytest.approx(1000 / 150.0)  # rate taken mid-way
    exact = 10 * math.log(2)  # integral of 1 / (200 - 0.1 x) over 0..1000
    assert m.decode_s(1000) == pytest.approx(exact, rel=1e-3)


def test_roofline_sanity():
    h100, h200 = roofline_profile("H100"), roofline_profile("H200")
    for hw in (h100, h200):
        rates = [hw.model(k) for k in ("1.5B", "7B", "14B", "32B", "70B")]
        assert all(a.decode_tok_per_s > b.decode_tok_per_s for a, b in itertools.pairwise(rates))
        assert all(r.prefill_tok_per_s > 20 * r.decode_tok_per_s for r in rates)
    ratio = h200.model("32B").decode_tok_per_s / h100.model("32B").decode_tok_per_s
    assert ratio == pytest.approx(4.8 / 3.35)
    assert h100.model("32B").decode_tok_per_s == pytest.approx(3.35e12 * 0.7 / (2 * 32.8e9))
    assert h100.meta["weights_fit_in_memory"]["70B"] is False


def test_roofline_a6000_lands_near_the_paper_table():
    """Same GPU counts as the paper (1 below 8B, 2 otherwise): every number within a factor 2.5."""
    paper = get_profile("a6000-paper")
    for key, gpus in paper.meta["gpus"].items():
        est = roofline_profile("A6000", n_gpus=gpus).model(key)
        for attr in ("prefill_tok_per_s", "decode_tok_per_s"):
            assert 1 / 2.5 < getattr(est, attr) / getattr(paper.model(key), attr) < 2.5, (key, attr)


def test_roofline_rejects_unknown_devices():
    with pytest.raises(ValueError, match="A6000, H100, H200"):
        roofline_profile("B200")  # type: ignore[arg-type]


@pytest.mark.parametrize("name", sorted(BUILTIN_PROFILES))
def test_every_builtin_profile_resolves(name):
    assert get_profile(name).name == name
