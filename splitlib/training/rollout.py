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
"""

from __future__ import annotations

import hashlib
import logging
import statistics
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase
from trl.models import unwrap_model_for_generation

from splitlib import grading, prompts, tags
from splitlib.handoff import encode_text
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
def rollout_seed(run_seed: int, step: int, process: int, question: str, generation: int) -> int:
    """A 31-bit seed for one (prompt, generation) of one step, stable across runs and machines."""
    key = f"{run_seed}|{step}|{process}|{generation}|{question}".encode()
    return int.from_bytes(hashlib.sha256(key).digest()[:4], "big") & 0x7FFFFFFF


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
@dataclass(frozen=True)
class Sampling:
    """How the small model samples during a rollout (TRL's GRPOConfig values)."""

    temperature: float
    top_k: int
    max_new_tokens: int


class DecodeFn(Protocol):
    """Runs the cooperative decoder for ``questions`` with ``model`` as the small model; one trace per question."""

    def __call__(
        self,
        questions: list[str],
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        seeds: list[int],
        sampling: Sampling,
    ) -> list[Trace]: ...


# -- the rollout function ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RolloutProblem:
    question: str
    solution: str | None = None  # the gold answer, for the per-step accuracy log


class OffloadRollout:
    """TRL ``rollout_func`` for offload-mode GRPO; ``history`` keeps one stats row per generation step.

    ``problems`` maps each dataset prompt text (exactly as TRL passes it) to its question and gold answer.
    """

    def __init__(
        self,
        problems: Mapping[str, RolloutProblem],
        decode_fn: DecodeFn,
        same_tokenizer: bool,
        run_seed: int = 0,
    ) -> None:
        self.problems = dict(problems)
        self.decode_fn = decode_fn
        self.same_tokenizer = same_tokenizer
        self.run_seed = run_seed
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
            rollout_seed(self.run_seed, step, process, q, g)
            for q, g in zip(questions, generation_indices(questions), strict=True)
        ]
        args = trainer.args
        sampling = Sampling(args.temperature, args.top_k, args.max_completion_length)
        tokenizer = trainer.processing_class
        close_id = tokenizer.convert_tokens_to_ids(tags.CLOSE)
        with unwrap_model_for_generation(trainer.model_wrapped, trainer.accelerator) as model:
            was_training = model.training
            model.eval()
            try:
                traces = self.decode_fn(questions, model, tokenizer, seeds, sampling)
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
