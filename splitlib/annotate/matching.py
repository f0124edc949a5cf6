"""Locate an annotator's snippets in the trace by fuzzy matching (PAPER_FACTS §4), fast.

Semantics, defined by the brute-force reference ``best_window_reference``: every window ``text[i:i+M]`` of the
snippet's length M is scored with ``difflib.SequenceMatcher`` ratio (window as the first sequence, snippet as the
second, ``autojunk`` off); the best window (highest ratio, earliest on ties) is kept when its ratio is at least
``min_ratio`` (0.5). Below ``refine_below`` (0.95) its edges move to the nearest occurrence of the snippet's first
and last ``edge_chars`` (5) characters within ±``edge_radius`` (50) characters. Spans of all snippets of a trace
are merged when at most ``merge_gap`` (10) characters apart.

``autojunk`` is off on purpose: with difflib's default, characters frequent in a window of 200+ characters
(spaces, common letters) are ignored, so long near-verbatim snippets would score erratically.

The reference costs O(N·M²) per snippet. ``best_window`` returns the same window with far fewer ratio evaluations:

1. an exact occurrence (``str.find``) has ratio 1.0 and is the earliest best window;
2. windows aligned on rare snippet n-grams found in the text are scored first, which makes the best ratio high
   early;
3. a left-to-right scan then scores only windows that could still beat the best ratio found (or reach
   ``min_ratio``), judged by two upper bounds on the number of matched characters: the multiset overlap of
   characters (``SequenceMatcher.quick_ratio`` semantics, O(1) per one-character slide) and the longest common
   subsequence with the snippet (bit-parallel, ~25× cheaper than a ratio; difflib's matching blocks form a common
   subsequence). One slide changes the LCS by at most one character, so a window whose LCS falls ``d`` short
   also rules out the next ``d - 1`` windows, which are skipped unseen. The result equals the reference's.

The scan stops after ``max_ratio_evals`` scored windows (a snippet resembling nothing in a long trace of similar
text, where the bounds do not prune); the window then is the best found and ``exhaustive`` is False.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from difflib import SequenceMatcher

from splitlib import tags

Span = tuple[int, int]


@dataclass(frozen=True)
class MatchConfig:
    min_ratio: float = 0.5  # reject a snippet whose best window scores below this
    refine_below: float = 0.95  # refine the edges of a window scoring below this
    edge_chars: int = 5  # snippet head/tail length used to refine edges
    edge_radius: int = 50  # how far (characters) an edge may move
    merge_gap: int = 10  # merge spans at most this many characters apart
    min_snippet_chars: int = 1  # shorter snippets (after stripping whitespace) are left unmatched
    max_ratio_evals: int = 2000  # cap on scored windows per snippet in the fast search (see module docstring)

    def __post_init__(self) -> None:
        if not 0.0 <= self.min_ratio <= self.refine_below <= 1.0:
            raise ValueError(f"need 0 <= min_ratio ({self.min_ratio}) <= refine_below ({self.refine_below}) <= 1")
        for name in ("edge_chars", "edge_radius", "merge_gap", "min_snippet_chars", "max_ratio_evals"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name}={getattr(self, name)}: expected a non-negative integer")


@dataclass(frozen=True)
class Window:
    """The best window of a snippet's length: its start, its ratio, and how it was found."""

    start: int
    ratio: float
    n_evals: int = 0  # windows scored with SequenceMatcher
    exhaustive: bool = True  # False when the fast search hit ``max_ratio_evals``


@dataclass(frozen=True)
class Match:
    start: int
    end: int
    ratio: float
    refined: bool  # edges were moved by ``refine_edges``


@dataclass(frozen=True)
class SnippetMatches:
    spans: list[Span]  # merged spans over the original text
    matches: list[Match | None] = field(default_factory=list)  # per snippet, None when rejected

    @property
    def n_found(self) -> int:
        return sum(m is not None for m in self.matches)


def _scorer(snippet: str) -> Callable[[str], float]:
    """``window -> ratio`` with the snippet's index built once (difflib caches the second sequence)."""
    matcher = SequenceMatcher(None, autojunk=False)
    matcher.set_seq2(snippet)

    def score(window: str) -> float:
        matcher.set_seq1(window)
        return matcher.ratio()

    return score


