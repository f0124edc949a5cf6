"""``openai``: a client of any OpenAI-compatible COMPLETIONS server (e.g. a vLLM server with a 32B model on
other machines). Sessions are token lists; every op is one HTTP request over the whole context, issued from a
thread pool so that many sessions' requests are in flight together.

- Prompts are sent as token ids (the completions API allows arrays of tokens; ``token_prompts=False`` sends text).
- Generated token ids come from vLLM's ``return_token_ids`` extension; a server without it gets its text
  re-encoded with the local tokenizer. Stop texts (text tags) go as ``stop`` with the matched text kept.
- The take-back check is ``echo=True, logprobs=k, max_tokens=1``: the top entries of each prompt position.
  (A vLLM server recomputes the whole context for prompt logprobs: it does not read its prefix cache for them.)
- Every request has a timeout; connection failures and timeouts raise ``BackendUnreachable`` naming the URL.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait

from splitlib.backends.base import (
    BackendError,
    BackendUnreachable,
    BaseSession,
    Counters,
    Decode,
    Done,
    Op,
    Score,
    Scored,
    eos_ids_of,
    resolve_model,
    resumed_stop_texts,
    text_stop_hit,
)

log = logging.getLogger(__name__)


class OpenAIBackend:
    name = "openai"
    concurrent = True
    remote = True  # the server works on its own: the scheduler polls it without waiting while it has other work

    def __init__(self, client, model: str, tokenizer, max_model_len: int, base_url: str,
                 token_prompts: bool = True, max_workers: int = 16, max_logprobs: int = 20) -> None:
        self.client, self.model, self.tokenizer = client, model, tokenizer
        self.max_model_len, self.base_url = max_model_len, base_url
        self.token_prompts, self.max_logprobs = token_prompts, max_logprobs
        self.eos_ids = eos_ids_of(tokenizer, None)
        self.vocab_size = len(tokenizer)  # ids the model can produce (the model config's, where known)
        self.counters = Counters()
        self._pool = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="openai-backend")
        self._futures: dict[Future, tuple[Op, float]] = {}

    @classmethod
    def load(cls, model: str | None = None, *, base_url: str, api_key_env: str = "OPENAI_API_KEY",
             timeout_s: float = 60.0, max_retries: int = 2, tokenizer: str | None = None,
             max_model_len: int | None = None, token_prompts: bool = True, max_workers: int = 16) -> OpenAIBackend:
        """Connect, check the server answers and serves ``model`` (default: its only/first model)."""
        import openai
        from transformers import AutoTokenizer

        client = openai.OpenAI(base_url=base_url, api_key=os.environ.get(api_key_env) or "EMPTY",
                               timeout=timeout_s, max_retries=max_retries)
        served = _call(base_url, lambda: client.models.list().data)
        names = [m.id for m in served]
        model = model or (names[0] if names else None)
        entry = next((m for m in served if m.id == model), None)
        if entry is None:
            raise BackendError(f"server at {base_url} does not serve {model!r}; it serves {names}")
        max_len = max_model_len or (entry.model_extra or {}).get("max_model_len")
        if not max_len:
            raise BackendError(f"server at {base_url} does not report max_model_len for {model!r}: pass max_model_len")
        source = resolve_model(tokenizer or model)
        try:
            tok = AutoTokenizer.from_pretrained(source)
        except (OSError, ValueError) as err:
            raise BackendError(f"openai backend needs the served model's tokenizer: pass tokenizer=DIR ({err})") from err
        backend = cls(client, model, tok, int(max_len), base_url, token_prompts, max_workers)
        backend.vocab_size = _vocab_size(source, tok)
        return backend

    # -- Backend protocol -----------------------------------------------------------------------------
    def open(self, prompt_ids: Sequence[int]) -> BaseSession:
        return BaseSession(self, prompt_ids)

    def submit(self, op: Op) -> None:
        op.session.count(requests=1, check_tokens=len(op.ids) if isinstance(op, Score) else 0)
        op.session.calls += 1
        job = self._decode if isinstance(op, Decode) else self._score
        self._futures[self._pool.submit(job, op)] = (op, time.perf_counter())

    def pending(self) -> int:
        return len(self._futures)

    def poll(self, timeout_s: float | None = 0.5) -> list[Done]:
        """Requests answered so far, waiting up to ``timeout_s`` for the first (0: look without waiting)."""
        if not self._futures:
            return []
        finished, _ = wait(list(self._futures), timeout=timeout_s, return_when=FIRST_COMPLETED)
        done = []
        for fut in finished:
            op, t0 = self._futures.pop(fut)
            value = fut.result()  # re-raises BackendError / BackendUnreachable from the worker
            self._account(op, value)
            done.append(Done(op, value, time.perf_counter() - t0))
        return done

    def close(self) -> None:
        """Cancel the requests not yet sent, stop the worker threads and close the HTTP client (idempotent)."""
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._futures.clear()
        close = getattr(self.client, "close", None)
        if close is not None:
            close()

    # -- requests (worker threads: no session mutation here) ----------------------------------------
    def _create(self, **body):
        return _call(self.base_url, lambda: self.client.completions.create(model=self.model, **body))

    def _prompt(self, ids: Sequence[int]):
        return list(ids) if self.token_prompts else self.tokenizer.decode(ids)

    def _decode(self, op: Decode) -> list[int]:
        limit = min(op.max_new, op.session.room())
        if limit <= 0:
            return []
        out: list[int] = []
        if op.ban_first:  # settle the first token with the banned ones excluded, then decode the rest
            out = self._complete(op, op.session.ids, 1, op.ban_first, op.stop_texts)
            if (not out or out[-1] in op.stop_ids | self.eos_ids or limit == 1
                    or text_stop_hit(self.tokenizer, out, op.stop_texts)):
                return out
        stop = resumed_stop_texts(self.tokenizer, out, op.stop_texts)
        return out + self._complete(op, op.session.ids + out, limit - len(out), frozenset(), stop)

    def _complete(self, op: Decode, ids: list[int], max_tokens: int, ban: frozenset[int],
                  stop: tuple[str, ...] = ()) -> list[int]:
        s = op.sampling
        extra = {"stop_token_ids": sorted(op.stop_ids), "return_token_ids": True, "skip_special_tokens": False,
                 "include_stop_str_in_output": True}
        if ban:
            extra["allowed_token_ids"] = [t for t in range(self.vocab_size) if t not in ban]
        body = {"stop": list(stop)} if stop else {}
        resp = self._create(prompt=self._prompt(ids), max_tokens=max_tokens, temperature=s.temperature,
                            top_p=s.top_p, seed=None if s.greedy else s.seed + op.session.calls,
                            extra_body=extra, **body)
        return self._token_ids(resp.choices[0])

    def _token_ids(self, choice) -> list[int]:
        extra = choice.model_extra or {}
        if extra.get("token_ids") is not None:
            return [int(t) for t in extra["token_ids"]]
        ids = self.tokenizer.encode(choice.text, add_special_tokens=False)
        stop = extra.get("stop_reason")
        if choice.finish_reason == "stop" and not isinstance(stop, str):  # a stop text is in the text already
            ids.append(int(stop) if isinstance(stop, int) else min(self.eos_ids))
        return ids

    def _score(self, op: Score) -> Scored:
        if not op.ids:
            return Scored((), () if op.prob_of is not None else None)
        k = 1 if op.prob_of is None else max(1, min(self.max_logprobs, math.floor(1 / op.prob_floor))
                                               if op.prob_floor > 0 else self.max_logprobs)
        ids = op.session.ids + list(op.ids)
        resp = self._create(prompt=self._prompt(ids), max_tokens=1, temperature=0.0, echo=True, logprobs=k,
                            extra_body={"return_tokens_as_token_ids": True, "skip_special_tokens": False})
        rows = resp.choices[0].logprobs.top_logprobs
        start = len(op.session.ids)
        table = [self._row(rows[p + 1]) for p in range(start, start + len(op.ids))]
        top1 = tuple(max(r, key=r.get) for r in table)
        prob = None if op.prob_of is None else tuple(math.exp(r[op.prob_of]) if op.prob_of in r else 0.0 for r in table)
        return Scored(top1, prob)

    def _row(self, entry: dict[str, float]) -> dict[int, float]:
        row = {}
        for key, logprob in entry.items():
            token = int(key[len("token_id:"):]) if key.startswith("token_id:") else self.tokenizer.convert_tokens_to_ids(key)
            row[token] = logprob
        return row

    def _account(self, op: Op, value) -> None:
        s = op.session
        if isinstance(op, Score):
            s.count(forward_calls=1, computed_tokens=len(s.ids) + len(op.ids))
            s.ids.extend(op.ids)
        else:
            s.count(forward_calls=len(value), decode_tokens=len(value), computed_tokens=len(s.ids) + len(value))
            s.ids.extend(value)


def _vocab_size(source: str, tokenizer) -> int:
    """The model's vocabulary size from its config (a tokenizer may list extra ids the model lacks)."""
    from transformers import AutoConfig

    try:
        size = getattr(AutoConfig.from_pretrained(source), "vocab_size", None)
    except (OSError, ValueError):
        size = None
    return min(int(size), len(tokenizer)) if size else len(tokenizer)


def _call(base_url: str, fn):
    """Run one client call; turn transport failures into errors that name the server."""
    import openai

    try:
        return fn()
    except openai.APITimeoutError as err:
        raise BackendUnreachable(f"OpenAI-compatible server at {base_url} timed out ({err})") from err
    except openai.APIConnectionError as err:
        raise BackendUnreachable(f"cannot reach OpenAI-compatible server at {base_url} ({err})") from err
    except openai.APIStatusError as err:
        raise BackendError(f"server at {base_url} answered HTTP {err.status_code}: {err.message}") from err
