"""Measure a backend's prefill and decode speed at several context lengths -> a hardware profile.

Batch 1, the same calls the decoding loop makes: a prefill is one ``extend`` + the forward pass of the next
op; decoding is one token per call. Prefill time is fitted as ``call_s + tokens / rate`` from two prefill sizes
at each context; decode time per token is measured directly (its per-call cost is inside the rate, so
``decode_call_s`` stays 0). Token ids are drawn from the vocabulary with a seeded RNG.

``measure_with_timing`` alternates profiling with timed runs on a shared machine and keeps both on disk, reused
while the settings that made them are unchanged.
"""

from __future__ import annotations

import logging
import random
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from splitlib import runs
from splitlib.backends.base import Backend, Decode, Score, run_ops
from splitlib.hardware import HardwareProfile, ModelThroughput
from splitlib.progressbar import progress_bar

log = logging.getLogger(__name__)


def _ids(backend: Backend, n: int, rng: random.Random) -> list[int]:
    special = set(backend.tokenizer.all_special_ids) | set(backend.eos_ids)
    vocab = [i for i in range(len(backend.tokenizer)) if i not in special]
    return [rng.choice(vocab) for _ in range(n)]


def prefill_s(backend: Backend, context: list[int], new: list[int]) -> float:
    """Seconds for reading ``new`` after ``context`` is cached (a Score op = one forward over the new tokens)."""
    session = backend.open(context)
    run_ops(backend, [Decode(session, 1)])  # caches the context (and decodes one token)
    session.rollback(1)
    t0 = time.perf_counter()
    run_ops(backend, [Score(session, tuple(new))])
    return time.perf_counter() - t0


def decode_s_per_token(backend: Backend, context: list[int], n_tokens: int) -> float:
    """Seconds per token of batch-1 greedy decoding after ``context`` (up to ``n_tokens``; EOS ends it early)."""
    session = backend.open(context)
    run_ops(backend, [Decode(session, 1)])
    t0 = time.perf_counter()
    (done,) = run_ops(backend, [Decode(session, n_tokens)])
    return (time.perf_counter() - t0) / max(len(done.value), 1)


def measure_throughput(backend: Backend, contexts: Sequence[int] = (32, 128, 256, 448), prefill_sizes=(8, 64),
                       decode_tokens: int = 32, repeats: int = 3, seed: int = 0, progress: bool = True
                       ) -> ModelThroughput:
    """Prefill and decode rates of one backend vs context length (median of ``repeats``)."""
    rng = random.Random(seed)
    small_n, big_n = prefill_sizes
    prefill_pts, decode_pts, call_s = [], [], []
    for ctx in progress_bar(contexts, desc=f"profile {backend.name}", disable=not progress):
        if ctx + max(big_n, decode_tokens) + 2 > backend.max_model_len:
            raise ValueError(f"context {ctx} + {max(big_n, decode_tokens)} tokens exceeds the model's "
                             f"max length {backend.max_model_len}; pass smaller contexts")
        context = _ids(backend, ctx, rng)
        t_small = statistics.median(prefill_s(backend, context, _ids(backend, small_n, rng)) for _ in range(repeats))
        t_big = statistics.median(prefill_s(backend, context, _ids(backend, big_n, rng)) for _ in range(repeats))
        per_token = max((t_big - t_small) / (big_n - small_n), 1e-9)
        call_s.append(max(t_small - small_n * per_token, 0.0))
        prefill_pts.append((float(ctx), 1.0 / per_token))
        dec = statistics.median(decode_s_per_token(backend, context, decode_tokens) for _ in range(repeats))
        decode_pts.append((float(ctx), 1.0 / dec))
    return ModelThroughput(
        prefill_tok_per_s=statistics.median(r for _, r in prefill_pts),
        decode_tok_per_s=statistics.median(r for _, r in decode_pts),
        prefill_curve=tuple(prefill_pts), decode_curve=tuple(decode_pts),
        prefill_call_s=statistics.median(call_s), decode_call_s=0.0)


def measure_profile(backends: dict[str, Backend], name: str, device: str, progress: bool = True,
                    **kwargs) -> HardwareProfile:
    """A ``HardwareProfile`` with one measured ``ModelThroughput`` per backend (keys = the dict's keys)."""
    models = {key: measure_throughput(b, progress=progress, **kwargs) for key, b in backends.items()}
    for key, m in models.items():
        log.info("%s: prefill %.0f tok/s (+%.2f ms/call), decode %.1f tok/s", key, m.prefill_tok_per_s,
                 1e3 * m.prefill_call_s, m.decode_tok_per_s)
    return HardwareProfile(name=name, device=device, models=models, source="measured by splitlib.profiling",
                           meta={"backend": {k: b.name for k, b in backends.items()}, **kwargs})


def measure_interleaved(backends: dict[str, Backend], name: str, device: str, rounds: int,
                        between: Callable[[int], object], progress: bool = True, **kwargs) -> list[HardwareProfile]:
    """``rounds`` times: measure a profile, then call ``between(round)`` (e.g. time some real runs). Returns the
    profile of each round: on a shared machine whose load drifts, each round's profile saw the load of the runs
    timed right after it (``mean_profile`` averages them)."""
    if rounds < 1:
        raise ValueError(f"rounds={rounds}: expected >= 1")
    profiles = []
    for k in progress_bar(range(rounds), desc="profile + timing rounds", disable=not progress):
        profiles.append(measure_profile(backends, name, device, progress=False, **kwargs))
        between(k)
    return profiles


