"""GRPO ("RL4E", PAPER_FACTS §6) with ``trl.GRPOTrainer``, in two rollout modes.

- ``paper``: the small model alone samples the rollouts (TRL's own generation), as in the paper, whose stated
  limitation is that the accuracy reward is then not the deployed system's accuracy.
- ``offload``: the project's contribution: rollouts run the cooperative decoder with the current policy as the
  small model and the frozen big model taking the offloaded spans (``splitlib.training.rollout``); the big model's
  tokens are left out of the loss.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from datasets import Dataset
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerBase
from trl import GRPOTrainer

from splitlib import prompts, rewards
from splitlib.backends.base import resolve_model
from splitlib.backends.vllm_engine import release_foreign_engine
from splitlib.grading import GoldRule, gold_text
from splitlib.progressbar import draws
from splitlib.registry import Registry
from splitlib.training.configs import grpo_config, precision, train_and_save
from splitlib.training.heldout import HeldoutCallback, HeldoutConfig
from splitlib.training.rollout import (
    OffloadRollout,
    RolloutProblem,
    check_policy_engine,
    offload_decoder,
    sequential_reasons,
)
from splitlib.training.tokens import require_control_tokens, trl_prompt_text

log = logging.getLogger(__name__)

Mode = Literal["paper", "offload"]
MODES: Registry[str] = Registry("GRPO mode", {
    "paper": "the small model alone samples the rollouts (TRL's own generation)",
    "offload": "rollouts run the cooperative decoder; the frozen big model writes the offloaded spans",
})


def _field(problem: Any, *names: str) -> Any:
    for name in names:
        value = problem.get(name) if isinstance(problem, Mapping) else getattr(problem, name, None)
        if value is not None:
            return value
    raise KeyError(f"problem {problem!r:.80} has none of {names}")


def grpo_dataset(problems: Sequence[Any], tokenizer: PreTrainedTokenizerBase,
                 prompt_style: prompts.PromptStyle | str | None = None, gold: GoldRule = "answer") -> Dataset:
    """``{"prompt": the small model's prompt text in ``prompt_style`` (``splitlib.prompts``, stage ``grpo``; None:
    ``project``, with the hint in the user turn), "solution": the gold text, "gold_rule": how to read it}`` per
    problem (the rewards get both columns).

    A problem is a ``splitlib.toy.Problem`` or a mapping with ``question`` and the column ``gold`` names
    (``splitlib.grading.gold_text``: ``answer``, or the worked ``solution`` as the authors' reward read it).
    """
    if not problems:
        raise ValueError("no GRPO problems: check data/train.jsonl (notebooks/00_models.ipynb writes it)")
    chosen = prompts.style("grpo", prompt_style)
    rows = [
        {
            "prompt": trl_prompt_text(tokenizer, prompts.build_prompt(tokenizer, _field(p, "question"), "small", chosen)),
            "solution": gold_text(p, gold),
            "gold_rule": gold,
        }
        for p in problems
    ]
    return Dataset.from_list(rows)


def rollout_problems(problems: Sequence[Any], dataset: Dataset) -> dict[str, RolloutProblem]:
    """Dataset prompt text -> question and gold answer (TRL hands the rollout function only the prompts)."""
    return {
        row["prompt"]: RolloutProblem(question=_field(p, "question"), solution=row["solution"],
                                      gold_rule=row["gold_rule"])
        for p, row in zip(problems, dataset, strict=True)
    }


def reward_functions(names: Sequence[str], overrides: Mapping[str, Mapping[str, Any]] | None = None) -> list:
    """The registered rewards, looked up by name (``splitlib.rewards``); ``overrides`` maps a configurable reward's
    name (one with a frozen ``config``, e.g. ``rl4e``) to fields of that config, e.g. ``{"rl4e": {"latency_weight":
    1.0}}``; the reward keeps its name, so TRL logs it under the same column."""
    if not names:
        raise ValueError(f"no reward names; pick from {', '.join(rewards.REWARDS.names())}")
    overrides = dict(overrides or {})
    unknown = sorted(set(overrides) - set(names))
    if unknown:
        raise ValueError(f"reward overrides for {unknown}, which are not among the rewards {list(names)}")
    chosen = []
    for name in names:
        fn = rewards.REWARDS[name]
        if name in overrides:
            if not hasattr(fn, "config"):
                raise ValueError(f"reward {name!r} has no settings to override (only configurable rewards: rl4e)")
            fn = dataclasses.replace(fn, config=dataclasses.replace(fn.config, **overrides[name]))
        chosen.append(fn)
    return chosen


def step_logs(log_history: Sequence[Mapping[str, Any]], rollout_history: Sequence[Mapping[str, Any]]) -> list[dict]:
    """One row per logged training step: TRL's metrics plus, in offload mode, that step's rollout statistics.

    A rollout made at ``global_step`` s feeds the optimizer step logged as s + 1.
    """
    by_step = {r["step"] + 1: r for r in rollout_history}
    rows = []
    for row in log_history:
        if "loss" not in row or "step" not in row:
            continue
        extra = {f"rollout/{k}": v for k, v in by_step.get(row["step"], {}).items() if k != "step"}
        rows.append({**row, **extra})
    return rows


def _same_tokenizer(a: PreTrainedTokenizerBase, b: PreTrainedTokenizerBase) -> bool:
    return a.get_vocab() == b.get_vocab()


def build_offload_rollout(
    problems: Sequence[Any],
    dataset: Dataset,
    tokenizer: PreTrainedTokenizerBase,
    big_dir: str | Path,
    rollout_params: Mapping[str, Any],
    run_seed: int,
    prompt_style: prompts.PromptStyle | None = None,
) -> OffloadRollout:
    """The offload ``rollout_func``: the decoder service with the frozen big model in ``big_dir``.

    ``rollout_params``: keyword arguments of ``splitlib.training.rollout.offload_decoder``, ``policy_engine``
    (``hf``, the default, or ``vllm``: TRL's colocated engine) and ``small_backend`` (replaces the ``hf`` engine's
    backend). Warns when the rollout batch would be decoded one completion at a time."""
    params = dict(rollout_params)
    policy_engine = params.pop("policy_engine", "hf")
    small_backend = params.pop("small_backend", None)
    slow = sequential_reasons(policy_engine, params.get("big_backend", "hf"), params.get("policy", "split"))
    if slow:
        log.warning("offload rollouts will decode one completion at a time (%s): for batched rollouts use "
                    "policy_engine='vllm' (with use_vllm) and big_backend 'vllm' or 'openai'", "; ".join(slow))
    big_tokenizer = AutoTokenizer.from_pretrained(big_dir)
    decoder, route = offload_decoder(big_dir, **params, prompt_style=prompt_style)
    return OffloadRollout(rollout_problems(problems, dataset), decoder, route,
                          _same_tokenizer(tokenizer, big_tokenizer), run_seed=run_seed, small_backend=small_backend,
                          policy_engine=policy_engine, prompt_style=prompt_style)


def _release_engines(trainer: GRPOTrainer | None, rollout: OffloadRollout | None) -> None:
    """After training: TRL's colocated vLLM engine is let go by ``VLLMBackend.close``'s rule (it shares vLLM's
    process-wide state with our engines), then the rollout's big-model backend is closed."""
    generation = getattr(trainer, "vllm_generation", None)
    if getattr(generation, "llm", None) is not None:
        release_foreign_engine(generation.llm)
    if rollout is not None:
        rollout.close()


def run_grpo(
    model_dir: str | Path,
    big_dir: str | Path | None,
    problems: Sequence[Any],
    out_dir: str | Path,
    mode: Mode = "paper",
    reward_names: Sequence[str] = ("paper",),
    reward_weights: Sequence[float] | None = None,
    params: Mapping[str, Any] | None = None,
    progress: bool = True,
    prompt_style: prompts.PromptStyle | str | None = None,
    gold: GoldRule = "answer",
    reward_overrides: Mapping[str, Mapping[str, Any]] | None = None,
    heldout: HeldoutConfig | None = None,
) -> dict:
    """GRPO from the model in ``model_dir`` (its tokenizer must have the control tokens); saves to ``out_dir``.

    ``params``: ``preset`` (paper/toy/smoke), ``device``, ``rollout`` (offload mode: keyword arguments of
    ``splitlib.training.rollout.offload_decoder`` — policy, decoder settings —, ``policy_engine`` and
    ``small_backend``, see ``build_offload_rollout``) and any ``trl.GRPOConfig`` field. Offload mode with
    ``policy_engine: hf`` turns TRL's vLLM off unless ``use_vllm`` is given; ``policy_engine: vllm`` needs
    ``use_vllm=True, vllm_mode='colocate'`` and is refused before anything loads otherwise; ``auto`` is ``vllm``
    where the config has that engine (the paper preset on a GPU) and ``hf`` elsewhere (on CPU TRL's weight sync
    into vLLM fails).
    ``prompt_style``: the rollout prompts (``splitlib.prompts``, stage ``grpo``; None: ``project``).
    ``reward_overrides``: settings of configurable rewards (``reward_functions``), e.g. rl4e's latency weight.
    ``heldout``: held-out split-decoding evaluations during training (``splitlib.training.heldout``; offload mode
    shares the rollouts' decoder), returned under ``heldout``; None: none.
    Returns metrics: per-step logs (TRL's rewards per function, completion lengths, loss; in offload mode the
    step's mean offload fraction and accuracy under ``rollout/``), measured wall seconds, steps.
    """
    MODES[mode]  # an unknown mode raises UnknownNameError listing the modes
    if mode == "offload" and big_dir is None:
        raise ValueError("mode='offload' needs big_dir (the frozen big model)")
    params = dict(params or {})
    preset, device = params.pop("preset", "toy"), params.pop("device", "auto")
    prompt_style = prompts.style("grpo", prompt_style)
    rollout_params = params.pop("rollout", {})
    policy_engine = rollout_params.get("policy_engine", "hf")
    if mode == "offload" and policy_engine == "hf":
        params.setdefault("use_vllm", False)  # the policy decodes through the hf backend: TRL's engine would idle
    if reward_weights is not None:
        params["reward_weights"] = list(reward_weights)
    out_dir = Path(out_dir)
    model_dir = resolve_model(model_dir)  # a folder is checked whole (config, untruncated weights)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    require_control_tokens(tokenizer)
    # The config before the model: under DeepSpeed ZeRO-3 it is what lets the model load already partitioned.
    args = grpo_config(preset, device, output_dir=str(out_dir), disable_tqdm=not draws(progress), **params)
    if mode == "offload" and policy_engine == "auto":  # TRL's colocated engine where the config starts one
        policy_engine = "vllm" if args.use_vllm and args.vllm_mode == "colocate" else "hf"
        rollout_params = {**rollout_params, "policy_engine": policy_engine}
        log.info("offload rollouts: policy_engine auto -> %s", policy_engine)
    if mode == "offload":
        check_policy_engine(policy_engine, args)
        if policy_engine == "hf" and args.use_vllm:
            log.warning("use_vllm=True with rollout policy_engine='hf': TRL's vLLM engine is started and synced every "
                        "step but offload rollouts do not use it; set rollout policy_engine: vllm to decode on it")
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=precision(device).load_dtype)
    dataset = grpo_dataset(problems, tokenizer, prompt_style, gold)
    rollout = None
    if mode == "offload":
        rollout = build_offload_rollout(problems, dataset, tokenizer, big_dir, rollout_params, args.seed, prompt_style)
    trainer = callback = None
    if heldout is not None:
        shared = (rollout.decode_fn, rollout.route) if rollout is not None else None
        callback = HeldoutCallback(heldout, tokenizer, prompt_style, decoder=shared)
    try:
        trainer = GRPOTrainer(
            model=model,
            reward_funcs=reward_functions(reward_names, reward_overrides),
            args=args,
            train_dataset=dataset,
            processing_class=tokenizer,
            rollout_func=rollout,
            callbacks=[callback] if callback is not None else None,
        )
        result, wall_s = train_and_save(trainer, tokenizer, out_dir, progress)
    finally:
        if callback is not None:
            callback.close()
        _release_engines(trainer, rollout)
    log.info("GRPO (%s): %d steps in %.1f s", mode, result.global_step, wall_s)
    return {
        "mode": mode,
        "steps": step_logs(trainer.state.log_history, rollout.history if rollout else []),
        "train_loss": result.training_loss,
        "global_steps": result.global_step,
        "train_wall_s": wall_s,
        "reward_names": list(reward_names),
        "prompt_style": prompt_style.describe(),
        "model_dir": str(out_dir),
        "heldout": callback.results if callback is not None else [],
    }
