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

ROLES = ("small", "big")


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