def _harmonic(rates: Sequence[float]) -> float:
    """The rate of the mean time per token (what averaging measurements over time gives)."""
    return 1.0 / statistics.fmean(1.0 / r for r in rates)


def _mean_curve(curves: Sequence[tuple]) -> tuple:
    contexts = [tuple(c for c, _ in curve) for curve in curves]
    if len(set(contexts)) > 1:
        raise ValueError(f"profiles measured at different contexts {sorted(set(contexts))}; measure them alike")
    return tuple((ctx, _harmonic([curve[i][1] for curve in curves])) for i, ctx in enumerate(contexts[0]))


def mean_profile(profiles: Sequence[HardwareProfile], name: str | None = None) -> HardwareProfile:
    """One profile from several measured alike (e.g. interleaved with timed runs on a shared machine): per model,
    rates averaged as time per token, per-call costs averaged."""
    if not profiles:
        raise ValueError("mean_profile needs at least one profile")
    keys = [tuple(p.models) for p in profiles]
    if len(set(keys)) > 1:
        raise ValueError(f"profiles hold different models {sorted(set(keys))}")
    models = {}
    for key in keys[0]:
        ms = [p.models[key] for p in profiles]
        models[key] = ModelThroughput(
            prefill_tok_per_s=_harmonic([m.prefill_tok_per_s for m in ms]),
            decode_tok_per_s=_harmonic([m.decode_tok_per_s for m in ms]),
            prefill_curve=_mean_curve([m.prefill_curve for m in ms]),
            decode_curve=_mean_curve([m.decode_curve for m in ms]),
            prefill_call_s=statistics.fmean(m.prefill_call_s for m in ms),
            decode_call_s=statistics.fmean(m.decode_call_s for m in ms))
    first = profiles[0]
    return HardwareProfile(name or first.name, first.device, models, first.source,
                           {**first.meta, "rounds": len(profiles)})


# -- a measured profile and the timed runs measured with it, kept on disk ----------------------------------------
@dataclass(frozen=True)
class TimedProfile:
    """The mean measured profile (``profile.json``), the profile of each round (``profile_rounds.json``), the
    timing files written between the rounds (``timing_<i>.jsonl``), and whether all of it was reused."""

    profile: HardwareProfile
    round_profiles: list[HardwareProfile]
    timing_paths: list[Path]
    reused: bool


def measure_with_timing(directory: str | Path, settings: Mapping[str, Any],
                        backends: Callable[[], dict[str, Backend]], time_pass: Callable[[Path, int], object],
                        n_items: int, *, name: str, device: str, rounds: int, timing_runs: int = 1,
                        progress: bool = True, **measure_kwargs: Any) -> TimedProfile:
    """A profile measured in ``rounds`` rounds per timing pass, alternating with the timed runs, or the saved one.

    With the same ``settings`` as saved in ``directory`` (``profile_settings.json``), the saved profile and its
    rounds are reused with the timing files beside them. Otherwise those timing files are deleted (timed rows
    belong to the profiles measured with them), ``backends()`` is called, and ``rounds * timing_runs`` times a
    profile is measured, then ``time_pass(timing_path, n)`` runs: pass ``j // rounds`` covers the first ``n`` of
    ``n_items`` items, ``n`` growing by one ``rounds``-th each round (a resumable run only adds the new items).
    The mean profile records ``settings`` in its ``meta``. ``measure_kwargs`` go to ``measure_throughput``.
    """
    d = Path(directory)
    profile_path = d / "profile.json"
    timing_paths = [d / f"timing_{i}.jsonl" for i in range(timing_runs)]
    ends = [(k + 1) * n_items // rounds for k in range(rounds)]
    built: dict[str, Any] = {}

    def build() -> list[dict]:
        for path in timing_paths:
            path.unlink(missing_ok=True)

        def time_slice(j: int) -> None:  # pass j // rounds over the items of round j % rounds
            time_pass(timing_paths[j // rounds], ends[j % rounds])

        profiles = measure_interleaved(backends(), name, device, rounds * timing_runs, time_slice, progress=progress,
                                       **measure_kwargs)
        mean = mean_profile(profiles)
        measured = HardwareProfile(mean.name, mean.device, mean.models, mean.source, {**mean.meta, "settings": settings})
        measured.save(profile_path)
        built.update(profile=measured, rounds=profiles)
        return [p.to_json() for p in profiles]

    saved_rounds, reused = runs.reuse_or_build(d, settings, build, result="profile_rounds.json",
                                               settings_file="profile_settings.json", requires=["profile.json"])
    if reused:
        return TimedProfile(HardwareProfile.load(profile_path), [HardwareProfile.from_json(p) for p in saved_rounds],
                            timing_paths, True)
    return TimedProfile(built["profile"], built["rounds"], timing_paths, False)