def best_window_reference(snippet: str, text: str, min_ratio: float = 0.5) -> Window | None:
    """Brute force: score every window; the best (earliest on ties) if its ratio reaches ``min_ratio``."""
    m = len(snippet)
    if m == 0 or m > len(text):
        return None
    score = _scorer(snippet)
    best_start, best_ratio = 0, -1.0
    for i in range(len(text) - m + 1):
        r = score(text[i : i + m])
        if r > best_ratio:
            best_start, best_ratio = i, r
    n = len(text) - m + 1
    return Window(best_start, best_ratio, n_evals=n) if best_ratio >= min_ratio else None


class TextIndex:
    """Positions of the n-grams of one text, built lazily per n and shared by all snippets of that text."""

    def __init__(self, text: str) -> None:
        self.text = text
        self._grams: dict[int, dict[str, list[int]]] = {}

    def positions(self, gram: str) -> list[int]:
        q = len(gram)
        if q not in self._grams:
            table: dict[str, list[int]] = {}
            for i in range(len(self.text) - q + 1):
                table.setdefault(self.text[i : i + q], []).append(i)
            self._grams[q] = table
        return self._grams[q].get(gram, [])


def histogram_overlaps(snippet: str, text: str) -> list[int]:
    """For every window ``text[i:i+M]``: the multiset overlap of its characters with the snippet's, an upper
    bound on the characters difflib can match."""
    m = len(snippet)
    need = Counter(snippet)
    have = Counter(text[:m])
    overlap = sum(min(count, have[ch]) for ch, count in need.items())
    counts = [overlap]
    for i in range(m, len(text)):
        gone, came = text[i - m], text[i]
        if gone != came:
            if have[gone] <= need.get(gone, 0):
                overlap -= 1
            have[gone] -= 1
            if have[came] < need.get(came, 0):
                overlap += 1
            have[came] += 1
        counts.append(overlap)
    return counts


def min_matches(ratio: float, m: int) -> int:
    """The fewest matched characters whose ratio (difflib's expression, 2·matches / (2·m)) reaches ``ratio``."""
    need = max(0, math.ceil(ratio * m) - 1)
    while 2.0 * need / (2 * m) < ratio:
        need += 1
    return need


class LcsBound:
    """Longest common subsequence of a window with the snippet, bit-parallel (Allison–Dix / Crochemore et al.).

    Bit i of ``v`` is 0 where row i of the LCS table steps up; the LCS is the number of zero bits.
    """

    def __init__(self, snippet: str) -> None:
        self.m = len(snippet)
        self.full = (1 << self.m) - 1
        self.masks: dict[str, int] = {}
        for i, ch in enumerate(snippet):
            self.masks[ch] = self.masks.get(ch, 0) | (1 << i)

    def length(self, window: str) -> int:
        v, full, masks = self.full, self.full, self.masks
        for ch in window:
            u = v & masks.get(ch, 0)
            v = ((v + u) | (v - u)) & full
        return self.m - v.bit_count()


