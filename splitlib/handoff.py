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

The control tags in one tokenizer (``tag_ids``): "token" tags are single added tokens (the project's SFT adds them);
"text" tags are ordinary text, several tokens each (the paper's released checkpoints, any model trained without
added tokens). The loop keeps text tags in a reader's context as their canonical tokens (``TagIds.open_seq`` /
``close_seq``), so ``SharedIds`` removes them as id sequences, exactly as it removes single tag ids.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

from transformers import PreTrainedTokenizerBase

from splitlib import prompts, tags
from splitlib.trace import Model

TagMode = Literal["token", "text", "none"]
TAG_CHOICES = ("auto", "token", "text")


@dataclass(frozen=True)
class TagIds:
    """How ``<bigmodel>``/``</bigmodel>`` are written in one tokenizer.

    ``mode``: "token" (each tag is one token: ``open``/``close``), "text" (each tag is ordinary text, written as
    any tokens whose text spells it; ``open_seq``/``close_seq`` are its canonical tokens), or "none" (neither: the
    tokenizer cannot spell the tags back)."""

    open: int | None
    close: int | None
    mode: TagMode = "token"
    open_seq: tuple[int, ...] = ()
    close_seq: tuple[int, ...] = ()

    @property
    def both(self) -> frozenset[int]:
        """The single tag ids (token mode); empty for text tags."""
        if self.mode != "token":
            return frozenset()
        return frozenset(t for t in (self.open, self.close) if t is not None)

    def seq(self, tag: str) -> tuple[int, ...]:
        """The tokens a reader's context holds for ``tag``."""
        return self.open_seq if tag == tags.OPEN else self.close_seq


def tag_ids(tokenizer: PreTrainedTokenizerBase, choice: str = "auto") -> TagIds:
    """The tags in ``tokenizer``: single tokens where it has both, else text where it spells both back exactly.

    ``choice`` forces a mode: "token" (single tokens or nothing) or "text" (text matching, also over single-token
    tags, whose text is then one token). A choice the tokenizer cannot honour gives mode "none"."""
    if choice not in TAG_CHOICES:
        raise ValueError(f"tags={choice!r}: expected one of {', '.join(TAG_CHOICES)}")

    def single(tag: str) -> int | None:
        ids = tokenizer.encode(tag, add_special_tokens=False)
        return ids[0] if len(ids) == 1 else None

    open_id, close_id = single(tags.OPEN), single(tags.CLOSE)
    seqs = {t: tuple(encode_text(tokenizer, t)) for t in tags.TAGS}
    spelled = all(seqs[t] and decode_text(tokenizer, seqs[t]) == t for t in tags.TAGS)
    if choice != "text" and open_id is not None and close_id is not None:
        return TagIds(open_id, close_id, "token", (open_id,), (close_id,))
    if choice != "token" and spelled:
        return TagIds(open_id, close_id, "text", seqs[tags.OPEN], seqs[tags.CLOSE])
    return TagIds(open_id, close_id, "none")


def strip_tag_ids(ids: Sequence[int], tag: TagIds) -> list[int]:
    """``ids`` without the tags (single ids, or the canonical token sequences of text tags)."""
    if tag.mode == "token":
        return [t for t in ids if t not in tag.both]
    if tag.mode == "none":
        return list(ids)
    out, i, seqs = [], 0, (tag.open_seq, tag.close_seq)
    while i < len(ids):
        found = next((q for q in seqs if tuple(ids[i : i + len(q)]) == q), None)
        if found is None:
            out.append(ids[i])
            i += 1
        else:
            i += len(found)
    return out


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
    def __init__(self, small_tok: PreTrainedTokenizerBase, big_tok: PreTrainedTokenizerBase,
                 small_tags: TagIds | None = None) -> None:
        self.tok = small_tok
        self.tags = small_tags or tag_ids(small_tok)
        self.queue: dict[str, list[int]] = {"small": [], "big": []}

    def push(self, to: Model, ids: Sequence[int]) -> None:
        self.queue[to] += strip_tag_ids(ids, self.tags)

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


def make_bridge(small_tok: PreTrainedTokenizerBase, big_tok: PreTrainedTokenizerBase,
                small_tags: TagIds | None = None) -> Bridge:
    """Share ids when both tokenizers map every id to the same string, else hand off through text.

    ``small_tags``: how the small model writes the tags (default: detected), which ``SharedIds`` removes."""
    if small_tok is big_tok or small_tok.get_vocab() == big_tok.get_vocab():
        return SharedIds(small_tok, big_tok, small_tags)
    return ViaText(small_tok, big_tok)
