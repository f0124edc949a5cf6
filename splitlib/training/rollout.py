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
"""

from __future__ import annotations

import dataclasses
import logging
import statistics
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase
from trl.models import unwrap_model_for_generation

from splitlib import grading, prompts, tags
from splitlib.backends import Backend
from splitlib.backends.hf import HFBackend
from splitlib.decoder_service import DecodeFn, DecoderService, Route
from splitlib.handoff import encode_text
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


def offload_decoder(
    big_dir: str | Path,
    policy: str = "split",
    policy_params: Mapping[str, Any] | None = None,
    decode: Mapping[str, Any] | None = None,
    big_backend: str = "hf",
    big_backend_options: Mapping[str, Any] | None = None,
) -> tuple[DecoderService, Route]:
    """The decoder service with the frozen big model in ``big_dir`` loaded now, and the route rollouts decode on
    (its small model is filled in each step with the live policy).

    ``decode``: ``DecodeConfig`` fields other than the sampling ones (chunk size, per-offload cap, take-back rule,
    ``reference``): temperature and length come from TRL's GRPOConfig, seeds from the rollout. ``big_backend``: a
    ``load_backend`` kind (``hf``, ``vllm``, ``openai``) with its options.
    """
    service = DecoderService({"big": big_dir}, big_kind=big_backend, decode=decode,
                             backend_opts={"big": dict(big_backend_options or {})})
    route = Route(policy, small=None, big="big", policy_params=dict(policy_params or {}))
    service.preload([route])
    return service, route


# -- the rollout function ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RolloutProblem:
    question: str
    solution: str | None = None  # the gold answer, for the per-step accuracy log


class OffloadRollout:
    """TRL ``rollout_func`` for offload-mode GRPO; ``history`` keeps one stats row per generation step.

    ``problems`` maps each dataset prompt text (exactly as TRL passes it) to its question and gold answer.
    ``route``: the policy and big model to decode with; its small model is, each step, ``small_backend(model,
    tokenizer)`` around the live policy.
    """

    def __init__(
        self,
        problems: Mapping[str, RolloutProblem],
        decode_fn: DecodeFn,
        route: Route,
        same_tokenizer: bool,
        run_seed: int = 0,
        small_backend: SmallBackendFactory = HFBackend,
    ) -> None:
        self.problems = dict(problems)
        self.decode_fn = decode_fn
        self.route = route
        self.same_tokenizer = same_tokenizer
        self.run_seed = run_seed
        self.small_backend = small_backend
        self.history: list[dict] = []

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
        with unwrap_model_for_generation(trainer.model_wrapped, trainer.accelerator) as model:
            was_training = model.training
            model.eval()
            try:
                route = dataclasses.replace(self.route, small=self.small_backend(model, tokenizer))
                traces = self.decode_fn(route, questions, seeds, sampling, args.max_completion_length,
                                        key_prefix="rollout")
                prompt_ids = [prompt_token_ids(tokenizer, q) for q in questions]
                _check_prompt_lengths(prompt_ids, traces)
                done = [completion_from_trace(t, tokenizer, self.same_tokenizer, close_id) for t in traces]
                logprobs = policy_logprobs(model, prompt_ids, [c.ids for c in done], sampling.temperature)
            finally:
                model.train(was_training)
        self.history.append(step_stats(step, traces, problems))
        return {
            "prompt_ids": prompt_ids,
            "completion_ids": [list(c.ids) for c in done],
            "logprobs": logprobs,
            "env_mask": [list(c.env_mask) for c in done],
            "traces": [t.to_json() for t in traces],
            "offload_fraction": [t.offload_char_fraction for t in traces],
        }


def prompt_token_ids(tokenizer: PreTrainedTokenizerBase, question: str) -> list[int]:
    """The small model's prompt ids, as the decoder feeds them (chat template text, no extra special tokens)."""
    return encode_text(tokenizer, prompts.build_prompt(tokenizer, question, "small"))


def _check_prompt_lengths(prompt_ids: Sequence[Sequence[int]], traces: Sequence[Trace]) -> None:
    for ids, trace in zip(prompt_ids, traces, strict=True):
        used = trace.prompt_tokens.get("small")
        if used is not None and used != len(ids):
            raise RuntimeError(
                f"the decoder's small-model prompt had {used} tokens, the rollout's {len(ids)}: prompt building "
                "in splitlib.decoding and splitlib.training.rollout.prompt_token_ids must agree"
            )


def step_stats(step: int, traces: Sequence[Trace], problems: Sequence[RolloutProblem]) -> dict:
    """Mean offload fractions, hand-offs, truncation and accuracy over one step's rollouts."""
    row: dict[str, Any] = {
        "step": step,
        "rollouts": len(traces),
        "offload_fraction_mean": statistics.fmean(t.offload_char_fraction for t in traces),
        "offload_token_fraction_mean": statistics.fmean(t.offload_token_fraction for t in traces),
        "handoffs_mean": statistics.fmean(t.handoffs for t in traces),
        "truncated_fraction": statistics.fmean(t.truncated for t in traces),
        "big_tokens_mean": statistics.fmean(t.tokens("big") for t in traces),
        "decode_wall_s": sum(t.wall_s for t in traces),
    }
    graded = [
        grading.grade(t.text, p.solution, truncated=t.truncated)
        for t, p in zip(traces, problems, strict=True)
        if p.solution is not None
    ]
    scorable = [g for g in graded if g.scorable]
    row["accuracy"] = statistics.fmean(g.correct for g in scorable) if scorable else None
    return row
