"""The Backend protocol: per-problem token-id sessions that decode, score a chunk, and roll back.

A *session* is one sequence (prompt + everything the model has read or written since). Its state changes in
two cheap, local ways — ``extend(ids)`` (tokens to read: prefilled lazily by the next compute call, in one
forward pass, reusing the KV cache) and ``rollback(n)`` (forget the last n tokens: the KV cache is truncated) —
and through two compute *ops*:

- ``Decode``: generate up to ``max_new`` tokens (greedy, or sampled with temperature/top-p/seed), stopping after
  EOS or any ``stop_ids`` token (the stop token is returned); ``ban_first`` tokens may not be the first one.
- ``Score``: read a chunk in ONE forward pass and return, for each position i, the model's greedy next token
  after ``ids[: i + 1]`` (and optionally the probability of one token, e.g. ``</bigmodel>``).

Ops are submitted to the backend and come back from ``poll()``; an engine that batches (vLLM, a remote server)
runs the ops of many sessions together, the transformers backend one at a time.
"""

from __future__ import annotations

import gc
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Protocol, runtime_checkable

from transformers import PreTrainedTokenizerBase

from splitlib.sampling import GREEDY, Sampling


class BackendError(RuntimeError):
    """A backend failed to do what was asked (the message says which backend and why)."""


class BackendUnreachable(BackendError):
    """A model server did not answer (the message names its URL)."""


class ModelNotFoundError(FileNotFoundError):
    """A model directory does not exist (the message names the path and what creates it)."""


class PromptTooLongError(ValueError):
    """A prompt does not fit the model's context window."""


@dataclass
class Counters:
    """Work done by a model for one session (or, on the backend, for all of them)."""

    requests: int = 0  # decode/score calls
    forward_calls: int = 0  # forward passes; one engine step counts once for each session in it
    prefill_tokens: int = 0  # prompt and catch-up tokens handed to extend()
    decode_tokens: int = 0  # tokens generated (rolled-back ones included)
    check_tokens: int = 0  # tokens read by Score (the take-back check)
    computed_tokens: int = 0  # token positions run through the model (recomputed ones included)

    def add(self, other: Counters) -> None:
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))

    def copy(self) -> Counters:
        return Counters(**{f.name: getattr(self, f.name) for f in fields(self)})

    def minus(self, other: Counters) -> Counters:
        return Counters(**{f.name: getattr(self, f.name) - getattr(other, f.name) for f in fields(self)})


@dataclass(eq=False)
class Decode:
    session: Session
    max_new: int
    stop_ids: frozenset[int] = frozenset()
    sampling: Sampling = GREEDY
    ban_first: frozenset[int] = frozenset()


@dataclass(eq=False)
class Score:
    session: Session
    ids: tuple[int, ...]
    prob_of: int | None = None  # also return P(this token) after each position
    prob_floor: float = 0.0  # probabilities below this may be reported as 0.0 (lets servers return top-k only)


Op = Decode | Score


@dataclass(frozen=True)
class Scored:
    top1: tuple[int, ...]  # greedy next token after each position of the chunk
    prob: tuple[float, ...] | None = None  # P(prob_of) after each position; None when not asked


@dataclass(eq=False)
class Done:
    op: Op
    value: list[int] | Scored  # Decode: the new token ids; Score: a Scored
    wall_s: float  # from submit to completion


class BaseSession:
    """Token list + counters; subclasses add what their engine keeps (a KV cache, a request history)."""

    def __init__(self, backend: Backend, prompt_ids: Sequence[int]) -> None:
        self.backend = backend
        self.ids: list[int] = list(prompt_ids)
        self.counters = Counters(prefill_tokens=len(self.ids))
        backend.counters.prefill_tokens += len(self.ids)
        self.calls = 0  # ops run on this session (seeds per call derive from it)

    def __len__(self) -> int:
        return len(self.ids)

    def extend(self, ids: Sequence[int], counter: str = "prefill_tokens") -> None:
        """Tokens to read; prefilled by the next Decode/Score in the same forward pass.

        ``counter`` names what they are counted as (``check_tokens`` for a chunk read to check it)."""
        self.ids.extend(ids)
        self.count(**{counter: len(ids)})

    def rollback(self, n: int) -> None:
        """Forget the last ``n`` tokens."""
        if not 0 <= n <= len(self.ids):
            raise ValueError(f"rollback({n}) on a session of {len(self.ids)} tokens")
        if n:
            del self.ids[-n:]

    def room(self) -> int:
        """How many more tokens fit in the model's context window."""
        return self.backend.max_model_len - len(self.ids)

    def count(self, **deltas: int) -> None:
        for name, value in deltas.items():
            setattr(self.counters, name, getattr(self.counters, name) + value)
            setattr(self.backend.counters, name, getattr(self.backend.counters, name) + value)

    # -- one op at a time -----------------------------------------------------------------------------
    def decode(self, max_new: int, stop_ids=frozenset(), sampling: Sampling = GREEDY, ban_first=frozenset()):
        op = Decode(self, max_new, frozenset(stop_ids), sampling, frozenset(ban_first))
        return run_ops(self.backend, [op])[0].value

    def score(self, ids: Sequence[int], prob_of: int | None = None, prob_floor: float = 0.0) -> Scored:
        return run_ops(self.backend, [Score(self, tuple(ids), prob_of, prob_floor)])[0].value


