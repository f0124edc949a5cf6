"""Measurements that show the toy world has a real small/big gap (notebook 00).

- final-answer accuracy from free greedy generation (batched ``generate``; the models alone, no offloading);
- per-step accuracy, teacher-forced: a step counts as right when every one of its tokens is the model's
  greedy prediction given the gold prefix; split by easy vs hard steps;
- where the first wrong step of a free generation falls (easy or hard);
- decode tokens/s at batch 1 with a KV cache (the models timed in alternating rounds);
- ``gap_figure``: the three as bar panels.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure
from matplotlib.ticker import PercentFormatter
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from splitlib.progressbar import progress_bar
from splitlib.toy.world import Problem, step_spans

_BOXED = re.compile(r"\\boxed\{([^{}]*)\}")


@dataclass(frozen=True)
class GenerationCheck:
    problem_id: str
    correct: bool
    first_error_step: int | None  # index into step_spans(trace); None when the generation matches the trace
    first_error_hard: bool | None
    generation: str


def _is_hard(span: tuple[int, int], hard: tuple[tuple[int, int], ...]) -> bool:
    return any(s <= span[0] and span[1] <= e for s, e in hard)


def greedy_generations(model: PreTrainedModel, tok: PreTrainedTokenizerBase, prompts: list[str],
                       max_new_tokens: int, batch_size: int = 64, progress: bool = True) -> list[str]:
    """Greedy continuations (text, special tokens dropped) of many prompts, batched with left padding."""
    side, tok.padding_side = tok.padding_side, "left"
    out: list[str] = []
    try:
        for i in progress_bar(range(0, len(prompts), batch_size), desc="generate", disable=not progress):
            enc = tok(prompts[i : i + batch_size], return_tensors="pt", padding=True, add_special_tokens=False)
            with torch.inference_mode():
                ids = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False,
                                     pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
            out += tok.batch_decode(ids[:, enc["input_ids"].shape[1] :], skip_special_tokens=True)
    finally:
        tok.padding_side = side
    return out


def check_generation(problem: Problem, generation: str) -> GenerationCheck:
    """Compare a free generation with the gold trace, step by step."""
    boxed = _BOXED.findall(generation)
    correct = bool(boxed) and boxed[-1] == problem.answer
    for i, (s, e) in enumerate(step_spans(problem.trace)):
        if generation[s:e] != problem.trace[s:e]:
            return GenerationCheck(problem.id, correct, i, _is_hard((s, e), problem.hard_spans), generation)
    return GenerationCheck(problem.id, correct, None, None, generation)


def step_accuracy(model: PreTrainedModel, tok: PreTrainedTokenizerBase, problems: list[Problem],
                  prompts: list[str], progress: bool = True) -> dict[str, float]:
    """Teacher-forced accuracy of easy and hard steps (a step is right when all its tokens are)."""
    right = {"easy": 0, "hard": 0}
    total = {"easy": 0, "hard": 0}
    for problem, prompt in progress_bar(list(zip(problems, prompts)), desc="step accuracy", disable=not progress):
        p_ids = tok(prompt, add_special_tokens=False)["input_ids"]
        enc = tok(problem.trace, add_special_tokens=False, return_offsets_mapping=True)
        ids = torch.tensor([p_ids + enc["input_ids"]])
        with torch.inference_mode():
            pred = model(ids).logits[0, len(p_ids) - 1 : -1].argmax(-1).tolist()
        ok = [a == b for a, b in zip(pred, enc["input_ids"])]
        for span in step_spans(problem.trace):
            idx = [j for j, (s, e) in enumerate(enc["offset_mapping"]) if s < span[1] and e > span[0]]
            kind = "hard" if _is_hard(span, problem.hard_spans) else "easy"
            total[kind] += 1
            right[kind] += all(ok[j] for j in idx)
    return {f"{k}_step_accuracy": right[k] / total[k] if total[k] else float("nan") for k in right} | {
        f"{k}_steps": total[k] for k in total}


def decode_speeds(models: dict[str, PreTrainedModel], tok: PreTrainedTokenizerBase, prompts: dict[str, str],
                  n_tokens: int, rounds: int = 5) -> dict[str, dict[str, float]]:
    """Batch-1 greedy decoding through the cooperative decoder's ``hf`` backend (KV cache, one forward per token),
    i.e. the per-token cost the decoder pays, for each model from its ``prompts[role]``.

    The models are timed in alternating rounds (order reversed every other round), so that a slow spell of a shared
    machine hits all of them alike; each model's figure is its median seconds per token over ``rounds``.
    """
    from splitlib.backends.hf import HFBackend
    from splitlib.profiling import decode_s_per_token

    if rounds < 1:
        raise ValueError(f"rounds={rounds}: need at least one timing round")
    backends = {r: HFBackend(m, tok) for r, m in models.items()}
    contexts = {r: tok(prompts[r], add_special_tokens=False)["input_ids"] for r in models}
    for r, b in backends.items():
        decode_s_per_token(b, contexts[r], 4)  # warm-up
    times: dict[str, list[float]] = {r: [] for r in models}
    order = list(models)
    for i in range(rounds):
        for r in order if i % 2 == 0 else order[::-1]:
            times[r].append(decode_s_per_token(backends[r], contexts[r], n_tokens))
    out = {}
    for r, ts in times.items():
        s_per_tok = sorted(ts)[len(ts) // 2]
        out[r] = {"decode_s_per_token": s_per_tok, "decode_tok_per_s": 1.0 / s_per_tok}
    return out


def measure_gap(models: dict, tok: PreTrainedTokenizerBase, problems: list[Problem], prompts_by_role: dict,
                max_new_tokens: int, batch_size: int, speed_tokens: int, speed_rounds: int = 5, progress: bool = True):
    """All notebook-00 measurements for each role. Returns (summary rows, per-problem checks)."""
    rows, checks = [], {}
    for role, model in models.items():
        prompts = prompts_by_role[role]
        gens = greedy_generations(model, tok, prompts, max_new_tokens, batch_size, progress)
        checks[role] = [check_generation(p, g) for p, g in zip(problems, gens)]
        errs = [c for c in checks[role] if c.first_error_step is not None]
        row = {"model": role, "n_params": sum(p.numel() for p in model.parameters()),
               "layers": model.config.num_hidden_layers, "hidden": model.config.hidden_size,
               "accuracy": sum(c.correct for c in checks[role]) / len(problems),
               "wrong_traces": len(errs),
               "first_error_in_hard_step": (sum(bool(c.first_error_hard) for c in errs) / len(errs)) if errs else None}
        row |= step_accuracy(model, tok, problems, prompts, progress)
        rows.append(row)
    speeds = decode_speeds(models, tok, {r: prompts_by_role[r][0] for r in models}, speed_tokens, speed_rounds)
    for row in rows:
        row |= speeds[row["model"]]
    return rows, checks


def gap_figure(gap: pd.DataFrame) -> Figure:
    """``measure_gap``'s rows (indexed by model) as three bar panels: final-answer accuracy, teacher-forced step
    accuracy on easy vs hard steps, decode ms per token at batch 1; every bar labelled, legends beside the bars.
    Built without pyplot."""
    fig = Figure(figsize=(12, 3.4), layout="constrained")
    acc, steps, speed = fig.subplots(1, 3)
    models = list(gap.index)
    x = np.arange(len(models))
    acc.bar_label(acc.bar(x, gap["accuracy"], color="tab:blue"), fmt="{:.0%}", padding=2)
    for i, (column, label) in enumerate((("easy_step_accuracy", "easy steps"), ("hard_step_accuracy", "hard steps"))):
        bars = steps.bar(x + (i - 0.5) * 0.4, gap[column], width=0.4, label=label, color=("tab:green", "tab:red")[i])
        steps.bar_label(bars, fmt="{:.0%}", padding=2, fontsize="small")
    steps.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1), borderaxespad=0)
    speed.bar_label(speed.bar(x, 1e3 * gap["decode_s_per_token"], color="tab:purple"), fmt="{:.2f}", padding=2)
    for ax, ylabel, title in ((acc, "accuracy", "final-answer accuracy (greedy)"),
                              (steps, "steps right", "step accuracy (teacher-forced)"),
                              (speed, "ms per token", "decode time per token (batch 1)")):
        ax.set_xticks(x, models)
        ax.set(xlabel="model", ylabel=ylabel, title=title)
        ax.margins(y=0.15)
    for ax in (acc, steps):
        ax.set_ylim(0, 1.15)
        ax.yaxis.set_major_formatter(PercentFormatter(1.0))
    return fig
