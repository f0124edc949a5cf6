"""Latency simulators for small/big cooperative decoding (the paper's Figure 5, right, and beyond).

Modes live in a registry (``MODES``); each gives the time of one generation with a fraction ``offload`` of
the decoded tokens written by the big model, and the time of one model alone:

- ``paper``: PAPER_FACTS §9 exactly — two pipelined devices, 256-token chunks assigned whole (1.35 % of 16,384
  is below one chunk, so nothing is offloaded), scalar throughputs;
- ``continuous``: the same pipeline without chunk quantisation;
- ``overhead``: ``continuous`` plus per-switch costs (the big model's catch-up prefill, discarded big tokens,
  the small model's take-back pass, call overheads) and context-length-dependent throughput;
- ``serial``: one device, the models take turns (the released code's loop); also prices real ``Trace``s.

Every time here is *simulated* (``*_s`` in ``SimResult``, ``sim_s`` beside measured ``wall_s``).
"""

from __future__ import annotations

import logging
import math
import numbers
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from splitlib.hardware import HardwareProfile, ModelThroughput, get_profile
from splitlib.registry import Registry
from splitlib.trace import Trace

log = logging.getLogger(__name__)

PAPER_PROMPT_TOKENS = 2048
PAPER_DECODE_TOKENS = 16384
PAPER_CHUNK = 256
TABLE_OFFLOADS = (0.0, 0.0135, 0.02, 0.05, 0.10, 0.20)
TABLE_BIGS = ("7B", "8B", "14B", "32B", "70B")


@dataclass(frozen=True)
class SwitchCosts:
    """What one hand-off costs beyond the tokens themselves (used by ``overhead`` and ``serial``).

    Defaults are assumptions, not measurements: 128-token offloaded spans, the DESIGN loop's 64-token big
    chunks with half a chunk discarded after the take-back point. ``catchup_tokens`` None means half a
    streaming-prefill chunk (``overhead``; the serial loop always catches up on everything unseen).
    """

    span_tokens: float = 128.0  # kept big tokens per offloaded span
    check_tokens: float = 64.0  # big tokens the small model ingests in the take-back pass (per span)
    discarded_tokens: float = 32.0  # big tokens decoded after the take-back point and rolled back (per span)
    catchup_tokens: float | None = None

    def __post_init__(self) -> None:
        for name in ("span_tokens", "check_tokens", "discarded_tokens", "catchup_tokens"):
            value = getattr(self, name)
            if value is not None and not (math.isfinite(value) and value >= 0):
                raise ValueError(f"SwitchCosts.{name}={value!r}: expected a non-negative number of tokens")
        if self.span_tokens <= 0:
            raise ValueError(f"SwitchCosts.span_tokens={self.span_tokens!r}: expected a positive number of tokens")


@dataclass(frozen=True)
class SimConfig:
    prompt_tokens: int = PAPER_PROMPT_TOKENS
    decode_tokens: int = PAPER_DECODE_TOKENS
    chunk: int = PAPER_CHUNK
    seed: int = 0
    switch: SwitchCosts = field(default_factory=SwitchCosts)

    def __post_init__(self) -> None:
        for name, low in (("prompt_tokens", 0), ("decode_tokens", 1), ("chunk", 1)):
            value = getattr(self, name)
            if not (isinstance(value, numbers.Integral) and value >= low):
                raise ValueError(f"{name}={value!r}: expected an integer >= {low}")


@dataclass(frozen=True)
class SimResult:
    simulated_s: float  # split generation (simulated)
    big_only_s: float  # the big model alone (simulated)
    small_only_s: float  # the small model alone (simulated)
    speedup: float  # big_only_s / simulated_s
    slowdown_vs_small: float  # simulated_s / small_only_s
    mode: str
    offload: float


# ---------------------------------------------------------------------------------------------------------
# the registry
TimeFn = Callable[[float, ModelThroughput, ModelThroughput, SimConfig], float]  # (offload, small, big, cfg)


@dataclass(frozen=True)
class Mode:
    name: str
    time_s: TimeFn
    alone_s: Callable[[ModelThroughput, SimConfig], float]  # one model generating everything by itself
    description: str


MODES: Registry[Mode] = Registry("simulator mode")


def register_mode(name: str, alone_s: Callable[[ModelThroughput, SimConfig], float],
                  description: str) -> Callable[[TimeFn], TimeFn]:
    """Decorator: register ``fn(offload, small, big, cfg) -> seconds`` as simulator mode ``name``."""

    def wrap(fn: TimeFn) -> TimeFn:
        MODES.register(name, Mode(name, fn, alone_s, description))
        return fn

    return wrap


