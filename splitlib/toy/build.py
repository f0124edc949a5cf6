"""Build the toy world for a run: data files, tokenizer, and the pretrained small and big models.

Outputs (``outputs/<run>/``): ``data/{train,test}.jsonl``, ``models/{small,big}/`` (model + tokenizer,
``save_pretrained``), ``00_models/pretrain_{small,big}.json`` (loss curves). A model whose folder holds a
``build.json`` with the same settings is reused, so re-running notebook 00 resumes instead of retraining.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerBase

from splitlib import prompts, runs, tags
from splitlib.toy.models import PretrainConfig, ToyModelConfig, build_model, n_params, pretrain
from splitlib.toy.tokenizer import train_tokenizer
from splitlib.toy.world import Problem, ToyWorldConfig, generate_split

log = logging.getLogger(__name__)


def write_data(run: Path, world: ToyWorldConfig, n_train: int, n_test: int, seed: int) -> tuple[list[Problem], list[Problem]]:
    train, test = generate_split(n_train, n_test, seed, world)
    runs.write_jsonl(run / "data" / "train.jsonl", [p.to_json() for p in train])
    runs.write_jsonl(run / "data" / "test.jsonl", [p.to_json() for p in test])
    return train, test


def make_tokenizer(train: list[Problem], vocab_size: int) -> PreTrainedTokenizerBase:
    corpus = [p.question for p in train] + [p.trace for p in train] + [prompts.INSTRUCTION, tags.HINT] * 20
    return train_tokenizer(corpus, vocab_size=vocab_size)


def prompt_fn(tok: PreTrainedTokenizerBase, role: prompts.Role):
    return lambda problem: prompts.build_prompt(tok, problem.question, role)


def train_or_load(run: Path, role: str, spec: ToyModelConfig, pre: PretrainConfig, world: ToyWorldConfig,
                  tok: PreTrainedTokenizerBase, progress: bool = True):
    """Pretrain the ``role`` model (or reuse a saved one built with identical settings)."""
    out = run / "models" / role
    settings = {"model": spec.__dict__, "pretrain": pre.__dict__, "world": world.__dict__, "vocab": len(tok)}
    settings = json.loads(json.dumps(settings, default=list))
    marker = out / "build.json"
    if marker.exists() and json.loads(marker.read_text()).get("settings") == settings:
        log.info("reusing %s (same settings)", out)
        return AutoModelForCausalLM.from_pretrained(out).eval(), json.loads(marker.read_text())["curve"]
    model = build_model(spec, tok, seed=pre.seed)
    log.info("%s model: %d parameters", role, n_params(model))
    curve = pretrain(model, tok, world, pre, prompt_fn(tok, role), progress=progress)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    runs.atomic_write_json(marker, {"settings": settings, "curve": curve, "n_params": n_params(model)})
    return model, curve


def load(run: Path, role: str):
    """Model and tokenizer of ``role`` from a built run (clear error if notebook 00 has not run)."""
    path = runs.require(run / "models" / role, made_by="notebooks/00_models.ipynb")
    torch.set_grad_enabled(False)
    return AutoModelForCausalLM.from_pretrained(path).eval(), AutoTokenizer.from_pretrained(path)


def window_reach(tok: PreTrainedTokenizerBase, problem: Problem, window: int | None) -> dict:
    """How far back, in tokens, the small model would have to look from the first hard step to the nearest bonus
    digit. The world is sound when that is outside the window (the small model cannot read any bonus digit)."""
    prompt_ids = tok(prompts.build_prompt(tok, problem.question, "small"), add_special_tokens=False)["input_ids"]
    enc = tok(problem.trace, add_special_tokens=False, return_offsets_mapping=True)
    q_enc = tok(problem.question, add_special_tokens=False, return_offsets_mapping=True)
    offset = len(prompt_ids) - len(q_enc["input_ids"]) - _suffix_len(tok, problem)
    bonus_end = offset + max(i for i, (s, _) in enumerate(q_enc["offset_mapping"]) if s < problem.question.find("."))
    if not problem.hard_spans:
        return {"nearest_bonus": None, "bonus_visible": False}
    first_hard = len(prompt_ids) + next(i for i, (s, _) in enumerate(enc["offset_mapping"])
                                        if s >= problem.hard_spans[0][0])
    reach = {"nearest_bonus": first_hard - bonus_end}
    reach["bonus_visible"] = window is None or reach["nearest_bonus"] < window
    return reach


def _suffix_len(tok: PreTrainedTokenizerBase, problem: Problem) -> int:
    """Tokens of the small prompt after the question (hint, instruction, template)."""
    prompt = prompts.build_prompt(tok, problem.question, "small")
    tail = prompt[prompt.index(problem.question) + len(problem.question) :]
    return len(tok(tail, add_special_tokens=False)["input_ids"])
