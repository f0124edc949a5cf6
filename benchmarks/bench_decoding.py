"""Benchmark the cooperative decoder (prints numbers, writes JSON; no timed assertions).

    .venv/bin/python benchmarks/bench_decoding.py --small outputs/toy/models/small --big outputs/toy/models/big \
        --out outputs/toy/bench_decoding.json
    .venv/bin/python benchmarks/bench_decoding.py --tiny --out /tmp/bench.json   # tiny random models

Measures (transformers backend, batch 1, greedy, toy questions):
1. overhead: split wall time / ideal serial time, where ideal = the traces' own forward passes priced by the
   ``serial`` simulator with profiles measured between the timed runs (``splitlib.profiling``: decode s/token,
   prefill s/token + s/call, at the context length): the same work with no loop or switching cost;
2. take-back cost: small-model forward calls per checked big chunk, one-pass check vs the reference probes;
3. KV reuse: tokens run through the models per generated token, vs a loop that re-prefills the whole context
   at every switch (computed from the same traces);
4. vLLM batching: split throughput of ``decode_many`` over N problems vs the same problems one at a time.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import time
from pathlib import Path

# -- settings ------------------------------------------------------------------------------------------------
N_PROBLEMS_HF = 6  # problems for the transformers measurements
N_PROBLEMS_VLLM = 32  # problems for the batching measurement
MAX_NEW_TOKENS = 200  # per problem
CHUNK = 32  # big tokens per chunk
CAP = 128  # per-offload cap
PROFILE_ROUNDS = 3  # profiles measured between slices of the timed split runs (averaged)


def ideal_serial_s(traces, profile) -> float:
    """The same work priced at the measured speeds (the serial simulator), with no loop or switching cost."""
    from splitlib import simulator

    return sum(simulator.simulate_trace(t, profile, "small", "big", mode="serial") for t in traces)


def reprefill_baseline_tokens(trace, chunk: int) -> int:
    """Tokens a loop without KV reuse would run: the whole context at every switch and every check."""
    ctx = dict(trace.prompt_tokens)
    tokens = 0
    for seg in trace.segments:
        n = len(seg.token_ids)
        if seg.model == "small":
            tokens += ctx["small"] + seg.decode_tokens
        else:  # per chunk: the big model re-prefills its context, the small one re-reads it with the chunk
            for j in range(max(1, math.ceil(seg.decode_tokens / chunk))):
                tokens += ctx["big"] + ctx["small"] + 2 * j * chunk + chunk
            tokens += seg.decode_tokens
        ctx["small"] += n
        ctx["big"] += n
    return tokens


def run_split(questions, small, big, cfg):
    from splitlib.decoding import decode

    before = {m: b.counters.copy() for m, b in (("small", small), ("big", big))}
    t0 = time.perf_counter()
    traces = [decode(q, small, big, "split", cfg) for q in questions]
    wall = time.perf_counter() - t0
    used = {m: b.counters.minus(before[m]) for m, b in (("small", small), ("big", big))}
    return traces, wall, used


def check_cost(traces, used_small, n_small_decode_calls: int) -> dict:
    chunks = sum(math.ceil(s.check_tokens / CHUNK) for t in traces for s in t.segments if s.model == "big")
    check_forwards = sum(s.forward_calls.get("small", 0) for t in traces for s in t.segments if s.model == "big")
    return {"chunks": chunks, "small_forward_calls_per_chunk": check_forwards / max(chunks, 1),
            "small_requests_per_chunk": (used_small.requests - n_small_decode_calls) / max(chunks, 1)}


def small_decode_calls(traces) -> int:
    return sum(1 for t in traces for s in t.segments if s.model == "small" and s.decode_tokens)


def bench_hf(small_dir: str, big_dir: str, questions: list[str]) -> dict:
    from splitlib import profiling
    from splitlib.backends import load_backend
    from splitlib.backends.base import Counters
    from splitlib.decoding import DecodeConfig
    from splitlib.handoff import encode_text
    from splitlib.prompts import build_prompt

    small, big = load_backend("hf", small_dir), load_backend("hf", big_dir)
    prompt_len = len(encode_text(small.tokenizer, build_prompt(small.tokenizer, questions[0], "small")))
    cfg = DecodeConfig(max_new_tokens=MAX_NEW_TOKENS, big_chunk_tokens=CHUNK, max_offload_tokens=CAP)
    traces, wall, used = [], 0.0, {"small": Counters(), "big": Counters()}
    ends = [(k + 1) * len(questions) // PROFILE_ROUNDS for k in range(PROFILE_ROUNDS)]

    def timed_slice(k: int) -> None:  # profile k was measured just before: it saw the load these runs see
        nonlocal wall
        part, part_wall, part_used = run_split(questions[ends[k - 1] if k else 0: ends[k]], small, big, cfg)
        traces.extend(part)
        wall += part_wall
        for m, counters in used.items():
            counters.add(part_used[m])

    contexts = (prompt_len, prompt_len + MAX_NEW_TOKENS // 2, prompt_len + MAX_NEW_TOKENS)
    profile = profiling.mean_profile(profiling.measure_interleaved(
        {"small": small, "big": big}, "bench", "cpu", PROFILE_ROUNDS, timed_slice, progress=False, contexts=contexts))
    ref_cfg = dataclasses.replace(cfg, reference=True)
    ref_traces, ref_wall, ref_used = run_split(questions, small, big, ref_cfg)
    generated = sum(t.total_tokens for t in traces)
    computed = used["small"].computed_tokens + used["big"].computed_tokens
    baseline = sum(reprefill_baseline_tokens(t, CHUNK) for t in traces)
    ideal = ideal_serial_s(traces, profile)
    return {
        "speed": {m: {"decode_s_per_token": 1 / t.decode_tok_per_s, "prefill_s_per_token": 1 / t.prefill_tok_per_s,
                      "prefill_call_s": t.prefill_call_s} for m, t in profile.models.items()},
        "split": {"problems": len(questions), "generated_tokens": generated, "wall_s": wall, "ideal_serial_s": ideal,
                  "wall_over_ideal": wall / ideal, "offload_token_fraction": _fraction(traces),
                  "handoffs": sum(t.handoffs for t in traces)},
        "takeback": {"one_pass": check_cost(traces, used["small"], small_decode_calls(traces)),
                     "reference_probes": {**check_cost(ref_traces, ref_used["small"], small_decode_calls(ref_traces)),
                                          "wall_s": ref_wall}},
        "kv_reuse": {"computed_tokens_per_generated": computed / generated,
                     "reprefill_baseline_tokens_per_generated": baseline / generated},
    }


def _fraction(traces) -> float:
    big = sum(t.tokens("big") for t in traces)
    return big / max(sum(t.total_tokens for t in traces), 1)


def bench_vllm(small_dir: str, big_dir: str, questions: list[str]) -> dict:
    from splitlib.backends import load_backend
    from splitlib.decoding import DecodeConfig, decode, decode_many

    small = load_backend("vllm", small_dir, max_model_len=512)
    big = load_backend("vllm", big_dir, max_model_len=512)
    cfg = DecodeConfig(max_new_tokens=MAX_NEW_TOKENS, big_chunk_tokens=CHUNK, max_offload_tokens=CAP)
    decode_many(questions[:2], small, big, "split", cfg, progress=False)  # warm-up
    t0 = time.perf_counter()
    together = decode_many(questions, small, big, "split", cfg, progress=False)
    batched_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    alone = [decode(q, small, big, "split", cfg) for q in questions]
    serial_s = time.perf_counter() - t0
    tokens = sum(t.total_tokens for t in together)
    return {"problems": len(questions), "generated_tokens": tokens,
            "decode_many_s": batched_s, "decode_many_tok_per_s": tokens / batched_s,
            "one_at_a_time_s": serial_s, "one_at_a_time_tok_per_s": sum(t.total_tokens for t in alone) / serial_s,
            "speedup": serial_s / batched_s, "same_text": [a.text for a in alone] == [t.text for t in together]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", help="small model directory (a model that writes <bigmodel> tags)")
    parser.add_argument("--big", help="big model directory")
    parser.add_argument("--tiny", action="store_true", help="use tiny random models built on the fly")
    parser.add_argument("--no-vllm", action="store_true", help="skip the vLLM batching measurement")
    parser.add_argument("--out", required=True, help="JSON file to write")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.tiny:
        from splitlib.backends.testing import tiny_model_dirs

        dirs = tiny_model_dirs()
        args.small, args.big = str(dirs["small"]), str(dirs["big"])
    if not (args.small and args.big):
        parser.error("give --small and --big, or --tiny")
    from splitlib.toy.world import generate

    questions = [p.question for p in generate(N_PROBLEMS_VLLM, seed=123)]
    result = {"small": args.small, "big": args.big, "settings": {
        "max_new_tokens": MAX_NEW_TOKENS, "chunk": CHUNK, "cap": CAP, "hf_problems": N_PROBLEMS_HF}}
    result["hf"] = bench_hf(args.small, args.big, questions[:N_PROBLEMS_HF])
    if not args.no_vllm:
        result["vllm"] = bench_vllm(args.small, args.big, questions)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
