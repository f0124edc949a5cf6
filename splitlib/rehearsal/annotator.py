"""A HAND-WIRED stand-in for ``deepseek-chat``, the paper's annotator, to serve with a real ``vllm serve``.

What it is for: the LLM annotator (``splitlib.annotate.llm``) talks to an OpenAI-compatible chat API, parses
``[[SNIPPET]]`` blocks from the reply and locates each snippet in the trace. A random model would answer garbage
and every annotation would fail, so this model is wired by hand to give one fixed answer to every chat prompt:

    [[SNIPPET]]
    Let me double-check this result by working backwards.
    [[/SNIPPET]]

followed by EOS. Every stand-in trace contains that sentence (``problems.CHECK_SENTENCE``), so each annotation
succeeds with one exactly-matched span. This exercises the HTTP client, the chat template, the reply parsing, the
fuzzy matching and the resumable run end to end. It says NOTHING about annotation quality: the model ignores the
trace and always quotes the same sentence.

How it is wired (a 1-layer Qwen2, greedy decoding): attention output and MLP down projections are zero, so the
residual stream at each position is just that token's embedding. Each token of the answer chain
``<｜Assistant｜>`` → ``[[SNIPPET]]\\n`` → sentence → ``\\n[[/SNIPPET]]`` → EOS has its own one-hot embedding
direction, and ``lm_head`` gives the chain's next token a large weight on that direction; every other token
embeds on a neutral direction that predicts EOS. The three answer pieces are added as NON-special tokens (so they
stay in the text vLLM returns) to a copy of the stand-in tokenizer. The chat template's generation prompt ends
with ``<｜Assistant｜>``, so the answer starts whatever the conversation holds.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import torch
from tokenizers import Tokenizer

from splitlib.annotate.llm import SNIPPET_CLOSE, SNIPPET_OPEN
from splitlib.rehearsal.layout import StandinSizes
from splitlib.rehearsal.models import generation_config, hub_config, new_model, save_model
from splitlib.rehearsal.problems import CHECK_SENTENCE
from splitlib.rehearsal.tokenizer import ASSISTANT, EOS, add_tokens

ANSWER_PIECES = (f"{SNIPPET_OPEN}\n", CHECK_SENTENCE, f"\n{SNIPPET_CLOSE}")
ANSWER = "".join(ANSWER_PIECES)  # the reply text, exactly (EOS ends it)
LOGIT_WEIGHT = 10.0  # lm_head weight on a chain direction; after RMSNorm the direction reads sqrt(hidden_size)


def annotator_tokenizer(tok: Tokenizer) -> Tokenizer:
    """A copy of the stand-in tokenizer with the answer pieces as non-special added tokens."""
    copy = Tokenizer.from_str(tok.to_str())
    add_tokens(copy, [(piece, False) for piece in ANSWER_PIECES])
    return copy


def answer_chain(tok: Tokenizer) -> list[int]:
    """Token ids ``<｜Assistant｜>``, the three answer pieces, EOS: each one predicts the next."""
    ids = [tok.token_to_id(t) for t in (ASSISTANT, *ANSWER_PIECES, EOS)]
    if None in ids or len(set(ids)) != len(ids):
        raise ValueError(f"answer chain ids {ids}: every piece must be one distinct token of the annotator tokenizer")
    return ids


def wire(model: torch.nn.Module, chain: list[int]) -> None:
    """Set the weights so that greedy decoding follows ``chain`` (see the module docstring)."""
    with torch.no_grad():
        for name, param in model.named_parameters():
            param.fill_(1.0 if "norm" in name else 0.0)
        embed, head = model.model.embed_tokens.weight, model.lm_head.weight
        embed[:, 0] = 1.0  # the neutral direction: every token not in the chain …
        head[chain[-1], 0] = LOGIT_WEIGHT  # … predicts EOS
        for direction, (token, successor) in enumerate(itertools.pairwise(chain), start=1):
            embed[token] = 0.0
            embed[token, direction] = 1.0
            head[successor, direction] = LOGIT_WEIGHT


def build_annotator(tok: Tokenizer, sizes: StandinSizes, directory: str | Path) -> list[Path]:
    """The hand-wired annotator stand-in, saved in hub layout under ``directory``; returns the files written."""
    ann_tok = annotator_tokenizer(tok)
    chain = answer_chain(ann_tok)
    if len(chain) > sizes.hidden_size:
        raise ValueError(f"hidden_size={sizes.hidden_size}: the annotator needs {len(chain)} directions")
    n_tokens = ann_tok.get_vocab_size(with_added_tokens=True)
    config = hub_config(ann_tok, sizes, layers=1, flavor="1.5B", vocab_size=n_tokens)
    model = new_model(config)
    wire(model, chain)
    return save_model(model.eval(), config, generation_config(ann_tok, sampling=False), ann_tok, directory)
