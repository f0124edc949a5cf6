"""Policies: the choices the one cooperative loop (``splitlib.decoding``) leaves open.

A policy says who writes next (``next_turn``) and whether a ``<bigmodel>`` request is granted (``accept``).
Everything else — catch-up, chunks, the take-back check, caps, EOS — is the loop's.

- ``split``: the small model writes and asks for the big one with ``<bigmodel>``; an offload budget may refuse
  requests (``max_offload_fraction``: refused while the big model's share of the tokens so far is above it;
  ``reject_probability``: refused at random). A refused request's token is removed and the small model goes on.
- ``random_switch``: the paper's baseline (PAPER_FACTS §3) — each chunk of ``chunk`` tokens is written by the
  big model with probability ``1 / (1 + ratio)``, else by the small one; no tags.
- ``small_only`` / ``big_only``: one model alone, plain generation (tags, if written, are ordinary text).

Per-problem randomness comes from ``begin(key)``: a generator seeded from the policy's run ``seed`` and the
problem key, so any subset of problems reruns identically.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import ClassVar, Protocol

from splitlib.params import build_config
from splitlib.registry import Registry
from splitlib.seeds import derive_engine_seed
from splitlib.trace import Model


@dataclass(frozen=True)
class Progress:
    """What a policy may look at: the generation so far."""

    small_tokens: int
    big_tokens: int
    requests: int  # <bigmodel> requests so far (granted or refused)

    @property
    def offload_fraction(self) -> float:
        total = self.small_tokens + self.big_tokens
        return self.big_tokens / total if total else 0.0


@dataclass(frozen=True)
class Turn:
    model: Model
    max_tokens: int | None = None  # None: until EOS, a granted request, or the total cap
    requests: bool = False  # the small model's <bigmodel> is an offload request
    drop_tags: bool = False  # tag tokens this model writes are removed (and recorded)


class PolicyRun(Protocol):
    def next_turn(self, progress: Progress) -> Turn: ...

    def accept(self, progress: Progress) -> bool: ...


class Policy(Protocol):
    name: ClassVar[str]
    models: ClassVar[frozenset[str]]  # the models it uses
    requests: ClassVar[bool]  # the small model asks for the big one with <bigmodel> (needs single-token tags)

    def begin(self, key: str) -> PolicyRun: ...


@dataclass
class _Run:
    policy: Policy
    rng: random.Random

    def next_turn(self, progress: Progress) -> Turn:
        return self.policy.turn(progress, self.rng)

    def accept(self, progress: Progress) -> bool:
        return self.policy.grant(progress, self.rng)


class _Base:
    seed: int = 0
    requests: ClassVar[bool] = False

    def begin(self, key: str) -> PolicyRun:
        return _Run(self, random.Random(derive_engine_seed(self.seed, self.name, key)))

    def grant(self, progress: Progress, rng: random.Random) -> bool:
        return False


@dataclass(frozen=True)
class Split(_Base):
    name: ClassVar[str] = "split"
    models: ClassVar[frozenset[str]] = frozenset({"small", "big"})
    requests: ClassVar[bool] = True
    max_offload_fraction: float = 1.0  # refuse requests while the big share of tokens so far is above this
    reject_probability: float = 0.0  # refuse each request with this probability
    seed: int = 0

    def __post_init__(self) -> None:
        _check_unit("max_offload_fraction", self.max_offload_fraction)
        _check_unit("reject_probability", self.reject_probability)

    def turn(self, progress: Progress, rng: random.Random) -> Turn:
        return Turn("small", requests=True, drop_tags=True)

    def grant(self, progress: Progress, rng: random.Random) -> bool:
        draw = rng.random()  # drawn for every request, so refusals by budget do not shift later draws
        if draw < self.reject_probability:
            return False
        if self.max_offload_fraction >= 1.0:
            return True
        return self.max_offload_fraction > 0 and progress.offload_fraction <= self.max_offload_fraction


@dataclass(frozen=True)
class RandomSwitch(_Base):
    name: ClassVar[str] = "random_switch"
    models: ClassVar[frozenset[str]] = frozenset({"small", "big"})
    ratio: float = 19.0  # small chunks per big chunk on average: p_big = 1 / (1 + ratio)
    chunk: int = 32  # tokens per chunk
    seed: int = 0

    def __post_init__(self) -> None:
        if self.ratio < 0:
            raise ValueError(f"ratio={self.ratio}: expected >= 0 (p_big = 1 / (1 + ratio))")
        if self.chunk < 1:
            raise ValueError(f"chunk={self.chunk}: expected a positive number of tokens")

    @property
    def p_big(self) -> float:
        return 1.0 / (1.0 + self.ratio)

    def turn(self, progress: Progress, rng: random.Random) -> Turn:
        model = "big" if rng.random() < self.p_big else "small"
        return Turn(model, max_tokens=self.chunk, drop_tags=True)


@dataclass(frozen=True)
class SmallOnly(_Base):
    name: ClassVar[str] = "small_only"
    models: ClassVar[frozenset[str]] = frozenset({"small"})

    def turn(self, progress: Progress, rng: random.Random) -> Turn:
        return Turn("small")


@dataclass(frozen=True)
class BigOnly(_Base):
    name: ClassVar[str] = "big_only"
    models: ClassVar[frozenset[str]] = frozenset({"big"})

    def turn(self, progress: Progress, rng: random.Random) -> Turn:
        return Turn("big")


POLICIES: Registry[type] = Registry("policy", {p.name: p for p in (Split, RandomSwitch, SmallOnly, BigOnly)})


def make_policy(name: str, **params) -> Policy:
    """A policy by registry name; unknown names or parameters fail with the allowed ones listed."""
    return build_config(POLICIES[name], params, f"policy {name!r}", error=ValueError)


def _check_unit(name: str, value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name}={value}: expected a fraction in [0, 1]")
