"""What every annotator shares: results, failures, the transport retry policy, and the registry.

An annotator maps one trace row (``{"id", "question", "answer", "trace", ...}``) to sorted, disjoint character
spans over the ORIGINAL trace text, or raises ``AnnotationFailure`` with a short machine-readable reason.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from splitlib.registry import Registry

Span = tuple[int, int]
Row = Mapping[str, Any]


class AnnotationFailure(Exception):
    """One trace could not be annotated. ``reason`` is a short token ("no_snippets", "http_429_exhausted", …);
    ``details`` are machine-readable numbers or tokens, never exception text."""

    def __init__(self, reason: str, **details: Any) -> None:
        super().__init__(reason)
        self.reason = reason
        self.details = details


@dataclass(frozen=True)
class Annotation:
    spans: tuple[Span, ...]
    details: dict[str, Any] = field(default_factory=dict)  # annotator-specific, deterministic, JSON-able


@dataclass(frozen=True)
class RetryPolicy:
    """How an annotator that calls a remote service treats one request (others ignore it)."""

    timeout_s: float = 300.0  # per request (a 4,096-token answer at ~30 tok/s takes over two minutes)
    max_retries: int = 5  # extra attempts after a 429 / 5xx / timeout / connection error / unreadable reply
    backoff_s: float = 1.0  # first wait; doubled per retry
    max_backoff_s: float = 60.0
    jitter: float = 0.5  # each wait is multiplied by 1 + jitter·u, u ~ U[0, 1) from a seeded per-trace RNG
    seed: int = 0
    sleep: Callable[[float], None] = time.sleep

    def __post_init__(self) -> None:
        if self.timeout_s <= 0:
            raise ValueError(f"timeout_s={self.timeout_s}: expected seconds > 0")
        if self.max_retries < 0:
            raise ValueError(f"max_retries={self.max_retries}: expected an integer >= 0")
        if self.backoff_s < 0 or self.max_backoff_s < 0 or self.jitter < 0:
            raise ValueError("backoff_s, max_backoff_s and jitter must be >= 0")


@runtime_checkable
class Annotator(Protocol):
    name: str

    def annotate(self, row: Row, retry: RetryPolicy) -> Annotation:
        """Spans for one trace; raises ``AnnotationFailure``."""
        ...

    def describe(self) -> dict[str, Any]:
        """The settings that determine its output (JSON-able, no secrets): recorded next to the annotations."""
        ...


class BatchAnnotator(Annotator, Protocol):
    """An annotator that is faster on batches (a local model); ``annotate_all`` feeds it ``batch_size`` rows."""

    batch_size: int

    def annotate_batch(self, rows: Sequence[Row]) -> list[Annotation | AnnotationFailure]: ...


# -- registry ---------------------------------------------------------------------------------------------------
ANNOTATORS: Registry[Callable[..., Annotator]] = Registry("annotator")  # name -> factory(**params)


def get_annotator(name: str, **params: Any) -> Annotator:
    """Build the annotator registered under ``name`` with ``params`` (unknown keys are an error)."""
    return ANNOTATORS[name](**params)


def check_fraction(name: str, value: float) -> None:
    if not 0.0 < value < 1.0:
        raise ValueError(f"{name}={value}: expected a fraction strictly between 0 and 1 (e.g. 0.2)")


# -- oracle -----------------------------------------------------------------------------------------------------
class OracleAnnotator:
    """The toy world's ground-truth hard spans (``hard_spans`` of a toy row): an upper bound to score against."""

    name = "oracle"

    def annotate(self, row: Row, retry: RetryPolicy | None = None) -> Annotation:
        if "hard_spans" not in row:
            raise ValueError(f"trace {row.get('id')!r} has no 'hard_spans': the oracle annotator needs toy rows "
                             "(splitlib.data.load_toy)")
        # a problem without hard steps is truthfully annotated with no span
        return Annotation(spans=tuple((int(s), int(e)) for s, e in row["hard_spans"]))

    def describe(self) -> dict[str, Any]:
        return {"name": self.name}


@ANNOTATORS.register("oracle")
def make_oracle() -> OracleAnnotator:
    return OracleAnnotator()
