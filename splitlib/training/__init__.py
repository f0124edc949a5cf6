"""Training: SFT on annotated traces and GRPO with rollouts by the small model alone or really offloading.

- ``tokens``: the control tokens in a tokenizer/model pair (``ensure_control_tokens``).
- ``configs``: ``sft_config`` / ``grpo_config`` builders with ``paper``/``toy``/``smoke`` presets, CPU-safe flags.
- ``sft``: ``sft_dataset``, ``run_sft``, ``tag_usage`` (Figure 8 statistics).
- ``grpo``: ``grpo_dataset``, ``run_grpo`` (modes ``paper`` and ``offload``).
- ``rollout``: the offload ``rollout_func`` (ids, ``env_mask``, seeds, log-probabilities) over any
  ``splitlib.decoder_service.DecodeFn``; ``offload_decoder`` builds the real one.
- ``heldout``: a ``TrainerCallback`` that split-decodes held-out problems with the current policy during GRPO.
- ``report`` / ``figures``: notebook 02's and 03's numbers and figures (GRPO curves per step and arm).
"""

from splitlib.training.configs import GRPO_PRESETS, SFT_PRESETS, device_flags, grpo_config, sft_config
from splitlib.training.grpo import grpo_dataset, run_grpo, step_logs
from splitlib.training.rollout import OffloadRollout, RolloutCompletion, completion_from_trace
from splitlib.training.sft import run_sft, sft_dataset, tag_usage
from splitlib.training.tokens import control_token_ids, ensure_control_tokens, require_control_tokens

__all__ = [
    "GRPO_PRESETS",
    "SFT_PRESETS",
    "OffloadRollout",
    "RolloutCompletion",
    "completion_from_trace",
    "control_token_ids",
    "device_flags",
    "ensure_control_tokens",
    "grpo_config",
    "grpo_dataset",
    "require_control_tokens",
    "run_grpo",
    "run_sft",
    "sft_config",
    "sft_dataset",
    "step_logs",
    "tag_usage",
]
