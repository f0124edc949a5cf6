"""The decoder benchmark runs end to end on tiny random models and reports consistent numbers (no timed asserts)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_bench_decoding_on_tiny_models_writes_its_measurements(tmp_path):
    out = tmp_path / "bench.json"
    subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_decoding.py"), "--tiny", "--no-vllm",
                    "--out", str(out)], check=True, capture_output=True, text=True, timeout=600)
    hf = json.loads(out.read_text())["hf"]
    split = hf["split"]
    assert split["problems"] == 6 and split["generated_tokens"] > 0 and split["handoffs"] > 0
    assert split["wall_s"] > 0 and split["ideal_serial_s"] > 0
    assert split["wall_over_ideal"] == split["wall_s"] / split["ideal_serial_s"]
    for model in ("small", "big"):
        speed = hf["speed"][model]
        assert speed["decode_s_per_token"] > 0 and speed["prefill_s_per_token"] > 0 and speed["prefill_call_s"] >= 0
    # the one-pass take-back: exactly one small-model forward per checked chunk; the reference probes need more
    assert hf["takeback"]["one_pass"]["small_forward_calls_per_chunk"] == 1.0
    assert hf["takeback"]["reference_probes"]["small_forward_calls_per_chunk"] > 1.0
    assert hf["kv_reuse"]["computed_tokens_per_generated"] < hf["kv_reuse"]["reprefill_baseline_tokens_per_generated"]


@pytest.mark.slow
def test_bench_decoding_batched_part_reports_the_split_over_big_ratio(tmp_path):
    out = tmp_path / "bench.json"
    subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_decoding.py"), "--tiny", "--no-hf",
                    "--problems", "8", "--repeats", "1", "--out", str(out)], check=True, capture_output=True, text=True,
                   timeout=600)
    vllm = json.loads(out.read_text())["vllm"]
    runs = vllm["runs"]
    assert vllm["problems"] == 8 and {"small_only", "big_only", "split_gang_0.25", "split_gang_0.0"} <= set(runs)
    assert vllm["batched_split_over_big"] == runs["split_gang_0.25"]["tok_per_s"] / runs["big_only"]["tok_per_s"]
    assert vllm["same_text_as_batch1"] and vllm["same_handoffs_as_batch1"] and vllm["same_text_at_every_gang"]
    split = runs["split_gang_0.25"]
    steps = sum(s["steps"] for s in split["engine_steps"].values())
    assert split["engine_steps_per_token"] == steps / split["generated_tokens"]
    for fractions in split["step_fractions"].values():
        assert all(0.0 <= f <= 1.0 for f in fractions.values())
    assert vllm["gpu_prediction"]["batched_split_over_big"] > 0
