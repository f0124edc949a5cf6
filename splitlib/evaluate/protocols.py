"""Evaluation protocols: parameters, not code paths (DESIGN "Evaluation protocol").

``paper`` = greedy, 16,384 tokens, 5 runs, mean ± sd of per-run accuracy with a t-interval; ``deepseek`` = T 0.6,
top-p 0.95, 32,768 tokens, n samples per problem, pass@1 with a bootstrap CI over problems; ``custom`` = built from
the settings given.
"""

from __future__ import annotations

from dataclasses import MISSING, dataclass, fields, replace
from typing import Any, Literal

from splitlib.registry import Registry, UnknownNameError
from splitlib.sampling import Sampling

Aggregate = Literal["runs", "pass@1"]


@dataclass(frozen=True)
class EvalProtocol:
    name: str
    temperature: float
    top_p: float
    max_new_tokens: int  # cap on generated tokens (the prompt does not count)
    samples: int  # per problem: independent runs ("runs") or samples ("pass@1")
    aggregate: Aggregate  # "runs": mean ± sd of per-run accuracy, t-interval; "pass@1": bootstrap over problems
    seed: int = 0  # run seed: per-sample seeds derive from it
    ci_level: float = 0.95
    n_boot: int = 2000  # bootstrap resamples for pass@1 intervals

    def __post_init__(self) -> None:
        checks = {
            "temperature": self.temperature >= 0,
            "top_p": 0 < self.top_p <= 1,
            "max_new_tokens": self.max_new_tokens >= 1,
            "samples": self.samples >= 1,
            "aggregate": self.aggregate in ("runs", "pass@1"),
            "ci_level": 0 < self.ci_level < 1,
            "n_boot": self.n_boot >= 1,
        }
        bad = [k for k, ok in checks.items() if not ok]
        if bad:
            values = ", ".join(f"{k}={getattr(self, k)!r}" for k in bad)
            raise ValueError(f"protocol {self.name!r}: impossible {values} (temperature ≥ 0, 0 < top_p ≤ 1, "
                             "max_new_tokens ≥ 1, samples ≥ 1, aggregate 'runs' or 'pass@1', 0 < ci_level < 1, "
                             "n_boot ≥ 1)")

    @property
    def sampling(self) -> Sampling:
        """What the decoder samples with (the run seed is not in it: it feeds the per-sample seeds)."""
        return Sampling(temperature=self.temperature, top_p=self.top_p)

    def record(self) -> dict:
        """The fields every sample row carries, in the samples file's order (the sampling settings among them are
        also in the row's provenance, which decides whether a resumed run reuses it)."""
        return {"protocol": self.name, "temperature": self.temperature, "top_p": self.top_p,
                "max_new_tokens": self.max_new_tokens}


PROTOCOLS: Registry[EvalProtocol] = Registry("evaluation protocol", {
    "paper": EvalProtocol("paper", temperature=0.0, top_p=1.0, max_new_tokens=16384, samples=5, aggregate="runs"),
    "deepseek": EvalProtocol("deepseek", temperature=0.6, top_p=0.95, max_new_tokens=32768, samples=64,
                             aggregate="pass@1"),
})


def make_protocol(name: str, **overrides: Any) -> EvalProtocol:
    """A registered protocol with ``overrides`` applied, or ``"custom"`` built from ``overrides`` alone."""
    allowed = [f.name for f in fields(EvalProtocol) if f.name != "name"]
    unknown = sorted(set(overrides) - set(allowed))
    if unknown:
        raise ValueError(f"unknown protocol settings {unknown}; allowed: {', '.join(allowed)}")
    if name == "custom":
        required = [f.name for f in fields(EvalProtocol) if f.name != "name" and f.default is MISSING]
        missing = [k for k in required if k not in overrides]
        if missing:
            raise ValueError(f"protocol 'custom' needs {', '.join(missing)}")
        return EvalProtocol(name="custom", **overrides)
    if name not in PROTOCOLS:  # the registry's own message would leave out "custom"
        raise UnknownNameError(f"protocol={name!r}: expected one of {', '.join([*PROTOCOLS, 'custom'])}")
    return replace(PROTOCOLS[name], **overrides)
