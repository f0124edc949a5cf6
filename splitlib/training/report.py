"""What notebooks 02 and 03 check and report about a training run.

- ``weights_changed``: did training move the trainable weights (max |Δ| per tensor, read from the safetensors
  files one tensor at a time, so two 1.5B checkpoints never sit in memory together);
- ``small_only_generations``: generations of the small model alone with the tags kept in the text (tag usage,
  the paper's Figure 8); ``generation_records`` / ``tag_usage_summary``: each one's tags and grade, and the totals;
- ``toy_tag_alignment``: in the toy world, whether generated spans sit on the hard steps (the bonus clauses);
- ``grpo_curves`` / ``curve_summary``: reward, offload fraction and accuracy per GRPO step, from ``run_grpo``'s
  step logs, in either rollout mode, and their means early and late in training.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import pandas as pd
import torch
from safetensors import safe_open

from splitlib import grading, prompts, tags
from splitlib.sampling import GREEDY
from splitlib.toy.world import step_spans

Engine = Literal["generate", "hf", "vllm"]


# -- did the weights change? ------------------------------------------------------------------------------------
def _tensor_files(model_dir: str | Path) -> dict[str, Path]:
    """Tensor name -> the safetensors file holding it (single file or sharded checkpoint); a hub id is resolved to
    its local snapshot (downloaded when missing)."""
    d = Path(model_dir)
    if not d.is_dir():
        from huggingface_hub import snapshot_download

        d = Path(snapshot_download(str(model_dir), allow_patterns=["*.safetensors", "*.json"]))
    files = sorted(d.glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"no *.safetensors in {d}: expected a model saved with save_pretrained")
    where: dict[str, Path] = {}
    for f in files:
        with safe_open(str(f), framework="pt") as st:
            where.update(dict.fromkeys(st.keys(), f))
    return where


def _load(path: Path, name: str) -> torch.Tensor:
    with safe_open(str(path), framework="pt") as st:
        return st.get_tensor(name)


def weights_changed(dir_a: str | Path, dir_b: str | Path) -> dict[str, Any]:
    """Compare the weights of two saved models tensor by tensor.

    Tensors whose shape differs (e.g. embeddings resized for added tokens) are compared on their common slice and
    listed in ``resized``. Returns ``changed`` (any tensor differs anywhere), ``max_abs_diff``, ``n_tensors``
    (compared), ``n_changed``, ``resized``, and the names found in only one model (``only_in_a``/``only_in_b``,
    e.g. a tied ``lm_head`` saved by one side only).
    """
    a, b = _tensor_files(dir_a), _tensor_files(dir_b)
    common = sorted(set(a) & set(b))
    max_diff, n_changed, resized = 0.0, 0, []
    for name in common:
        ta, tb = _load(a[name], name).float(), _load(b[name], name).float()
        if ta.shape != tb.shape:
            resized.append(name)
            if ta.dim() != tb.dim():
                n_changed += 1
                continue
            region = tuple(slice(0, min(x, y)) for x, y in zip(ta.shape, tb.shape))
            ta, tb = ta[region], tb[region]
        diff = float((ta - tb).abs().max()) if ta.numel() else 0.0
        max_diff = max(max_diff, diff)
        n_changed += diff > 0 or name in resized
    return {
        "changed": n_changed > 0,
        "max_abs_diff": max_diff,
        "n_tensors": len(common),
        "n_changed": n_changed,
        "resized": resized,
        "only_in_a": sorted(set(a) - set(b)),
        "only_in_b": sorted(set(b) - set(a)),
    }


# -- the small model alone, tags kept ---------------------------------------------------------------------------
def small_only_generations(model_dir: str | Path, questions: Sequence[str], max_new_tokens: int,
                           engine: Engine = "generate", batch_size: int = 64, progress: bool = True,
                           prompt_style: prompts.PromptStyle | None = None) -> list[str]:
    """Greedy generations of the model in ``model_dir`` alone, from the small role's prompt in ``prompt_style``
    (``splitlib.prompts``; None: the project's, with the hint) for a model decoding alone.

    ``generate``: batched ``transformers`` generation (fast for small models on CPU); ``hf``/``vllm``: the
    cooperative decoder's ``small_only`` policy on that backend (the path the evaluation uses). The control tags
    are ordinary tokens for both, so they stay in the text.
    """
    if engine == "generate":
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from splitlib.toy.diagnostics import greedy_generations

        tok = AutoTokenizer.from_pretrained(model_dir)
        model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
        texts = [prompts.build_prompt(tok, q, "small", prompt_style, offloading=False) for q in questions]
        return greedy_generations(model, tok, texts, max_new_tokens, batch_size, progress)
    if engine in ("hf", "vllm"):
        from splitlib.decoder_service import DecoderService, Route

        service = DecoderService(kind=engine, progress=progress, prompt_style=prompt_style)
        # greedy and small_only draw nothing at random, so the seeds (the engine's problem keys) change no token
        traces = service(Route("small_only", small=str(model_dir)), list(questions), list(range(len(questions))),
                         GREEDY, max_new_tokens)
        return [t.text for t in traces]
    raise ValueError(f"engine={engine!r}: expected 'generate', 'hf' or 'vllm'")


# -- what the small model's generations do with the tags ---------------------------------------------------------
def generation_records(problems: Sequence[Mapping[str, Any]], generations: Sequence[str]) -> list[dict[str, Any]]:
    """One record per generation: problem ``id``, the ``generation``, whether its tags are ``balanced``, ``n_tags``
    (``<bigmodel>`` count), ``offload_char_fraction`` (None when unbalanced) and whether its answer is ``correct``
    (graded against the problem's ``answer``)."""

    records = []
    for p, g in zip(problems, generations, strict=True):
        check = tags.check(g)
        records.append({"id": p["id"], "generation": g, "balanced": check.balanced, "n_tags": check.n_open,
                        "offload_char_fraction": tags.offload_char_fraction(g) if check.balanced else None,
                        "correct": grading.grade(g, p["answer"]).correct})
    return records


def tag_usage_summary(records: Sequence[Mapping[str, Any]], toy: bool = False) -> dict[str, Any]:
    """``training.tag_usage`` of the records' generations, plus ``balanced_with_tags_fraction`` (balanced and at
    least one span), ``accuracy_small_alone`` and, in the toy world, ``toy_alignment``."""
    from splitlib.training.sft import tag_usage

    generations = [r["generation"] for r in records]
    usage = tag_usage(generations)
    usage["balanced_with_tags_fraction"] = sum(r["balanced"] and r["n_tags"] > 0 for r in records) / len(records)
    usage["accuracy_small_alone"] = sum(r["correct"] for r in records) / len(records)
    if toy:
        usage["toy_alignment"] = toy_tag_alignment(generations)
    return usage


# -- toy world: do the tags sit on the hard steps? ----------------------------------------------------------------
def toy_tag_alignment(generations: Sequence[str]) -> dict[str, Any]:
    """Over well-formed toy generations: ``span_precision`` (tagged spans that overlap a bonus clause, the toy's
    hard step), ``clause_recall`` (bonus clauses lying wholly inside a tagged span) and ``exact_fraction`` (tagged
    spans that are exactly a bonus clause); None where nothing was tagged or no clause was written. Malformed
    generations are left out (``n_scored`` counts the rest)."""

    n_spans = n_overlap = n_exact = n_clauses = n_covered = n_scored = 0
    for g in generations:
        if not tags.check(g).balanced:
            continue
        n_scored += 1
        plain, spans = tags.strip_tags(g), tags.spans(g)
        clauses = [(s, e) for s, e in step_spans(plain) if plain[s:e].startswith(" bonus ")]
        n_spans += len(spans)
        n_overlap += sum(any(s < ce and cs < e for cs, ce in clauses) for s, e in spans)
        n_exact += sum((s, e) in clauses for s, e in spans)
        n_clauses += len(clauses)
        n_covered += sum(any(s <= cs and ce <= e for s, e in spans) for cs, ce in clauses)
    return {"span_precision": n_overlap / n_spans if n_spans else None,
            "clause_recall": n_covered / n_clauses if n_clauses else None,
            "exact_fraction": n_exact / n_spans if n_spans else None,
            "n_scored": n_scored, "n_spans": n_spans, "n_clauses": n_clauses}


# -- GRPO curves ------------------------------------------------------------------------------------------------
_FIRST = {
    # offload mode logs the deployed system's numbers under rollout/; paper mode has only the reward metrics
    "offload_fraction": ("rollout/offload_fraction_mean", "rewards/tagged_char_fraction/mean"),
    "accuracy": ("rollout/accuracy", "rewards/paper_accuracy/mean"),
}


def _first(row: Mapping[str, Any], keys: Sequence[str]) -> float:
    for key in keys:
        value = row.get(key)
        if value is not None and not (isinstance(value, float) and math.isnan(value)):
            return float(value)
    return math.nan


COMPONENT = "reward/"  # grpo_curves' column prefix of each reward function's own per-step mean


def _components(step_rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """The reward functions TRL logged (``rewards/<name>/mean``), in the order first seen."""
    names: dict[str, None] = {}
    for row in step_rows:
        names |= {k.split("/")[1]: None for k in row if k.startswith("rewards/") and k.endswith("/mean")}
    return list(names)


def grpo_curves(step_rows: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """Per logged step: ``reward`` (TRL's weighted total), ``offload_fraction``, ``accuracy``, ``tag_failure`` (the
    share of rollouts whose tags fail, the zero-weight metric reward ``tag_failure``; NaN when not among the
    rewards) and ``reward/<name>``, each reward function's unweighted mean (TRL's ``rewards/<name>/mean``).

    Offload mode: the rollouts' own offload fraction and accuracy (``rollout/…``); paper mode: the zero-weight
    metric rewards ``tagged_char_fraction`` and ``paper_accuracy`` when they were among the rewards (else NaN).
    """
    names = _components(step_rows)
    columns = ["step", "reward", "offload_fraction", "accuracy", "tag_failure", *(COMPONENT + n for n in names)]
    rows = [{"step": r["step"], "reward": _first(r, ("reward",)),
             **{name: _first(r, keys) for name, keys in _FIRST.items()},
             "tag_failure": _first(r, ("rewards/tag_failure/mean",)),
             **{COMPONENT + n: _first(r, (f"rewards/{n}/mean",)) for n in names}} for r in step_rows]
    return pd.DataFrame.from_records(rows, columns=columns)


def heldout_curve(results: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """An arm's held-out evaluations during training (``run_grpo``'s ``heldout``), one row per evaluated step:
    ``step``, ``accuracy``, ``offload_token_fraction``, ``tag_failure_rate``, ``n`` (empty when there were none)."""
    columns = ["step", "accuracy", "offload_token_fraction", "tag_failure_rate", "n"]
    return pd.DataFrame.from_records([{k: r[k] for k in columns} for r in results], columns=columns)


def curve_summary(curves: pd.DataFrame, share: float = 0.25) -> dict[str, float | None]:
    """Mean of each curve over the first and the last ``share`` of the logged steps (at least one step each):
    ``reward_first``, ``reward_last``, ``offload_fraction_first``, …, ``tag_failure_last``; None where a curve has
    no values."""
    if not 0 < share <= 1:
        raise ValueError(f"share={share}: expected a fraction in (0, 1]")
    k = max(1, round(len(curves) * share))
    out: dict[str, float | None] = {}
    for column in ("reward", "offload_fraction", "accuracy", "tag_failure"):
        for part, frame in (("first", curves.head(k)), ("last", curves.tail(k))):
            value = frame[column].mean() if column in frame else None
            out[f"{column}_{part}"] = None if value is None or pd.isna(value) else float(value)
    return out


def heldout_summary(heldout: pd.DataFrame) -> dict[str, float | None]:
    """The held-out evaluation at the first and the last evaluated step (``heldout_accuracy_first``, …; None when
    there was none): the SFT model against the trained policy."""
    out: dict[str, float | None] = {}
    for column in ("accuracy", "tag_failure_rate", "offload_token_fraction"):
        for part, index in (("first", 0), ("last", -1)):
            out[f"heldout_{column}_{part}"] = float(heldout[column].iloc[index]) if len(heldout) else None
    return out


def had_learning_signal(step_rows: Sequence[Mapping[str, Any]]) -> bool:
    """Whether any GRPO step could move the weights: a learning rate above 0 and either rewards that differ within
    a prompt's group (TRL's ``frac_reward_zero_std`` below 1) or a KL term away from 0. With equal rewards in every
    group and the policy still at the reference, GRPO's gradient is zero by design (e.g. untrained stand-ins)."""
    return any(row.get("learning_rate", 0) > 0 and (row.get("frac_reward_zero_std", 0) < 1 or row.get("kl", 0) > 0)
               for row in step_rows)
