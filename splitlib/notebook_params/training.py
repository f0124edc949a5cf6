"""Schemas of 01_annotate, 02_sft and 03_grpo."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from splitlib.notebook_params.common import Common, check_optional_positive, check_serve
from splitlib.params import ParamError, check

_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _check_prompt_style(name: str, *stages: str) -> None:
    from splitlib.prompts import style_names  # texts and hashes only: no model library

    allowed = style_names(*stages)
    check(name in allowed, "prompt_style", name, f"a prompt style of splitlib.prompts ({', '.join(allowed)})")


@dataclass(frozen=True)
class OpenR1Spec:
    """Where OpenR1-Math-220k is read from (``splitlib.data.load_openr1``; the paper profile)."""

    source: str  # hub id "open-r1/OpenR1-Math-220k", a local copy of it, or one parquet/jsonl file in its schema
    config: str | None  # dataset config ("default")
    only_correct: bool  # keep only generations math-verify judged correct (the paper did not filter, PAPER_FACTS §4)
    min_chars: int  # keep traces longer than this many characters (paper: 1,024)

    def __post_init__(self) -> None:
        check(self.min_chars >= 0, "min_chars", self.min_chars, "an integer >= 0")


@dataclass(frozen=True)
class SpecRSpec:
    """Where the authors' GRPO subset is read from (``splitlib.data.load_specr``)."""

    source: str  # hub id "akhauriyash/OpenR1_Math_SpecR_GRPO", a local copy, or one parquet/jsonl file in its schema
    config: str | None  # dataset config (null: the default one)


@dataclass(frozen=True)
class AnnotateParams(Common):
    """01_annotate."""

    NOTEBOOK: ClassVar[str] = "01_annotate"

    dataset: Literal["toy", "openr1"]  # toy: outputs/<run>/data/train.jsonl (notebook 00); openr1: OpenR1-Math-220k
    openr1: OpenR1Spec  # dataset: openr1 only
    n_traces: int | None  # annotate the first n traces; null = all
    annotator: Literal["surprisal", "llm", "oracle"]  # splitlib.annotate registry: small-model loss, an LLM API, toy truth
    annotator_params: dict[str, Any]  # passed to get_annotator (surprisal: steps, aggregate, unit, batch_size…; llm: preset, base_url, model (the served name), temperatures…)
    target_fraction: float  # share of each trace to mark (paper: 0.2; toy: the hard-step share)
    small_model: str | None  # surprisal model and tokenizer for token fractions; null = outputs/<run>/models/small
    api_key_env: str | None  # llm: NAME of the environment variable holding the API key (never the key); null = preset's or keyless
    concurrency: int  # llm: requests in flight
    request_timeout_s: float  # llm: deadline per request (connecting, waiting and reading the whole reply)
    max_retries: int  # llm: retries per request on 429/5xx/timeouts (exponential backoff)
    max_failure_fraction: float  # abort when more than this share of traces fails (1 = never)
    retry_failures: bool  # attempt again the traces that failed in an earlier run of this folder
    sft_source: Literal["annotator", "oracle"]  # what annotated.jsonl (the SFT input) holds; oracle: toy only
    n_render: int  # annotated traces rendered with their spans highlighted
    position_bins: int  # bins of the position profile (paper Fig. 7: 200)
    min_token_recall: float  # toy: the annotator's token recall against the oracle that the acceptance check asks for
    min_token_precision: float  # toy: the annotator's token precision against the oracle that the check asks for
    serve: dict[str, Any]  # {} or {annotator: a vllm serve spec (splitlib.serve)}: the llm annotator then talks to that server, started here

    def __post_init__(self) -> None:
        super().__post_init__()
        check(self.n_traces is None or self.n_traces >= 1, "n_traces", self.n_traces, "null (all) or an integer >= 1")
        check(0 < self.target_fraction < 1, "target_fraction", self.target_fraction, "a fraction in (0, 1), e.g. 0.2")
        # parameters of their own (llm's `model` is the served name, a setting; surprisal's is small_model)
        own = {"target_fraction", "tokenizer", "api_key_env", "client"} | ({"model"} if self.annotator != "llm" else set())
        reserved = sorted(own & set(self.annotator_params))
        check(not reserved, "annotator_params", self.annotator_params,
              f"annotator settings without {reserved} (parameters of their own: target_fraction, api_key_env, "
              "small_model for surprisal's model)")
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
        for key in ("min_token_recall", "min_token_precision"):
            check(0 <= getattr(self, key) <= 1, key, getattr(self, key), "a fraction in [0, 1]")
        check_serve("serve", self.serve, {"annotator": "the llm annotator's model"})
        check("annotator" not in self.serve or self.annotator == "llm", "serve", self.serve,
              "a server for the llm annotator only (annotator: llm)")
        self._check_annotator_settings()

    def _check_annotator_settings(self) -> None:
        """Build the annotator's settings from ``annotator_params`` as notebook 01 will (no model loaded, no server
        contacted), so that an unknown or ill-typed key fails here, named, not minutes into a run."""
        from splitlib.annotate import annotator_config, annotator_params  # imported here: the annotators load torch

        merged = annotator_params(self.annotator, self.annotator_params, target_fraction=self.target_fraction,
                                  api_key_env=self.api_key_env)
        try:
            annotator_config(self.annotator, merged, prefix="annotator_params.")
        except ParamError:
            raise
        except (ValueError, TypeError) as err:  # a check inside the settings (e.g. an unknown preset)
            raise ParamError(f"parameter annotator_params={self.annotator_params!r}: {err}") from None


