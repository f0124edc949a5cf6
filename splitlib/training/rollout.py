"""GRPO rollouts that really offload: TRL's ``rollout_func`` hook running the cooperative decoder.

The current policy (``trainer.model``, no reload) is the small model and samples; the frozen big model takes the
offloaded spans. Each completion goes back to TRL as the small model's token ids of the whole generation, with
``env_mask`` = 1 on the small model's own tokens, the control tags included (they stay on-policy), and 0 on the big
model's tokens, which TRL then leaves out of the loss (``completion_mask * tool_mask``). A ``</bigmodel>`` that a
per-offload cap forced, rather than the small model predicting it, is masked 0 too.

Contract (trl 1.16 ``GRPOTrainer._generate``): ``rollout_func(prompts, trainer)`` gets the per-process prompts with
each prompt already repeated ``num_generations`` times, returns one completion per entry as ``prompt_ids``,
``completion_ids``, ``logprobs``, optional ``env_mask``; every other key (``traces``, ``offload_fraction``) is
handed to the reward functions as a per-completion keyword argument.

The decoder is any ``splitlib.decoder_service.DecodeFn`` (``offload_decoder`` builds the real one): each step the
rollout hands it a route whose small model is the live policy, wrapped in a backend (no reload from disk), and the
per-(prompt, generation, step) seeds as the engine's problem keys ``f"rollout-{seed}"``.

The policy's engine (``policy_engine``, ``POLICY_ENGINES``): ``hf`` wraps the policy model itself in the ``hf``
backend, which decodes the batch one completion at a time; ``vllm`` wraps TRL's colocated vLLM engine
(``use_vllm=True, vllm_mode="colocate"``), whose weights TRL syncs with the policy before each step's rollout, so
that with a batching big backend (``vllm``, ``openai``) ``decode_many`` advances every completion of the batch in
the same engine steps. Either way the log-probabilities TRL trains on are the policy model's own
(``policy_logprobs``).
"""

from __future__ import annotations

import dataclasses
import logging
import statistics
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase
from trl.models import unwrap_model_for_generation

from splitlib import grading, prompts, tags
from splitlib.backends import Backend
from splitlib.backends.hf import HFBackend
from splitlib.backends.vllm_engine import VLLMBackend
from splitlib.decoder_service import DecodeFn, DecoderService, Route
from splitlib.handoff import encode_text
from splitlib.registry import Registry
from splitlib.sampling import Sampling
from splitlib.seeds import derive_seed
from splitlib.trace import Trace

log = logging.getLogger(__name__)


# -- one completion from one trace ------------------------------------------------------------------------------
@dataclass(frozen=True)
class RolloutCompletion:
    """Completion ids in the small model's tokenizer; ``env_mask`` 1 = policy token, 0 = big-model token."""

    ids: tuple[int, ...]
    env_mask: tuple[int, ...]


def _segment_ids(segment: Any, tokenizer: PreTrainedTokenizerBase, same_tokenizer: bool) -> list[int]:
    if segment.model == "small" or same_tokenizer:
        return list(segment.token_ids)
    return tokenizer(segment.text, add_special_tokens=False)["input_ids"]  # the big model's text, small's tokens


def completion_from_trace(
    trace: Trace, tokenizer: PreTrainedTokenizerBase, same_tokenizer: bool, close_id: int
) -> RolloutCompletion:
    """The small model's view of a generation: its ids and which of them the policy produced.

    Big segments are re-tokenized with ``tokenizer`` unless the models share one. A small segment that opens with
    ``close_id`` right after a big segment ended by the per-offload cap starts with a forced tag: masked 0. A span
    left open by EOS or the total cap gets the closing tag the trace text carries, masked 0. A generation that
    ended on EOS gets ``tokenizer.eos_token_id`` appended (the decoder does not keep it), masked as its writer.
    """
    ids: list[int] = []
    mask: list[int] = []
    previous = None
    for seg in trace.segments:
        seg_ids = _segment_ids(seg, tokenizer, same_tokenizer)
        bits = [int(seg.model == "small")] * len(seg_ids)
        if bits and seg_ids[0] == close_id and previous is not None and previous.finish == "offload_cap":
            bits[0] = 0
        ids += seg_ids
        mask += bits
        previous = seg
    if previous is not None and previous.model == "big" and trace.text.endswith(tags.CLOSE):
        ids.append(close_id)  # the decoder closed a span that EOS or the cap cut short: text only, not the policy's
        mask.append(0)
    eos = tokenizer.eos_token_id
    if trace.finish == "eos" and (not ids or ids[-1] != eos):
        ids.append(eos)
        mask.append(int(previous is None or previous.model == "small"))
    if not ids:  # TRL reads ids[-1]; an empty generation is one unscored pad
        ids, mask = [tokenizer.pad_token_id], [0]
    return RolloutCompletion(ids=tuple(ids), env_mask=tuple(mask))


