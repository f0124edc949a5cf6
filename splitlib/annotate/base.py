"""What every annotator shares: results, failures, the transport retry policy with its cancel switch, the
registries of annotators and of their settings, and the provenance of a tokenizer.

An annotator maps one trace row (``{"id", "question", "answer", "trace", ...}``) to sorted, disjoint character
spans over the ORIGINAL trace text, or raises ``AnnotationFailure`` with a short machine-readable reason.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from splitlib.params import ParamError, build
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


class Cancelled(Exception):
    """The run was stopped (Ctrl-C, an abort, a crash): the work in hand is dropped, never recorded as a failure."""


class CancelSwitch:
    """Set once by a run that stops early. Retry waits end at once, and every in-flight request registered with
    ``on_cancel`` is aborted, so that worker threads finish within moments instead of after their retry chains."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self._lock = threading.Lock()
        self._hooks: dict[object, Callable[[], None]] = {}

    def set(self) -> None:
        with self._lock:
            self._event.set()
            hooks = list(self._hooks.values())
        for abort in hooks:
            abort()

    def is_set(self) -> bool:
        return self._event.is_set()

    def wait(self, seconds: float) -> bool:
        """Sleep up to ``seconds``; True when the switch was set meanwhile."""
        return self._event.wait(seconds)

    @contextmanager
    def on_cancel(self, abort: Callable[[], None]) -> Iterator[None]:
        """Call ``abort`` if the switch is set while the block runs (at once if it is already set)."""
        key = object()
        with self._lock:
            already = self._event.is_set()
            if not already:
                self._hooks[key] = abort
        if already:
            abort()
        try:
            yield
        finally:
            with self._lock:
                self._hooks.pop(key, None)


@dataclass(frozen=True)
class RetryPolicy:
    """How an annotator that calls a remote service treats one request (others ignore it)."""

    timeout_s: float = 300.0  # per request, in total: connecting, waiting and reading the whole reply
    max_retries: int = 5  # extra attempts after a 429 / 5xx / timeout / connection error / unreadable reply
    backoff_s: float = 1.0  # first wait; doubled per retry
    max_backoff_s: float = 60.0
    jitter: float = 0.5  # each wait is multiplied by 1 + jitter·u, u ~ U[0, 1) from a seeded per-trace RNG
    seed: int = 0
    sleep: Callable[[float], None] | None = None  # None: wait on `cancel`; tests may record the waits instead
    # set by annotate_all when it stops early; each run gets its own (not a setting: never compared or recorded)
    cancel: CancelSwitch = field(default_factory=CancelSwitch, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.timeout_s <= 0:
            raise ValueError(f"timeout_s={self.timeout_s}: expected seconds > 0")
        if self.max_retries < 0:
            raise ValueError(f"max_retries={self.max_retries}: expected an integer >= 0")
        if self.backoff_s < 0 or self.max_backoff_s < 0 or self.jitter < 0:
            raise ValueError("backoff_s, max_backoff_s and jitter must be >= 0")

    def pause(self, seconds: float) -> None:
        """The wait before a retry; raises ``Cancelled`` when the run is stopped meanwhile."""
        if self.sleep is not None:
            self.sleep(seconds)
        else:
            self.cancel.wait(seconds)
        if self.cancel.is_set():
            raise Cancelled


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


# -- registries -------------------------------------------------------------------------------------------------
ANNOTATORS: Registry[Callable[..., Annotator]] = Registry("annotator")  # name -> factory(**params)
# name -> settings builder (params, key prefix) -> its config dataclass: checks params without loading anything
ANNOTATOR_CONFIGS: Registry[Callable[[Mapping[str, Any], str], Any]] = Registry("annotator")


def get_annotator(name: str, **params: Any) -> Annotator:
    """Build the annotator registered under ``name`` with ``params`` (unknown keys are an error)."""
    return ANNOTATORS[name](**params)


def annotator_config(name: str, params: Mapping[str, Any], prefix: str = "") -> Any:
    """The settings ``get_annotator(name, **params)`` would use, built and checked without loading a model or
    contacting a server (the model and tokenizer of ``surprisal`` are not settings). Raises ``ParamError`` naming
    the bad key as ``prefix + key``."""
    return ANNOTATOR_CONFIGS[name](params, prefix)


def annotator_params(name: str, params: Mapping[str, Any], *, target_fraction: float, api_key_env: str | None = None,
                     small_model: str | None = None, served: Any = None) -> dict[str, Any]:
    """The keyword arguments of ``get_annotator`` from notebook 01's parameters: ``annotator_params`` plus the
    parameters of their own (the share to mark; llm: the key's variable; surprisal: the small model). ``served``:
    a keyless server started for the llm annotator (anything with ``base_url`` and ``model_name``, e.g.
    ``splitlib.serve.VLLMServer``), which replaces the endpoint, model and key of the settings."""
    extra: dict[str, Any] = {} if name == "oracle" else {"target_fraction": target_fraction}
    if name == "llm" and served is not None:
        extra.update(base_url=served.base_url, model=served.model_name, api_key_env=None)
    elif name == "llm" and api_key_env:
        extra["api_key_env"] = api_key_env
    if name == "surprisal" and small_model is not None:
        extra["model"] = small_model
    return {**params, **extra}


def tokenizer_hash(tokenizer: Any) -> str:
    """sha256 (16 hex digits) of what decides a tokenizer's tokens: a fast tokenizer's whole serialisation
    (vocabulary, merges, normaliser, added tokens; not its padding and truncation state, which calls change) and
    its chat template; a slow one's vocabulary."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        spec = {k: v for k, v in json.loads(backend.to_str()).items() if k not in ("padding", "truncation")}
        text = json.dumps(spec, sort_keys=True)
    else:
        text = repr(sorted(tokenizer.get_vocab().items()))
    template = getattr(tokenizer, "chat_template", None)
    return hashlib.sha256(f"{type(tokenizer).__name__}\0{text}\0{template}".encode()).hexdigest()[:16]


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


@dataclass(frozen=True)
class OracleConfig:
    """The oracle has no settings: any parameter is an error."""


@ANNOTATOR_CONFIGS.register("oracle")
def oracle_config(params: Mapping[str, Any], prefix: str = "") -> OracleConfig:
    if params:
        raise ParamError(f"unknown parameter(s) {', '.join(prefix + k for k in sorted(params))}: the oracle "
                         "annotator has no settings (give it none)")
    return build(OracleConfig, params, prefix)


@ANNOTATORS.register("oracle")
def make_oracle(**params: Any) -> OracleAnnotator:
    oracle_config(params)
    return OracleAnnotator()
