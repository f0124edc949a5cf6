"""``hf``: a transformers causal LM with a ``DynamicCache`` per session (CPU in float32, or CUDA).

gpt-fast-style steps: ``_forward`` (prefill of the pending tokens, or one decode step), ``_pick`` (greedy or
sampled next token), ``_decode`` (decode_n), ``_score`` (the one-pass check). Rollback crops the cache.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, DynamicCache, PreTrainedModel, PreTrainedTokenizerBase

from splitlib.backends.base import (
    BackendError,
    BaseSession,
    Counters,
    Decode,
    Done,
    Op,
    Queue,
    Sampling,
    Score,
    Scored,
    default_device,
    eos_ids_of,
    free_memory,
    resolve_model,
    text_stop_hit,
)

log = logging.getLogger(__name__)


class HFSession(BaseSession):
    def __init__(self, backend: HFBackend, prompt_ids: Sequence[int]) -> None:
        super().__init__(backend, prompt_ids)
        # no ``config=``: with one, sliding-window layers get window-sized caches that refuse ``crop`` once past the
        # window, and the take-back rollback needs crop; masking still applies the window (tested vs full forward)
        self.cache = DynamicCache()
        self.n_cached = 0  # ids[:n_cached] are in the cache; the rest are pending
        self.generator: torch.Generator | None = None

    def rollback(self, n: int) -> None:
        super().rollback(n)
        extra = self.n_cached - len(self.ids)
        if extra > 0:
            self.cache.crop(-extra)  # a negative count removes that many positions
            self.n_cached = len(self.ids)

    def pending(self) -> list[int]:
        return self.ids[self.n_cached :]


class HFBackend:
    name = "hf"
    concurrent = False

    def __init__(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, max_model_len: int | None = None):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.device = next(model.parameters()).device
        self.eos_ids = eos_ids_of(tokenizer, getattr(model.generation_config, "eos_token_id", None))
        self.max_model_len = max_model_len or int(model.config.max_position_embeddings)
        self.counters = Counters()
        self._queue = Queue()

    @classmethod
    def load(
        cls, model: str, device: str | None = None, dtype: str | None = None, tokenizer: str | None = None,
        max_model_len: int | None = None,
    ) -> HFBackend:
        """Load a directory or hub id; float32 on CPU (bf16 on CPU is refused), bfloat16 by default on CUDA."""
        path = resolve_model(model)
        device = device or default_device()
        dtype = dtype or ("float32" if device == "cpu" else "bfloat16")
        if device == "cpu" and dtype != "float32":
            raise ValueError(f"dtype={dtype!r} on CPU: use float32 (half precision on CPU is slow and inexact)")
        net = AutoModelForCausalLM.from_pretrained(path, dtype=getattr(torch, dtype)).to(device)
        tok = AutoTokenizer.from_pretrained(resolve_model(tokenizer) if tokenizer else path)
        return cls(net, tok, max_model_len=max_model_len)

    # -- Backend protocol -----------------------------------------------------------------------------
    def close(self) -> None:
        """Drop the model (its weights and, through the sessions' caches, nothing else of ours: sessions of a
        closed backend must not be used) and give the freed CUDA memory back."""
        if getattr(self, "model", None) is None:
            return
        self.model = None
        self._queue = Queue()
        free_memory()

    def open(self, prompt_ids: Sequence[int]) -> HFSession:
        return HFSession(self, prompt_ids)

    def submit(self, op: Op) -> None:
        self._queue.push(op)

    def pending(self) -> int:
        return len(self._queue)

    def poll(self) -> list[Done]:
        if not self._queue:
            return []
        op, t0 = self._queue.pop()
        with torch.inference_mode():
            value = self._decode(op) if isinstance(op, Decode) else self._score(op)
        return [Done(op, value, time.perf_counter() - t0)]

    # -- steps ----------------------------------------------------------------------------------------
    def _forward(self, s: HFSession, new_ids: list[int], keep: int) -> torch.Tensor:
        """Run ``new_ids`` through the model on top of the cache; float logits of the last ``keep`` positions."""
        x = torch.tensor([new_ids], device=self.device)
        out = self.model(input_ids=x, past_key_values=s.cache, use_cache=True, logits_to_keep=keep)
        s.n_cached += len(new_ids)
        s.count(forward_calls=1, computed_tokens=len(new_ids))
        return self._adjust(s.ids[: s.n_cached], out.logits[0].float())

    def _adjust(self, context: Sequence[int], logits: torch.Tensor) -> torch.Tensor:
        """Hook for test devices (``testing.SteeredHFBackend``); the real model's logits pass unchanged."""
        return logits

    def _prefill_pending(self, s: HFSession) -> torch.Tensor:
        """Logits after the whole context: prefill what is pending (at least the last token)."""
        if not s.pending():  # everything is cached: recompute the last position to get its logits
            s.cache.crop(-1)
            s.n_cached -= 1
        return self._forward(s, s.pending(), keep=1)[-1]

    def _pick(self, s: HFSession, logits: torch.Tensor, sampling: Sampling, ban: frozenset[int]) -> int:
        if ban:
            logits = logits.clone()
            logits[list(ban)] = float("-inf")
        if sampling.greedy:
            return int(logits.argmax())
        if s.generator is None:
            s.generator = torch.Generator().manual_seed(sampling.seed)
        probs = torch.softmax(logits / sampling.temperature, dim=-1).cpu()
        if sampling.top_p < 1:
            probs = _top_p(probs, sampling.top_p)
        return int(torch.multinomial(probs, 1, generator=s.generator))

    def _decode(self, op: Decode) -> list[int]:
        s: HFSession = op.session
        s.count(requests=1)
        s.calls += 1
        limit = min(op.max_new, s.room())
        out: list[int] = []
        if limit <= 0:
            return out
        stops = op.stop_ids | self.eos_ids
        logits = self._prefill_pending(s)
        ban = op.ban_first
        while True:
            token = self._pick(s, logits, op.sampling, ban)
            ban = frozenset()
            out.append(token)
            s.ids.append(token)
            if token in stops or len(out) >= limit or text_stop_hit(self.tokenizer, out, op.stop_texts):
                break
            logits = self._forward(s, [token], keep=1)[-1]
        s.count(decode_tokens=len(out))
        return out

    def _score(self, op: Score) -> Scored:
        s: HFSession = op.session
        s.count(requests=1, check_tokens=len(op.ids))
        s.calls += 1
        if not op.ids:
            return Scored((), () if op.prob_of is not None else None)
        if len(op.ids) > s.room():
            raise BackendError(f"hf: scoring {len(op.ids)} tokens overflows the context ({s.room()} left)")
        new = s.pending() + list(op.ids)
        s.ids.extend(op.ids)
        logits = self._forward(s, new, keep=len(op.ids))
        top1 = tuple(int(t) for t in logits.argmax(-1).tolist())
        prob = None
        if op.prob_of is not None:
            prob = tuple(float(p) for p in torch.softmax(logits, dim=-1)[:, op.prob_of].tolist())
        return Scored(top1, prob)


def _top_p(probs: torch.Tensor, top_p: float) -> torch.Tensor:
    """Keep the smallest set of most likely tokens whose mass reaches ``top_p`` (renormalised)."""
    sorted_p, order = probs.sort(descending=True)
    before = sorted_p.cumsum(-1) - sorted_p  # mass of the tokens ranked above each one
    sorted_p[before >= top_p] = 0.0
    kept = torch.zeros_like(probs).scatter(-1, order, sorted_p)
    return kept / kept.sum()