# -- seeds and log-probabilities --------------------------------------------------------------------------------
def generation_indices(keys: Sequence[str]) -> list[int]:
    """For each entry, how many earlier entries had the same key (TRL repeats each prompt consecutively)."""
    seen: Counter[str] = Counter()
    out = []
    for key in keys:
        out.append(seen[key])
        seen[key] += 1
    return out


@torch.no_grad()
def policy_logprobs(
    model: PreTrainedModel,
    prompt_ids: Sequence[Sequence[int]],
    completion_ids: Sequence[Sequence[int]],
    temperature: float,
) -> list[list[float]]:
    """Per-token log-probabilities of each completion under ``model`` at ``temperature`` (one forward pass each)."""
    device = next(model.parameters()).device
    out = []
    for p_ids, c_ids in zip(prompt_ids, completion_ids, strict=True):
        ids = torch.tensor([list(p_ids) + list(c_ids)], device=device)
        logits = model(input_ids=ids).logits[0, len(p_ids) - 1 : -1].float() / temperature
        logps = torch.log_softmax(logits, dim=-1).gather(-1, ids[0, len(p_ids) :, None])[:, 0]
        out.append(logps.tolist())
    return out


# -- the engine boundary ----------------------------------------------------------------------------------------
SmallBackendFactory = Callable[[PreTrainedModel, PreTrainedTokenizerBase], Backend]
PolicyEngineName = Literal["hf", "vllm"]


@dataclass(frozen=True)
class PolicyEngine:
    """How rollouts run the live policy. ``open(trainer)``: a context around one rollout (outside TRL's model
    unwrapping) that yields the factory of the small model's backend and releases what it made; ``batches``:
    whether that backend steps many completions together; ``needs``: what the GRPO config must say."""

    open: Callable[[Any], AbstractContextManager[SmallBackendFactory]]
    batches: bool
    needs: str = ""


@contextmanager
def _hf_engine(trainer: Any) -> Iterator[SmallBackendFactory]:
    yield HFBackend


def colocated_generation(trainer: Any) -> Any:
    """TRL's colocated vLLM generation object of ``trainer`` (``trainer.vllm_generation``, engine at ``.llm``)."""
    generation = getattr(trainer, "vllm_generation", None)
    if generation is None or getattr(generation, "llm", None) is None:
        raise RuntimeError("policy_engine='vllm': the trainer has no colocated vLLM engine (trainer.vllm_generation."
                           "llm); build the GRPOTrainer with use_vllm=True and vllm_mode='colocate'")
    return generation


@contextmanager
def awake(generation: Any) -> Iterator[None]:
    """TRL's engine, awake for a rollout. Under ``vllm_enable_sleep_mode`` TRL keeps it asleep outside its own
    generation (level 2: weights and KV cache discarded) and, before calling a rollout function, re-pushes the
    weights only once per optimizer step. So, as TRL's ``generate`` does: re-push the policy's weights if they
    are discarded, wake the KV cache; afterwards sleep again with the weights marked discarded."""
    if not getattr(generation, "enable_sleep_mode", False):
        yield
        return
    if getattr(generation, "_llm_weights_sleeping", True):  # unknown (another TRL): re-push, never stale weights
        generation.sync_weights()
    generation.llm.wake_up(tags=["kv_cache"])
    try:
        yield
    finally:
        generation.llm.sleep(level=2)
        generation._llm_weights_sleeping = True


