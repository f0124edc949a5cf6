"""What a cooperative decode is asked to do: ``DecodeConfig`` (caps, chunk size, take-back rule, how the tags are
written, sampling) and ``RolePrompts`` (ready prompt texts per role, in place of a question)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from splitlib.sampling import Sampling

Takeback = Literal["greedy", "threshold"]
TagChoice = Literal["auto", "token", "text"]
TextTakeback = Literal["probe", "first_token"]


@dataclass(frozen=True)
class DecodeConfig:
    max_new_tokens: int = 16384  # total generated tokens (both models, tags included; the prompt does not count)
    big_chunk_tokens: int = 64  # big-model tokens per chunk before the small model checks them
    max_offload_tokens: int = 512  # per-offload cap: the span is closed with a forced </bigmodel>
    takeback: Takeback = "greedy"  # greedy: argmax is </bigmodel>; threshold: P(</bigmodel>) >= takeback_threshold
    takeback_threshold: float = 0.5
    temperature: float = 0.0  # 0 = greedy decoding (both models)
    top_p: float = 1.0
    seed: int = 0  # sampling seed of the run; per-problem seeds derive from it
    reference: bool = False  # released-code check: probe continuations at every prefix of the chunk
    probe_tokens: int = 8  # reference: tokens per probe continuation
    # how the models write <bigmodel>/</bigmodel>: auto = per tokenizer, single tokens where it has both, else text
    # (several tokens each; the paper's checkpoints); token / text force one (text also works over single tokens)
    tags: TagChoice = "auto"
    # text tags: a candidate </bigmodel> start read in the one-pass check is confirmed by a short greedy probe
    # (probe), or taken as it is (first_token: no probes; a "<" that starts other text hands back too)
    text_takeback: TextTakeback = "probe"

    def __post_init__(self) -> None:
        for name in ("max_new_tokens", "big_chunk_tokens", "max_offload_tokens", "probe_tokens"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)}: expected a positive number of tokens")
        if self.takeback not in ("greedy", "threshold"):
            raise ValueError(f"takeback={self.takeback!r}: expected 'greedy' or 'threshold'")
        if self.tags not in ("auto", "token", "text"):
            raise ValueError(f"tags={self.tags!r}: expected 'auto', 'token' or 'text'")
        if self.text_takeback not in ("probe", "first_token"):
            raise ValueError(f"text_takeback={self.text_takeback!r}: expected 'probe' or 'first_token'")
        if not 0 < self.takeback_threshold <= 1:
            raise ValueError(f"takeback_threshold={self.takeback_threshold}: expected 0 < threshold <= 1")
        Sampling(self.temperature, self.top_p)  # validates both

    @classmethod
    def reference_preset(cls, official: bool = True, **overrides) -> DecodeConfig:
        """The released code: 32-token chunks and a 288-token cap (official results) or 64/576 (code default)."""
        chunk, cap = (32, 288) if official else (64, 576)
        return cls(**{"big_chunk_tokens": chunk, "max_offload_tokens": cap, "reference": True, **overrides})


@dataclass(frozen=True)
class RolePrompts:
    """Ready prompt texts per role (instead of a question)."""

    small: str
    big: str
