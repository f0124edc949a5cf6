"""Benchmark the cooperative decoder (prints numbers, writes JSON; no timed assertions).

    .venv/bin/python benchmarks/bench_decoding.py --small outputs/toy/models/small --big outputs/toy/models/big \
        --out outputs/toy/bench_decoding.json
    .venv/bin/python benchmarks/bench_decoding.py --small outputs/toy/02_sft/model --big outputs/toy/models/big \
        --no-hf --serve-big --out outputs/toy/bench_batched.json   # the batched measurements only
    .venv/bin/python benchmarks/bench_decoding.py --tiny --out /tmp/bench.json   # tiny random models

Measures (transformers backend, batch 1, greedy, toy questions):
1. overhead: split wall time / ideal serial time, where ideal = the traces' own forward passes priced by the
   ``serial`` simulator with profiles measured between the timed runs (``splitlib.profiling``: decode s/token,
   prefill s/token + s/call, at the context length): the same work with no loop or switching cost;
2. take-back cost: small-model forward calls per checked big chunk, one-pass check vs the reference probes;
3. KV reuse: tokens run through the models per generated token, vs a loop that re-prefills the whole context
   at every switch (computed from the same traces);
4. batched (vLLM, the toy profile's evaluation settings, 64 problems): tokens/s of small alone, big alone and split
   through ``decode_many``; ``vllm.batched_split_over_big`` (split tokens/s over big tokens/s); engine steps per
   generated token and what share of each engine's steps carried take-back checks and new requests' prefills; split
   at several ``gang`` settings; the text and hand-offs against batch-1 split decoding; what the same step counts
   would give on a GPU pair (``gpu_prediction``). ``--serve-big`` repeats it with the big model behind
   ``vllm serve`` (its own process: the engines overlap for real).
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
N_PROBLEMS_VLLM = 64  # problems for the batched measurement (the toy profile's evaluation settings)
GANGS = (0.25, 0.0)  # decode_many's gang settings measured: the default (the headline), and none
REPEATS = 3  # batched runs per setting, interleaved; the median is reported (single runs vary by up to 30 % here)
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


def toy_eval_settings() -> tuple[dict, int, dict]:
    """The toy profile's evaluation settings (params/toy/05_evaluate.yaml): decode options, token cap, engine options."""
    import yaml

    params = yaml.safe_load((Path(__file__).parents[1] / "params/toy/05_evaluate.yaml").read_text())
    return dict(params["decode"]), int(params["protocol_settings"]["max_new_tokens"]), dict(params["backend_opts"]["big"])


def _steps(backend) -> dict:
    return backend.steps.as_dict() if hasattr(backend, "steps") else {}


def _timed(questions, small, big, policy, cfg, gang: float = 0.0) -> dict:
    """One batched run: tokens/s and what each local engine's steps carried."""
    from splitlib.decoding import decode_many

    before = {m: _steps(b) for m, b in (("small", small), ("big", big)) if b is not None}
    t0 = time.perf_counter()
    traces = decode_many(questions, small, big, policy, cfg, progress=False, gang=gang)
    wall = time.perf_counter() - t0
    tokens = sum(t.total_tokens for t in traces)
    steps = {m: {k: v - before[m][k] for k, v in _steps(b).items()}
             for m, b in (("small", small), ("big", big)) if b is not None and before[m]}
    if small is big and steps:  # one engine in both roles: count it once
        steps.pop("big")
    total = sum(s["steps"] for s in steps.values())
    return {"wall_s": wall, "generated_tokens": tokens, "tok_per_s": tokens / wall,
            "offload_token_fraction": _fraction(traces), "handoffs": sum(t.handoffs for t in traces),
            "engine_steps": steps, "engine_steps_per_token": total / max(tokens, 1),
            "step_fractions": {m: {"with_checks": s["with_checks"] / max(s["steps"], 1),
                                   "with_prefills": s["with_prefills"] / max(s["steps"], 1),
                                   "only_checks_or_prefills": s["only_new"] / max(s["steps"], 1)}
                               for m, s in steps.items()},
            "_traces": traces}


