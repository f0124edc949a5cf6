"""TRL config builders: one preset per profile (``paper``, ``toy``, ``smoke``), device-safe flags, user overrides.

Order of precedence: preset < device flags < overrides. The device flags are the ones ENV_NOTES requires on CPU
(``use_cpu=True, bf16=False, gradient_checkpointing=False, report_to="none"``); on a GPU, mixed precision as TRL
recommends (``precision``): float32 weights (the optimizer's master copy) with bf16 autocast where supported.
``global_batch_size`` is not a TRL field: it becomes ``gradient_accumulation_steps`` for the current world size.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from transformers import PreTrainedTokenizerBase, PrinterCallback, Trainer
from transformers.trainer_utils import TrainOutput
from trl import GRPOConfig, SFTConfig

from splitlib.registry import Registry

log = logging.getLogger(__name__)

Preset = Literal["paper", "toy", "smoke"]
Device = Literal["auto", "cpu", "cuda"]

# PAPER_FACTS §5. The paper trained on conversational data with the loss over the whole sequence; our datasets are
# prompt/completion, so the paper preset turns completion-only loss off to keep the prompt in the loss as well.
SFT_PRESETS: Registry[dict[str, Any]] = Registry("SFT preset", {
    "paper": {
        "num_train_epochs": 3,
        "learning_rate": 5e-5,
        "lr_scheduler_type": "cosine_with_min_lr",
        "lr_scheduler_kwargs": {"min_lr_rate": 0.1},  # cosine floor at 0.1 x LR
        "warmup_steps": 0.05,  # a float in [0, 1) is a ratio of the total steps
        "global_batch_size": 64,  # 8 x A6000
        "per_device_train_batch_size": 1,
        "packing": True,
        "max_length": 16384,
        "completion_only_loss": False,  # "loss over the whole sequence"
        "gradient_checkpointing": True,  # needed for 16k packed sequences of a 1.5B model (off on CPU)
        "logging_steps": 10,
        "save_strategy": "no",
    },
    "toy": {
        "num_train_epochs": 3,
        "learning_rate": 1e-3,
        "lr_scheduler_type": "cosine_with_min_lr",
        "lr_scheduler_kwargs": {"min_lr_rate": 0.1},
        "warmup_steps": 0.05,
        "global_batch_size": 32,
        "per_device_train_batch_size": 32,
        "max_length": 512,
        "logging_steps": 5,
        "save_strategy": "no",
    },
    "smoke": {
        "max_steps": 2,
        "learning_rate": 1e-3,
        "lr_scheduler_type": "cosine_with_min_lr",
        "lr_scheduler_kwargs": {"min_lr_rate": 0.1},
        "global_batch_size": 2,
        "per_device_train_batch_size": 2,
        "max_length": 256,
        "logging_steps": 1,
        "save_strategy": "no",
    },
})

# PAPER_FACTS §6, §10. The paper's run is the authors' recipe at commit 77fcaa9, trained with TRL 0.16: 14
# generations, 8 completions per device x 7 processes x 2 accumulation steps = 112 completions (8 prompts) per step.
# TRL 0.16's loss is the token mean over each device's micro-batch (TRL >= 0.17 calls it "bnpo"), with no KL bias
# correction and no vLLM importance-sampling correction (both on by default in TRL 1.16). Its `max_prompt_length: 512`
# (left-truncation of longer prompts) no longer exists in GRPOConfig: TRL removed it and advises filtering overlong
# prompts out of the dataset instead, which is the data's business, not a TRL field.
GRPO_PRESETS: Registry[dict[str, Any]] = Registry("GRPO preset", {
    "paper": {
        "num_train_epochs": 1,
        "learning_rate": 1e-6,
        "lr_scheduler_type": "cosine_with_min_lr",
        "lr_scheduler_kwargs": {"min_lr_rate": 0.1},
        "warmup_steps": 0.1,
        "temperature": 0.7,
        "top_k": 50,
        "max_completion_length": 2048,
        "beta": 0.04,
        "epsilon": 0.2,
        "num_generations": 14,
        "global_batch_size": 112,  # completions per optimiser step (8 prompts x 14); -> gradient accumulation
        "per_device_train_batch_size": 8,  # the authors'; "bnpo" normalises the loss over this micro-batch
        "loss_type": "bnpo",  # TRL 0.16's (TRL 1.16 default: "dapo"; "grpo" = TRL 0.15's per-sequence mean)
        "use_bias_correction_kl": False,  # TRL 0.16's KL term (TRL 1.16 multiplies it by the importance ratio)
        "vllm_importance_sampling_correction": False,  # TRL 0.16 had none (TRL 1.16 reweights vLLM samples)
        "use_vllm": True,  # rollouts by vLLM (on a GPU; dropped on CPU, where TRL's weight sync into vLLM fails)
        "vllm_mode": "colocate",  # in each training process (TRL's default, "server", needs `trl vllm-serve` running)
        "gradient_checkpointing": True,
        "logging_steps": 1,
        "save_strategy": "no",
    },
    "toy": {
        "num_train_epochs": 1,
        "learning_rate": 5e-5,
        "lr_scheduler_type": "cosine_with_min_lr",
        "lr_scheduler_kwargs": {"min_lr_rate": 0.1},
        "warmup_steps": 0.1,
        "temperature": 0.7,
        "top_k": 50,
        "max_completion_length": 192,
        "beta": 0.04,
        "epsilon": 0.2,
        "num_generations": 8,
        "per_device_train_batch_size": 16,
        "logging_steps": 1,
        "save_strategy": "no",
    },
    "smoke": {
        "max_steps": 2,
        "learning_rate": 1e-4,
        "temperature": 0.7,
        "top_k": 50,
        "max_completion_length": 24,
        "beta": 0.04,
        "epsilon": 0.2,
        "num_generations": 2,
        "per_device_train_batch_size": 4,  # 2 prompts x 2 generations
        "logging_steps": 1,
        "save_strategy": "no",
    },
})


def on_gpu(device: Device = "auto") -> bool:
    """Whether training runs on CUDA: ``auto`` follows ``torch.cuda.is_available()``."""
    if device not in ("auto", "cpu", "cuda"):
        raise ValueError(f"device={device!r}: expected 'auto', 'cpu' or 'cuda'")
    return torch.cuda.is_available() if device == "auto" else device == "cuda"


@dataclass(frozen=True)
class Precision:
    """How training holds and computes the weights on one device.

    ``load_dtype``: the dtype the trainable model is loaded in (always float32: at the GRPO preset's LR of 1e-6 most
    updates to bf16 weights would round away). ``trl_flags``: the TrainingArguments fields (``bf16`` autocast,
    ``use_cpu``). ``accelerate``: the matching ``accelerate launch --mixed_precision`` value."""

    load_dtype: torch.dtype
    trl_flags: dict[str, Any]
    accelerate: Literal["bf16", "no"]


def precision(device: Device = "auto") -> Precision:
    """The one place that decides the training precision: float32 weights everywhere; bf16 autocast on a CUDA device
    that supports it; plain float32 on CPU (ENV_NOTES, "TRL on CPU") and, with a warning, on older GPUs."""
    if not on_gpu(device):
        return Precision(torch.float32, {"use_cpu": True, "bf16": False, "fp16": False}, "no")
    if torch.cuda.is_bf16_supported():
        return Precision(torch.float32, {"use_cpu": False, "bf16": True, "fp16": False}, "bf16")
    log.warning("this CUDA device has no bf16: training in float32 (slower, twice the activation memory)")
    return Precision(torch.float32, {"use_cpu": False, "bf16": False, "fp16": False}, "no")


def device_flags(device: Device = "auto") -> dict[str, Any]:
    """Flags that keep TRL fast and valid on the device: CPU needs them all (ENV_NOTES, "TRL on CPU")."""
    flags = {**precision(device).trl_flags, "report_to": "none"}
    if not on_gpu(device):
        flags["gradient_checkpointing"] = False
    return flags


def world_size() -> int:
    """Processes taking part in training (accelerate/torchrun set ``WORLD_SIZE``)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def _gradient_accumulation(global_batch_size: int, per_device: int, n_processes: int) -> int:
    per_step = per_device * n_processes
    if global_batch_size < per_step or global_batch_size % per_step:
        raise ValueError(
            f"global_batch_size={global_batch_size}: expected a multiple of per_device_train_batch_size x processes "
            f"= {per_device} x {n_processes}; change one of them"
        )
    return global_batch_size // per_step


