"""Reading the control tags in one model's tokens, whether they are single tokens ("token" tags) or text ("text"
tags: several ordinary tokens each, as the paper's released checkpoints write them). The loop asks the same
questions in both modes:

- ``stops(watched)``: what a ``Decode`` stops on — the tags' ids (token tags) or their texts (text tags).
- ``find(got, watched)``: the first tag a ``Decode`` wrote, as a ``Hit``, or None.
- ``close_start(token)`` and ``hand_back``: the take-back check's reading of one predicted token (text tags).

The stop rule for text tags, where BPE may merge a tag's characters with its neighbours (the toy and Qwen
tokenizers have tokens such as ``.<``, `` <`` and ``>..``): a tag is written as soon as the decoded text of the
op's tokens contains it (the backends stop on that token). The token that holds the tag's first character is where
the tag starts. A granted tag is kept as the text before it in that token (re-encoded: the ``lead``, ordinary text)
followed by the tag's canonical tokens, and whatever the last token wrote after the tag (the overshoot, e.g. the
``..`` of ``>..``) is dropped: the writer's session ends exactly where the tag ends, and a reader strips the tag as
an id sequence. A refused or stray tag is removed from its start token on, and that token is banned there. Tags are
looked for in one op's output (a tag that began before a refused or stray tag's start token is not seen).

The take-back rule for text tags: the check reads the big chunk in one forward pass; at each position, the small
model's greedy token *starts* ``</bigmodel>`` when its text ends with a non-empty prefix of the tag (``<``, ``</``,
``.<``…) or contains all of it — the text before the tag in that token is its ``lead``. A token that holds the whole
tag decides there; any other start is a candidate, confirmed or not by a probe (``loop``), or taken as it is under
``text_takeback="first_token"``. Positions whose token starts nothing are decided in the pass (no take-back).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass

from transformers import PreTrainedTokenizerBase

from splitlib import tags
from splitlib.handoff import TagIds, decode_text, encode_text


@dataclass(frozen=True)
class Hit:
    """A tag found in the tokens one ``Decode`` wrote."""

    tag: str  # tags.OPEN or tags.CLOSE
    start: int  # index (in the op's tokens) of the token holding the tag's first character
    lead: tuple[int, ...]  # text tokens before the tag in that token, re-encoded (() for token tags)
    tag_ids: tuple[int, ...]  # the tag's tokens as the session keeps them
    ban: int  # the token at ``start``: banned there when the tag is refused or dropped

    @property
    def kept(self) -> list[int]:
        """What the session holds from ``start`` on when the tag is granted."""
        return [*self.lead, *self.tag_ids]


class TagCodec:
    """The tags of one model (``TagIds``) and its tokenizer."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase, ids: TagIds) -> None:
        self.tok, self.ids = tokenizer, ids
        self._starts: dict[int, tuple[str, int] | None] = {}

    @property
    def mode(self) -> str:
        return self.ids.mode

    def close_len(self) -> int:
        """Tokens the closing tag takes in this model's context."""
        return len(self.ids.close_seq)

    def stops(self, watched: Collection[str]) -> tuple[frozenset[int], tuple[str, ...]]:
        """(stop ids, stop texts) for a ``Decode`` that must stop on the ``watched`` tags."""
        if self.mode == "token":
            return frozenset(self.ids.seq(t)[0] for t in watched), ()
        if self.mode == "text":
            return frozenset(), tuple(t for t in tags.TAGS if t in watched)
        return frozenset(), ()

    def find(self, got: Sequence[int], watched: Collection[str]) -> Hit | None:
        """The first ``watched`` tag in ``got`` (the tokens of one op), or None."""
        if not got or not watched or self.mode == "none":
            return None
        if self.mode == "token":
            tag = next((t for t in watched if self.ids.seq(t) == (got[-1],)), None)
            return None if tag is None else Hit(tag, len(got) - 1, (), (got[-1],), got[-1])
        return self._find_text(list(got), watched)

    def _text(self, ids: Sequence[int]) -> str:
        return decode_text(self.tok, ids)

    def _find_text(self, got: list[int], watched: Collection[str]) -> Hit | None:
        text = self._text(got)
        ends = {t: text.find(t) + len(t) for t in watched if t in text}
        if not ends:
            return None
        tag = min(ends, key=ends.get)  # the first one completed, as the backends stop
        pos = ends[tag] - len(tag)
        end = len(got)  # got[:end] holds the tag, got[:end - 1] not
        while end > 1 and tag in self._text(got[: end - 1]):
            end -= 1
        start = end - 1  # the token holding the tag's first character
        while start > 0 and len(self._text(got[:start])) > pos:
            start -= 1
        while start > 0 and self._text(got[:start]).endswith("\ufffd"):  # do not split a character
            start -= 1
        before, upto = self._text(got[:start]), self._text(got[:end])
        lead = upto[len(before) : upto.find(tag)] if upto.startswith(before) else ""
        return Hit(tag, start, tuple(encode_text(self.tok, lead)), self.ids.seq(tag), got[start])

    # -- the take-back check (text tags) --------------------------------------------------------------------
    def close_start(self, token: int) -> tuple[str, int] | None:
        """``(lead, part)`` when ``token``'s text is ``lead`` + the first ``part`` characters of ``</bigmodel>``
        (``part == len(CLOSE)``: all of it, perhaps with more after); None when it does not start the tag."""
        if token not in self._starts:
            self._starts[token] = close_start_of(self._text([token]))
        return self._starts[token]

    def hand_back(self, chunk: Sequence[int], p: int, lead: str) -> int:
        """Chunk tokens to keep when the small model, having read ``chunk[: p + 1]``, would write ``lead`` and then
        ``</bigmodel>``: ``p + 1``, or further where the chunk itself goes on with exactly ``lead`` (whole tokens);
        else the lead is dropped (the small model's text inside the span is not kept)."""
        if lead:
            for q in range(p + 2, len(chunk) + 1):
                text = self._text(chunk[p + 1 : q])
                if text == lead:
                    return q
                if not lead.startswith(text):
                    break
        return p + 1


def close_start_of(text: str) -> tuple[str, int] | None:
    """``(lead, part)`` for a token text that starts ``</bigmodel>`` (see ``TagCodec.close_start``), else None."""
    at = text.find(tags.CLOSE)
    if at >= 0:
        return text[:at], len(tags.CLOSE)
    for j in range(len(tags.CLOSE) - 1, 0, -1):
        if text.endswith(tags.CLOSE[:j]):
            return text[:-j], j
    return None