def _alone_scalar(m: ModelThroughput, cfg: SimConfig) -> float:
    return cfg.prompt_tokens / m.prefill_tok_per_s + cfg.decode_tokens / m.decode_tok_per_s


def _alone_profiled(m: ModelThroughput, cfg: SimConfig) -> float:
    return m.prefill_s(cfg.prompt_tokens) + m.decode_s(cfg.decode_tokens, cfg.prompt_tokens)


def _prompt_phase_s(small: ModelThroughput, big: ModelThroughput, p: int) -> float:
    return max(p / big.prefill_tok_per_s, p / small.prefill_tok_per_s)


# ---------------------------------------------------------------------------------------------------------
# paper: PAPER_FACTS §9
def paper_chunk_plan(offload: float, decode_tokens: int, chunk: int,
                     rng: np.random.Generator) -> tuple[np.ndarray, bool]:
    """Which whole chunks the big model writes (bool per chunk) and whether it writes the partial chunk."""
    n_whole = decode_tokens // chunk
    big_requested = round(offload * decode_tokens)
    n_big = min(big_requested // chunk, n_whole)
    is_big = np.zeros(n_whole, dtype=bool)
    is_big[rng.choice(n_whole, size=n_big, replace=False)] = True
    partial_big = bool(big_requested % chunk > 0 and rng.random() < 0.5)
    return is_big, partial_big


@register_mode("paper", _alone_scalar, "the paper's chunked two-device pipeline (PAPER_FACTS §9)")
def _paper_s(c: float, small: ModelThroughput, big: ModelThroughput, cfg: SimConfig) -> float:
    def chunk_s(n: int, by_big: bool) -> float:
        if by_big:
            return max(n / big.decode_tok_per_s, n / small.prefill_tok_per_s)
        return max(n / small.decode_tok_per_s, n / big.prefill_tok_per_s)

    is_big, partial_big = paper_chunk_plan(c, cfg.decode_tokens, cfg.chunk, np.random.default_rng(cfg.seed))
    n_big = int(is_big.sum())
    body = n_big * chunk_s(cfg.chunk, True) + (len(is_big) - n_big) * chunk_s(cfg.chunk, False)
    partial = chunk_s(cfg.decode_tokens % cfg.chunk, partial_big)
    return _prompt_phase_s(small, big, cfg.prompt_tokens) + body + partial


@register_mode("continuous", _alone_scalar, "the paper's pipeline without chunk quantisation")
def _continuous_s(c: float, small: ModelThroughput, big: ModelThroughput, cfg: SimConfig) -> float:
    d = cfg.decode_tokens
    big_tok_s = max(1 / big.decode_tok_per_s, 1 / small.prefill_tok_per_s)
    small_tok_s = max(1 / small.decode_tok_per_s, 1 / big.prefill_tok_per_s)
    return _prompt_phase_s(small, big, cfg.prompt_tokens) + c * d * big_tok_s + (1 - c) * d * small_tok_s


# ---------------------------------------------------------------------------------------------------------
# overhead: continuous + switch costs + context-length dependence
def _stream_tok_s(m: ModelThroughput, cfg: SimConfig) -> tuple[float, float]:
    """Mean (decode, streaming-prefill) seconds per token over the generation's context range."""
    p, d = cfg.prompt_tokens, cfg.decode_tokens
    decode = m.decode_s(d, p, calls=0) / d
    prefill = m.prefill_s(d, p, calls=0) / d + m.prefill_call_s / cfg.chunk
    return decode, prefill


def _switch_s(small: ModelThroughput, big: ModelThroughput, cfg: SimConfig) -> float:
    """Critical-path seconds one hand-off adds to the pipelined generation."""
    sw, ctx = cfg.switch, cfg.prompt_tokens + cfg.decode_tokens / 2
    catchup = cfg.chunk / 2 if sw.catchup_tokens is None else sw.catchup_tokens
    return (big.prefill_s(catchup, ctx) + big.decode_s(sw.discarded_tokens, ctx, calls=0)
            + small.prefill_s(sw.check_tokens, ctx) + big.decode_call_s + small.decode_call_s)


@register_mode("overhead", _alone_profiled, "continuous + per-switch costs + context-dependent throughput")
def _overhead_s(c: float, small: ModelThroughput, big: ModelThroughput, cfg: SimConfig) -> float:
    d = cfg.decode_tokens
    small_dec, small_pre = _stream_tok_s(small, cfg)
    big_dec, big_pre = _stream_tok_s(big, cfg)
    prompt = max(small.prefill_s(cfg.prompt_tokens), big.prefill_s(cfg.prompt_tokens))
    body = c * d * max(big_dec, small_pre) + (1 - c) * d * max(small_dec, big_pre) + small.decode_call_s
    return prompt + body + (c * d / cfg.switch.span_tokens) * _switch_s(small, big, cfg)


# ---------------------------------------------------------------------------------------------------------
# serial: one device, the models take turns
@dataclass(frozen=True)
class Work:
    """One segment's work, as the serial mode prices it (a view of ``trace.Segment``)."""

    model: str  # "small" | "big"
    kept_tokens: int
    prefill_tokens: int
    decode_tokens: int
    check_tokens: int


def serial_s(work: Iterable[Work], rates: dict[str, ModelThroughput], prompt_tokens: dict[str, int]) -> float:
    """Sum over segments of prefill + decode + the other model's check, at each segment's context length.

    A segment that starts with a prefill gets its first token from that forward pass (the decoding loop makes
    ``decode_tokens`` forward passes in all, the prefill included), so it is priced as the prefill plus
    ``decode_tokens - 1`` decode steps.
    """
    total, kept = 0.0, 0
    for w in work:
        other = "big" if w.model == "small" else "small"
        m, ctx = rates[w.model], prompt_tokens.get(w.model, 0) + kept
        total += m.prefill_s(w.prefill_tokens, max(0, ctx - w.prefill_tokens), calls=int(w.prefill_tokens > 0))
        from_prefill = int(w.prefill_tokens > 0 and w.decode_tokens > 0)
        steps = w.decode_tokens - from_prefill
        total += m.decode_s(steps, ctx + from_prefill, calls=int(steps > 0))
        if w.check_tokens:
            total += rates[other].prefill_s(w.check_tokens, prompt_tokens.get(other, 0) + kept)
        kept += w.kept_tokens
    return total


def synthetic_work(c: float, cfg: SimConfig) -> list[Work]:
    """A generation with round(c·d) big tokens in equal spans spread evenly between small stretches."""
    d, p, sw = cfg.decode_tokens, cfg.prompt_tokens, cfg.switch
    n_big = round(c * d)
    n_spans = math.ceil(n_big / sw.span_tokens) if n_big else 0
    smalls, bigs = np.array_split(np.arange(d - n_big), n_spans + 1), np.array_split(np.arange(n_big), max(n_spans, 1))
    work, seen_by_big, generated = [Work("small", len(smalls[0]), p, len(smalls[0]), 0)], 0, len(smalls[0])
    for span, stretch in zip(bigs[:n_spans], smalls[1:]):
        k, extra = len(span), round(sw.discarded_tokens)
        catchup = generated - seen_by_big + (p if seen_by_big == 0 else 0)
        work.append(Work("big", k, catchup, k + extra, k + extra))
        generated += k
        seen_by_big = generated
        work.append(Work("small", len(stretch), 0, len(stretch), 0))
        generated += len(stretch)
    return work


def _serial_alone_s(m: ModelThroughput, cfg: SimConfig) -> float:
    """One model alone: a single serial segment (prompt prefill, then the rest of the generation)."""
    return serial_s([Work("small", cfg.decode_tokens, cfg.prompt_tokens, cfg.decode_tokens, 0)], {"small": m},
                    {"small": cfg.prompt_tokens})


@register_mode("serial", _serial_alone_s, "one device, the models take turns (prices real Traces)")
def _serial_mode_s(c: float, small: ModelThroughput, big: ModelThroughput, cfg: SimConfig) -> float:
    prompts = {"small": cfg.prompt_tokens, "big": cfg.prompt_tokens}
    return serial_s(synthetic_work(c, cfg), {"small": small, "big": big}, prompts)



# ---------------------------------------------------------------------------------------------------------
# public API
def _check_offload(offload: float) -> float:
    if not (isinstance(offload, numbers.Real) and 0.0 <= offload <= 1.0):
        raise ValueError(f"offload={offload!r}: expected a fraction of decoded tokens in [0, 1] (5 % is 0.05)")
    return float(offload)


def simulate(offload: float, profile: HardwareProfile | str, small: str, big: str, mode: str = "paper",
             prompt_tokens: int = PAPER_PROMPT_TOKENS, decode_tokens: int = PAPER_DECODE_TOKENS,
             chunk: int = PAPER_CHUNK, seed: int = 0, switch: SwitchCosts | None = None) -> SimResult:
    """Simulated time of one generation with ``offload`` of its decoded tokens written by ``big``."""
    c, hw, spec = _check_offload(offload), get_profile(profile), MODES[mode]
    cfg = SimConfig(prompt_tokens, decode_tokens, chunk, seed, switch or SwitchCosts())
    s, b = hw.model(small), hw.model(big)
    sim_s, big_s, small_s = spec.time_s(c, s, b, cfg), spec.alone_s(b, cfg), spec.alone_s(s, cfg)
    return SimResult(sim_s, big_s, small_s, big_s / sim_s, sim_s / small_s, mode, c)


def trace_work(trace: Trace) -> list[Work]:
    return [Work(s.model, len(s.token_ids), s.prefill_tokens, s.decode_tokens, s.check_tokens) for s in trace.segments]


def simulate_trace(trace: Trace, profile: HardwareProfile | str, small: str, big: str, mode: str = "serial",
                   **kwargs: Any) -> float:
    """Simulated seconds for one recorded generation.

    ``serial`` prices every segment as recorded; the other modes see only the trace's length and offloaded
    token fraction (``kwargs`` pass on to ``simulate``, e.g. ``chunk``).
    """
    hw = get_profile(profile)
    if mode == "serial":
        return serial_s(trace_work(trace), {"small": hw.model(small), "big": hw.model(big)}, trace.prompt_tokens)
    if trace.total_tokens == 0:
        raise ValueError("trace has no generated tokens; only mode='serial' can price it")
    prompt = trace.prompt_tokens.get("small", 0)
    res = simulate(trace.offload_token_fraction, hw, small, big, mode, prompt, trace.total_tokens, **kwargs)
    return res.simulated_s


def simulate_rows(rows: Sequence[dict], profile: HardwareProfile | str, small: str = "small", big: str = "big",
                  mode: str = "serial") -> pd.DataFrame:
    """Simulated seconds (``sim_s``) beside the measured ``wall_s`` for evaluation rows (``splitlib.evaluate``),
    each priced from its stored trace."""
    hw = get_profile(profile)
    out = []
    for r in rows:
        trace = Trace.from_json(r["trace"])
        out.append({"method": r["method"], "problem_id": r["problem_id"], "sample": r["sample"],
                    "policy": r.get("policy"), "offload_token_fraction": trace.offload_token_fraction,
                    "tokens": trace.total_tokens, "wall_s": trace.wall_s,
                    "sim_s": simulate_trace(trace, hw, small, big, mode)})
    return pd.DataFrame(out)


def switch_costs_from(traces: Iterable[Trace]) -> SwitchCosts:
    """Per-hand-off costs as measured in real traces: kept big tokens, take-back check and discarded tokens per
    offloaded span (defaults where the traces hold no hand-off)."""
    spans = kept = check = discarded = 0
    for t in traces:
        for s in t.segments:
            if s.model == "big":
                spans += 1
                kept += len(s.token_ids)
                check += s.check_tokens
                discarded += s.discarded_tokens
    if not spans or not kept:
        return SwitchCosts()
    return SwitchCosts(span_tokens=kept / spans, check_tokens=check / spans, discarded_tokens=discarded / spans)


def sweep(offloads: Iterable[float], profile: HardwareProfile | str, small: str, big: str | Sequence[str],
          mode: str = "paper", **kwargs: Any) -> pd.DataFrame:
    """One row per (big, offload): the ``SimResult`` fields plus ``small`` and ``big``."""
    hw, bigs = get_profile(profile), [big] if isinstance(big, str) else list(big)
    rows = [{"small": small, "big": b, **asdict(simulate(c, hw, small, b, mode, **kwargs))}
            for b in bigs for c in offloads]
    return pd.DataFrame(rows)


def speedup_table(profile: HardwareProfile | str = "a6000-paper", small: str = "1.5B",
                  bigs: Sequence[str] = TABLE_BIGS, offloads: Sequence[float] = TABLE_OFFLOADS,
                  modes: Sequence[str] = ("paper", "continuous"), **kwargs: Any) -> pd.DataFrame:
    """Speed-up over the big model alone: rows (mode, big), columns offload in percent."""
    frames = [sweep(offloads, profile, small, bigs, mode, **kwargs) for mode in modes]
    df = pd.concat(frames, ignore_index=True).assign(offload_pct=lambda f: (100 * f["offload"]).round(2))
    table = df.pivot_table(index=["mode", "big"], columns="offload_pct", values="speedup", sort=False)
    table.columns.name = "offload %"
    return table