def _merge(presets: Registry[dict[str, Any]], preset: str, device: Device, overrides: Mapping[str, Any]) -> dict:
    merged = {**presets[preset], **device_flags(device), **overrides}
    global_batch = merged.pop("global_batch_size", None)
    if global_batch is not None and "gradient_accumulation_steps" not in overrides:
        merged["gradient_accumulation_steps"] = _gradient_accumulation(
            global_batch, merged.get("per_device_train_batch_size", 8), world_size()
        )
    return merged


def _build(cls: type, kwargs: dict[str, Any]) -> Any:
    try:
        return cls(**kwargs)
    except TypeError as err:  # an unknown key: name it and where the valid ones are
        raise ValueError(f"{cls.__name__}: {err}; valid keys are the fields of trl.{cls.__name__}") from err


def sft_config(preset: Preset = "toy", device: Device = "auto", **overrides: Any) -> SFTConfig:
    """A ``trl.SFTConfig`` from a preset, the device's safe flags and ``overrides`` (any SFTConfig field)."""
    return _build(SFTConfig, _merge(SFT_PRESETS, preset, device, overrides))


def grpo_config(preset: Preset = "toy", device: Device = "auto", **overrides: Any) -> GRPOConfig:
    """A ``trl.GRPOConfig`` from a preset, the device's safe flags and ``overrides`` (any GRPOConfig field)."""
    kwargs = _merge(GRPO_PRESETS, preset, device, overrides)
    if not on_gpu(device) and "use_vllm" not in overrides:
        kwargs["use_vllm"] = False  # vLLM on CPU works (ENV_NOTES) but only when asked for explicitly
    return _build(GRPOConfig, kwargs)


def train_and_save(trainer: Trainer, tokenizer: PreTrainedTokenizerBase, out_dir: Path, progress: bool
                   ) -> tuple[TrainOutput, float]:
    """Train, save model and tokenizer to ``out_dir``; returns TRL's result and the measured training seconds.

    Without progress bars the Trainer would print every log row; library code does not print (the logs are
    returned), so its printer is removed."""
    if not progress:
        trainer.remove_callback(PrinterCallback)
    start = time.perf_counter()
    result = trainer.train()
    wall_s = time.perf_counter() - start
    trainer.save_model(str(out_dir))  # every process takes part (ZeRO-3 gathers the weights); rank 0 writes
    if trainer.is_world_process_zero():
        tokenizer.save_pretrained(out_dir)
    return result, wall_s
