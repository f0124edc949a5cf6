"""splitlib.profiling.measure_with_timing: profiling rounds alternate with timed passes, and the profile, its rounds
and the timing files are reused while the settings are unchanged (the measurement itself is faked here; the real
one is exercised in test_figure5_helpers)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from splitlib import profiling
from splitlib.hardware import HardwareProfile, ModelThroughput


@pytest.fixture
def fake_measurements(monkeypatch):
    """Each measured profile is 100, 200, 300, … tok/s, so that rounds differ and their mean is known."""
    made = []

    def measure_profile(backends, name, device, progress=True, **kwargs):
        rate = 100.0 * (len(made) + 1)
        made.append(kwargs)
        tp = ModelThroughput(rate, rate / 10, ((8.0, rate),), ((8.0, rate / 10),))
        return HardwareProfile(name, device, {k: tp for k in backends}, "measured", {"contexts": [8]})

    monkeypatch.setattr(profiling, "measure_profile", measure_profile)
    return made


class Recorder:
    """Stands in for the backends factory and the timed pass; writes one row per timed item like an evaluation."""

    def __init__(self):
        self.backend_calls, self.passes = 0, []

    def backends(self) -> dict:
        self.backend_calls += 1
        return {"small": object(), "big": object()}

    def time_pass(self, path: Path, n: int) -> None:
        self.passes.append((path.name, n))
        done = len(path.read_text().splitlines()) if path.exists() else 0
        with path.open("a") as f:
            f.writelines(json.dumps({"item": i}) + "\n" for i in range(done, n))


def measure(directory: Path, rec: Recorder, settings: dict) -> profiling.TimedProfile:
    return profiling.measure_with_timing(directory, settings, rec.backends, rec.time_pass, 10, name="m", device="cpu",
                                         rounds=2, timing_runs=2, progress=False, repeats=1)


def test_rounds_alternate_with_growing_slices_of_each_timing_pass(tmp_path, fake_measurements):
    rec = Recorder()
    timed = measure(tmp_path, rec, {"kind": "hf"})
    assert rec.passes == [("timing_0.jsonl", 5), ("timing_0.jsonl", 10), ("timing_1.jsonl", 5), ("timing_1.jsonl", 10)]
    assert rec.backend_calls == 1 and fake_measurements == [{"repeats": 1}] * 4 and not timed.reused
    assert [p.model("big").prefill_tok_per_s for p in timed.round_profiles] == [100.0, 200.0, 300.0, 400.0]
    assert timed.profile.model("small").prefill_tok_per_s == pytest.approx(4 / (1 / 100 + 1 / 200 + 1 / 300 + 1 / 400))
    assert timed.profile.meta["settings"] == {"kind": "hf"} and timed.profile.meta["rounds"] == 4
    assert timed.timing_paths == [tmp_path / "timing_0.jsonl", tmp_path / "timing_1.jsonl"]
    assert all(len(p.read_text().splitlines()) == 10 for p in timed.timing_paths)
    assert HardwareProfile.load(tmp_path / "profile.json") == timed.profile


def test_the_same_settings_reuse_profile_rounds_and_timing_files(tmp_path, fake_measurements):
    first = measure(tmp_path, Recorder(), {"kind": "hf", "contexts": [8]})
    rec = Recorder()
    again = measure(tmp_path, rec, {"kind": "hf", "contexts": [8]})
    assert again.reused and rec.backend_calls == 0 and rec.passes == [] and len(fake_measurements) == 4
    assert again.profile == first.profile and again.round_profiles == first.round_profiles
    assert all(p.exists() for p in again.timing_paths)


def test_other_settings_delete_the_old_timing_files_and_measure_again(tmp_path, fake_measurements):
    measure(tmp_path, Recorder(), {"kind": "hf"})
    rec = Recorder()
    timed = measure(tmp_path, rec, {"kind": "vllm"})
    assert not timed.reused and rec.backend_calls == 1 and len(fake_measurements) == 8
    assert rec.passes[0] == ("timing_0.jsonl", 5)
    assert all(len(p.read_text().splitlines()) == 10 for p in timed.timing_paths)  # rewritten, not appended to
    assert timed.profile.meta["settings"] == {"kind": "vllm"}