@dataclass(frozen=True)
class SFTParams(Common):
    """02_sft."""

    NOTEBOOK: ClassVar[str] = "02_sft"

    base_model: str | None  # model to fine-tune; null = outputs/<run>/models/small (notebook 00); else hub id or dir
    n_train: int | None  # first n rows of 01's annotated.jsonl; null = all
    preset: Literal["paper", "toy", "smoke"]  # splitlib.training.configs.SFT_PRESETS; the fields below override it
    device: Literal["auto", "cpu", "cuda"]  # auto: CUDA when available
    prompt_style: str  # splitlib.prompts style of the SFT examples and the tag-usage prompts: authors (the authors' conversation: raw problem -> trace + EOS, their template) | project (problem, hint, instruction; <think> opened)
    num_train_epochs: float | None  # null = the preset's
    max_steps: int | None  # null = the preset's (smoke: 2); a number overrides epochs
    learning_rate: float | None  # null = the preset's (paper 5e-5, cosine to 0.1x)
    per_device_train_batch_size: int | None  # null = the preset's
    global_batch_size: int | None  # via gradient accumulation; null = the preset's (paper 64)
    max_length: int | None  # tokens per example; null = the preset's
    logging_steps: int | None  # null = the preset's
    sft_overrides: dict[str, Any]  # any other trl.SFTConfig field
    eval_benchmark: Literal["toy", "aime24", "math500"]  # held-out problems for tag usage (splitlib.data.BENCHMARKS)
    eval_source: str | None  # null: toy = outputs/<run>/data/test.jsonl, else the benchmark's hub id; or a local file
    n_eval: int  # held-out problems generated by the small model alone
    eval_engine: Literal["generate", "hf", "vllm"]  # generate: batched transformers; hf/vllm: the decoder's small_only policy
    eval_max_new_tokens: int  # generation cap
    eval_batch_size: int  # generate: prompts per batch

    def __post_init__(self) -> None:
        super().__post_init__()
        check(self.n_train is None or self.n_train >= 1, "n_train", self.n_train, "null (all) or an integer >= 1")
        _check_prompt_style(self.prompt_style, "sft", "eval")
        check_optional_positive(self, "num_train_epochs", "max_steps", "learning_rate", "per_device_train_batch_size",
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
    policy_engine: Literal["hf", "vllm", "auto"]  # the live policy's engine: hf decodes a rollout batch one completion at a time; vllm (TRL's colocated engine, use_vllm) all together; auto: vllm where TRL starts that engine (GPU), else hf

    def __post_init__(self) -> None:
        check(self.big_chunk_tokens >= 1, "big_chunk_tokens", self.big_chunk_tokens, "an integer >= 1")
        check(self.max_offload_tokens >= 1, "max_offload_tokens", self.max_offload_tokens, "an integer >= 1")
        check(0 < self.takeback_threshold <= 1, "takeback_threshold", self.takeback_threshold, "a probability in (0, 1]")
        from splitlib.policies import make_policy

        try:
            make_policy("split", **self.policy_params)
        except (TypeError, ValueError) as err:
            check(False, "policy_params", self.policy_params, f"split policy options ({err})")
        from splitlib.backends import check_backend_options

        try:
            check_backend_options(self.big_backend, self.big_backend_options)
        except TypeError as err:
            check(False, "big_backend_options", self.big_backend_options, str(err))


@dataclass(frozen=True)
class GRPOParams(Common):
    """03_grpo."""

    NOTEBOOK: ClassVar[str] = "03_grpo"

    modes: list[Literal["paper", "offload"]]  # paper: small model alone samples; offload: rollouts really offload
    rl4e_latency_weights: list[float]  # one more offload-mode arm rl4e_<w> per weight: rl4e's latency weight (rewards must hold rl4e)
    big_model: str | None  # offload mode: null = outputs/<run>/models/big (notebook 00); else hub id or dir
    dataset: Literal["toy", "openr1", "specr"]  # toy: outputs/<run>/data/train.jsonl; openr1: OpenR1-Math-220k questions; specr: the authors' GRPO subset
    openr1: OpenR1Spec  # dataset: openr1 only
    specr: SpecRSpec  # dataset: specr only
    gold: Literal["answer", "solution"]  # what the accuracy reward compares with: the short answer, or the worked solution parsed by math-verify (the authors')
    n_prompts: int | None  # first n training problems; null = all (paper: 5,000)
    preset: Literal["paper", "toy", "smoke"]  # splitlib.training.configs.GRPO_PRESETS; the fields below override it
    device: Literal["auto", "cpu", "cuda"]  # auto: CUDA when available
    prompt_style: str  # splitlib.prompts style of the rollout prompts: authors (the recipe's system prompt + the problem, ends <｜Assistant｜>) | project (problem, hint, instruction; <think> opened)
    rewards: list[str]  # splitlib.rewards registry names
    reward_weights: list[float]  # one per reward; 0 = logged only (a metric)
    max_steps: int | None  # optimizer steps; null = the preset's (one epoch over the prompts)
    num_generations: int | None  # completions per prompt (paper 14); null = the preset's
    per_device_train_batch_size: int | None  # completions per device per micro-step; null = the preset's
    global_batch_size: int | None  # completions per optimiser step, over processes and accumulation (paper 112 = 8 prompts x 14); null = the preset's
    learning_rate: float | None  # null = the preset's (paper 1e-6)
    temperature: float | None  # rollout sampling temperature (paper 0.7)
    max_completion_length: int | None  # tokens per completion (paper 2,048)
    beta: float | None  # KL coefficient (paper 0.04)
    logging_steps: int | None  # null = the preset's
    grpo_overrides: dict[str, Any]  # any other trl.GRPOConfig field
    rollout: RolloutSpec  # offload mode only
    serve: dict[str, Any]  # {} or {big: a vllm serve spec (splitlib.serve; model = big_model)}: offload rollouts reach the big model there (rollout.big_backend: openai)
    eval_every: int  # held-out split-decoding evaluation every n optimizer steps (and at step 0 and the end); 0 = off
    heldout_problems: int  # the first n problems of the toy world's test split, decoded greedily by policy and big model

    def __post_init__(self) -> None:
        super().__post_init__()
        check(self.eval_every >= 0 and self.heldout_problems >= 0, "eval_every", (self.eval_every,
              self.heldout_problems), "eval_every and heldout_problems integers >= 0 (0: no held-out evaluation)")
        check(self.eval_every == 0 or self.dataset == "toy", "eval_every", self.eval_every,
              "0 unless dataset is toy (the held-out problems are the toy world's test split)")
        check(self.eval_every == 0 or "big" not in self.serve, "eval_every", self.eval_every,
              "0 with serve.big (the held-out evaluation loads the big model itself)")
        check(len(self.modes) >= 1 and len(set(self.modes)) == len(self.modes), "modes", self.modes,
              "a non-empty list of distinct modes from paper, offload")
        check(self.n_prompts is None or self.n_prompts >= 1, "n_prompts", self.n_prompts, "null (all) or an integer >= 1")
        _check_prompt_style(self.prompt_style, "grpo")
        weights = self.rl4e_latency_weights
        check(all(w >= 0 for w in weights) and len({f"{w:g}" for w in weights}) == len(weights), "rl4e_latency_weights",
              weights, "distinct latency weights >= 0 (each one an offload-mode arm rl4e_<w>)")
        check(not weights or "rl4e" in self.rewards, "rl4e_latency_weights", weights,
              "[] unless the rewards hold rl4e (the arms vary its latency weight)")
        from splitlib.rewards import REWARDS  # imported here: math-verify is slow to import

        unknown = [r for r in self.rewards if r not in REWARDS]
        check(bool(self.rewards) and not unknown, "rewards", self.rewards,
              f"registered reward names ({', '.join(REWARDS.names())})")
        check(len(self.reward_weights) == len(self.rewards), "reward_weights", self.reward_weights,
              f"one weight per reward ({len(self.rewards)})")
        check_optional_positive(self, "max_steps", "num_generations", "per_device_train_batch_size", "learning_rate",
                                 "temperature", "max_completion_length", "logging_steps")
        check(self.num_generations is None or self.num_generations >= 2, "num_generations", self.num_generations,
              "null or an integer >= 2 (GRPO compares completions of one prompt)")
        check(self.beta is None or self.beta >= 0, "beta", self.beta, "null or a KL coefficient >= 0")
        n, batch = self.num_generations, self.global_batch_size  # null: the preset's (TRL checks the product)
        check(n is None or batch is None or batch % n == 0, "global_batch_size", batch,
              f"completions per step that are a multiple of num_generations={n} (whole groups)")
        check(self.gold == "answer" or self.dataset != "toy", "gold", self.gold, "answer for dataset: toy (no worked solutions)")
        check_serve("serve", self.serve, {"big": "big_model, for offload-mode rollouts"})
        offload = "offload" in self.modes or bool(self.rl4e_latency_weights)
        check("big" not in self.serve or (offload and self.rollout.big_backend == "openai"), "serve",
              self.serve, "a big-model server only for offload mode with rollout.big_backend: openai")
