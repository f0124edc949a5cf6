"""Hardware profiles: how fast each model prefills and decodes on some machine.

A ``HardwareProfile`` maps model keys ("1.5B", "32B", …) to a ``ModelThroughput``. Three sources:

- ``a6000-paper``: the paper's throughput table (PAPER_FACTS §9), exactly;
- ``roofline-<device>``: a bandwidth/compute roofline estimate from published GPU specs (``roofline_profile``);
- a JSON file written by ``HardwareProfile.save`` (e.g. by ``splitlib.profiling`` from measurements), which may
  carry context-length-dependent curves and per-call overheads.

``get_profile(name_or_path)`` resolves any of these.
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import numbers
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from splitlib.paper_results import a6000_throughput
from splitlib.registry import Registry, UnknownNameError
from splitlib.runs import atomic_write_json

log = logging.getLogger(__name__)

Curve = tuple[tuple[float, float], ...]  # (context_tokens, tok_per_s) points, context strictly increasing
_MAX_DECODE_STEPS = 32  # sub-intervals of the midpoint rule integrating per-token decode time over context


def _check_rate(what: str, value: float) -> None:
    if not (isinstance(value, numbers.Real) and math.isfinite(value) and value > 0):
        raise ValueError(f"{what}={value!r}: expected a positive, finite number of tokens per second")


def _check_curve(what: str, curve: Curve) -> None:
    contexts = [c for c, _ in curve]
    if any(c < 0 for c in contexts) or any(b <= a for a, b in itertools.pairwise(contexts)):
        raise ValueError(f"{what} contexts {contexts}: expected non-negative, strictly increasing context lengths")
    for ctx, rate in curve:
        _check_rate(f"{what} at context {ctx}", rate)


def _as_curve(points: Any) -> Curve:
    return tuple((float(c), float(r)) for c, r in points)


@dataclass(frozen=True)
class ModelThroughput:
    """Batch-1 throughput of one model on one machine.

    The scalar rates are used when no curve is given; a curve (linear interpolation, flat beyond its ends)
    replaces the scalar wherever a context length is known. ``*_call_s`` is a fixed cost per call (one prefill
    request, one decode request), on top of tokens / rate.
    """

    prefill_tok_per_s: float
    decode_tok_per_s: float
    prefill_curve: Curve = ()
    decode_curve: Curve = ()
    prefill_call_s: float = 0.0
    decode_call_s: float = 0.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "prefill_curve", _as_curve(self.prefill_curve))
        object.__setattr__(self, "decode_curve", _as_curve(self.decode_curve))
        _check_rate("prefill_tok_per_s", self.prefill_tok_per_s)
        _check_rate("decode_tok_per_s", self.decode_tok_per_s)
        _check_curve("prefill_curve", self.prefill_curve)
        _check_curve("decode_curve", self.decode_curve)
        for name in ("prefill_call_s", "decode_call_s"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{name}={value!r}: expected a non-negative number of seconds")

    def prefill_rate(self, context_tokens: float = 0.0) -> float:
        """Prefill tokens per second at this context length."""
        return _interp(self.prefill_curve, self.prefill_tok_per_s, context_tokens)

    def decode_rate(self, context_tokens: float = 0.0) -> float:
        """Decode tokens per second at this context length."""
        return _interp(self.decode_curve, self.decode_tok_per_s, context_tokens)

    def prefill_s(self, n_tokens: float, context_tokens: float = 0.0, calls: int = 1) -> float:
        """Seconds to prefill ``n_tokens`` onto a cache of ``context_tokens`` (rate taken mid-way)."""
        if n_tokens <= 0:
            return 0.0
        return calls * self.prefill_call_s + n_tokens / self.prefill_rate(context_tokens + n_tokens / 2)

    def decode_s(self, n_tokens: float, context_tokens: float = 0.0, calls: int = 1) -> float:
        """Seconds to decode ``n_tokens`` after ``context_tokens``: per-token time integrated over the context."""
        if n_tokens <= 0:
            return 0.0
        if not self.decode_curve:
            return calls * self.decode_call_s + n_tokens / self.decode_tok_per_s
        steps = max(1, min(_MAX_DECODE_STEPS, math.ceil(n_tokens)))
        mids = context_tokens + (np.arange(steps) + 0.5) * (n_tokens / steps)
        per_token_s = 1.0 / np.interp(mids, *zip(*self.decode_curve))
        return calls * self.decode_call_s + float(per_token_s.mean()) * n_tokens


def _interp(curve: Curve, scalar: float, context_tokens: float) -> float:
    if not curve:
        return scalar
    xs, ys = zip(*curve)
    return float(np.interp(context_tokens, xs, ys))


@dataclass(frozen=True)
class HardwareProfile:
    """Throughput of several models on one machine, with where the numbers came from."""

    name: str
    device: str
    models: dict[str, ModelThroughput]
    source: str  # "paper", "roofline", "measured", …
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.models:
            raise ValueError(f"profile {self.name!r} has no models: give at least one model key")
        for key, tp in self.models.items():
            if not isinstance(tp, ModelThroughput):
                raise TypeError(f"profile {self.name!r} model {key!r}: expected a ModelThroughput, got {tp!r}")

    def model(self, key: str) -> ModelThroughput:
        """The throughput of model ``key``; an unknown key names the available ones."""
        if key not in self.models:
            raise UnknownNameError(f"model {key!r} is not in hardware profile {self.name!r}; "
                                   f"allowed: {', '.join(self.models)}")
        return self.models[key]

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, row: dict) -> HardwareProfile:
        missing = {"name", "device", "models", "source"} - set(row)
        if missing:
            raise ValueError(f"hardware profile JSON lacks keys {sorted(missing)}; "
                             "it needs name, device, models, source (and optionally meta)")
        models = {key: ModelThroughput(**tp) for key, tp in row["models"].items()}
        return cls(row["name"], row["device"], models, row["source"], row.get("meta", {}))

    def save(self, path: str | Path) -> Path:
        return atomic_write_json(path, self.to_json())

    @classmethod
    def load(cls, path: str | Path) -> HardwareProfile:
        return cls.from_json(json.loads(Path(path).read_text(encoding="utf-8")))


# ---------------------------------------------------------------------------------------------------------
# the paper's table (PAPER_FACTS §9): A6000, tokens/s, 1 GPU below 8B, 2 GPUs otherwise (splitlib/paper_data)
def paper_a6000_profile() -> HardwareProfile:
    """The throughput table the paper's latency simulator used, exactly (``paper_results.a6000_throughput``)."""
    table = a6000_throughput()
    models = {r.model: ModelThroughput(float(r.prefill_tok_per_s), float(r.decode_tok_per_s))
              for r in table.itertuples()}
    gpus = {r.model: int(r.gpus) for r in table.itertuples()}
    meta = {"gpus": gpus, "reference": "SplitReason (2025), Figure 5 simulator; PAPER_FACTS §9",
            "source": sorted(set(table["source"]))}
    return HardwareProfile("a6000-paper", "NVIDIA RTX A6000", models, "paper", meta)