@contextmanager
def _colocated_vllm_engine(trainer: Any) -> Iterator[SmallBackendFactory]:
    generation = colocated_generation(trainer)
    made: list[VLLMBackend] = []

    def borrow(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> Backend:
        made.append(VLLMBackend.borrow(generation.llm))  # TRL synced its weights: it IS the policy
        return made[-1]

    with awake(generation):
        try:
            yield borrow
        finally:
            for backend in made:
                backend.close()  # aborts requests left in flight; TRL's engine stays up


POLICY_ENGINES: Registry[PolicyEngine] = Registry("rollout policy engine", {
    "hf": PolicyEngine(_hf_engine, batches=False),  # the policy model itself, one completion at a time
    "vllm": PolicyEngine(_colocated_vllm_engine, batches=True, needs="use_vllm=True, vllm_mode='colocate'"),
})


def check_policy_engine(policy_engine: str, args: Any) -> None:
    """Refuse, before training, a policy engine the GRPO config ``args`` cannot serve."""
    engine = POLICY_ENGINES[policy_engine]  # an unknown name raises, listing the engines
    if engine.needs and not (getattr(args, "use_vllm", False) and getattr(args, "vllm_mode", None) == "colocate"):
        raise ValueError(
            f"rollout policy_engine={policy_engine!r} decodes on TRL's colocated vLLM engine, but the GRPO config has "
            f"use_vllm={getattr(args, 'use_vllm', None)}, vllm_mode={getattr(args, 'vllm_mode', None)!r}: set "
            f"{engine.needs}, or use policy_engine='hf'"
        )
    if engine.needs and getattr(args, "use_cpu", False):
        log.warning("policy_engine=%r on CPU: TRL 1.16's colocated weight sync fails against vLLM 0.32, which repacks "
                    "the linear weights on CPU ('Parameter' object has no attribute 'weight_loader')", policy_engine)


def sequential_reasons(policy_engine: str, big_backend: str, policy: str = "split") -> list[str]:
    """Why ``decode_many`` would decode a rollout batch one completion at a time (empty: all batched)."""
    from splitlib.backends import BACKENDS
    from splitlib.policies import POLICIES

    reasons = [] if POLICY_ENGINES[policy_engine].batches else [f"policy_engine={policy_engine!r} does not batch"]
    loader = BACKENDS[big_backend]()  # a backend class's ``load``: the class says whether it batches
    if "big" in POLICIES[policy].models and not getattr(getattr(loader, "__self__", None), "concurrent", False):
        reasons.append(f"big_backend={big_backend!r} does not batch")
    return reasons


def offload_decoder(
    big_dir: str | Path,
    policy: str = "split",
    policy_params: Mapping[str, Any] | None = None,
    decode: Mapping[str, Any] | None = None,
    big_backend: str = "hf",
    big_backend_options: Mapping[str, Any] | None = None,
    prompt_style: prompts.PromptStyle | None = None,
) -> tuple[DecoderService, Route]:
    """The decoder service with the frozen big model in ``big_dir`` loaded now, and the route rollouts decode on
    (its small model is filled in each step with the live policy).

    ``decode``: ``DecodeConfig`` fields other than the sampling ones (chunk size, per-offload cap, take-back rule,
    ``reference``): temperature and length come from TRL's GRPOConfig, seeds from the rollout. ``big_backend``: a
    ``load_backend`` kind (``hf``, ``vllm``, ``openai``) with its options.
    """
    service = DecoderService({"big": big_dir}, big_kind=big_backend, decode=decode,
                             backend_opts={"big": dict(big_backend_options or {})}, prompt_style=prompt_style)
    route = Route(policy, small=None, big="big", policy_params=dict(policy_params or {}))
    service.preload([route])
    return service, route


# -- the rollout function ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RolloutProblem:
    question: str
    solution: str | None = None  # the gold text, for the per-step accuracy log
    gold_rule: str = "answer"  # how to read it (splitlib.grading.GOLD_RULES)


class OffloadRollout:
    """TRL ``rollout_func`` for offload-mode GRPO; ``history`` keeps one stats row per generation step.

    ``problems`` maps each dataset prompt text (exactly as TRL passes it) to its question and gold answer.
    ``route``: the policy and big model to decode with; its small model is, each step, the live policy on
    ``policy_engine`` (``POLICY_ENGINES``: ``hf``, the default, or ``vllm``, TRL's colocated engine).
    ``small_backend``: replaces the ``hf`` engine's backend (``small_backend(model, tokenizer)``; tests steer it).
    """

    def __init__(
        self,
        problems: Mapping[str, RolloutProblem],
        decode_fn: DecodeFn,
        route: Route,
        same_tokenizer: bool,
        run_seed: int = 0,
        small_backend: SmallBackendFactory | None = None,
        policy_engine: PolicyEngineName = "hf",
        prompt_style: prompts.PromptStyle | None = None,
    ) -> None:
        POLICY_ENGINES[policy_engine]
        if small_backend is not None and policy_engine != "hf":
            raise ValueError(f"small_backend replaces the hf policy engine's backend; policy_engine={policy_engine!r} "
                             "decodes on its own engine: leave small_backend out, or use policy_engine='hf'")
        self.problems = dict(problems)
        self.decode_fn = decode_fn
        self.route = route
        self.same_tokenizer = same_tokenizer
        self.run_seed = run_seed
        self.small_backend = small_backend
        self.policy_engine = policy_engine
        self.prompt_style = prompt_style  # the decoder's: the prompt ids returned to TRL must be the ones decoded from
        self.history: list[dict] = []

    def close(self) -> None:
        """Close the decoder (the big model's backend it loaded); a later rollout loads it again."""
        close = getattr(self.decode_fn, "close", None)  # a DecoderService has one; a scripted DecodeFn may not
        if close is not None:
            close()

    def _problem(self, prompt: Any) -> RolloutProblem:
        if not isinstance(prompt, str):
            raise TypeError(f"offload rollouts take plain-text prompts, got {type(prompt).__name__}: use grpo_dataset")
        if prompt not in self.problems:
            raise KeyError(f"prompt not among this rollout's problems (first 80 chars: {prompt[:80]!r})")
        return self.problems[prompt]

    def __call__(self, prompts_batch: list[Any], trainer: Any) -> dict[str, list]:
        step = trainer.state.global_step
        problems = [self._problem(p) for p in prompts_batch]
        questions = [p.question for p in problems]
        process = trainer.accelerator.process_index
        seeds = [
            derive_seed(self.run_seed, step, process, g, q)
            for q, g in zip(questions, generation_indices(questions), strict=True)
        ]
        args = trainer.args
        sampling = Sampling(temperature=args.temperature, top_p=args.top_p, top_k=args.top_k)  # top_k: the decoder warns, skips it
        tokenizer = trainer.processing_class
        close_id = tokenizer.convert_tokens_to_ids(tags.CLOSE)
        engine = POLICY_ENGINES[self.policy_engine].open(trainer)
        with engine as wrap, unwrap_model_for_generation(trainer.model_wrapped, trainer.accelerator) as model:
            was_training = model.training
            model.eval()
            try:
                route = dataclasses.replace(self.route, small=(self.small_backend or wrap)(model, tokenizer))
                start = time.perf_counter()
                traces = self.decode_fn(route, questions, seeds, sampling, args.max_completion_length,
                                        key_prefix="rollout")
                decode_wall_s = time.perf_counter() - start
                prompt_ids = [prompt_token_ids(tokenizer, q, self.prompt_style) for q in questions]
                _check_prompt_lengths(prompt_ids, traces)
                done = [completion_from_trace(t, tokenizer, self.same_tokenizer, close_id) for t in traces]
                logprobs = policy_logprobs(model, prompt_ids, [c.ids for c in done], sampling.temperature)
            finally:
                model.train(was_training)
        self.history.append(step_stats(step, traces, problems, decode_wall_s))
        return {
            "prompt_ids": prompt_ids,
            "completion_ids": [list(c.ids) for c in done],
            "logprobs": logprobs,
            "env_mask": [list(c.env_mask) for c in done],
            "traces": [t.to_json() for t in traces],
            "offload_fraction": [t.offload_char_fraction for t in traces],
        }


def prompt_token_ids(tokenizer: PreTrainedTokenizerBase, question: str,
                     prompt_style: prompts.PromptStyle | None = None) -> list[int]:
    """The small model's prompt ids in ``prompt_style`` (None: the decoder's default), as the decoder feeds them
    under a split policy (chat template text, no extra special tokens)."""
    return encode_text(tokenizer, prompts.build_prompt(tokenizer, question, "small", prompt_style, offloading=True))


def _check_prompt_lengths(prompt_ids: Sequence[Sequence[int]], traces: Sequence[Trace]) -> None:
    for ids, trace in zip(prompt_ids, traces, strict=True):
        used = trace.prompt_tokens.get("small")
        if used is not None and used != len(ids):
            raise RuntimeError(
                f"the decoder's small-model prompt had {used} tokens, the rollout's {len(ids)}: prompt building "
                "in splitlib.decoding and splitlib.training.rollout.prompt_token_ids must agree"
            )


def step_stats(step: int, traces: Sequence[Trace], problems: Sequence[RolloutProblem], decode_wall_s: float) -> dict:
    """Mean offload fractions, hand-offs, truncation and accuracy over one step's rollouts, and the decode's
    throughput: ``generated_tokens`` (both models', as kept in the traces) over ``decode_wall_s`` (the measured
    wall time of the whole batch's decode; the policy's log-probabilities are not in it) as ``tok_per_s``."""
    generated = sum(t.total_tokens for t in traces)
    row: dict[str, Any] = {
        "step": step,
        "rollouts": len(traces),
        "offload_fraction_mean": statistics.fmean(t.offload_char_fraction for t in traces),
        "offload_token_fraction_mean": statistics.fmean(t.offload_token_fraction for t in traces),
        "handoffs_mean": statistics.fmean(t.handoffs for t in traces),
        "truncated_fraction": statistics.fmean(t.truncated for t in traces),
        "big_tokens_mean": statistics.fmean(t.tokens("big") for t in traces),
        "generated_tokens": generated,
        "decode_wall_s": decode_wall_s,
        "tok_per_s": generated / decode_wall_s if decode_wall_s > 0 else None,
    }
    graded = [
        grading.grade(t.text, p.solution, truncated=t.truncated, gold_rule=p.gold_rule)
        for t, p in zip(traces, problems, strict=True)
        if p.solution is not None
    ]
    scorable = [g for g in graded if g.scorable]
    row["accuracy"] = statistics.fmean(g.correct for g in scorable) if scorable else None
    return row
