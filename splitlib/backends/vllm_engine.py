"""``vllm``: an in-process ``vllm.LLM`` engine; many sessions' ops are stepped together (continuous batching).

vLLM keeps no state between requests, so a session is its token list and every op is one request over the
whole context. Prefix caching (always on here) makes that cheap: the context's KV blocks are found in the cache
and only the tokens after the last cached block are computed (block granularity: ``block_size``, 32 by default
on CPU; the ``computed_tokens`` counter records what was really recomputed).

The take-back check is one request over context + chunk with ``prompt_logprobs=k``: each prompt position's
top-1 entry is the model's greedy prediction there, and the last position's comes from the one generated
token. vLLM skips the prefix cache for prompt-logprob requests by default; we read it anyway
(``skip_reading_prefix_cache=False``) because only the chunk's rows are needed, and re-run without the cache in
the rare case the cache already covered part of the chunk (rows before the cache hit are not computed).
"""

from __future__ import annotations

import logging
import math
import os
import time
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field

from splitlib.backends.base import (
    BackendError,
    BaseSession,
    Counters,
    Decode,
    Done,
    Op,
    Score,
    Scored,
    eos_ids_of,
    free_memory,
    resolve_model,
    resumed_stop_texts,
)

log = logging.getLogger(__name__)


@dataclass(eq=False)
class _Flight:
    """An op in the engine: which phase it is in and what it has produced so far."""

    op: Op
    t0: float
    out: list[int] = field(default_factory=list)
    uncached: bool = False  # Score re-run without reading the prefix cache
    stepped: bool = False  # the engine has run a step since this request was added


@dataclass
class EngineSteps:
    """What this engine's steps carried (for benchmarks: how much of the engine's time went to hand-off work).

    A request added since the previous step is *new* in the next one: a take-back check (a Score request: one
    prefill of the chunk) or a decode request's prefill (a hand-off's catch-up, a resumed turn, a next chunk).
    ``only_new`` counts the steps that carried no decode request past its first step: steps of their own."""

    steps: int = 0
    with_checks: int = 0
    with_prefills: int = 0
    only_new: int = 0

    def as_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


