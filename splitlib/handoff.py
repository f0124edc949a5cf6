"""How tokens pass between the small and the big model.

Each model reads the other's output as a catch-up: the tokens it has not seen yet, in its own tokenizer, with the
control tags removed (the big model never sees tags; in a random switch neither does). Two ways:

- ``SharedIds`` (both tokenizers map ids to the same strings): ids are passed as they are, tag ids filtered out.
- ``ViaText`` (different tokenizers, e.g. a Qwen small and a Llama big model): the writer's tokens are decoded to
  text, tags (and the small-model hint) are stripped, and the reader encodes the text with its own tokenizer —
  once per catch-up, so the text is tokenized the way the reader would tokenize it.

When the small model takes control back inside a big chunk, the cut is a position in the small model's tokens;
``cut`` maps it to the big model's tokens. With different tokenizers the two rarely break at the same
character: the big model keeps the longest prefix of its chunk whose text lies inside the kept text, and the
rest of the kept text is queued for its next catch-up.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from transformers import PreTrainedTokenizerBase

from splitlib import prompts, tags
from splitlib.trace import Model


@dataclass(frozen=True)
class TagIds:
    """The ids of ``<bigmodel>``/``</bigmodel>`` in one tokenizer, where each is a single token."""

    open: int | None
    close: int | None

    @property
    def both(self) -> frozenset[int]:
        return frozenset(t for t in (self.open, self.close) if t is not None)


def tag_ids(tokenizer: PreTrainedTokenizerBase) -> TagIds:
    def single(tag: str) -> int | None:
        ids = tokenizer.encode(tag, add_special_tokens=False)
        return ids[0] if len(ids) == 1 else None

    return TagIds(single(tags.OPEN), single(tags.CLOSE))


def decode_text(tokenizer: PreTrainedTokenizerBase, ids: Sequence[int]) -> str:
    """Text of generated ids, control tags kept (they are ordinary added tokens)."""
    return tokenizer.decode(list(ids), skip_special_tokens=False, clean_up_tokenization_spaces=False)


def encode_text(tokenizer: PreTrainedTokenizerBase, text: str) -> list[int]:
    return tokenizer.encode(text, add_special_tokens=False) if text else []


@dataclass(frozen=True)
class Cut:
    """The kept part of a big chunk."""

    keep: int  # big tokens that stay in the big model's context
    written: int  # big tokens whose text is (at least partly) in the generation: keep, or keep + 1 mid-token
    text: str | None  # the kept text; None: the decode of the kept ids (shared tokenizer)


class Bridge(Protocol):
    def push(self, to: Model, ids: Sequence[int]) -> None:
        """Queue ids the OTHER model committed, for ``to``'s next catch-up."""

    def take(self, to: Model) -> list[int]:
        """``to``'s catch-up: everything queued, in its tokenizer, tags removed."""

    def to_small(self, big_ids: Sequence[int]) -> list[int]:
        """A big chunk in the small model's tokens."""

    def cut(self, big_ids: Sequence[int], small_ids: Sequence[int], k: int) -> Cut:
        """Keep ``small_ids[:k]`` of the chunk (as read by the small model)."""


class SharedIds:
    def __init__(self, small_tok: PreTrainedTokenizerBase, big_tok: PreTrainedTokenizerBase) -> None:
        self.tok = small_tok
        self.tag_ids = tag_ids(small_tok).both
        self.queue: dict[str, list[int]] = {"small": [], "big": []}

    def push(self, to: Model, ids: Sequence[int]) -> None:
        self.queue[to] += [t for t in ids if t not in self.tag_ids]

    def take(self, to: Model) -> list[int]:
        out, self.queue[to] = self.queue[to], []
        return out

    def to_small(self, big_ids: Sequence[int]) -> list[int]:
        return list(big_ids)

    def cut(self, big_ids: Sequence[int], small_ids: Sequence[int], k: int) -> Cut:
        return Cut(k, k, None)


class ViaText:
    def __init__(self, small_tok: PreTrainedTokenizerBase, big_tok: PreTrainedTokenizerBase) -> None:
        self.tok = {"small": small_tok, "big": big_tok}
        self.queue: dict[str, str] = {"small": "", "big": ""}

    def push(self, to: Model, ids: Sequence[int]) -> None:
        writer = "big" if to == "small" else "small"
        self.queue[to] += prompts.big_view(decode_text(self.tok[writer], ids))

    def take(self, to: Model) -> list[int]:
        text, self.queue[to] = self.queue[to], ""
        return encode_text(self.tok[to], text)

    def to_small(self, big_ids: Sequence[int]) -> list[int]:
        return encode_text(self.tok["small"], tags.strip_tags(decode_text(self.tok["big"], big_ids)))

    def cut(self, big_ids: Sequence[int], small_ids: Sequence[int], k: int) -> Cut:
        kept = decode_text(self.tok["small"], small_ids[:k])
        j = len(big_ids)
        while j > 0:  # the longest prefix of the big chunk whose (complete) text lies inside the kept text
            head = tags.strip_tags(decode_text(self.tok["big"], big_ids[:j]))
            if kept.startswith(head) and "\ufffd" not in head:
                break
            j -= 1
        head = tags.strip_tags(decode_text(self.tok["big"], big_ids[:j]))
        self.queue["big"] += kept[len(head):]  # the big model reads the rest of the kept text at its next catch-up
        return Cut(j, min(len(big_ids), j + (len(kept) > len(head))), kept)


def make_bridge(small_tok: PreTrainedTokenizerBase, big_tok: PreTrainedTokenizerBase) -> Bridge:
    """Share ids when both tokenizers map every id to the same string, else hand off through text."""
    if small_tok is big_tok or small_tok.get_vocab() == big_tok.get_vocab():
        return SharedIds(small_tok, big_tok)
    return ViaText(small_tok, big_tok)
