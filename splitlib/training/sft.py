"""SFT on annotated traces (PAPER_FACTS §5) with ``trl.SFTTrainer``, and the tag-usage statistics of Figure 8.

An annotated row is a mapping with ``question`` and the tagged trace under ``trace_key`` (default ``annotated``);
an ``id`` names the row in errors. The SFT example is rendered in a prompt style (``splitlib.prompts``, stage
``sft``): ``project`` = the small model's prompt (with the hint) and the tagged trace followed by EOS; ``authors`` =
the authors' conversation [user: the raw problem, assistant: the tagged trace] through their recipe's template.
"""

from __future__ import annotations

import logging
import statistics
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from datasets import Dataset
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerBase
from trl import SFTTrainer

from splitlib import prompts, rewards, tags
from splitlib.backends.base import resolve_model
from splitlib.progressbar import draws
from splitlib.training.configs import precision, sft_config, train_and_save
from splitlib.training.tokens import ensure_control_tokens, trl_prompt_text

log = logging.getLogger(__name__)


def sft_example(row: Mapping[str, Any], tokenizer: PreTrainedTokenizerBase, trace_key: str = "annotated",
                prompt_style: prompts.PromptStyle | str | None = None) -> dict:
    """One ``{"prompt", "completion"}`` example in ``prompt_style`` (None: ``project``): the prompt text as TRL
    tokenizes it (no leading BOS text where the tokenizer adds one) and the tagged trace as the completion."""
    name = row.get("id", "?")
    if trace_key not in row or "question" not in row:
        raise KeyError(f"annotated row {name!r} has keys {sorted(row)}; expected 'question' and {trace_key!r}")
    trace = row[trace_key]
    status = tags.check(trace)
    if not status.balanced:
        raise ValueError(f"annotated row {name!r}: malformed tags ({status.problem}); drop it before SFT")
    prompt, completion = prompts.sft_texts(tokenizer, row["question"], trace, prompts.style("sft", prompt_style))
    return {"prompt": trl_prompt_text(tokenizer, prompt), "completion": completion}


def sft_dataset(
    annotated_rows: Sequence[Mapping[str, Any]], tokenizer: PreTrainedTokenizerBase, trace_key: str = "annotated",
    prompt_style: prompts.PromptStyle | str | None = None,
) -> Dataset:
    """The SFT dataset, one ``{"prompt", "completion"}`` row per annotated trace (TRL: completion-only loss)."""
    if not annotated_rows:
        raise ValueError("no annotated rows: run notebooks/01_annotate.ipynb first")
    chosen = prompts.style("sft", prompt_style)
    return Dataset.from_list([sft_example(r, tokenizer, trace_key, chosen) for r in annotated_rows])


def loss_curve(log_history: Sequence[Mapping[str, Any]]) -> list[dict]:
    """The training-loss rows of ``trainer.state.log_history``: step, loss, learning rate, grad norm, epoch."""
    keys = ("step", "loss", "learning_rate", "grad_norm", "epoch")
    return [{k: row[k] for k in keys if k in row} for row in log_history if "loss" in row]


def run_sft(
    model_dir: str | Path,
    annotated_rows: Sequence[Mapping[str, Any]],
    out_dir: str | Path,
    params: Mapping[str, Any] | None = None,
    progress: bool = True,
    prompt_style: prompts.PromptStyle | str | None = None,
) -> dict:
    """Fine-tune the model in ``model_dir`` on ``annotated_rows``; save model + tokenizer to ``out_dir``.

    ``params``: ``preset`` (paper/toy/smoke), ``device``, ``trace_key`` and any ``trl.SFTConfig`` field.
    ``prompt_style``: how the examples are rendered (``splitlib.prompts``, stage ``sft``; None: ``project``).
    Returns metrics: the loss curve, measured wall seconds, steps, examples, added control tokens.
    """
    params = dict(params or {})
    preset, device = params.pop("preset", "toy"), params.pop("device", "auto")
    trace_key = params.pop("trace_key", "annotated")
    prompt_style = prompts.style("sft", prompt_style)
    out_dir = Path(out_dir)
    model_dir = resolve_model(model_dir)  # a folder is checked whole (config, untruncated weights)
    # The config before the model: under DeepSpeed ZeRO-3 it is what lets the model load already partitioned.
    args = sft_config(preset, device, output_dir=str(out_dir), disable_tqdm=not draws(progress), **params)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=precision(device).load_dtype)
    added = ensure_control_tokens(tokenizer, model)
    dataset = sft_dataset(annotated_rows, tokenizer, trace_key, prompt_style)
    trainer = SFTTrainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer)
    result, wall_s = train_and_save(trainer, tokenizer, out_dir, progress)
    log.info("SFT: %d steps in %.1f s, final loss %.4f", result.global_step, wall_s, result.training_loss)
    return {
        "loss_curve": loss_curve(trainer.state.log_history),
        "train_loss": result.training_loss,
        "steps": result.global_step,
        "examples": len(dataset),
        "added_tokens": added,
        "prompt_style": prompt_style.describe(),
        "train_wall_s": wall_s,
        "model_dir": str(out_dir),
    }


# -- Figure 8: how a model uses the tags ------------------------------------------------------------------------
def _offload_fraction(text: str, balanced: bool) -> float:
    return tags.offload_char_fraction(text) if balanced else rewards.lenient_char_coverage(text)


def tag_usage(generations: Sequence[str]) -> dict:
    """Tag statistics over generations (the paper's Figure 8 numbers).

    ``balanced_fraction``: well-formed flat spans (no tags counts as balanced); ``no_tags_fraction``; offloaded
    character fraction of the untagged text (mean, median, min, max; lenient pairing for malformed tags);
    ``<bigmodel>`` tags per sample (mean, median).
    """
    if not generations:
        raise ValueError("tag_usage needs at least one generation")
    checks = [tags.check(g) for g in generations]
    fractions = [_offload_fraction(g, c.balanced) for g, c in zip(generations, checks, strict=True)]
    opens = [c.n_open for c in checks]
    n = len(generations)
    return {
        "n": n,
        "balanced_fraction": sum(c.balanced for c in checks) / n,
        "no_tags_fraction": sum(c.n_open == 0 and c.n_close == 0 for c in checks) / n,
        "offload_char_fraction_mean": statistics.fmean(fractions),
        "offload_char_fraction_median": statistics.median(fractions),
        "offload_char_fraction_min": min(fractions),
        "offload_char_fraction_max": max(fractions),
        "tags_per_sample_mean": statistics.fmean(opens),
        "tags_per_sample_median": statistics.median(opens),
    }
