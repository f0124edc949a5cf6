"""Schemas of 04_random_switch, 05_evaluate and 06_figure5."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from splitlib.notebook_params.common import (
    Common,
    check_backend_opts,
    check_decode_fields,
    check_gpu_memory,
    check_serve,
)
from splitlib.params import check


@dataclass(frozen=True)
class _EvalSetup(Common):
    """What 04_random_switch and 05_evaluate share (05 checks that 04 ran with the same values)."""

    benchmark: Literal["toy", "aime24", "math500"]  # held-out problems: the toy world's, or a paper benchmark
    benchmark_source: str  # toy: file inside the run dir (data/test.jsonl); else a hub id or a local copy
    n_problems: int  # how many held-out problems (the first n)
    protocol: Literal["paper", "deepseek", "custom"]  # evaluation protocol (splitlib.evaluate.PROTOCOLS)
    protocol_settings: dict[str, Any]  # protocol overrides (custom: temperature, top_p, max_new_tokens, samples, aggregate)
    prompt_style: str  # splitlib.prompts evaluation style: authors (problem, hint, "\n Put your final answer within \boxed{}.", <｜Assistant｜>\n<think>\n) | authors_lm_eval (the official lm-eval runs' text) | project
    kind: Literal["hf", "vllm", "openai"]  # backend for the small models (vllm batches problems; hf runs one at a time)
    big_kind: Literal["hf", "vllm", "openai"]  # backend for the big model
    backend_opts: dict[str, Any]  # per model key ("base", "big", a checkpoint name): loader options
    decode: dict[str, Any]  # DecodeConfig settings besides sampling (big_chunk_tokens, max_offload_tokens, ...)
    batch_size: int  # problems handed to the engine at once (one append to samples.jsonl per batch)
    torch_threads: int  # CPU threads (0: libraries' defaults); 1 runs tiny models 3-5x faster on 2 busy shared cores
    small_model: str  # base small model: path inside the run dir (models/small), a directory or a hub id
    big_model: str  # big model: path inside the run dir (models/big), a directory or a hub id
    serve: dict[str, Any]  # {} or {big: a vllm serve spec (splitlib.serve; model = big_model)} started here (big_kind: openai)

    def __post_init__(self) -> None:
        super().__post_init__()
        check(self.n_problems >= 1, "n_problems", self.n_problems, "an integer >= 1")
        check(self.batch_size >= 1, "batch_size", self.batch_size, "an integer >= 1")
        check(self.torch_threads >= 0, "torch_threads", self.torch_threads, "0 (defaults) or a number of threads")
        from splitlib.prompts import style_names  # texts and hashes only: no model library

        styles = style_names("eval")
        check(self.prompt_style in styles, "prompt_style", self.prompt_style,
              f"an evaluation prompt style of splitlib.prompts ({', '.join(styles)})")
        from splitlib.evaluate import make_protocol

        try:
            make_protocol(self.protocol, **self.protocol_settings)
        except ValueError as err:
            check(False, "protocol_settings", self.protocol_settings, str(err))
        from splitlib.decoder_service import check_decode_settings

        try:
            check_decode_settings(self.decode)
        except ValueError as err:
            check(False, "decode", self.decode, f"no sampling settings ({err})")
        check_decode_fields("decode", self.decode)
        check_backend_opts("backend_opts", self.backend_opts, {"big": self.big_kind}, self.kind)
        # the small models a method may load: the base one, 05's checkpoints, any other key with options
        smalls = [k for k in dict.fromkeys(["base", *getattr(self, "checkpoints", {}), *self.backend_opts])
                  if k != "big"]
        check_gpu_memory("backend_opts", self.backend_opts, self.profile, self.kind, self.big_kind, smalls)
        check_serve("serve", self.serve, {"big": "big_model"})
        check("big" not in self.serve or self.big_kind == "openai", "serve", self.serve,
              "a big-model server only with big_kind: openai (the decoder reaches it over HTTP)")


@dataclass(frozen=True)
class RandomSwitchParams(_EvalSetup):
    """04_random_switch."""

    NOTEBOOK: ClassVar[str] = "04_random_switch"

    switch_chunk: int  # tokens per random-switch chunk (paper 32; toy traces are ~120 tokens)
    paper_ratios: list[float]  # the paper's ratios (p_big = 1 / (1 + ratio)): 19 -> 5 %, 9 -> 10 %
    sweep_ratios: list[float]  # more ratios, for realised offloads from ~2 % to ~40 %

    def __post_init__(self) -> None:
        super().__post_init__()
        check(self.switch_chunk >= 1, "switch_chunk", self.switch_chunk, "a positive number of tokens")
        for key in ("paper_ratios", "sweep_ratios"):
            check(all(r >= 0 for r in getattr(self, key)), key, getattr(self, key), "ratios >= 0")
        check(bool(self.paper_ratios or self.sweep_ratios), "sweep_ratios", self.sweep_ratios, "at least one ratio")


@dataclass(frozen=True)
class EvaluateParams(_EvalSetup):
    """05_evaluate."""

    NOTEBOOK: ClassVar[str] = "05_evaluate"

    checkpoints: dict[str, str]  # trained small models: name -> path inside the run dir (e.g. 02_sft/model)
    budget_sweep: list[float]  # max_offload_fraction values swept on the best checkpoint
    offload_measure: Literal["offload_token_fraction", "offload_char_fraction"]  # offload used for the claim
    claim_max_offload: float  # the learned method may offload at most this (toy: 0.15)
    claim_min_gap: float  # ... and must recover at least this share of the small->big gap (toy: 0.7)
    match_tolerance: float  # random baseline within this of the learned offload (0.02 = ±2 points)
    match_missing_random: bool  # no 04 point within tolerance: run a random switch aimed at the learned offload
    n_boot: int  # bootstrap resamples for the claim's CIs

    def __post_init__(self) -> None:
        super().__post_init__()
        check(bool(self.checkpoints), "checkpoints", self.checkpoints, "at least one trained checkpoint")
        check(all(isinstance(v, str) and v for v in self.checkpoints.values()), "checkpoints", self.checkpoints,
              "name -> non-empty path")
        check(not {"base", "big"} & set(self.checkpoints), "checkpoints", self.checkpoints,
              "names other than 'base' and 'big' (those are the base models)")
        check(all(0 < b < 1 for b in self.budget_sweep), "budget_sweep", self.budget_sweep, "fractions in (0, 1)")
        check(0 < self.claim_max_offload <= 1, "claim_max_offload", self.claim_max_offload, "a fraction in (0, 1]")
        check(0 < self.claim_min_gap <= 1, "claim_min_gap", self.claim_min_gap, "a fraction in (0, 1]")
        check(0 < self.match_tolerance < 1, "match_tolerance", self.match_tolerance, "a fraction in (0, 1)")
        check(self.n_boot >= 100, "n_boot", self.n_boot, "an integer >= 100")


@dataclass(frozen=True)
class Figure5Params(Common):
    """06_figure5."""

    NOTEBOOK: ClassVar[str] = "06_figure5"

    # run: profile this run's models and check the simulator against 04/05 (needs them); paper: the paper's figures
    # from its published numbers (CPU, seconds; 04/05's points drawn over them when present); auto: run if 05 ran
    source: Literal["run", "paper", "auto"]
    paper_profile: str  # hardware profile of the paper's simulator (built-in name or JSON path)
    paper_small: str  # small model key in that profile
    paper_bigs: list[str]  # big model keys: one curve each
    table_offloads: list[float]  # offload fractions of the speed-up table
    table_modes: list[str]  # simulator modes of the speed-up table
    figure5_left: list[list[Any]]  # boxes: [label, paper mode or null, method, @small/@big/@learned/@random or null]
    n_subsets: int  # this run with one sample per problem: disjoint problem subsets stand in for runs
    profile_kind: Literal["hf", "vllm", "openai"]  # backend profiled and timed at batch 1 (as one user would run it)
    profile_contexts: list[int]  # context lengths at which throughput is measured
    profile_repeats: int  # repeats per measurement (median)
    profile_rounds: int  # profiling and timing alternate this many times (the profile is their mean)
    torch_threads: int  # CPU threads for profiling and timing (0: torch's default); 1 suits tiny models
    backend_opts: dict[str, Any]  # per model key: loader options of the profiled backends
    timing_problems: int  # problems decoded at batch 1 per timed method (measured latency)
    timing_runs: int  # each timed problem decoded this many times; the median wall time is kept (noisy machines)
    timing_methods: list[str]  # 05 methods timed: names, @small/@big/@learned/@random, @arms (05's checkpoints)
    validation_target: float  # median |simulated - measured| / measured should be at most this

    def __post_init__(self) -> None:
        super().__post_init__()
        check(bool(self.paper_bigs), "paper_bigs", self.paper_bigs, "at least one big model key")
        check(all(0 <= c <= 1 for c in self.table_offloads), "table_offloads", self.table_offloads,
              "fractions in [0, 1]")
        from splitlib.simulator import MODES

        check(all(m in MODES for m in self.table_modes), "table_modes", self.table_modes, f"modes in {list(MODES)}")
        check(all(len(v) == 3 and isinstance(v[0], str) for v in self.figure5_left), "figure5_left",
              self.figure5_left, "a list of [label, paper mode label or null, method or null]")
        from splitlib.paper_results import PAPER_AIME24

        bad = [v[1] for v in self.figure5_left if v[1] is not None and v[1] not in PAPER_AIME24]
        check(not bad, "figure5_left", bad, f"paper mode labels from {list(PAPER_AIME24)}")
        check(self.n_subsets >= 1, "n_subsets", self.n_subsets, "an integer >= 1")
        check(bool(self.profile_contexts) and all(c >= 1 for c in self.profile_contexts), "profile_contexts",
              self.profile_contexts, "positive context lengths")
        check(self.profile_repeats >= 1, "profile_repeats", self.profile_repeats, "an integer >= 1")
        check(1 <= self.profile_rounds <= self.timing_problems, "profile_rounds", self.profile_rounds,
              f"1..timing_problems={self.timing_problems}")
        check(self.torch_threads >= 0, "torch_threads", self.torch_threads, "0 (default) or a number of threads")
        check_backend_opts("backend_opts", self.backend_opts, {}, self.profile_kind)
        # the profiled base model and big one stay loaded while a timed method's checkpoint runs: two small engines
        smalls = [k for k in dict.fromkeys(["base", *self.backend_opts]) if k != "big"]
        check_gpu_memory("backend_opts", self.backend_opts, self.profile, self.profile_kind, self.profile_kind, smalls,
                         held_smalls=2)
        check(self.timing_problems >= 1, "timing_problems", self.timing_problems, "an integer >= 1")
        check(self.timing_runs >= 1, "timing_runs", self.timing_runs, "an integer >= 1")
        check(bool(self.timing_methods), "timing_methods", self.timing_methods, "at least one method")
        check(0 < self.validation_target < 1, "validation_target", self.validation_target, "a fraction in (0, 1)")