def anchor_starts(snippet: str, index: TextIndex, n_windows: int, top: int = 3, max_hits: int = 20) -> list[int]:
    """Window starts that align rare snippet n-grams with their occurrences in the text, most votes first."""
    m = len(snippet)
    q = max(3, min(8, m // 4))
    if q > m:
        return []
    votes: Counter[int] = Counter()
    for offset in range(m - q + 1):
        hits = index.positions(snippet[offset : offset + q])
        if 0 < len(hits) <= max_hits:
            for pos in hits:
                votes[min(max(pos - offset, 0), n_windows - 1)] += 1
    return [start for start, _ in votes.most_common(top)]


def best_window(snippet: str, text: str, min_ratio: float = 0.5, max_ratio_evals: int = 2000,
                index: TextIndex | None = None, exact_from: int = 0) -> Window | None:
    """The reference's window (see module docstring), or None when no window reaches ``min_ratio``.

    ``exact_from``: where the exact search starts (to give repeated snippets successive occurrences).
    """
    m, n = len(snippet), len(text)
    if m == 0 or m > n:
        return None
    found = text.find(snippet, exact_from)
    if found < 0 and exact_from:
        found = text.find(snippet)
    if found >= 0:
        return Window(found, 1.0)
    overlaps = histogram_overlaps(snippet, text)
    score = _scorer(snippet)
    scored: dict[int, float] = {}
    best_start, best_ratio = -1, -1.0

    def consider(i: int) -> None:
        nonlocal best_start, best_ratio
        r = scored[i] = score(text[i : i + m])
        if r > best_ratio or (r == best_ratio and i < best_start):
            best_start, best_ratio = i, r

    index = index or TextIndex(text)
    for seed in anchor_starts(snippet, index, len(overlaps)):
        consider(seed)
    lcs = LcsBound(snippet)
    exhaustive = True
    i = 0
    while i < len(overlaps):
        need = min_matches(max(best_ratio, min_ratio), m)  # a window matching fewer can neither beat nor tie
        if overlaps[i] < need or i in scored:
            i += 1
            continue
        common = lcs.length(text[i : i + m])
        if common < need:
            i += need - common  # windows i+1 … i+need-common-1 have an LCS below ``need`` too
            continue
        if len(scored) >= max_ratio_evals:
            exhaustive = False
            break
        consider(i)
        i += 1
    if best_ratio < min_ratio:
        return None
    return Window(best_start, best_ratio, n_evals=len(scored), exhaustive=exhaustive)


def _nearest(text: str, needle: str, target: int, radius: int) -> int | None:
    """Start of the occurrence of ``needle`` closest to ``target`` (within ±radius; earlier on ties)."""
    best = None
    pos = text.find(needle, max(0, target - radius))
    while 0 <= pos <= target + radius:
        if best is None or abs(pos - target) < abs(best - target):
            best = pos
        pos = text.find(needle, pos + 1)
    return best


def refine_edges(snippet: str, text: str, start: int, end: int, edge_chars: int = 5, radius: int = 50) -> Span:
    """Move ``start`` to the nearest occurrence of the snippet's head and ``end`` to the end of the nearest
    occurrence of its tail (each within ±radius); an edge with no occurrence stays put. Never inverts the span."""
    head, tail = snippet[:edge_chars], snippet[-edge_chars:]
    if not head:
        return start, end
    head_at = _nearest(text, head, start, radius)
    tail_at = _nearest(text, tail, end - len(tail), radius)
    new_start = start if head_at is None else head_at
    new_end = end if tail_at is None else tail_at + len(tail)
    return (new_start, new_end) if new_start < new_end else (start, end)


def _window_to_match(w: Window, snippet: str, text: str, cfg: MatchConfig) -> Match:
    start, end = w.start, w.start + len(snippet)
    if w.ratio >= cfg.refine_below:
        return Match(start, end, w.ratio, refined=False)
    new = refine_edges(snippet, text, start, end, cfg.edge_chars, cfg.edge_radius)
    return Match(new[0], new[1], w.ratio, refined=new != (start, end))


def locate(snippet: str, text: str, cfg: MatchConfig = MatchConfig(), index: TextIndex | None = None,
           exact_from: int = 0) -> Match | None:
    """Where ``snippet`` sits in ``text`` (fast search), or None when it is rejected."""
    if len(snippet) < max(1, cfg.min_snippet_chars):
        return None
    w = best_window(snippet, text, cfg.min_ratio, cfg.max_ratio_evals, index, exact_from)
    return None if w is None else _window_to_match(w, snippet, text, cfg)


def locate_reference(snippet: str, text: str, cfg: MatchConfig = MatchConfig()) -> Match | None:
    """``locate`` by brute force (the reference the fast search is tested against)."""
    if len(snippet) < max(1, cfg.min_snippet_chars):
        return None
    w = best_window_reference(snippet, text, cfg.min_ratio)
    return None if w is None else _window_to_match(w, snippet, text, cfg)


def locate_snippets(snippets: Sequence[str], text: str, cfg: MatchConfig = MatchConfig()) -> SnippetMatches:
    """Locate each snippet (surrounding whitespace stripped) and merge the spans found.

    A snippet repeated verbatim takes the next exact occurrence after the previous one, when there is one.
    """
    index = TextIndex(text)
    next_from: dict[str, int] = {}
    matches: list[Match | None] = []
    for raw in snippets:
        snippet = raw.strip()
        match = locate(snippet, text, cfg, index, exact_from=next_from.get(snippet, 0))
        if match is not None and match.ratio == 1.0:
            next_from[snippet] = match.end
        matches.append(match)
    found = [(m.start, m.end) for m in matches if m is not None]
    spans = tags.merge_spans(found, max_gap=cfg.merge_gap)
    return SnippetMatches(spans=spans, matches=matches)
