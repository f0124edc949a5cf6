"""Test devices for the decoding loop: tiny random models, and a transformers backend whose behaviour can be steered.

- ``build_tiny_models`` writes small random-init Qwen2 models (with a locally trained toy tokenizer) to
  directories that transformers and vLLM load like hub models. Their logits are sharpened so that greedy
  decoding has no near-ties: two engines agree token for token. A "tagging" small model writes ``<bigmodel>``
  and predicts ``</bigmodel>`` often enough that ``split`` runs end to end on any engine.
- ``SteeredHFBackend`` is the real ``hf`` backend (real model, real KV cache, real counters) with one addition:
  a ``steer(context_ids) -> token | None`` rule that, where it returns a token, makes that token the model's
  prediction. Tests use it to inject behaviour a random model would not show (ask for the big model after
  five tokens, predict ``</bigmodel>`` at a chosen position, emit a stray tag, stop with EOS inside a span).
- ``without_tag_tokens`` makes a tokenizer in which the tags are plain text, several tokens each (as in the paper's
  checkpoints), every other id unchanged; ``build_bigram_model`` a model whose greedy next token is a chosen function
  of the current token, exactly, on every engine: a scripted trace where steering is impossible (vLLM, a server).
"""

from __future__ import annotations

import atexit
import functools
import json
import shutil
import tempfile
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from tokenizers import Tokenizer
from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

from splitlib import prompts, tags
from splitlib.backends.hf import HFBackend
from splitlib.toy.models import ToyModelConfig, build_model
from splitlib.toy.tokenizer import train_tokenizer
from splitlib.toy.world import generate

Steer = Callable[[Sequence[int]], "int | None"]

# vLLM's CPU attention needs a head size of at least 32.
TINY_SMALL = ToyModelConfig(hidden_size=64, num_hidden_layers=1, num_attention_heads=2, intermediate_size=128)
TINY_BIG = ToyModelConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128)


@dataclass(frozen=True)
class TinySpec:
    name: str
    model: ToyModelConfig
    vocab_size: int = 384
    seed: int = 0
    logit_scale: float = 10.0  # std of the untied random output layer: wide gaps between the top logits
    tags_from: str | None = None  # make a "tagging" small model that reads this (earlier) spec's text: see below


def toy_corpus(n_problems: int = 300, seed: int = 0) -> list[str]:
    problems = generate(n_problems, seed)
    return [p.question for p in problems] + [p.trace for p in problems] + [prompts.INSTRUCTION, tags.HINT] * 20


def build_tiny_models(root: str | Path, specs: Sequence[TinySpec]) -> dict[str, Path]:
    """Write one model directory per spec under ``root``; specs with equal vocab sizes share a tokenizer."""
    root = Path(root)
    corpus = toy_corpus()
    tokenizers, models = {}, {}
    out: dict[str, Path] = {}
    for spec in specs:
        if spec.vocab_size not in tokenizers:
            tokenizers[spec.vocab_size] = train_tokenizer(corpus, vocab_size=spec.vocab_size)
        tok = tokenizers[spec.vocab_size]
        model = _sharpened(build_model(spec.model, tok, seed=spec.seed), spec, tok)
        if spec.tags_from is not None:
            _teach_tags(model, models[spec.tags_from], tok)
        models[spec.name] = model
        path = root / spec.name
        model.save_pretrained(path)
        tok.save_pretrained(path)
        out[spec.name] = path
    return out


def _sharpened(model, spec: TinySpec, tok):
    """Untie the output layer and draw it with a large scale: varied text, no near-ties between top tokens.

    The EOS and tag rows are zeroed (their logits are 0, far below the top ones): a tiny model never stops or
    writes a tag by itself and runs to the cap; tests that need EOS or tags steer it."""
    model.config.tie_word_embeddings = False
    gen = torch.Generator().manual_seed(spec.seed + 100)
    weight = torch.randn(model.lm_head.weight.shape, generator=gen) * spec.logit_scale
    for token in (tok.eos_token, *tags.TAGS):
        weight[tok.convert_tokens_to_ids(token)] = 0.0
    model.lm_head.weight = torch.nn.Parameter(weight)
    return model.eval()


def _greedy(model, ids: list[int], n: int) -> list[int]:
    with torch.inference_mode():
        return model.generate(torch.tensor([ids]), max_new_tokens=n, do_sample=False)[0, len(ids):].tolist()


def _teach_tags(small, big, tok) -> None:
    """Give a random small model the habit of offloading, without training, so real engines can run ``split``.

    ``<bigmodel>`` gets the output row of the token the small model writes most (x 1.05: it wins wherever that
    token would), ``</bigmodel>`` the row of the token it most often predicts while reading the big model's text.
    """
    open_id, close_id = tok.convert_tokens_to_ids(tags.OPEN), tok.convert_tokens_to_ids(tags.CLOSE)
    written, predicted = Counter(), Counter()
    for p in generate(6, 5):
        ids = tok(prompts.build_prompt(tok, p.question, "small"), add_special_tokens=False).input_ids
        written.update(_greedy(small, ids, 60))
        with torch.inference_mode():
            logits = small(torch.tensor([ids + _greedy(big, ids, 60)])).logits[0, len(ids):]
        predicted.update(logits.argmax(-1).tolist())
    x = written.most_common(1)[0][0]
    y = next(t for t, _ in predicted.most_common() if t != x)
    with torch.no_grad():
        small.lm_head.weight[open_id] = small.lm_head.weight[x] * 1.05
        small.lm_head.weight[close_id] = small.lm_head.weight[y] * 1.05