class VLLMBackend:
    name = "vllm"
    concurrent = True
    open_engines = 0  # engines of this process not yet closed: the last one closed shuts its core down

    def __init__(self, llm, max_logprobs: int = 20, owns_engine: bool = True) -> None:
        self.owns_engine = owns_engine  # False: ``borrow``ed, someone else's engine (TRL's colocated one)
        if owns_engine:
            VLLMBackend.open_engines += 1
        self.llm = llm
        self.engine = llm.llm_engine
        self.tokenizer = llm.get_tokenizer()
        cfg = llm.llm_engine.model_config
        self.max_model_len = int(cfg.max_model_len)
        gen_eos = (cfg.try_get_generation_config() or {}).get("eos_token_id")
        self.eos_ids = eos_ids_of(self.tokenizer, gen_eos)
        self.vocab_size = int(cfg.get_vocab_size())
        self.max_logprobs = max_logprobs
        self.counters = Counters()
        self.steps = EngineSteps()
        self._flights: dict[str, _Flight] = {}
        self._ready: list[Done] = []  # ops finished without an engine request (nothing to do)
        self._next_id = 0
        self._id_prefix = "sr-" if owns_engine else f"sr-{id(self):x}-"  # apart from the owner's requests

    @classmethod
    def borrow(cls, llm) -> VLLMBackend:
        """A backend over an engine someone else started and keeps (TRL's colocated ``vllm.LLM``): it uses the
        engine's own settings (its ``max_logprobs`` bounds the take-back check's top-k), and ``close`` only aborts
        this backend's requests still in flight and drops its references, never shutting the engine down."""
        limit = int(llm.llm_engine.model_config.max_logprobs)
        vocab = int(llm.llm_engine.model_config.get_vocab_size())
        return cls(llm, max_logprobs=vocab if limit < 0 else limit, owns_engine=False)

    @classmethod
    def load(
        cls,
        model: str,
        *,
        max_model_len: int | None = None,
        dtype: str | None = None,
        block_size: int | None = None,
        seed: int = 0,
        max_logprobs: int = 20,
        tokenizer: str | None = None,
        **engine_kwargs,
    ) -> VLLMBackend:
        """Start an engine. On CPU: float32, eager mode, 1 GiB KV cache, in-process engine, 32-token blocks."""
        path = resolve_model(model)
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
        from vllm import LLM
        from vllm.platforms import current_platform

        on_cpu = current_platform.is_cpu()
        kwargs = {
            "model": path,
            "tokenizer": resolve_model(tokenizer) if tokenizer else None,
            "dtype": dtype or ("float32" if on_cpu else "auto"),
            "max_model_len": max_model_len,
            "enable_prefix_caching": True,
            "seed": seed,
            "max_logprobs": max_logprobs,
        }
        if on_cpu:
            kwargs.update(enforce_eager=True, block_size=block_size or 32)
        elif block_size:
            kwargs["block_size"] = block_size
        kwargs.update(engine_kwargs)
        return cls(LLM(**kwargs), max_logprobs=max_logprobs)

    def close(self) -> None:
        """Free the engine; idempotent.

        Engines run in-process (``VLLM_ENABLE_V1_MULTIPROCESSING=0``) and share vLLM's process-wide distributed
        state, which an engine core's ``shutdown`` tears down: an engine still open in the same process then fails
        at its next step ("pipeline model parallel group is not initialized"). So the core is shut down (stopping
        the workers of a tensor-parallel engine, which hold their GPUs' memory) only when this is the last open
        engine of the process; otherwise its shutdown-on-collection is disarmed and our references are dropped,
        so that the weights and KV cache are collected without it. Either way ``free_memory`` collects what is
        unreferenced and empties the CUDA cache. A ``borrow``ed engine is its owner's: only this backend's requests
        in flight are aborted and its references dropped."""
        if self.llm is None:
            return
        if not self.owns_engine:
            if self._flights:
                self.engine.abort_request(list(self._flights))
            self.llm = self.engine = None
            self._flights.clear()
            self._ready.clear()
            return
        core = getattr(self.engine, "engine_core", None)
        if core is not None and VLLMBackend.open_engines == 1:
            core.shutdown()
        elif core is not None and getattr(core, "_finalizer", None) is not None:
            core._finalizer.detach()  # else collecting the core would shut it down, and the shared state with it
        VLLMBackend.open_engines -= 1
        self.llm = self.engine = None
        self._flights.clear()
        self._ready.clear()
        free_memory()

    def reset_prefix_cache(self) -> None:
        """Forget every cached KV block (so that a timed run does not start with blocks a warm-up left behind)."""
        self.llm.reset_prefix_cache()

    # -- Backend protocol -----------------------------------------------------------------------------
    def open(self, prompt_ids: Sequence[int]) -> BaseSession:
        return BaseSession(self, prompt_ids)

    def submit(self, op: Op) -> None:
        flight = _Flight(op, time.perf_counter())
        if isinstance(op, Decode):
            op.session.count(requests=1)
            op.session.calls += 1
            if min(op.max_new, op.session.room()) <= 0:
                self._ready.append(Done(op, [], 0.0))
                return
        else:
            op.session.count(requests=1, check_tokens=len(op.ids))
            op.session.calls += 1
            if not op.ids:
                self._ready.append(Done(op, Scored((), () if op.prob_of is not None else None), 0.0))
                return
            if len(op.ids) > op.session.room():
                raise BackendError(f"vllm: scoring {len(op.ids)} tokens overflows the context")
        self._launch(flight)

    def pending(self) -> int:
        return len(self._flights) + len(self._ready)

    def poll(self) -> list[Done]:
        done, self._ready = self._ready, []
        if done or not self._flights:
            return done
        self._count_step()
        for output in self.engine.step():
            if output.finished:
                flight = self._flights.pop(output.request_id)
                result = self._finish(flight, output)
                if result is not None:
                    done.append(result)
        return done

    def _count_step(self) -> None:
        new = [f for f in self._flights.values() if not f.stepped]
        self.steps.steps += 1
        self.steps.with_checks += any(isinstance(f.op, Score) for f in new)
        self.steps.with_prefills += any(isinstance(f.op, Decode) for f in new)
        self.steps.only_new += len(new) == len(self._flights)
        for f in new:
            f.stepped = True

    # -- requests -------------------------------------------------------------------------------------
    def _launch(self, flight: _Flight) -> None:
        from vllm.inputs import TokensPrompt

        op = flight.op
        if isinstance(op, Decode):
            prompt, params = op.session.ids + flight.out, self._decode_params(flight)
        else:
            prompt, params = op.session.ids + list(op.ids), self._score_params(op, flight.uncached)
        flight.stepped = False
        request_id = f"{self._id_prefix}{self._next_id}"
        self._next_id += 1
        self.engine.add_request(request_id, TokensPrompt(prompt_token_ids=prompt), params)
        self._flights[request_id] = flight

    def _decode_params(self, flight: _Flight):
        from vllm import SamplingParams

        op: Decode = flight.op
        limit = min(op.max_new, op.session.room()) - len(flight.out)
        banning = op.ban_first and not flight.out
        sampling = op.sampling
        seed = None if sampling.greedy else zlib.crc32(f"{sampling.seed}:{op.session.calls}:{len(flight.out)}".encode())
        stop = resumed_stop_texts(self.tokenizer, flight.out, op.stop_texts)
        return SamplingParams(
            max_tokens=1 if banning else limit,
            temperature=sampling.temperature,
            top_p=sampling.top_p,
            seed=seed,
            stop_token_ids=sorted(op.stop_ids),
            stop=list(stop) or None,  # text tags: matched in the detokenized output; the token ids are kept
            include_stop_str_in_output=True,
            allowed_token_ids=[t for t in range(self.vocab_size) if t not in op.ban_first] if banning else None,
            detokenize=bool(stop),
            skip_special_tokens=False,
        )

    def _score_params(self, op: Score, uncached: bool):
        from vllm import SamplingParams

        k = self._top_k_for(op)
        return SamplingParams(
            max_tokens=1,
            temperature=0.0,
            prompt_logprobs=k,
            logprobs=k,
            skip_reading_prefix_cache=uncached,
            detokenize=False,
            skip_special_tokens=False,
        )

    def _top_k_for(self, op: Score) -> int:
        """Enough top entries that any token with P >= prob_floor is among them (at most 1/floor such tokens)."""
        if op.prob_of is None:
            return 1
        if op.prob_floor <= 0:
            return self.max_logprobs
        return max(1, min(self.max_logprobs, math.floor(1 / op.prob_floor)))

    # -- results --------------------------------------------------------------------------------------
    def _finish(self, flight: _Flight, output) -> Done | None:
        op, s = flight.op, flight.op.session
        computed = len(output.prompt_token_ids) - (output.num_cached_tokens or 0)
        if isinstance(op, Score):
            start = len(s.ids)
            if (output.num_cached_tokens or 0) > start and not flight.uncached:
                flight.uncached = True  # the cache covered part of the chunk: its rows were not computed
                self._launch(flight)
                return None
            s.count(forward_calls=1, computed_tokens=computed)
            s.ids.extend(op.ids)
            return Done(op, _scored(output, start, len(op.ids), op.prob_of), time.perf_counter() - flight.t0)
        new = list(output.outputs[0].token_ids)
        s.count(forward_calls=len(new), decode_tokens=len(new), computed_tokens=computed + max(len(new) - 1, 0))
        flight.out += new
        limit = min(op.max_new, s.room())  # the session grows only when the op is done
        stopped = bool(new) and (new[-1] in op.stop_ids or new[-1] in self.eos_ids
                                 or isinstance(output.outputs[0].stop_reason, str))
        if op.ban_first and len(flight.out) == len(new) and not stopped and len(flight.out) < limit:
            self._launch(flight)  # the banned first token is settled; decode the rest
            return None
        s.ids.extend(flight.out)
        return Done(op, flight.out, time.perf_counter() - flight.t0)


def release_foreign_engine(llm) -> None:
    """Let go of an engine this project did not start (TRL's colocated one) once its owner is done with it, by
    ``VLLMBackend.close``'s rule: while an engine of ours is open in this process, disarm the foreign core's
    shutdown-on-collection (its shutdown would tear down the distributed state ours share); otherwise leave its
    shutdown to its owner."""
    core = getattr(llm.llm_engine, "engine_core", None)
    if VLLMBackend.open_engines and getattr(core, "_finalizer", None) is not None:
        core._finalizer.detach()


def _top1(entry) -> tuple[int, float]:
    token, lp = min(entry.items(), key=lambda kv: kv[1].rank)
    return token, lp.logprob


def _scored(output, start: int, n: int, prob_of: int | None) -> Scored:
    """Rows for the chunk: prompt_logprobs[p + 1] holds the prediction made at position p."""
    rows = [output.prompt_logprobs[p + 1] for p in range(start, start + n - 1)]
    rows.append(output.outputs[0].logprobs[0])
    top1 = tuple(_top1(r)[0] for r in rows)
    if prob_of is None:
        return Scored(top1)
    prob = tuple(math.exp(r[prob_of].logprob) if prob_of in r else 0.0 for r in rows)
    return Scored(top1, prob)
