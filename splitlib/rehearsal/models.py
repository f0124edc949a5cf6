"""Stand-ins for ``deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B`` and ``-32B``: tiny random Qwen2 models in hub layout.

A model folder holds what the hub repository holds: ``config.json`` in the hub's format (written by transformers
4.44: ``torch_dtype``, top-level ``rope_theta``, ``sliding_window``, ``use_mrope``; and the hub's quirk of
``bos_token_id`` = the EOS id), ``generation_config.json`` (BOS/EOS ids, ``do_sample`` with temperature 0.6 and
top-p 0.95), ``model.safetensors`` in bfloat16, and the tokenizer files. The embedding matrix is padded past the
tokenizer's length as the hub's is (151,936 rows for 151,665 tokens), so new tokens (the control tags) take
existing rows instead of resizing; the padded rows of ``lm_head`` are zero, so a random model never prefers an id
that has no token.

Weights are drawn from a seeded generator: non-norm weights ~ N(0, ``init_std``²), so greedy output varies from
token to token (the usual 0.02 init repeats one token forever).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

import torch
from tokenizers import Tokenizer
from transformers import Qwen2Config, Qwen2ForCausalLM

from splitlib.rehearsal.layout import StandinSizes
from splitlib.rehearsal.tokenizer import BOS, EOS, save_tokenizer

Flavor = Literal["1.5B", "32B"]
# The per-model constants of the hub configs that do not scale with size (1.5B: Qwen2.5-Math-1.5B's; 32B:
# Qwen2.5-32B's).
_HUB_FLAVOR: dict[str, dict[str, Any]] = {
    "1.5B": {"rms_norm_eps": 1e-06, "rope_theta": 10000.0, "sliding_window": 4096},
    "32B": {"rms_norm_eps": 1e-05, "rope_theta": 1000000.0, "sliding_window": 131072},
}
HUB_TRANSFORMERS_VERSION = "4.44.0"  # the version the hub files were written with


def padded_vocab(n_tokens: int, multiple: int) -> int:
    """Embedding rows for ``n_tokens`` tokens: the next multiple of ``multiple`` with at least one spare row."""
    return (n_tokens // multiple + 1) * multiple


def hub_config(tok: Tokenizer, sizes: StandinSizes, layers: int, flavor: Flavor, vocab_size: int) -> dict:
    """``config.json`` as the hub's DeepSeek-R1-Distill-Qwen configs read, sized by ``sizes``."""
    eos = tok.token_to_id(EOS)
    return {
        "architectures": ["Qwen2ForCausalLM"], "attention_dropout": 0.0,
        "bos_token_id": eos,  # sic: the hub config says 151643 (EOS) here; generation_config has the real BOS
        "eos_token_id": eos, "hidden_act": "silu", "hidden_size": sizes.hidden_size, "initializer_range": 0.02,
        "intermediate_size": sizes.intermediate_size, "max_position_embeddings": sizes.max_position_embeddings,
        "max_window_layers": layers, "model_type": "qwen2", "num_attention_heads": sizes.num_attention_heads,
        "num_hidden_layers": layers, "num_key_value_heads": sizes.num_key_value_heads,
        "rms_norm_eps": _HUB_FLAVOR[flavor]["rms_norm_eps"], "rope_theta": _HUB_FLAVOR[flavor]["rope_theta"],
        "sliding_window": _HUB_FLAVOR[flavor]["sliding_window"], "tie_word_embeddings": False,
        "torch_dtype": "bfloat16", "transformers_version": HUB_TRANSFORMERS_VERSION, "use_cache": True,
        "use_mrope": False, "use_sliding_window": False, "vocab_size": vocab_size,
    }


def generation_config(tok: Tokenizer, sampling: bool = True) -> dict:
    """``generation_config.json`` as the hub's: BOS/EOS ids and, for the distilled models, their sampling advice."""
    config: dict[str, Any] = {"_from_model_config": True, "bos_token_id": tok.token_to_id(BOS),
                              "eos_token_id": tok.token_to_id(EOS)}
    if sampling:
        config.update(do_sample=True, temperature=0.6, top_p=0.95)
    config["transformers_version"] = HUB_TRANSFORMERS_VERSION
    return config


def new_model(config: dict) -> Qwen2ForCausalLM:
    """A Qwen2 model for the hub-format ``config`` (float32; its default init draws from a forked global generator,
    so building one leaves the caller's random state as it was)."""
    with torch.random.fork_rng(devices=[]):
        return Qwen2ForCausalLM(Qwen2Config(**{k: v for k, v in config.items() if k != "torch_dtype"}))


def random_model(config: dict, n_tokens: int, seed: int, std: float) -> Qwen2ForCausalLM:
    """A Qwen2 model built from the hub-format ``config`` with seeded N(0, std²) weights; norms are ones, and the
    ``lm_head`` rows past ``n_tokens`` (the padding) are zero."""
    model = new_model(config)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "norm" in name:
                param.fill_(1.0)
            else:
                param.copy_(torch.randn(param.shape, generator=gen) * std)
        model.lm_head.weight[n_tokens:] = 0.0
    return model.eval()


def save_model(model: Qwen2ForCausalLM, config: dict, gen_config: dict, tok: Tokenizer,
               directory: str | Path) -> list[Path]:
    """Save ``model`` in bfloat16 with the hub-format config files and the tokenizer; returns the files written."""
    d = Path(directory)
    model.to(torch.bfloat16).save_pretrained(d)  # model.safetensors; the config files are rewritten below
    (d / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    (d / "generation_config.json").write_text(json.dumps(gen_config, indent=2) + "\n")
    return [d / "config.json", d / "generation_config.json", d / "model.safetensors", *save_tokenizer(tok, d)]


def build_reasoner(tok: Tokenizer, sizes: StandinSizes, role: Literal["small", "big"], seed: int,
                   directory: str | Path) -> list[Path]:
    """The small (1.5B stand-in) or big (32B stand-in) model, saved in hub layout under ``directory``."""
    layers, flavor = (sizes.small_layers, "1.5B") if role == "small" else (sizes.big_layers, "32B")
    n_tokens = tok.get_vocab_size(with_added_tokens=True)
    config = hub_config(tok, sizes, layers, flavor, padded_vocab(n_tokens, sizes.vocab_pad_to))
    model = random_model(config, n_tokens, seed, sizes.init_std)
    return save_model(model, config, generation_config(tok), tok, directory)
