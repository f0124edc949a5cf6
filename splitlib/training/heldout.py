"""Held-out split-decoding accuracy during GRPO: a ``transformers.TrainerCallback`` that, at step 0 (the SFT model),
every ``every_steps`` optimizer steps and at the end, decodes a fixed batch of held-out problems with the *current
policy* as the small model and the frozen big model, cooperatively (the ``split`` policy, greedy), through the
project's decoder (``splitlib.decoder_service``, the policy wrapped in the ``hf`` backend as rollouts wrap it).

Each evaluation records ``step``, ``accuracy``, ``offload_token_fraction`` (mean over the traces),
``tag_failure_rate`` (``splitlib.tag_failures.tag_outcome``), ``n`` and its measured ``wall_s``. Greedy decoding and
fixed problem keys make it deterministic: the same policy weights give the same numbers.
"""

from __future__ import annotations

import dataclasses
import logging
import statistics
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from transformers import PreTrainedModel, PreTrainedTokenizerBase, TrainerCallback

from splitlib import grading, prompts
from splitlib.backends.hf import HFBackend
from splitlib.decoder_service import DecodeFn, Route
from splitlib.sampling import GREEDY
from splitlib.tag_failures import tag_outcome
from splitlib.trace import Trace

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class HeldoutConfig:
    """What the callback evaluates: ``problems`` (mappings with ``question`` and ``answer``), the frozen big model in
    ``big_dir``, how often (``every_steps`` >= 1), the decoder's settings (``offload_decoder`` keyword arguments:
    policy, policy_params, decode, big_backend, big_backend_options) and whether the toy's hard steps count as tag
    failures (``hard_steps``)."""

    problems: tuple[Mapping[str, Any], ...]
    big_dir: str
    every_steps: int
    decoder: Mapping[str, Any] = field(default_factory=dict)
    hard_steps: bool = True

    def __post_init__(self) -> None:
        if self.every_steps < 1:
            raise ValueError(f"every_steps={self.every_steps}: expected >= 1 (leave the callback out to turn it off)")
        if not self.problems:
            raise ValueError("no held-out problems: expected at least one (heldout_problems >= 1)")


def heldout_metrics(traces: Sequence[Trace], problems: Sequence[Mapping[str, Any]], hard_steps: bool) -> dict:
    """Accuracy (a truncated or unscorable answer counts wrong), mean offload token fraction and tag-failure rate."""
    correct = [grading.grade(t.text, p["answer"], truncated=t.truncated).correct
               for t, p in zip(traces, problems, strict=True)]
    return {"accuracy": statistics.fmean(correct),
            "offload_token_fraction": statistics.fmean(t.offload_token_fraction for t in traces),
            "tag_failure_rate": statistics.fmean(tag_outcome(t.text, hard_steps)["failure"] for t in traces),
            "n": len(traces)}


def evaluate_policy(decode_fn: DecodeFn, route: Route, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase,
                    config: HeldoutConfig, max_new_tokens: int) -> dict:
    """One held-out evaluation of ``model`` (in eval mode for it, its training mode restored after)."""
    was_training = model.training
    model.eval()
    try:
        questions = [p["question"] for p in config.problems]
        traces = decode_fn(dataclasses.replace(route, small=HFBackend(model, tokenizer)), questions,
                           list(range(len(questions))), GREEDY, max_new_tokens, key_prefix="heldout")
    finally:
        model.train(was_training)
    return heldout_metrics(traces, config.problems, config.hard_steps)


class HeldoutCallback(TrainerCallback):
    """Held-out evaluations during training, appended to ``results``. ``decoder``: a ``(DecodeFn, Route)`` to share
    (offload mode: the rollouts' own, big model already loaded); None: one is built from ``config`` at the first
    evaluation and closed at the end of training."""

    def __init__(self, config: HeldoutConfig, tokenizer: PreTrainedTokenizerBase,
                 prompt_style: prompts.PromptStyle | None = None, decoder: tuple[DecodeFn, Route] | None = None):
        self.config, self.tokenizer, self.prompt_style = config, tokenizer, prompt_style
        self._decoder, self._owned = decoder, decoder is None
        self.results: list[dict] = []

    def _decode_with(self) -> tuple[DecodeFn, Route]:
        if self._decoder is None:
            from splitlib.training.rollout import offload_decoder

            self._decoder = offload_decoder(Path(self.config.big_dir), **self.config.decoder,
                                            prompt_style=self.prompt_style)
        return self._decoder

    def _evaluate(self, step: int, args: Any, model: PreTrainedModel) -> None:
        start = time.perf_counter()
        decode_fn, route = self._decode_with()
        row = {"step": step, **evaluate_policy(decode_fn, route, model, self.tokenizer, self.config,
                                               args.max_completion_length)}
        row["wall_s"] = time.perf_counter() - start
        self.results.append(row)
        log.info("held-out step %d: accuracy %.3f, offloaded tokens %.3f, tag failures %.3f (%d problems, %.1f s)",
                 step, row["accuracy"], row["offload_token_fraction"], row["tag_failure_rate"], row["n"],
                 row["wall_s"])

    def on_train_begin(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
        self._evaluate(state.global_step, args, model)

    def on_step_end(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
        if state.global_step % self.config.every_steps == 0:
            self._evaluate(state.global_step, args, model)

    def on_train_end(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
        if not self.results or self.results[-1]["step"] != state.global_step:
            self._evaluate(state.global_step, args, model)
        self.close()

    def close(self) -> None:
        """Close the decoder this callback built (a shared one belongs to its owner)."""
        if self._owned and self._decoder is not None:
            self._decoder[0].close()
            self._decoder = None
