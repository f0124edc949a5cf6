"""The record of one cooperative generation: which model produced what, at what cost.

Produced by ``splitlib.decoding``; consumed by evaluation, rewards and the simulator. Plain frozen
dataclasses, JSON round-trippable (``to_json``/``from_json``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Literal

from splitlib import tags

Model = Literal["small", "big"]
# Why a segment ended: the small model asked for the big one ("handoff"), the small model took control back
# ("takeback"), the per-offload cap closed a span ("offload_cap"), end of sequence ("eos"), the total cap
# ("length"), a random-switch chunk boundary ("chunk").
Finish = Literal["handoff", "takeback", "offload_cap", "eos", "length", "chunk"]


@dataclass(frozen=True)
class Segment:
    model: Model
    token_ids: tuple[int, ...]  # tokens of this segment kept in the generation (the model's own tokenizer)
    text: str  # their text (for a small segment: including any control tag it emitted)
    prefill_tokens: int  # tokens this model ingested before/while producing the segment (prompt, catch-up)
    decode_tokens: int  # tokens this model decoded, discarded ones included
    discarded_tokens: int  # decoded but rolled back (big tokens after the take-back point)
    check_tokens: int  # tokens the OTHER model ingested to check this segment (the take-back pass)
    wall_s: float  # measured wall-clock seconds spent on this segment (both models' work for it)
    finish: Finish
    forward_calls: dict[str, int] = field(default_factory=dict)  # per model: forward passes for this segment


@dataclass(frozen=True)
class Trace:
    segments: tuple[Segment, ...]
    text: str  # the whole generation, tags included, never the prompt
    prompt_tokens: dict[str, int]  # per model: prompt length in its own tokens
    handoffs: int  # accepted <bigmodel> requests
    rejected_requests: int  # <bigmodel> requests refused by an offload budget
    finish: Finish  # how the whole generation ended ("eos" or "length")
    wall_s: float
    policy: str = "split"
    # notable events in order: {"kind": "rejected_request" | "dropped_tag", "model", "at_token", ...}; a
    # "dropped_tag" is a control tag written where the protocol has none (removed from the generation)
    events: tuple[dict, ...] = ()

    # -- derived totals -------------------------------------------------------------------------------
    def tokens(self, model: Model) -> int:
        """Generated tokens kept, by model."""
        return sum(len(s.token_ids) for s in self.segments if s.model == model)

    @property
    def total_tokens(self) -> int:
        return self.tokens("small") + self.tokens("big")

    @property
    def offload_token_fraction(self) -> float:
        total = self.total_tokens
        return self.tokens("big") / total if total else 0.0

    @property
    def offload_char_fraction(self) -> float:
        """Characters written by the big model over all characters of the generation without tags."""
        plain = len(tags.strip_tags(self.text))
        big = sum(len(s.text) for s in self.segments if s.model == "big")
        return big / plain if plain else 0.0

    def forward_calls(self, model: Model) -> int:
        return sum(s.forward_calls.get(model, 0) for s in self.segments)

    @property
    def truncated(self) -> bool:
        return self.finish == "length"

    def summary(self) -> dict:
        return {
            "tokens_small": self.tokens("small"),
            "tokens_big": self.tokens("big"),
            "offload_token_fraction": self.offload_token_fraction,
            "offload_char_fraction": self.offload_char_fraction,
            "handoffs": self.handoffs,
            "rejected_requests": self.rejected_requests,
            "finish": self.finish,
            "truncated": self.truncated,
            "wall_s": self.wall_s,
            "forward_calls_small": self.forward_calls("small"),
            "forward_calls_big": self.forward_calls("big"),
        }

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, row: dict) -> Trace:
        segs = tuple(Segment(**{**s, "token_ids": tuple(s["token_ids"])}) for s in row["segments"])
        return cls(**{**row, "segments": segs, "events": tuple(row.get("events", ()))})
