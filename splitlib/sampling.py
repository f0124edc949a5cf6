"""How a model samples: the one ``Sampling`` every layer passes around (backend ops, the decoder service,
evaluation protocols, GRPO rollouts). The length cap is not part of it: it is passed separately, as a backend op's
``max_new`` or a call's ``max_new_tokens``."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Sampling:
    temperature: float = 0.0  # 0 = greedy
    top_p: float = 1.0
    top_k: int = 0  # 0 = off; recorded from TRL's config, not applied by the decoder (it warns)
    seed: int = 0  # a backend op: the session's sampling seed; a decoder call: the run seed item seeds derive from

    def __post_init__(self) -> None:
        if self.temperature < 0:
            raise ValueError(f"temperature={self.temperature}: expected >= 0 (0 = greedy)")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p={self.top_p}: expected 0 < top_p <= 1")
        if self.top_k < 0:
            raise ValueError(f"top_k={self.top_k}: expected >= 0 (0 = off)")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


GREEDY = Sampling()
