"""The decoder benchmark runs end to end on tiny random models and reports consistent numbers (no timed asserts)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

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
