"""What notebook 01 measures and shows about annotations: offload fractions per trace (characters and tokens),
the mean offload mask over normalised position (the paper's Figure 7), agreement with the toy oracle, and
highlighted renderings. Everything returns data; figures live in ``splitlib.annotate.figures``.

A token counts as offloaded when its first character lies inside a span (as in ``splitlib.rewards``).
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from splitlib import tags

Span = tuple[int, int]

HIGHLIGHT_CSS = "background:#ffd54f;border-radius:2px"
ANSI_ON, ANSI_OFF = "\x1b[30;43m", "\x1b[0m"


def char_mask(text: str, spans: Sequence[Sequence[int]]) -> np.ndarray:
    mask = np.zeros(len(text), dtype=bool)
    for s, e in spans:
        mask[s:e] = True
    return mask


def token_mask(text: str, spans: Sequence[Sequence[int]], tokenizer: Any) -> np.ndarray:
    """Per token of ``text`` (fast tokenizer, tokens with an empty character range left out): offloaded or not."""
    offsets = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
    chars = char_mask(text, spans)
    return np.array([bool(chars[s]) for s, e in offsets if e > s], dtype=bool)


def mask(text: str, spans: Sequence[Sequence[int]], tokenizer: Any = None) -> np.ndarray:
    """Per character, or per token with a ``tokenizer``: offloaded or not."""
    return char_mask(text, spans) if tokenizer is None else token_mask(text, spans, tokenizer)


def offload_token_fraction(text: str, spans: Sequence[Sequence[int]], tokenizer: Any) -> float:
    mask = token_mask(text, spans, tokenizer)
    return float(mask.mean()) if mask.size else 0.0


def offload_fractions(rows: Sequence[Mapping[str, Any]], tokenizer: Any = None) -> pd.DataFrame:
    """Per annotated row: ``id``, ``chars`` and ``tokens`` offloaded fractions (tokens: the row's recorded
    ``offload_token_fraction``, else measured with ``tokenizer``, else NaN)."""
    records = []
    for r in rows:
        tokens = r.get("offload_token_fraction")
        if tokens is None and tokenizer is not None:
            tokens = offload_token_fraction(r["trace"], r["spans"], tokenizer)
        records.append({"id": r["id"], "chars": r["offload_char_fraction"],
                        "tokens": np.nan if tokens is None else tokens})
    return pd.DataFrame.from_records(records, columns=["id", "chars", "tokens"])


def _binned(mask: np.ndarray, n_bins: int) -> np.ndarray:
    """Mean of ``mask`` per bin of normalised position ((i + 0.5) / len); NaN for bins no element falls in."""
    bins = np.minimum(((np.arange(mask.size) + 0.5) / mask.size * n_bins).astype(int), n_bins - 1)
    hits = np.bincount(bins, weights=mask.astype(float), minlength=n_bins)
    counts = np.bincount(bins, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        return hits / counts


def position_profile(rows: Sequence[Mapping[str, Any]], n_bins: int = 200, tokenizer: Any = None) -> np.ndarray:
    """Mean offload mask over normalised position, ``n_bins`` bins (paper: 200), each trace weighted equally;
    over characters, or over tokens when a ``tokenizer`` is given."""
    if n_bins < 1:
        raise ValueError(f"n_bins={n_bins}: expected >= 1")
    per_trace = []
    for r in rows:
        m = mask(r["trace"], r["spans"], tokenizer)
        if m.size:
            per_trace.append(_binned(m, n_bins))
    if not per_trace:
        return np.full(n_bins, np.nan)
    stacked = np.vstack(per_trace)
    counts = np.sum(~np.isnan(stacked), axis=0)
    sums = np.nansum(stacked, axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)


def _prf(pred: np.ndarray, gold: np.ndarray) -> dict[str, float]:
    tp, n_pred, n_gold = int(np.sum(pred & gold)), int(pred.sum()), int(gold.sum())
    if n_pred == 0 and n_gold == 0:
        return {"precision": 1.0, "recall": 1.0, "f1": 1.0}
    precision = tp / n_pred if n_pred else 0.0
    recall = tp / n_gold if n_gold else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1}


def score_against_oracle(pred_spans: Sequence[Sequence[int]], oracle_spans: Sequence[Sequence[int]], text: str,
                         tokenizer: Any = None) -> dict[str, float]:
    """Precision, recall and F1 of the marked characters (or tokens, with ``tokenizer``) against the oracle.

    Nothing marked and nothing to mark scores 1.0; otherwise an empty side scores 0.0.
    """
    return _prf(mask(text, pred_spans, tokenizer), mask(text, oracle_spans, tokenizer))


def score_rows(rows: Sequence[Mapping[str, Any]], oracle: Mapping[str, Sequence[Sequence[int]]],
               tokenizer: Any = None) -> dict[str, float]:
    """Micro-averaged (all characters/tokens pooled) precision, recall and F1 of annotated rows against
    ``oracle`` (id -> hard spans), plus ``macro_f1`` (mean per trace) and ``n`` (rows scored)."""
    preds, golds, f1s = [], [], []
    for r in rows:
        if r["id"] not in oracle:
            continue
        preds.append(mask(r["trace"], r["spans"], tokenizer))
        golds.append(mask(r["trace"], oracle[r["id"]], tokenizer))
        f1s.append(_prf(preds[-1], golds[-1])["f1"])
    if not preds:
        raise ValueError("no annotated row has an oracle entry: pass toy rows' hard_spans keyed by id")
    micro = _prf(np.concatenate(preds), np.concatenate(golds))
    return {**micro, "macro_f1": float(np.mean(f1s)), "n": len(preds)}


def _pieces(annotated: str) -> list[tuple[str, bool]]:
    """(text, offloaded) pieces of a tagged text (raises ``tags.TagError`` if malformed)."""
    plain = tags.strip_tags(annotated)
    out, pos = [], 0
    for s, e in tags.spans(annotated):
        out += [(plain[pos:s], False), (plain[s:e], True)]
        pos = e
    out.append((plain[pos:], False))
    return [(t, hot) for t, hot in out if t]


def render_html(annotated: str | Sequence[str], titles: Sequence[str] | None = None) -> str:
    """HTML (for ``IPython.display.HTML``) of one or more tagged traces with the offloaded spans highlighted."""
    texts = [annotated] if isinstance(annotated, str) else list(annotated)
    titles = list(titles) if titles is not None else [""] * len(texts)
    blocks = []
    for title, text in zip(titles, texts):
        body = "".join(f'<mark style="{HIGHLIGHT_CSS}">{html.escape(t)}</mark>' if hot else html.escape(t)
                       for t, hot in _pieces(text))
        heading = f"<h4>{html.escape(title)}</h4>" if title else ""
        blocks.append(f'{heading}<pre style="white-space:pre-wrap;font-size:12px">{body}</pre>')
    return "<div>" + "\n".join(blocks) + "</div>"


def render_ansi(annotated: str) -> str:
    """The tagged trace for a terminal, offloaded spans on a yellow background."""
    return "".join(f"{ANSI_ON}{t}{ANSI_OFF}" if hot else t for t, hot in _pieces(annotated))