# ---------------------------------------------------------------------------------------------------------
# roofline estimate from published specs
Device = Literal["A6000", "H100", "H200"]


@dataclass(frozen=True)
class DeviceSpec:
    memory_bandwidth_bytes_per_s: float
    bf16_dense_flop_per_s: float
    memory_bytes: float
    label: str


# Vendor datasheets: RTX A6000 768 GB/s, 309.7 TFLOP/s tensor with sparsity (154.8 dense), 48 GB;
# H100 SXM 3.35 TB/s, 989 TFLOP/s dense bf16, 80 GB; H200 SXM 4.8 TB/s, 989 TFLOP/s dense bf16, 141 GB.
DEVICE_SPECS: Registry[DeviceSpec] = Registry("device with a published spec", {
    "A6000": DeviceSpec(768e9, 154.8e12, 48e9, "NVIDIA RTX A6000"),
    "H100": DeviceSpec(3.35e12, 989e12, 80e9, "NVIDIA H100 SXM"),
    "H200": DeviceSpec(4.8e12, 989e12, 141e9, "NVIDIA H200 SXM"),
})
# Fraction of peak a batch-1 engine reaches: decode streams every weight once per token (memory bound);
# prefill runs ~2 FLOPs per parameter per token (compute bound). KV-cache traffic and attention FLOPs are ignored.
DECODE_BANDWIDTH_EFFICIENCY = 0.7
PREFILL_FLOPS_EFFICIENCY = 0.5
BYTES_PER_PARAM = 2  # bf16 weights
# Parameter counts of the paper's models (DeepSeek-R1-Distill: Qwen2.5 1.5B/7B/14B/32B, Llama-3.1-8B, Llama-3.3-70B).
PAPER_MODEL_PARAMS: dict[str, float] = {
    "1.5B": 1.54e9, "7B": 7.62e9, "8B": 8.03e9, "14B": 14.8e9, "32B": 32.8e9, "70B": 70.6e9,
}