class SteeredHFBackend(HFBackend):
    """``HFBackend`` whose next-token logits are overridden wherever ``steer(context)`` names a token."""

    def __init__(self, *args, steer: Steer, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.steer = steer

    def _adjust(self, context: Sequence[int], logits: torch.Tensor) -> torch.Tensor:
        """``logits[i]`` is the prediction after ``context[: len(context) - len(logits) + i + 1]``.

        A steered token gets a logit far above the rest (a ban can still exclude it)."""
        start = len(context) - logits.shape[0]
        for i in range(logits.shape[0]):
            forced = self.steer(context[: start + i + 1])
            if forced is not None:
                logits[i, forced] = logits[i].max() + 1000.0
        return logits


TINY_SPECS = (
    TinySpec("big", TINY_BIG, seed=1),
    TinySpec("small", TINY_SMALL, tags_from="big"),  # writes <bigmodel> and predicts </bigmodel> by itself
    TinySpec("plain", TINY_SMALL, seed=3),  # never writes a tag or EOS: scenario tests steer it
    TinySpec("big300", TINY_BIG, vocab_size=300, seed=2),  # another tokenizer: hand-off through text
)


@functools.cache
def tiny_model_dirs() -> dict[str, Path]:
    """``TINY_SPECS`` built once per process in a temporary directory (removed at exit)."""
    root = Path(tempfile.mkdtemp(prefix="splitreason-tiny-"))
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    return build_tiny_models(root, TINY_SPECS)


@functools.cache
def shared_vllm(model_dir: str, max_model_len: int = 512):
    """One in-process vLLM engine per model directory and process (engines take seconds to start)."""
    from splitlib.backends.vllm_engine import VLLMBackend

    return VLLMBackend.load(model_dir, max_model_len=max_model_len)


def without_tag_tokens(tokenizer: PreTrainedTokenizerFast) -> PreTrainedTokenizerFast:
    """A copy of ``tokenizer`` without ``<bigmodel>``/``</bigmodel>`` among its added tokens: the tags are then
    ordinary text, encoded by its BPE like any other. Every id keeps its meaning: the tags' ids hold unused special
    placeholders (removing them would renumber the added tokens after them)."""
    spec = json.loads(tokenizer.backend_tokenizer.to_str())
    for added in spec["added_tokens"]:
        if added["content"] in tags.TAGS:
            added.update(content=f"<｜unused_{added['id']}｜>", special=True)
    copy = PreTrainedTokenizerFast(tokenizer_object=Tokenizer.from_str(json.dumps(spec)),
                                   chat_template=tokenizer.chat_template, **tokenizer.special_tokens_map)
    copy.add_bos_token = getattr(tokenizer, "add_bos_token", False)
    return copy


def build_bigram_model(vocab_size: int, successor: Mapping[int, int | Sequence[int]], default: int, eos_id: int,
                       hidden_size: int = 64, margin: float = 10.0) -> Qwen2ForCausalLM:
    """A Qwen2 causal LM whose greedy next token is ``successor[t]`` after token ``t`` (``default`` after any other);
    a sequence ranks several (the next one wins where the ones before it are banned).

    Exact by construction, so transformers and vLLM agree token for token: attention and MLP weights are zero, so
    the last hidden state is the current token's embedding, a one-hot code of its successors (at most
    ``hidden_size`` distinct rankings); the output layer gives the k-th ranked token ``sqrt(hidden_size) *
    (margin - k)`` logits, every other token 0 (the first one has P ~ 1)."""
    rank = {t: tuple(s) if isinstance(s, Sequence) else (s,) for t, s in successor.items()}
    codes = sorted({*rank.values(), (default,)})
    if len(codes) > hidden_size:
        raise ValueError(f"{len(codes)} distinct successors: at most hidden_size={hidden_size}")
    code = {ranking: i for i, ranking in enumerate(codes)}
    cfg = Qwen2Config(vocab_size=vocab_size, hidden_size=hidden_size, intermediate_size=2 * hidden_size,
                      num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=512,
                      tie_word_embeddings=False, rms_norm_eps=1e-6, eos_token_id=eos_id, bos_token_id=None)
    model = Qwen2ForCausalLM(cfg)
    with torch.no_grad():
        for name, param in model.named_parameters():
            param.fill_(1.0 if "norm" in name else 0.0)
        for t in range(vocab_size):
            model.model.embed_tokens.weight[t, code[rank.get(t, (default,))]] = 1.0
        for ranking, i in code.items():
            for k, target in enumerate(ranking):
                model.lm_head.weight[target, i] = margin - k
    model.generation_config.eos_token_id = eos_id
    return model.eval()
