"""Toy small/big causal LMs (standard Qwen2 architecture) and their pretraining on un-annotated traces.

The models are plain ``Qwen2ForCausalLM`` saved with ``save_pretrained``: transformers, TRL and vLLM load
them by path exactly as hub models. Pretraining is a short, seeded, completion-only LM loop.
"""

from __future__ import annotations

import logging
import math
import random
import time
from dataclasses import dataclass

import torch
from transformers import PreTrainedTokenizerBase, Qwen2Config, Qwen2ForCausalLM

from splitlib.progressbar import progress_bar
from splitlib.toy.world import Problem, ToyWorldConfig, make_problem

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ToyModelConfig:
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    intermediate_size: int
    max_position_embeddings: int = 512
    sliding_window: int | None = None  # attention window in tokens (the small toy model's handicap); None = full


@dataclass(frozen=True)
class PretrainConfig:
    steps: int
    batch_size: int = 32
    lr: float = 3e-3
    warmup_steps: int = 50
    weight_decay: float = 0.01
    seed: int = 0
    threads: int = 0  # CPU threads while training (0: keep the process's setting); restored afterwards


def build_model(cfg: ToyModelConfig, tokenizer: PreTrainedTokenizerBase, seed: int) -> Qwen2ForCausalLM:
    """A freshly initialised Qwen2 causal LM sized by ``cfg`` for ``tokenizer``."""
    torch.manual_seed(seed)
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=cfg.hidden_size,
        num_hidden_layers=cfg.num_hidden_layers,
        num_attention_heads=cfg.num_attention_heads,
        num_key_value_heads=cfg.num_attention_heads,
        intermediate_size=cfg.intermediate_size,
        max_position_embeddings=cfg.max_position_embeddings,
        tie_word_embeddings=True,
        use_sliding_window=cfg.sliding_window is not None,
        sliding_window=cfg.sliding_window,
        max_window_layers=0,  # every layer uses the window (vLLM supports all-or-none)
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        torch_dtype="float32",
    )
    return Qwen2ForCausalLM(config)


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def encode_example(tokenizer: PreTrainedTokenizerBase, prompt: str, completion: str) -> tuple[list[int], int]:
    """Token ids of prompt+completion+EOS and the number of prompt tokens (excluded from the loss)."""
    p_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    c_ids = tokenizer(completion, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    return p_ids + c_ids, len(p_ids)


def _collate(rows: list[tuple[list[int], int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    width = max(len(ids) for ids, _ in rows)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    attn = torch.zeros((len(rows), width), dtype=torch.long)
    labels = torch.full((len(rows), width), -100, dtype=torch.long)
    for i, (ids, n_prompt) in enumerate(rows):
        input_ids[i, : len(ids)] = torch.tensor(ids)
        attn[i, : len(ids)] = 1
        labels[i, n_prompt : len(ids)] = torch.tensor(ids[n_prompt:])
    return input_ids, attn, labels


def pretrain(
    model: Qwen2ForCausalLM,
    tokenizer: PreTrainedTokenizerBase,
    world: ToyWorldConfig,
    cfg: PretrainConfig,
    prompt_fn,
    progress: bool = True,
) -> list[dict]:
    """Train on a seeded stream of fresh toy problems; returns the loss curve (one row per logged step).

    ``prompt_fn(problem) -> str`` builds the model's prompt text (its role's chat format).
    """
    if cfg.threads < 0:
        raise ValueError(f"threads={cfg.threads}: expected 0 (keep the process's setting) or a thread count")
    before = torch.get_num_threads()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    try:
        return _pretrain(model, tokenizer, world, cfg, prompt_fn, progress)
    finally:
        torch.set_num_threads(before)


def _pretrain(model, tokenizer, world, cfg, prompt_fn, progress) -> list[dict]:
    torch.manual_seed(cfg.seed)
    rng = random.Random(cfg.seed)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, betas=(0.9, 0.98))

    def lr_at(step: int) -> float:
        if step < cfg.warmup_steps:
            return cfg.lr * (step + 1) / cfg.warmup_steps
        frac = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
        return cfg.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac)))

    model.train()
    curve: list[dict] = []
    t0 = time.perf_counter()
    bar = progress_bar(range(cfg.steps), desc="pretrain", disable=not progress)
    for step in bar:
        probs: list[Problem] = [make_problem(rng, world, f"stream-{step}-{i}") for i in range(cfg.batch_size)]
        rows = [encode_example(tokenizer, prompt_fn(p), p.trace) for p in probs]
        input_ids, attn, labels = _collate(rows, tokenizer.pad_token_id)
        for group in opt.param_groups:
            group["lr"] = lr_at(step)
        loss = model(input_ids=input_ids, attention_mask=attn, labels=labels).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if step % 10 == 0 or step == cfg.steps - 1:
            curve.append({"step": step, "loss": loss.item(), "lr": lr_at(step), "elapsed_s": time.perf_counter() - t0})
            bar.set_postfix(loss=f"{loss.item():.3f}")
    model.eval()
    return curve