@runtime_checkable
class Backend(Protocol):
    name: str  # "hf", "vllm", "openai"
    tokenizer: PreTrainedTokenizerBase
    eos_ids: frozenset[int]
    max_model_len: int
    concurrent: bool  # runs ops of many sessions together
    counters: Counters  # totals over all sessions

    def open(self, prompt_ids: Sequence[int]) -> BaseSession: ...

    def submit(self, op: Op) -> None: ...

    def poll(self) -> list[Done]:
        """Do some work; return the ops that finished (never blocks forever while work is pending)."""
        ...

    def pending(self) -> int: ...

    def close(self) -> None:
        """Shut the engine down and free its memory (GPU memory included); idempotent. A closed backend takes no
        more ops."""
        ...


Session = BaseSession


def default_device() -> str:
    """Where a local model runs when nothing says: the GPU when this process sees one, else the CPU."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def free_memory() -> None:
    """Collect garbage, then hand the CUDA allocator's cached blocks back to the device (where there is one), so
    that the next engine started in this process finds the memory a closed one held."""
    gc.collect()
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def run_ops(backend: Backend, ops: Sequence[Op]) -> list[Done]:
    """Submit ``ops`` and wait for all of them; results in the order given."""
    for op in ops:
        backend.submit(op)
    done: dict[int, Done] = {}
    while len(done) < len(ops):
        for d in backend.poll():
            done[id(d.op)] = d
    return [done[id(op)] for op in ops]


def check_prompt(backend: Backend, prompt_ids: Sequence[int], role: str) -> None:
    """Raise before any decoding when a prompt is empty or leaves no room to generate."""
    if not prompt_ids:
        raise ValueError(f"empty prompt for the {role} model")
    if len(prompt_ids) >= backend.max_model_len:
        raise PromptTooLongError(
            f"the {role} model's prompt has {len(prompt_ids)} tokens but its context window "
            f"({backend.name}, max_model_len={backend.max_model_len}) leaves no room to generate; "
            "shorten the question or use a model with a longer context"
        )


def eos_ids_of(tokenizer: PreTrainedTokenizerBase, generation_eos: int | Sequence[int] | None) -> frozenset[int]:
    """EOS ids: the tokenizer's plus the generation config's (an int or a list)."""
    ids = set()
    if tokenizer.eos_token_id is not None:
        ids.add(int(tokenizer.eos_token_id))
    if isinstance(generation_eos, int):
        ids.add(generation_eos)
    elif generation_eos:
        ids.update(int(i) for i in generation_eos)
    if not ids:
        raise BackendError(f"tokenizer {tokenizer.name_or_path!r} has no EOS token; generation could never end")
    return frozenset(ids)


class CorruptModelError(ValueError):
    """A weight file of a saved model is truncated or unreadable (the message names the file)."""


def check_weights(folder: str | Path) -> None:
    """Every ``*.safetensors`` file in ``folder`` is whole: its header parses and the file holds every byte the
    header promises. Reads only the headers; a truncated copy fails here naming the file, not deep inside a
    loader with a message that names none."""
    for file in sorted(Path(folder).glob("*.safetensors")):
        size = file.stat().st_size
        try:
            with file.open("rb") as f:
                n = int.from_bytes(f.read(8), "little")
                if size < 8 + n:
                    raise ValueError(f"header of {n} bytes but the file has {size}")
                header = json.loads(f.read(n))
            end = max((t["data_offsets"][1] for k, t in header.items() if k != "__metadata__"), default=0)
        except (ValueError, KeyError, TypeError, IndexError) as err:
            raise CorruptModelError(f"{file} is not a readable safetensors file ({err}); re-create or re-download "
                                    "the model") from None
        if size < 8 + n + end:
            raise CorruptModelError(f"{file} is truncated: its header promises {8 + n + end} bytes, the file has "
                                    f"{size}; re-create or re-download the model (an interrupted copy or save?)")


def resolve_model(model: str | Path) -> str:
    """A model directory (checked) or a hub id (left to the engine)."""
    text = str(model)
    path = Path(text).expanduser()
    if path.is_dir():
        if not (path / "config.json").exists():
            raise ModelNotFoundError(f"{path} has no config.json — not a saved model (save_pretrained writes one)")
        check_weights(path)
        return str(path)
    first = Path(text.split("/")[0])
    looks_like_path = (
        path.is_absolute() or text.startswith((".", "~")) or text.count("/") > 1 or path.exists() or first.is_dir()
    )
    if looks_like_path:
        raise ModelNotFoundError(
            f"model directory {path} does not exist — build the toy models with notebooks/00_models.ipynb "
            "(they land in outputs/<run>/models/{small,big}/) or pass a Hugging Face hub id"
        )
    return text


@dataclass
class Queue:
    """FIFO of submitted ops with their submit times (shared by the backends)."""

    items: list[tuple[Op, float]] = field(default_factory=list)

    def push(self, op: Op) -> None:
        self.items.append((op, time.perf_counter()))

    def pop(self) -> tuple[Op, float]:
        return self.items.pop(0)

    def __len__(self) -> int:
        return len(self.items)
