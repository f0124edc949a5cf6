"""Measure a backend's prefill and decode speed at several context lengths -> a hardware profile.

Batch 1, the same calls the decoding loop makes: a prefill is one ``extend`` + the forward pass of the next
op; decoding is one token per call. Prefill time is fitted as ``call_s + tokens / rate`` from two prefill sizes
at each context; decode time per token is measured directly (its per-call cost is inside the rate, so
``decode_call_s`` stays 0). Token ids are drawn from the vocabulary with a seeded RNG.
"""

from __future__ import annotations

import logging
import random
import statistics
import time
from collections.abc import Sequence

from tqdm.auto import tqdm

from splitlib.backends.base import Backend, Decode, Score, run_ops
from splitlib.hardware import HardwareProfile, ModelThroughput

log = logging.getLogger(__name__)


def _ids(backend: Backend, n: int, rng: random.Random) -> list[int]:
    special = set(backend.tokenizer.all_special_ids) | set(backend.eos_ids)
    vocab = [i for i in range(len(backend.tokenizer)) if i not in special]
    return [rng.choice(vocab) for _ in range(n)]


def _prefill_s(backend: Backend, context: list[int], new: list[int]) -> float:
    """Seconds for reading ``new`` after ``context`` is cached (a Score op = one forward over the new tokens)."""
    session = backend.open(context)
    run_ops(backend, [Decode(session, 1)])  # caches the context (and decodes one token)
    session.rollback(1)
    t0 = time.perf_counter()
    run_ops(backend, [Score(session, tuple(new))])
    return time.perf_counter() - t0


def _decode_s_per_token(backend: Backend, context: list[int], n_tokens: int) -> float:
    session = backend.open(context)
    run_ops(backend, [Decode(session, 1)])
    t0 = time.perf_counter()
    run_ops(backend, [Decode(session, n_tokens)])
    return (time.perf_counter() - t0) / n_tokens


def measure_throughput(backend: Backend, contexts: Sequence[int] = (32, 128, 256, 448), prefill_sizes=(8, 64),
                       decode_tokens: int = 32, repeats: int = 3, seed: int = 0, progress: bool = True
                       ) -> ModelThroughput:
    """Prefill and decode rates of one backend vs context length (median of ``repeats``)."""
    rng = random.Random(seed)
    small_n, big_n = prefill_sizes
    prefill_pts, decode_pts, call_s = [], [], []
    for ctx in tqdm(contexts, desc=f"profile {backend.name}", disable=not progress):
        if ctx + max(big_n, decode_tokens) + 2 > backend.max_model_len:
            raise ValueError(f"context {ctx} + {max(big_n, decode_tokens)} tokens exceeds the model's "
                             f"max length {backend.max_model_len}; pass smaller contexts")
        context = _ids(backend, ctx, rng)
        t_small = statistics.median(_prefill_s(backend, context, _ids(backend, small_n, rng)) for _ in range(repeats))
        t_big = statistics.median(_prefill_s(backend, context, _ids(backend, big_n, rng)) for _ in range(repeats))
        per_token = max((t_big - t_small) / (big_n - small_n), 1e-9)
        call_s.append(max(t_small - small_n * per_token, 0.0))
        prefill_pts.append((float(ctx), 1.0 / per_token))
        dec = statistics.median(_decode_s_per_token(backend, context, decode_tokens) for _ in range(repeats))
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
