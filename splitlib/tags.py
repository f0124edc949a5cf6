"""The offload protocol tokens: the single source of truth for `<bigmodel>` / `</bigmodel>`.

Everything that parses, strips, masks or measures offloaded spans goes through this module.
Spans are half-open character ranges ``(start, end)`` over the *untagged* text unless said otherwise.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

OPEN = "<bigmodel>"
CLOSE = "</bigmodel>"
TAGS = (OPEN, CLOSE)

# Shown to the small model only (PAPER_FACTS §2), exactly as in the paper.
HINT = "You always use <bigmodel>...</bigmodel> to mark parts of the reasoning process that are important."

_TAG_RE = re.compile(re.escape(OPEN) + "|" + re.escape(CLOSE))
_SPAN_RE = re.compile(re.escape(OPEN) + r"(.*?)" + re.escape(CLOSE), re.DOTALL)


class TagError(ValueError):
    """A tagged text violates the protocol (nested, unbalanced, stray closer)."""


@dataclass(frozen=True)
class TagCheck:
    """Well-formedness of the tags in one text."""

    n_open: int
    n_close: int
    balanced: bool  # every opener closed, no stray closer, no nesting
    problem: str  # "" when balanced, else a short reason


def strip_tags(text: str) -> str:
    """Remove every control tag; the untagged text is otherwise byte-identical."""
    return _TAG_RE.sub("", text)


def strip_hint(text: str) -> str:
    """Remove the small-model hint sentence (the big model never sees it)."""
    return text.replace(HINT, "")


def check(text: str) -> TagCheck:
    """Walk the tags in order and report whether they form flat, closed spans."""
    depth = 0
    n_open = n_close = 0
    problem = ""
    for m in _TAG_RE.finditer(text):
        if m.group(0) == OPEN:
            n_open += 1
            if depth == 1 and not problem:
                problem = f"nested {OPEN} at char {m.start()}"
            depth += 1
        else:
            n_close += 1
            if depth == 0 and not problem:
                problem = f"stray {CLOSE} at char {m.start()}"
            depth = max(depth - 1, 0)
    if depth > 0 and not problem:
        problem = f"{depth} unclosed {OPEN}"
    return TagCheck(n_open=n_open, n_close=n_close, balanced=not problem, problem=problem)


def spans(tagged: str) -> list[tuple[int, int]]:
    """Character spans of the offloaded text, as positions in ``strip_tags(tagged)``.

    Raises ``TagError`` unless the tags are well formed (see ``check``).
    """
    status = check(tagged)
    if not status.balanced:
        raise TagError(f"malformed tags: {status.problem}")
    out: list[tuple[int, int]] = []
    removed = 0
    for m in _SPAN_RE.finditer(tagged):
        start = m.start() - removed
        inner = len(m.group(1))
        out.append((start, start + inner))
        removed += len(OPEN) + len(CLOSE)
    return out


def apply_spans(text: str, span_list: list[tuple[int, int]]) -> str:
    """Wrap each ``(start, end)`` of ``text`` in the tags. Spans must be sorted, disjoint and non-empty."""
    validate_spans(span_list, len(text))
    parts, pos = [], 0
    for start, end in span_list:
        parts += [text[pos:start], OPEN, text[start:end], CLOSE]
        pos = end
    parts.append(text[pos:])
    return "".join(parts)


def validate_spans(span_list: list[tuple[int, int]], length: int) -> None:
    """Raise ``TagError`` unless spans are sorted, disjoint, non-empty and inside ``[0, length]``."""
    prev_end = 0
    for start, end in span_list:
        if not (0 <= start < end <= length):
            raise TagError(f"span ({start}, {end}) is empty or outside [0, {length}]")
        if start < prev_end:
            raise TagError(f"span ({start}, {end}) overlaps or precedes the previous span ending at {prev_end}")
        prev_end = end


def merge_spans(span_list: list[tuple[int, int]], max_gap: int = 0) -> list[tuple[int, int]]:
    """Sort spans and merge those that overlap or are at most ``max_gap`` characters apart."""
    merged: list[list[int]] = []
    for start, end in sorted(span_list):
        if merged and start - merged[-1][1] <= max_gap:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    return [(s, e) for s, e in merged]


def char_mask(length: int, span_list: list[tuple[int, int]]) -> list[bool]:
    """Per-character offload mask for a text of ``length`` characters."""
    mask = [False] * length
    for start, end in span_list:
        mask[start:end] = [True] * (end - start)
    return mask


def offload_char_fraction(tagged: str) -> float:
    """Fraction of the untagged characters that lie inside spans (0.0 for empty text)."""
    plain_len = len(strip_tags(tagged))
    if plain_len == 0:
        return 0.0
    return sum(e - s for s, e in spans(tagged)) / plain_len


def inner_texts(tagged: str) -> list[str]:
    """The text inside each ``<bigmodel>…</bigmodel>`` pair (non-greedy, as the paper's regex)."""
    return _SPAN_RE.findall(tagged)
