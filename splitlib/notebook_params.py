"""Parameter schemas, one frozen dataclass per notebook. Field comments are the documentation users read;
``params/<profile>/NN_*.yaml`` hold exactly these keys (a test holds them equal to the notebooks)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from splitlib.params import check

Profile = Literal["smoke", "toy", "paper"]
# head sizes vLLM's CPU attention backend implements (vllm CPUAttentionBackend.get_supported_head_sizes)
VLLM_CPU_HEAD_SIZES = (32, 64, 80, 96, 112, 128, 160, 192, 224, 256, 512)


@dataclass(frozen=True)
class ModelSpec:
    """Size of a toy Qwen2 model and its pretraining budget."""

    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    intermediate_size: int
    pretrain_steps: int
    lr: float
    batch_size: int
    sliding_window: int | None  # attention window in tokens; null = full attention (the small toy model has one)

    def __post_init__(self) -> None:
        for name in ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "batch_size"):
            check(getattr(self, name) >= 1, name, getattr(self, name), "a positive integer")
        check(self.hidden_size % self.num_attention_heads == 0, "hidden_size", self.hidden_size,
              f"a multiple of num_attention_heads={self.num_attention_heads}")
        head_dim = self.hidden_size // self.num_attention_heads
        check(head_dim in VLLM_CPU_HEAD_SIZES, "num_attention_heads", self.num_attention_heads,
              f"a head count giving hidden_size/heads in {VLLM_CPU_HEAD_SIZES} (vLLM's CPU attention kernels); "
              f"got head_dim={head_dim}")
        check(self.pretrain_steps >= 0, "pretrain_steps", self.pretrain_steps, "an integer >= 0")
        check(0 < self.lr < 1, "lr", self.lr, "a learning rate in (0, 1)")
        check(self.sliding_window is None or self.sliding_window >= 8, "sliding_window", self.sliding_window,
              "null (full attention) or a window of at least 8 tokens")


@dataclass(frozen=True)
class Common:
    profile: Profile  # which parameter set this is (smoke: CI, toy: laptop default, paper: GPU cluster)
    run_name: str  # outputs go to <outputs_root>/<run_name>/
    outputs_root: str  # usually "outputs"
    seed: int  # every random choice derives from it
    progress: bool  # show progress bars

    def __post_init__(self) -> None:
        check(bool(self.run_name) and "/" not in self.run_name, "run_name", self.run_name, "a non-empty name without '/'")


@dataclass(frozen=True)
class ModelsParams(Common):
    """00_models."""

    NOTEBOOK: ClassVar[str] = "00_models"

    world: Literal["toy", "paper"]  # toy: build data + models here; paper: record hub ids and check they load
    n_train: int  # training problems written to data/train.jsonl (annotation, SFT, GRPO)
    n_test: int  # held-out problems written to data/test.jsonl (evaluation)
    n_steps: int  # toy: reasoning steps per trace
    coded_steps: list[int]  # toy: 0-based steps after which the value becomes the next bonus digit (hard steps)
    vocab_size: int  # toy: BPE vocabulary size before the control tokens
    small: ModelSpec  # toy small model (1 layer, sliding window: cannot see the bonus list from the trace)
    big: ModelSpec  # toy big model
    pretrain_threads: int  # toy: CPU threads while pretraining (0: the process's setting); timing runs as set
    eval_problems: int  # held-out problems used for the accuracy measurements here
    eval_batch_size: int  # batch size for greedy generation during evaluation
    speed_tokens: int  # tokens decoded (batch 1, KV cache) to measure each model's decode speed
    speed_rounds: int  # timing rounds, the models alternating; each model's speed is its median
    small_model_id: str  # paper: hub id or local dir of the small model
    big_model_id: str  # paper: hub id or local dir of the big model

    def __post_init__(self) -> None:
        super().__post_init__()
        check(self.n_train >= 1, "n_train", self.n_train, "an integer >= 1")
        check(self.n_test >= 1, "n_test", self.n_test, "an integer >= 1")
        check(1 <= self.eval_problems <= self.n_test, "eval_problems", self.eval_problems, f"1..n_test={self.n_test}")
        check(2 <= self.n_steps <= 26, "n_steps", self.n_steps, "2..26 (steps are labelled A..Z)")
        check(all(0 <= s < self.n_steps for s in self.coded_steps), "coded_steps", self.coded_steps,
              f"step indices in 0..n_steps-1={self.n_steps - 1}")
        check(self.vocab_size >= 300, "vocab_size", self.vocab_size, "an integer >= 300 (256 bytes + specials + merges)")
        n_questions = 9 ** len(self.coded_steps)
        check(self.world != "toy" or 2 * (self.n_train + self.n_test) <= n_questions, "coded_steps", self.coded_steps,
              f"enough coded steps for {self.n_train} + {self.n_test} distinct problems (9**len(coded_steps) = "
              f"{n_questions} must be >= 2 * (n_train + n_test))")
        check(self.speed_tokens >= 8, "speed_tokens", self.speed_tokens, "an integer >= 8")
        check(self.pretrain_threads >= 0, "pretrain_threads", self.pretrain_threads,
              "0 (the process's setting) or a number of threads")
        check(self.speed_rounds >= 1, "speed_rounds", self.speed_rounds, "an integer >= 1")




# --- 01_annotate, 02_sft, 03_grpo ------------------------------------------------------------------------------
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _check_optional_positive(owner: object, *names: str) -> None:
    for name in names:
        value = getattr(owner, name)
        check(value is None or value > 0, name, value, "null (the default) or a number > 0")


@dataclass(frozen=True)
class OpenR1Spec:
    """Where OpenR1-Math-220k is read from (``splitlib.data.load_openr1``; the paper profile)."""

    path_or_id: str  # hub id "open-r1/OpenR1-Math-220k", a local copy of it, or one parquet/jsonl file in its schema
    config: str | None  # dataset config ("default")
    only_correct: bool  # keep only generations math-verify judged correct (the paper did not filter, PAPER_FACTS §4)
    min_chars: int  # keep traces longer than this many characters (paper: 1,024)

    def __post_init__(self) -> None:
        check(self.min_chars >= 0, "min_chars", self.min_chars, "an integer >= 0")


@dataclass(frozen=True)
class AnnotateParams(Common):
    """01_annotate."""

    NOTEBOOK: ClassVar[str] = "01_annotate"

    dataset: Literal["toy", "openr1"]  # toy: outputs/<run>/data/train.jsonl (notebook 00); openr1: OpenR1-Math-220k
    openr1: OpenR1Spec  # dataset: openr1 only
    n_traces: int | None  # annotate the first n traces; null = all
    annotator: Literal["surprisal", "llm", "oracle"]  # splitlib.annotate registry: small-model loss, an LLM API, toy truth
    annotator_params: dict[str, Any]  # passed to get_annotator (surprisal: steps, aggregate, unit, batch_size…; llm: preset, base_url, model, temperatures…)
    target_fraction: float  # share of each trace to mark (paper: 0.2; toy: the hard-step share)
    small_model: str | None  # surprisal model and tokenizer for token fractions; null = outputs/<run>/models/small
    api_key_env: str | None  # llm: NAME of the environment variable holding the API key (never the key); null = preset's or keyless
    concurrency: int  # llm: requests in flight
    request_timeout_s: float  # llm: per request
    max_retries: int  # llm: retries per request on 429/5xx/timeouts (exponential backoff)
    max_failure_fraction: float  # abort when more than this share of traces fails (1 = never)
    sft_source: Literal["annotator", "oracle"]  # what annotated.jsonl (the SFT input) holds; oracle: toy only
    n_render: int  # annotated traces rendered with their spans highlighted
    position_bins: int  # bins of the position profile (paper Fig. 7: 200)

    def __post_init__(self) -> None:
        super().__post_init__()
        check(self.n_traces is None or self.n_traces >= 1, "n_traces", self.n_traces, "null (all) or an integer >= 1")
        check(0 < self.target_fraction < 1, "target_fraction", self.target_fraction, "a fraction in (0, 1), e.g. 0.2")
        reserved = sorted({"target_fraction", "model", "tokenizer", "api_key_env", "client"} & set(self.annotator_params))
        check(not reserved, "annotator_params", self.annotator_params,
              f"annotator settings without {reserved} (those are parameters of their own)")
        check(self.api_key_env is None or bool(_ENV_NAME.fullmatch(self.api_key_env)), "api_key_env", "<hidden>",
              "the NAME of an environment variable (letters, digits, _), never the key itself")
        check(self.annotator != "oracle" or self.dataset == "toy", "annotator", self.annotator, "oracle only with dataset: toy")
        check(self.sft_source != "oracle" or self.dataset == "toy", "sft_source", self.sft_source, "oracle only with dataset: toy")
        check(self.concurrency >= 1, "concurrency", self.concurrency, "an integer >= 1")
        check(self.request_timeout_s > 0, "request_timeout_s", self.request_timeout_s, "seconds > 0")
        check(self.max_retries >= 0, "max_retries", self.max_retries, "an integer >= 0")
        check(0 <= self.max_failure_fraction <= 1, "max_failure_fraction", self.max_failure_fraction, "a fraction in [0, 1]")
        check(self.n_render >= 0, "n_render", self.n_render, "an integer >= 0")
        check(self.position_bins >= 1, "position_bins", self.position_bins, "an integer >= 1")


@dataclass(frozen=True)
class SFTParams(Common):
    """02_sft."""

    NOTEBOOK: ClassVar[str] = "02_sft"

    base_model: str | None  # model to fine-tune; null = outputs/<run>/models/small (notebook 00); else hub id or dir
    n_train: int | None  # first n rows of 01's annotated.jsonl; null = all
    preset: Literal["paper", "toy", "smoke"]  # splitlib.training.configs.SFT_PRESETS; the fields below override it
    device: Literal["auto", "cpu", "cuda"]  # auto: CUDA when available
    num_train_epochs: float | None  # null = the preset's
    max_steps: int | None  # null = the preset's (smoke: 2); a number overrides epochs
    learning_rate: float | None  # null = the preset's (paper 5e-5, cosine to 0.1x)
    per_device_train_batch_size: int | None  # null = the preset's
    global_batch_size: int | None  # via gradient accumulation; null = the preset's (paper 64)
    max_length: int | None  # tokens per example; null = the preset's
    logging_steps: int | None  # null = the preset's
    sft_overrides: dict[str, Any]  # any other trl.SFTConfig field
    eval_benchmark: Literal["toy", "aime24", "math500"]  # held-out problems for tag usage (splitlib.eval_data)
    eval_source: str | None  # null: toy = outputs/<run>/data/test.jsonl, else the benchmark's hub id; or a local file
    n_eval: int  # held-out problems generated by the small model alone
    eval_engine: Literal["generate", "hf", "vllm"]  # generate: batched transformers; hf/vllm: the decoder's small_only policy
    eval_max_new_tokens: int  # generation cap
    eval_batch_size: int  # generate: prompts per batch

    def __post_init__(self) -> None:
        super().__post_init__()
        check(self.n_train is None or self.n_train >= 1, "n_train", self.n_train, "null (all) or an integer >= 1")
        _check_optional_positive(self, "num_train_epochs", "max_steps", "learning_rate", "per_device_train_batch_size",
                                 "global_batch_size", "max_length", "logging_steps")
        check(self.n_eval >= 1, "n_eval", self.n_eval, "an integer >= 1")
        check(self.eval_max_new_tokens >= 1, "eval_max_new_tokens", self.eval_max_new_tokens, "an integer >= 1")
        check(self.eval_batch_size >= 1, "eval_batch_size", self.eval_batch_size, "an integer >= 1")


@dataclass(frozen=True)
class RolloutSpec:
    """Offload-mode rollouts: the cooperative decoder (``splitlib.decoding``) with the frozen big model."""

    policy_params: dict[str, Any]  # split policy options (max_offload_fraction, reject_probability)
    big_chunk_tokens: int  # big-model tokens per chunk before the small model checks them
    max_offload_tokens: int  # per-offload cap
    takeback: Literal["greedy", "threshold"]  # how the small model takes control back
    takeback_threshold: float  # threshold rule: P(</bigmodel>) at or above this
    big_backend: Literal["hf", "vllm", "openai"]  # engine of the big model
    big_backend_options: dict[str, Any]  # that backend's loader options (e.g. openai: base_url)

    def __post_init__(self) -> None:
        check(self.big_chunk_tokens >= 1, "big_chunk_tokens", self.big_chunk_tokens, "an integer >= 1")
        check(self.max_offload_tokens >= 1, "max_offload_tokens", self.max_offload_tokens, "an integer >= 1")
        check(0 < self.takeback_threshold <= 1, "takeback_threshold", self.takeback_threshold, "a probability in (0, 1]")


@dataclass(frozen=True)
class GRPOParams(Common):
    """03_grpo."""

    NOTEBOOK: ClassVar[str] = "03_grpo"

    modes: list[Literal["paper", "offload"]]  # paper: small model alone samples; offload: rollouts really offload
    big_model: str | None  # offload mode: null = outputs/<run>/models/big (notebook 00); else hub id or dir
    dataset: Literal["toy", "openr1"]  # toy: outputs/<run>/data/train.jsonl; openr1: OpenR1-Math-220k questions
    openr1: OpenR1Spec  # dataset: openr1 only
    n_prompts: int | None  # first n training problems; null = all (paper: 5,000)
    preset: Literal["paper", "toy", "smoke"]  # splitlib.training.configs.GRPO_PRESETS; the fields below override it
    device: Literal["auto", "cpu", "cuda"]  # auto: CUDA when available
    rewards: list[str]  # splitlib.rewards registry names
    reward_weights: list[float]  # one per reward; 0 = logged only (a metric)
    max_steps: int | None  # optimizer steps; null = the preset's (one epoch over the prompts)
    num_generations: int | None  # completions per prompt (paper 14); null = the preset's
    per_device_train_batch_size: int | None  # completions per device per step (a multiple of num_generations)
    learning_rate: float | None  # null = the preset's (paper 1e-6)
    temperature: float | None  # rollout sampling temperature (paper 0.7)
    max_completion_length: int | None  # tokens per completion (paper 2,048)
    beta: float | None  # KL coefficient (paper 0.04)
    logging_steps: int | None  # null = the preset's
    grpo_overrides: dict[str, Any]  # any other trl.GRPOConfig field
    rollout: RolloutSpec  # offload mode only

    def __post_init__(self) -> None:
        super().__post_init__()
        check(len(self.modes) >= 1 and len(set(self.modes)) == len(self.modes), "modes", self.modes,
              "a non-empty list of distinct modes from paper, offload")
        check(self.n_prompts is None or self.n_prompts >= 1, "n_prompts", self.n_prompts, "null (all) or an integer >= 1")
        from splitlib import rewards as registry  # imported here: math-verify is slow to import

        unknown = [r for r in self.rewards if r not in registry.available()]
        check(bool(self.rewards) and not unknown, "rewards", self.rewards,
              f"registered reward names ({', '.join(registry.available())})")
        check(len(self.reward_weights) == len(self.rewards), "reward_weights", self.reward_weights,
              f"one weight per reward ({len(self.rewards)})")
        _check_optional_positive(self, "max_steps", "num_generations", "per_device_train_batch_size", "learning_rate",
                                 "temperature", "max_completion_length", "logging_steps")
        check(self.num_generations is None or self.num_generations >= 2, "num_generations", self.num_generations,
              "null or an integer >= 2 (GRPO compares completions of one prompt)")
        check(self.beta is None or self.beta >= 0, "beta", self.beta, "null or a KL coefficient >= 0")
        n, batch = self.num_generations, self.per_device_train_batch_size
        check(n is None or batch is None or batch % n == 0, "per_device_train_batch_size", batch,
              f"a multiple of num_generations={n}")


@dataclass(frozen=True)
class _EvalSetup(Common):
    """What 04_random_switch and 05_evaluate share (05 checks that 04 ran with the same values)."""

    benchmark: Literal["toy", "aime24", "math500"]  # held-out problems: the toy world's, or a paper benchmark
    benchmark_source: str  # toy: file inside the run dir (data/test.jsonl); else a hub id or a local copy
    n_problems: int  # how many held-out problems (the first n)
    protocol: Literal["paper", "deepseek", "custom"]  # evaluation protocol (splitlib.evaluate.PROTOCOLS)
    protocol_settings: dict[str, Any]  # protocol overrides (custom: temperature, top_p, max_new_tokens, samples, aggregate)
    kind: Literal["hf", "vllm", "openai"]  # backend for the small models (vllm batches problems; hf runs one at a time)
    big_kind: Literal["hf", "vllm", "openai"]  # backend for the big model
    backend_opts: dict[str, Any]  # per model key ("base", "big", a checkpoint name): loader options
    decode: dict[str, Any]  # DecodeConfig settings besides sampling (big_chunk_tokens, max_offload_tokens, ...)
    batch_size: int  # problems handed to the engine at once (one append to samples.jsonl per batch)
    torch_threads: int  # CPU threads (0: libraries' defaults); 1 runs tiny models 3-5x faster on 2 busy shared cores
    small_model: str  # base small model: path inside the run dir (models/small), a directory or a hub id
    big_model: str  # big model: path inside the run dir (models/big), a directory or a hub id

    def __post_init__(self) -> None:
        super().__post_init__()
        check(self.n_problems >= 1, "n_problems", self.n_problems, "an integer >= 1")
        check(self.batch_size >= 1, "batch_size", self.batch_size, "an integer >= 1")
        check(self.torch_threads >= 0, "torch_threads", self.torch_threads, "0 (defaults) or a number of threads")
        from splitlib.evaluate import make_protocol

        try:
            make_protocol(self.protocol, **self.protocol_settings)
        except ValueError as err:
            check(False, "protocol_settings", self.protocol_settings, str(err))
        clash = sorted(set(self.decode) & {"max_new_tokens", "temperature", "top_p", "seed"})
        check(not clash, "decode", self.decode, f"no sampling settings ({clash} come from the protocol)")


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
    claim_max_offload: float  # the learned method may offload at most this (issue 8: 0.15)
    claim_min_gap: float  # ... and must recover at least this share of the small->big gap (issue 8: 0.7)
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
    timing_methods: list[str]  # 05 methods timed: names or @small/@big/@learned/@random
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
        check(self.timing_problems >= 1, "timing_problems", self.timing_problems, "an integer >= 1")
        check(self.timing_runs >= 1, "timing_runs", self.timing_runs, "an integer >= 1")
        check(bool(self.timing_methods), "timing_methods", self.timing_methods, "at least one method")
        check(0 < self.validation_target < 1, "validation_target", self.validation_target, "a fraction in (0, 1)")


# --- keep last: the registry is built from every schema class defined above ------------------------------
def schemas() -> dict[str, type]:
    """Notebook name -> its schema: every ``Common`` subclass declares ``NOTEBOOK``."""
    found: dict[str, type] = {}
    pending = list(Common.__subclasses__())
    while pending:
        cls = pending.pop()
        pending += cls.__subclasses__()
        if "NOTEBOOK" in vars(cls):
            found[cls.NOTEBOOK] = cls
    return dict(sorted(found.items()))


SCHEMAS: dict[str, type] = schemas()
