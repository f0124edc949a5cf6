"""Seeds derived from a run seed and names, so that any subset of problems, samples or rollouts reruns identically.

Two formulas live here, and both are frozen: every sampled token and every random draw recorded in a run directory
depends on them, so changing either changes every number the pipeline has produced.

- ``derive_seed(*parts)``: a 31-bit seed per (method, problem, sample) of an evaluation and per (step, process,
  generation, prompt) of a GRPO rollout. It keys the decoder's work on that item (``f"seed-{seed}"`` and
  ``f"rollout-{seed}"``, see ``splitlib.decoder_service``).
- ``derive_engine_seed(seed, *keys)``: the 63-bit seeds inside the decoder: a backend's sampling seed per (problem
  key, model) and a policy's random generator per (policy, problem key), e.g. a random switch's draws.

They differ (hash of the ``|``-joined parts vs hash of the ``repr`` of a tuple; 31 vs 63 bits) only because they
grew apart; unifying them would change every sampled number, so they stay two.
"""

from __future__ import annotations

import hashlib


def derive_seed(*parts: object) -> int:
    """A 31-bit seed from ``parts`` (joined by ``|``), stable across runs, machines and subsets."""
    key = "|".join(str(p) for p in parts).encode()
    return int.from_bytes(hashlib.sha256(key).digest()[:4], "big") & 0x7FFFFFFF


def derive_engine_seed(seed: int, *keys: object) -> int:
    """A 63-bit seed determined by the run seed and the keys (e.g. a problem key and a model role)."""
    digest = hashlib.sha256(repr((seed, *keys)).encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1
