"""Model backends for the cooperative decoder: ``hf`` (transformers), ``vllm`` (in-process engine), ``openai``
(any OpenAI-compatible completions server). See ``base`` for the protocol.

    small = load_backend("hf", "outputs/toy/models/small")
    big = load_backend("openai", "my-32b", base_url="http://gpu-node:8000/v1", tokenizer="deepseek-ai/...")
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any, Literal

from splitlib.backends.base import (
    GREEDY,
    Backend,
    BackendError,
    BackendUnreachable,
    BaseSession,
    Counters,
    Decode,
    Done,
    ModelNotFoundError,
    PromptTooLongError,
    Sampling,
    Score,
    Scored,
    Session,
    check_prompt,
    run_ops,
)
from splitlib.registry import Registry

BackendKind = Literal["hf", "vllm", "openai"]

__all__ = [
    "BACKENDS", "GREEDY", "Backend", "BackendError", "BackendKind", "BackendUnreachable", "BaseSession", "Counters",
    "Decode", "Done", "ModelNotFoundError", "PromptTooLongError", "Sampling", "Score", "Scored", "Session",
    "check_backend_options", "check_prompt", "load_backend", "run_ops",
]


# Each entry imports its backend module on first use (vLLM, openai and torch are heavy) and returns the loader.
BACKENDS: Registry[Callable[[], Callable[..., Backend]]] = Registry("backend")


@BACKENDS.register("hf")
def _hf_loader() -> Callable[..., Backend]:
    from splitlib.backends.hf import HFBackend

    return HFBackend.load


@BACKENDS.register("vllm")
def _vllm_loader() -> Callable[..., Backend]:
    from splitlib.backends.vllm_engine import VLLMBackend

    return VLLMBackend.load


@BACKENDS.register("openai")
def _openai_loader() -> Callable[..., Backend]:
    from splitlib.backends.openai_server import OpenAIBackend

    return OpenAIBackend.load


def check_backend_options(kind: BackendKind, opts: Mapping[str, Any]) -> None:
    """Refuse loader options the ``kind`` backend does not take, naming them and the allowed ones (imports the
    backend's module, not its engine: nothing is loaded). A loader that takes any keyword (vLLM's engine
    arguments) accepts every name here; the engine checks them when it starts."""
    params = inspect.signature(BACKENDS[kind]()).parameters
    takes_any = any(p.kind is p.VAR_KEYWORD for p in params.values())
    unknown = sorted(set(opts) - set(params))
    if unknown and not takes_any:
        allowed = [n for n, p in params.items() if p.kind is p.KEYWORD_ONLY or p.default is not p.empty]
        raise TypeError(f"{kind} backend: unknown option(s) {unknown}; allowed: {allowed}")


def load_backend(kind: BackendKind, model_dir_or_id: str | None, **opts) -> Backend:
    """Load a backend. ``opts`` are the chosen loader's keyword arguments (unknown ones are refused by name)."""
    check_backend_options(kind, opts)
    return BACKENDS[kind]()(model_dir_or_id, **opts)
