"""The offload rollout's engine: ``splitlib.decoding`` with the policy under training as the small model.

``engine_decode_fn`` loads the frozen big model once and returns a ``DecodeFn``: on each call it wraps the
current policy weights in an ``hf`` backend (no reload from disk) and runs ``decode_many``. Each rollout's key,
from which the decoder derives its sampling seeds and the policy's randomness, is the per-(prompt, generation,
step) seed the rollout function computed.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from transformers import PreTrainedModel, PreTrainedTokenizerBase

from splitlib.backends import Backend, load_backend
from splitlib.backends.hf import HFBackend
from splitlib.decoding import DecodeConfig, decode_many
from splitlib.policies import make_policy
from splitlib.trace import Trace
from splitlib.training.rollout import DecodeFn, Sampling

log = logging.getLogger(__name__)

SmallBackendFactory = Callable[[PreTrainedModel, PreTrainedTokenizerBase], Backend]

# DecodeConfig fields the rollout sets from TRL's GRPOConfig (temperature, length cap) or per call (seed).
_FROM_TRAINER = ("temperature", "max_new_tokens", "seed")


@dataclasses.dataclass(frozen=True)
class _Rollout:
    id: str  # the decoder's per-problem key
    question: str


def engine_decode_fn(
    big_dir: str | Path,
    policy: str = "split",
    policy_params: Mapping[str, Any] | None = None,
    decode: Mapping[str, Any] | None = None,
    big_backend: str = "hf",
    big_backend_options: Mapping[str, Any] | None = None,
    small_backend: SmallBackendFactory = HFBackend,
) -> DecodeFn:
    """A ``DecodeFn`` for ``OffloadRollout``.

    ``decode``: ``DecodeConfig`` fields other than temperature, max_new_tokens and seed (chunk size, per-offload
    cap, take-back rule, ``reference``). ``big_backend``: a ``load_backend`` kind (``hf``, ``vllm``, ``openai``)
    with its options. ``small_backend(model, tokenizer)`` builds the small backend around the live policy model.
    """
    decode = dict(decode or {})
    clash = sorted(set(decode) & set(_FROM_TRAINER))
    if clash:
        raise ValueError(
            f"rollout decode settings {clash} come from the GRPO config (temperature, "
            "max_completion_length) and the rollout seeds; remove them from 'decode'"
        )
    base_cfg = DecodeConfig(**decode)
    chosen_policy = make_policy(policy, **dict(policy_params or {}))
    big = load_backend(big_backend, str(big_dir), **dict(big_backend_options or {}))
    warned: list[bool] = []

    def run(
        questions: list[str],
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        seeds: list[int],
        sampling: Sampling,
    ) -> list[Trace]:
        if sampling.top_k and not warned:
            log.warning(
                "top_k=%d is not applied: the decoder samples with temperature (and top_p) only", sampling.top_k
            )
            warned.append(True)
        cfg = dataclasses.replace(base_cfg, temperature=sampling.temperature, max_new_tokens=sampling.max_new_tokens)
        items = [_Rollout(id=f"rollout-{seed}", question=q) for q, seed in zip(questions, seeds, strict=True)]
        small = small_backend(model, tokenizer)
        return decode_many(items, small, big, chosen_policy, cfg, progress=False)

    return run
