"""The control tokens in a tokenizer/model pair, and prompt text as TRL will tokenize it.

``<bigmodel>``/``</bigmodel>`` must be single NON-special added tokens (ENV_NOTES: special tokens vanish from
vLLM's detokenized text, so a stop on them never fires). The paper left them as multi-token strings
(PAPER_FACTS §2); the project adds them before SFT.
"""

from __future__ import annotations

import logging

from tokenizers import AddedToken
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from splitlib import tags

log = logging.getLogger(__name__)


def control_token_ids(tokenizer: PreTrainedTokenizerBase) -> dict[str, int]:
    """The id of each control tag that the tokenizer encodes as one non-special added token."""
    added = tokenizer.get_added_vocab()
    special = set(tokenizer.all_special_tokens)
    out: dict[str, int] = {}
    for tag in tags.TAGS:
        ids = tokenizer(tag, add_special_tokens=False)["input_ids"]
        if tag in added and tag not in special and ids == [added[tag]]:
            out[tag] = added[tag]
    return out


def require_control_tokens(tokenizer: PreTrainedTokenizerBase) -> dict[str, int]:
    """The control tag ids; raise when a tag is not a single non-special token (train with SFT first)."""
    ids = control_token_ids(tokenizer)
    missing = [t for t in tags.TAGS if t not in ids]
    if missing:
        raise ValueError(
            f"tokenizer {tokenizer.name_or_path!r} lacks {missing} as single non-special tokens; "
            "run SFT (splitlib.training.run_sft, notebooks/02_sft.ipynb) on this model first, which adds them"
        )
    return ids


def ensure_control_tokens(tokenizer: PreTrainedTokenizerBase, model: PreTrainedModel | None = None) -> list[str]:
    """Add the missing control tags as non-special tokens and resize the model's embeddings; return what was added.

    A no-op (``[]``) for a tokenizer that already has them (the toy tokenizer). A tag registered as a *special*
    token is an error: it would vanish from vLLM's output text.
    """
    special = [t for t in tags.TAGS if t in set(tokenizer.all_special_tokens)]
    if special:
        raise ValueError(
            f"{special} are special tokens in {tokenizer.name_or_path!r}; expected non-special added tokens"
        )
    present = control_token_ids(tokenizer)
    missing = [t for t in tags.TAGS if t not in present]
    if not missing:
        return []
    tokenizer.add_tokens([AddedToken(t, special=False, normalized=False) for t in missing])
    if model is not None and model.get_input_embeddings().num_embeddings < len(tokenizer):
        model.resize_token_embeddings(len(tokenizer))
    log.info("added control tokens %s (vocabulary now %d)", missing, len(tokenizer))
    require_control_tokens(tokenizer)
    return missing


def trl_prompt_text(tokenizer: PreTrainedTokenizerBase, prompt: str) -> str:
    """``prompt`` as a TRL dataset must hold it: TRL encodes plain text with ``add_special_tokens=True``, so a
    leading BOS written by the chat template is dropped when the tokenizer adds one itself (no double BOS)."""
    bos = tokenizer.bos_token
    if not bos or not prompt.startswith(bos):
        return prompt
    auto = tokenizer("", add_special_tokens=True)["input_ids"]
    return prompt[len(bos) :] if tokenizer.bos_token_id in auto else prompt