def measure_pair(questions, small, big, cfg, repeats: int = REPEATS) -> dict:
    """Small alone, big alone and split, all batched over ``questions`` (each path warmed up first), plus split at
    each ``GANGS`` setting; split's text and hand-offs against batch-1 split decoding of the same problems."""
    from splitlib.decoding import decode, decode_many
    from splitlib.policies import RandomSwitch

    random_r9 = RandomSwitch(ratio=9.0, chunk=8, seed=0)  # big turns at random times: what gang gathers
    for policy in ("small_only", "big_only", "split", random_r9):  # one-off costs of each path (new kernel shapes)
        decode_many(questions, small if policy != "big_only" else None, big if policy != "small_only" else None,
                    policy, dataclasses.replace(cfg, max_new_tokens=64), progress=False)
    for b in (small, big):
        getattr(b, "reset_prefix_cache", lambda: None)()
    settings = {"small_only": (small, None, "small_only", 0.0), "big_only": (None, big, "big_only", 0.0)}
    settings |= {f"split_gang_{gang}": (small, big, "split", gang) for gang in GANGS}
    settings |= {f"random_r9_gang_{gang}": (small, big, random_r9, gang) for gang in GANGS}
    timed = {name: [] for name in settings}
    for _ in range(repeats):
        for name, (s_, b_, policy, gang) in settings.items():
            timed[name].append(_timed(questions, s_, b_, policy, cfg, gang))
    runs = {name: sorted(rs, key=lambda r: r["tok_per_s"])[len(rs) // 2] for name, rs in timed.items()}
    for name, rs in timed.items():
        runs[name]["tok_per_s_runs"] = [r["tok_per_s"] for r in rs]
    split = runs[f"split_gang_{GANGS[0]}"]
    alone = [decode(q, small, big, "split", cfg) for q in questions]
    together = split["_traces"]
    gangs_agree = len({tuple(t.text for t in runs[f"{p}_gang_{g}"]["_traces"]) for p in ("split", "random_r9")
                       for g in GANGS}) == 2
    for run in runs.values():
        run.pop("_traces")
    return {"runs": runs, "batched_split_over_big": split["tok_per_s"] / runs["big_only"]["tok_per_s"],
            "same_text_at_every_gang": gangs_agree,
            "same_text_as_batch1": [t.text for t in together] == [t.text for t in alone],
            "same_handoffs_as_batch1": [t.handoffs for t in together] == [t.handoffs for t in alone]}


def gpu_prediction(pair: dict, profile: str = "roofline-H100", small: str = "1.5B", big: str = "32B") -> dict:
    """Split/big throughput if these engine step counts ran on a GPU pair: each step priced at the model's batch-1
    decode time (decoding is bound by reading the weights, nearly independent of the batch at these sizes)."""
    from splitlib.hardware import get_profile

    prof = get_profile(profile)
    t_small, t_big = (1 / prof.models[m].decode_tok_per_s for m in (small, big))
    big_run, split_run = pair["runs"]["big_only"], pair["runs"][f"split_gang_{GANGS[0]}"]
    big_s = big_run["engine_steps"]["big"]["steps"] * t_big
    split_s = (split_run["engine_steps"]["small"]["steps"] * t_small
               + split_run["engine_steps"].get("big", {"steps": 0})["steps"] * t_big)
    ratio = (split_run["generated_tokens"] / split_s) / (big_run["generated_tokens"] / big_s)
    return {"profile": profile, "small": small, "big": big, "batched_split_over_big": ratio,
            "how": "engine steps counted here, each priced at the model's batch-1 decode step on the profile"}


def bench_vllm(small_dir: str, big_dir: str, questions: list[str], serve_big: bool, repeats: int = REPEATS) -> dict:
    from splitlib.backends import load_backend
    from splitlib.decoding import DecodeConfig

    decode_opts, max_new, engine_opts = toy_eval_settings()
    cfg = DecodeConfig(max_new_tokens=max_new, **decode_opts)
    small = load_backend("vllm", small_dir, **engine_opts)
    big = load_backend("vllm", big_dir, **engine_opts)
    pair = measure_pair(questions, small, big, cfg, repeats)
    result = {"problems": len(questions), "settings": {"max_new_tokens": max_new, **decode_opts, **engine_opts},
              **pair, "gpu_prediction": gpu_prediction(pair)}
    if serve_big:
        result["served_big"] = served_big(small, big_dir, questions, cfg, engine_opts, repeats)
    return result


def served_big(small, big_dir: str, questions: list[str], cfg, engine_opts: dict, repeats: int) -> dict:
    """The big model behind ``vllm serve`` (its own process: real overlap with the in-process small engine)."""
    import tempfile

    from splitlib import serve
    from splitlib.backends import load_backend

    spec = {"model": big_dir, "served_model_name": "big", "env": {"VLLM_CPU_KVCACHE_SPACE": "1"},
            "args": {"dtype": "float32", "enforce_eager": True, **engine_opts}, "startup_timeout_s": 300}
    with serve.start_server(spec, Path(tempfile.mkdtemp(prefix="bench-serve-")) / "big.log") as server:
        big = load_backend("openai", server.model_name, max_workers=len(questions), **serve.backend_options(server))
        try:
            return measure_pair(questions, small, big, cfg, repeats)
        finally:
            big.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", help="small model directory (a model that writes <bigmodel> tags)")
    parser.add_argument("--big", help="big model directory")
    parser.add_argument("--tiny", action="store_true", help="use tiny random models built on the fly")
    parser.add_argument("--no-vllm", action="store_true", help="skip the vLLM batching measurement")
    parser.add_argument("--no-hf", action="store_true", help="skip the transformers batch-1 measurements")
    parser.add_argument("--problems", type=int, default=N_PROBLEMS_VLLM, help="problems in the batched measurement")
    parser.add_argument("--repeats", type=int, default=REPEATS, help="batched runs per setting (median reported)")
    parser.add_argument("--serve-big", action="store_true",
                        help="also measure with the big model behind `vllm serve` (a second process)")
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

    questions = [p.question for p in generate(max(args.problems, N_PROBLEMS_HF), seed=123)]
    result = {"small": args.small, "big": args.big, "settings": {
        "max_new_tokens": MAX_NEW_TOKENS, "chunk": CHUNK, "cap": CAP, "hf_problems": N_PROBLEMS_HF}}
    if not args.no_hf:
        result["hf"] = bench_hf(args.small, args.big, questions[:N_PROBLEMS_HF])
    if not args.no_vllm:
        result["vllm"] = bench_vllm(args.small, args.big, questions[: args.problems], args.serve_big, args.repeats)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
