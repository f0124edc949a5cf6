"""The one adapter between ``splitlib.decoding.decode_many`` and its users: evaluation, GRPO rollouts, reports.

A ``DecoderService`` turns "decode these questions with this policy on these models" into ``decode_many`` calls:

- it loads a backend once per (engine kind, model) and keeps it; a ready ``Backend`` may stand in for a model
  reference (rollouts hand in the live policy that way, wrapped anew each step);
- ``preload`` loads what a list of routes needs before the first timed call, so loading is not timed as decoding;
- ``decode`` settings (chunk size, per-offload cap, take-back rule, reference mode) are fixed for the service and
  checked once by ``check_decode_settings``: sampling settings never belong there, they come with each call;
- ``provenance(route)`` says what determines the route's output besides the sampling settings and seeds: the
  hashes of the models it really uses, the backend kind and output-changing loader options per role, and the
  complete ``decode`` settings (defaults included); the evaluation keys its rows by it;
- ``close()`` (or leaving a ``with`` block) shuts every backend it loaded down and frees its memory; with
  ``max_loaded=n`` it holds at most n loaded backends, releasing the least recently used ones that the route being
  served does not use before it loads another (notebook 05 then holds one method's models, not every model it
  evaluates). Ready backends handed in are the caller's: never counted, never closed. Releasing changes no output:
  a model loaded again is the same model with the same options;
- each question's seed becomes the engine's problem key ``f"{key_prefix}-{seed}"``, from which the engine derives
  every random choice (sampling and policy), so one item reruns identically in any batch. Evaluation uses the
  prefix ``seed``, rollouts ``rollout``: the keys the recorded runs were decoded with.

A service is a ``DecodeFn``; the evaluation runner and the rollout function take any ``DecodeFn`` (tests hand in
scripted ones).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol, Self

from splitlib import prompts, provenance
from splitlib.sampling import Sampling
from splitlib.trace import Trace

log = logging.getLogger(__name__)

# DecodeConfig fields that come with each call (the protocol's or GRPO config's sampling, the per-item seeds)
SAMPLING_FIELDS = ("max_new_tokens", "temperature", "top_p", "seed")
# Loader options that only size an engine or say where a server listens, and cannot change what it generates: left
# out of a route's provenance (the served model's hash is in it). Every other option (dtype, engine seed,
# max_model_len, tokenizer, ...) is in it.
CAPACITY_OPTIONS = frozenset({"max_num_seqs", "gpu_memory_utilization", "swap_space", "cpu_offload_gb", "base_url",
                              "api_key_env", "timeout_s", "max_retries", "max_workers"})


def check_decode_settings(decode: Mapping[str, Any]) -> dict[str, Any]:
    """``decode`` as a dict, refused when it carries sampling settings (those come with each call)."""
    clash = sorted(set(decode) & set(SAMPLING_FIELDS))
    if clash:
        raise ValueError(f"decode settings {clash} are sampling settings: they come from the evaluation protocol or "
                         "the GRPO config, and the seeds per problem; leave them out of 'decode'")
    return dict(decode)


@dataclass(frozen=True)
class Route:
    """A policy and its models: references (a key of the service's model table, a directory, a hub id) or ready
    backends. ``splitlib.evaluate.Method`` has the same four fields and is used as a route as it is."""

    policy: str  # a splitlib.policies name
    small: Any  # str | Backend | None
    big: Any = None  # str | Backend | None; None where the policy never calls it
    policy_params: Mapping[str, Any] = field(default_factory=dict)


class DecodeFn(Protocol):
    """Decodes ``questions`` with ``route``'s policy and models, one trace per question, in the given order;
    ``seeds[i]`` keys every random choice for question i (as ``f"{key_prefix}-{seeds[i]}"``).

    A decoder may carry a JSON-able ``settings`` attribute (engine, chunk size, model directories, ...): the
    evaluation records it in every row under ``decoder``; a ``preload(routes)`` method that the evaluation calls
    before its first timed batch; a ``warm_up(route, questions, sampling, max_new_tokens)`` method that it calls
    before each batch's clock starts (see ``DecoderService.warm_up``); and a ``provenance(route)`` method (see
    ``DecoderService.provenance``) by which the evaluation keys its rows.
    """

    def __call__(self, route: Route, questions: list[str], seeds: list[int], sampling: Sampling,
                 max_new_tokens: int, key_prefix: str = "seed") -> list[Trace]: ...


@dataclass(frozen=True)
class _Item:
    """What ``decoding.decode_many`` reads: the question, and ``id`` as the key of all its randomness."""

    id: str
    question: str


WARM_UP_TOKENS = 64  # a warm-up decodes the whole batch this far: the batch shapes of the timed run, and hand-offs


class DecoderService:
    """A ``DecodeFn`` over ``splitlib.decoding.decode_many``; backends are loaded once per model and kept.

    ``model_dirs`` maps model keys ("base", "sft", "grpo", "big") to directories or hub ids; a reference not in it
    is used as a directory or hub id itself. ``kind``/``big_kind``: ``load_backend`` kinds of the small and big
    roles; ``backend_opts``: loader options per model key. ``decode``: the other ``DecodeConfig`` fields.
    ``max_loaded``: at most this many backends loaded at once (None: keep every one until ``close``); the models
    of the route being served are never released, so a route needing more than ``max_loaded`` still runs.
    ``prompt_style``: how each question becomes each model's prompt (``splitlib.prompts``; None: the project's
    evaluation style)."""

    def __init__(self, model_dirs: Mapping[str, str | Path] | None = None, kind: str = "hf",
                 big_kind: str | None = None, decode: Mapping[str, Any] | None = None,
                 backend_opts: Mapping[str, Mapping[str, Any]] | None = None, progress: bool = False,
                 max_loaded: int | None = None, prompt_style: prompts.PromptStyle | None = None) -> None:
        if max_loaded is not None and max_loaded < 1:
            raise ValueError(f"max_loaded={max_loaded}: expected None (keep all) or an integer >= 1")
        self.model_dirs = {k: str(v) for k, v in (model_dirs or {}).items()}
        self.kinds = {"small": kind, "big": big_kind or kind}
        self.decode = check_decode_settings(decode or {})
        self.backend_opts = {k: dict(v) for k, v in (backend_opts or {}).items()}  # per model key
        self.progress = progress  # decode_many's progress bar
        self.max_loaded = max_loaded
        self.prompt_style = prompt_style or prompts.DEFAULT_STYLE  # how every question becomes each model's prompt
        self._loaded: dict[tuple[str, str], Any] = {}  # (kind, target) -> backend, least recently used first
        self._in_use: frozenset[tuple[str, str]] = frozenset()  # keys of the route being served: never released
        self._pinned: set[tuple[str, str]] = set()  # keys handed out with pin=True: never released by _make_room
        self._hashes: dict[str, str] = {}  # model target -> provenance.model_hash, computed once per service
        self._warned_top_k = False
        self._warmed: set[tuple] = set()  # (policy, engines) that have run their warm-up in this service

    @property
    def settings(self) -> dict:
        return {"engine": "splitlib.decoding", "kinds": self.kinds, "decode": self.decode,
                "model_dirs": self.model_dirs, "prompt": self.prompt_style.id}

    def backend(self, role: str, ref: Any, pin: bool = False) -> Any:
        """The backend for ``ref`` in ``role`` ("small"/"big"): loaded on first use, or ``ref`` itself when it is a
        ready backend; None for None. ``pin``: never released under ``max_loaded`` (only by ``release``/``close``),
        for a caller that keeps the backend, e.g. a profiler measuring it between timed routes."""
        if ref is None or not isinstance(ref, str | Path):
            return ref
        from splitlib.backends import load_backend

        key = self._key(role, ref)
        if key in self._loaded:
            self._loaded[key] = self._loaded.pop(key)  # most recently used last
        else:
            self._make_room()
            log.info("loading the %s backend for %s (%s)", key[0], ref, key[1])
            self._loaded[key] = load_backend(key[0], key[1], **self.backend_opts.get(str(ref), {}))
        if pin:
            self._pinned.add(key)
        return self._loaded[key]

    @property
    def loaded(self) -> list[tuple[str, str]]:
        """(kind, model target) of every backend loaded now, least recently used first."""
        return list(self._loaded)

    def release(self, ref: Any, role: str | None = None) -> None:
        """Close the backends loaded for ``ref`` (a model key, directory or hub id) — in ``role`` only, or in both —
        and free their memory; the next use loads them again."""
        for r in (role,) if role else ("small", "big"):
            self._pinned.discard(self._key(r, ref))
            backend = self._loaded.pop(self._key(r, ref), None)
            if backend is not None:
                _close(backend)

    def close(self) -> None:
        """Close every loaded backend (each once) and free its memory. The service stays usable: a later call loads
        what it needs again."""
        self._pinned.clear()
        while self._loaded:
            (kind, target), backend = self._loaded.popitem()
            log.info("closing the %s backend of %s", kind, target)
            _close(backend)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _key(self, role: str, ref: str | Path) -> tuple[str, str]:
        return (self.kinds[role], self.model_dirs.get(str(ref), str(ref)))

    def _route_keys(self, route: Route) -> frozenset[tuple[str, str]]:
        """The loaded-backend keys of the models ``route``'s policy uses (ready backends are not ours)."""
        return frozenset(self._key(role, getattr(route, role)) for role in _uses(route)
                         if isinstance(getattr(route, role), str | Path))

    def _make_room(self) -> None:
        """Under ``max_loaded``, close least recently used backends the current route does not use until one more
        fits (or none is left that may go)."""
        if self.max_loaded is None:
            return
        for key in [k for k in self._loaded if k not in self._in_use and k not in self._pinned]:
            if len(self._loaded) < self.max_loaded:
                return
            log.info("releasing the %s backend of %s (max_loaded=%d)", key[0], key[1], self.max_loaded)
            _close(self._loaded.pop(key))

    def provenance(self, route: Route) -> dict[str, Any]:
        """What determines this route's output besides the sampling settings and seeds of a call (JSON values):

        - ``model``: per role, the hash of the weights and tokenizer the route really uses (None for a role its
          policy never calls); a ready backend has no files to hash and is named ``live:<type>@<id>``, which matches
          nothing in another process;
        - ``backend``: per role used, the backend kind and its output-changing loader options: hf and vLLM run
          different kernels (and vLLM batches), so greedy decoding may break near-ties differently and sampling
          draws other random numbers — a row made by one is not what the other would produce;
        - ``decode``: every ``DecodeConfig`` setting but the sampling ones, defaults written out (so that a changed
          default counts, and an explicit default equals an omitted one);
        - ``policy`` and ``policy_params``;
        - ``prompt``: the id of the prompt style every question is rendered in (``splitlib.prompts``).
        """
        from splitlib.decoding import DecodeConfig

        uses = _uses(route)
        refs = {role: getattr(route, role) if role in uses else None for role in ("small", "big")}
        config = asdict(DecodeConfig(**self.decode))
        return {"model": {role: self._model_hash(ref) for role, ref in refs.items()},
                "backend": {role: self._backend_record(role, ref) for role, ref in refs.items()},
                "decode": {k: v for k, v in config.items() if k not in SAMPLING_FIELDS},
                "policy": route.policy, "policy_params": dict(route.policy_params), "prompt": self.prompt_style.id}

    def _model_hash(self, ref: Any) -> str | None:
        if ref is None:
            return None
        if not isinstance(ref, str | Path):
            return f"live:{type(ref).__name__}@{id(ref):x}"
        target = self.model_dirs.get(str(ref), str(ref))
        if target not in self._hashes:
            self._hashes[target] = provenance.model_hash(target)
        return self._hashes[target]

    def _backend_record(self, role: str, ref: Any) -> dict[str, Any] | None:
        if ref is None:
            return None
        opts = self.backend_opts.get(str(ref), {}) if isinstance(ref, str | Path) else {}
        record = {"kind": self.kinds[role], "options": {k: v for k, v in opts.items() if k not in CAPACITY_OPTIONS}}
        if self.kinds[role] != "openai":  # a local engine: CPU and GPU kernels differ, so the device counts too
            from splitlib.backends.base import default_device

            record["device"] = opts.get("device") or default_device()
        return record

    def preload(self, routes: Sequence[Route]) -> None:
        """Load every backend ``routes`` use now, so that loading is not timed as decoding. Under ``max_loaded``,
        routes are loaded in order while their models fit together (the first always is); the rest load when
        they are served (the evaluation preloads each method before its batches are timed)."""
        wanted: set[tuple[str, str]] = set()
        for i, r in enumerate(routes):
            wanted |= self._route_keys(r)
            if i and self.max_loaded is not None and len(wanted) > self.max_loaded:
                return
            self._serve(r, lambda r=r: [self.backend(role, getattr(r, role)) for role in _uses(r)])

    def warm_up(self, route: Route, questions: list[str], sampling: Sampling, max_new_tokens: int) -> None:
        """Ready the engines for a timed call of ``route`` on ``questions`` (the evaluation calls this before each
        batch's clock starts):

        - the first time this service serves the route's policy on its engines, decode ``questions`` up to
          ``WARM_UP_TOKENS`` tokens, untimed: the first batch down a decoding path pays one-off costs that are not
          the method's throughput (batch shapes the engine has not run, the first take-back checks); measured on the
          toy models, the first split batch of 64 problems took 3.2 s, the next 1.5 s;
        - every time, empty the loaded engines' prefix caches: no timed call starts with KV blocks a warm-up or an
          earlier method computed for the same questions (a method evaluated later would otherwise run faster).

        Transformers backends (no batch shapes, no prefix cache) are left alone."""
        if any(self.kinds[role] == "hf" for role in _uses(route)):
            return
        path = (route.policy, self._route_keys(route))
        if path not in self._warmed:
            self._warmed.add(path)
            self(route, questions, list(range(len(questions))), sampling, min(max_new_tokens, WARM_UP_TOKENS),
                 key_prefix="warm-up")
        for backend in self._loaded.values():
            reset = getattr(backend, "reset_prefix_cache", None)
            if reset is not None:
                reset()

    def __call__(self, route: Route, questions: list[str], seeds: list[int], sampling: Sampling,
                 max_new_tokens: int, key_prefix: str = "seed") -> list[Trace]:
        from splitlib.decoding import DecodeConfig, decode_many
        from splitlib.policies import make_policy

        if sampling.top_k and not self._warned_top_k:
            log.warning("top_k=%d is not applied: the decoder samples with temperature (and top_p) only",
                        sampling.top_k)
            self._warned_top_k = True
        policy = make_policy(route.policy, **route.policy_params)
        small, big = self._serve(route, lambda: [self.backend(role, getattr(route, role)) if role in policy.models
                                                 else None for role in ("small", "big")])
        cfg = DecodeConfig(max_new_tokens=max_new_tokens, temperature=sampling.temperature, top_p=sampling.top_p,
                           seed=sampling.seed, **self.decode)
        items = [_Item(id=f"{key_prefix}-{seed}", question=q) for q, seed in zip(questions, seeds, strict=True)]
        return decode_many(items, small, big, policy, cfg, progress=self.progress, prompt_style=self.prompt_style)

    def _serve(self, route: Route, load: Any) -> Any:
        """``load()`` with ``route``'s models marked in use, so that making room never releases one of them."""
        self._in_use = self._route_keys(route)
        try:
            return load()
        finally:
            self._in_use = frozenset()


def _uses(route: Route) -> list[str]:
    """The roles ("small", "big") whose model ``route``'s policy calls (both for an unknown policy name)."""
    from splitlib.policies import POLICIES

    uses = POLICIES[route.policy].models if route.policy in POLICIES else {"small", "big"}
    return [role for role in ("small", "big") if role in uses]


def _close(backend: Any) -> None:
    close = getattr(backend, "close", None)  # every splitlib backend has one; a test double may not
    if close is not None:
        close()
