"""Shared test setup: offline hubs, 2 CPU threads, and session-scoped toy tokenizer and tiny models.

Fixtures here are built once per session (they cost seconds); reuse them rather than building your own:

- ``toy_tokenizer``: the toy BPE tokenizer trained on 300 toy problems (``splitlib.toy.build.make_tokenizer``).
- ``tiny_models``: random-init Qwen2 models {"small": 1 layer, "big": 2 layers}, hidden 32, for that tokenizer
  (weights N(0, 0.5^2), so greedy output is varied, not one repeated token).
- ``tiny_model_dirs``: those models saved with ``save_pretrained`` (plus the tokenizer): {role: Path}.

Tests marked ``gpu`` are skipped without CUDA.
"""

from __future__ import annotations

import os

# Before anything imports transformers/datasets/vllm: nothing may reach a hub from the test suite.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["TOKENIZERS_PARALLELISM"] = "false"

from pathlib import Path

import pytest
import torch

torch.set_num_threads(2)

TOY_TOKENIZER_PROBLEMS = 300
TOY_TOKENIZER_VOCAB = 384
TINY_MODEL_SEED = 0
TINY_MODEL_INIT_STD = 0.5
# role -> (num_hidden_layers, hidden_size, num_attention_heads, intermediate_size). One head: vLLM's CPU attention
# supports head_dim 32, 64, 80, ... only (head_dim 16 fails with "Unsupported CPU attention configuration").
TINY_MODEL_SIZES = {"small": (1, 32, 1, 64), "big": (2, 32, 1, 64)}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)


@pytest.fixture(scope="session")
def toy_problems():
    """300 toy problems of the default world (seed 0)."""
    from splitlib.toy.world import generate

    return generate(TOY_TOKENIZER_PROBLEMS, seed=0)


@pytest.fixture(scope="session")
def toy_tokenizer(toy_problems):
    """The toy tokenizer, trained exactly as notebook 00 trains it (on these problems)."""
    from splitlib.toy.build import make_tokenizer

    return make_tokenizer(toy_problems, vocab_size=TOY_TOKENIZER_VOCAB)


@pytest.fixture(scope="session")
def tiny_models(toy_tokenizer):
    """Random-init tiny Qwen2 causal LMs {role: model} in eval mode (seeded: identical every session).
    Shared by the whole session: never train or modify them in place (``copy.deepcopy`` first)."""
    from splitlib.toy.models import ToyModelConfig, build_model

    models = {}
    for role, (layers, hidden, heads, inter) in TINY_MODEL_SIZES.items():
        cfg = ToyModelConfig(hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                             intermediate_size=inter)
        model = build_model(cfg, toy_tokenizer, seed=TINY_MODEL_SEED + len(models))
        _spread_weights(model, seed=TINY_MODEL_SEED + len(models))
        models[role] = model.eval()
    return models


def _spread_weights(model: torch.nn.Module, seed: int, std: float = TINY_MODEL_INIT_STD) -> None:
    """Redraw every non-norm weight from N(0, std^2): greedy continuations then vary from token to token with
    clear top-1 margins (the default 0.02 init repeats one token forever, which makes comparisons vacuous)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "norm" not in name:
                param.copy_(torch.randn(param.shape, generator=gen) * std)


@pytest.fixture(scope="session")
def tiny_model_dirs(tiny_models, toy_tokenizer, tmp_path_factory) -> dict[str, Path]:
    """The tiny models saved with ``save_pretrained`` next to the tokenizer: {role: directory}."""
    root = tmp_path_factory.mktemp("tiny_models")
    dirs = {}
    for role, model in tiny_models.items():
        path = root / role
        model.save_pretrained(path)
        toy_tokenizer.save_pretrained(path)
        dirs[role] = path
    return dirs