def roofline_profile(device: Device, models: dict[str, float] | None = None, n_gpus: int = 1) -> HardwareProfile:
    """Roofline throughput: decode = bandwidth·eff / (2 bytes·params), prefill = FLOP/s·eff / (2·params).

    ``n_gpus`` models ideal tensor parallelism (bandwidth and FLOP/s scale linearly); ``models`` maps a key to
    a parameter count (default: the paper's models).
    """
    spec, models = DEVICE_SPECS[device], models or PAPER_MODEL_PARAMS
    if n_gpus < 1:
        raise ValueError(f"n_gpus={n_gpus!r}: expected at least 1")
    out, fits = {}, {}
    for key, n_params in models.items():
        if not n_params > 0:
            raise ValueError(f"model {key!r} has {n_params!r} parameters: expected a positive count")
        decode = n_gpus * spec.memory_bandwidth_bytes_per_s * DECODE_BANDWIDTH_EFFICIENCY / (BYTES_PER_PARAM * n_params)
        prefill = n_gpus * spec.bf16_dense_flop_per_s * PREFILL_FLOPS_EFFICIENCY / (2 * n_params)
        out[key] = ModelThroughput(prefill, decode)
        fits[key] = BYTES_PER_PARAM * n_params <= n_gpus * spec.memory_bytes
        if not fits[key]:
            log.warning("model %s (%.3g params) does not fit in %d x %s; its roofline numbers are notional",
                        key, n_params, n_gpus, device)
    meta = {"n_gpus": n_gpus, "spec": asdict(spec), "params": dict(models), "weights_fit_in_memory": fits,
            "decode_bandwidth_efficiency": DECODE_BANDWIDTH_EFFICIENCY,
            "prefill_flops_efficiency": PREFILL_FLOPS_EFFICIENCY}
    return HardwareProfile(f"roofline-{device}", spec.label, out, "roofline", meta)


# ---------------------------------------------------------------------------------------------------------
BUILTIN_PROFILES: Registry[Callable[[], HardwareProfile]] = Registry("built-in hardware profile", {
    "a6000-paper": paper_a6000_profile,
    "roofline-A6000": lambda: roofline_profile("A6000"),
    "roofline-H100": lambda: roofline_profile("H100"),
    "roofline-H200": lambda: roofline_profile("H200"),
})


def get_profile(name_or_path: str | Path | HardwareProfile) -> HardwareProfile:
    """A built-in profile by name, a profile JSON file by path, or the profile itself."""
    if isinstance(name_or_path, HardwareProfile):
        return name_or_path
    if str(name_or_path) in BUILTIN_PROFILES:
        return BUILTIN_PROFILES[str(name_or_path)]()
    path = Path(name_or_path)
    if path.is_file():
        return HardwareProfile.load(path)
    raise ValueError(
        f"hardware profile {str(name_or_path)!r} is neither a built-in ({', '.join(BUILTIN_PROFILES)}) "
        "nor an existing JSON file; pass one of those names or a path written by HardwareProfile.save"
    )
