"""Evaluation: methods × problems × samples → one graded record per sample; aggregation with confidence intervals.

Two layers, kept apart (as lighteval does):

1. ``evaluate(...)`` decodes and grades, appending one JSONL row per (method, problem, sample) to ``out_path``. It
   resumes: keys already in the file are skipped, rows are appended batch by batch (an interrupted run loses at
   most the batch in flight), and a torn last line from a kill is cut off (``splitlib.runs``). Grading happens in
   the calling thread, so math-verify's signal-based timeouts work when that is the main thread.
2. ``aggregate(rows, protocol)``, ``paired_difference``, ``gap_recovered``, ``write_metrics`` turn rows into numbers;
   ``results_table`` and ``accuracy_vs_offload`` present them (no I/O).

Protocols are parameters, not code paths (DESIGN "Evaluation protocol"): ``paper`` = greedy, 16,384 tokens, 5 runs,
mean ± sd of per-run accuracy with a t-interval; ``deepseek`` = T 0.6, top-p 0.95, 32,768 tokens, n samples per
problem, pass@1 with a bootstrap CI over problems. Per-sample seeds are hashed from (run seed, method, problem,
sample), so any subset reruns identically.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import MISSING, asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from tqdm.auto import tqdm

from splitlib import grading, runs
from splitlib.trace import Trace

log = logging.getLogger(__name__)

Aggregate = Literal["runs", "pass@1"]
KEY = ("method", "problem_id", "sample")  # one row per key in a samples file
_TIMING = ("wall_s", "batch_wall_s", "batch_size")  # measured, so they differ between reruns


class EvalResumeError(ValueError):
    """An existing samples file was written with other settings than this call asks for."""


# -- protocols ----------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Sampling:
    """What the decoder needs from a protocol."""

    temperature: float  # 0 = greedy
    top_p: float
    max_new_tokens: int  # cap on generated tokens (the prompt does not count)


@dataclass(frozen=True)
class EvalProtocol:
    name: str
    temperature: float
    top_p: float
    max_new_tokens: int
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
        return Sampling(self.temperature, self.top_p, self.max_new_tokens)


PROTOCOLS: dict[str, EvalProtocol] = {
    "paper": EvalProtocol("paper", temperature=0.0, top_p=1.0, max_new_tokens=16384, samples=5, aggregate="runs"),
    "deepseek": EvalProtocol("deepseek", temperature=0.6, top_p=0.95, max_new_tokens=32768, samples=64,
                             aggregate="pass@1"),
}


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
    if name not in PROTOCOLS:
        raise ValueError(f"protocol={name!r}: expected one of {', '.join([*PROTOCOLS, 'custom'])}")
    return replace(PROTOCOLS[name], **overrides)


# -- methods and seeds --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Method:
    """One row of a notebook's method table: a decoding policy on a (small, big) model pair."""

    name: str  # unique label; keys the samples file
    policy: str  # a splitlib.policies name: split, random_switch, small_only, big_only
    small: str | None  # small model: a key of the run's model table ("base", "sft", "grpo") or a directory
    big: str | None = None  # big model: a key or a directory; None where the policy never calls it
    policy_params: dict[str, Any] = field(default_factory=dict, hash=False)
    sweep: str | None = None  # budget sweep this method is a point of (joined by a line in plots)

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("a method needs a non-empty name")
        try:
            params = json.loads(json.dumps(dict(self.policy_params)))
        except TypeError as err:
            raise ValueError(f"method {self.name!r}: policy_params must be JSON values ({err})") from err
        object.__setattr__(self, "policy_params", params)

    def record(self) -> dict:
        """The fields every sample row of this method carries (and a resumed run must match)."""
        return {"policy": self.policy, "policy_params": self.policy_params, "small_model": self.small,
                "big_model": self.big, "sweep": self.sweep}


def methods_table(methods: Sequence[Method]) -> pd.DataFrame:
    return pd.DataFrame([{"method": m.name, **m.record()} for m in methods])


def sample_seed(run_seed: int, method: str, problem_id: str, sample: int) -> int:
    """A 31-bit seed for one (method, problem, sample), stable across runs, machines and subsets."""
    key = f"{run_seed}|{method}|{problem_id}|{sample}".encode()
    return int.from_bytes(hashlib.sha256(key).digest()[:4], "big") & 0x7FFFFFFF


# -- running ------------------------------------------------------------------------------------------------------
class DecodeFn(Protocol):
    """Decodes ``questions`` with ``method``'s policy and models, one trace per question, in the given order.

    A decoder may carry a JSON-able ``settings`` attribute (engine, chunk size, model directories, ...): it is
    recorded in every row under ``decoder``.
    """

    def __call__(self, method: Method, questions: list[str], seeds: list[int], sampling: Sampling) -> list[Trace]: ...


@dataclass(frozen=True)
class _Job:
    method: Method
    problem: Mapping[str, Any]
    sample: int
    seed: int

    @property
    def key(self) -> tuple[str, str, int]:
        return (self.method.name, self.problem["id"], self.sample)


def _as_problem(p: Any) -> dict:
    """A loader row (``{"id", "question", "answer"}``) or an object with those attributes (``toy.world.Problem``)."""
    get = p.get if isinstance(p, Mapping) else lambda k: getattr(p, k, None)
    row = {k: get(k) for k in ("id", "question", "answer")}
    missing = [k for k, v in row.items() if v is None]
    if missing:
        raise ValueError(f"problem {row['id']!r} lacks {missing}; use splitlib.eval_data loaders")
    return {"id": str(row["id"]), "question": str(row["question"]), "answer": str(row["answer"])}


def _unique(names: Sequence[str], what: str) -> None:
    dup = sorted(n for n, count in Counter(names).items() if count > 1)
    if dup:
        raise ValueError(f"duplicate {what} {dup}: each must be unique (they key the samples file)")


def _plan(methods: Sequence[Method], problems: Sequence[dict], protocol: EvalProtocol) -> list[_Job]:
    """Every (method, sample, problem) in a fixed order: methods, then runs, then problems."""
    return [_Job(m, p, s, sample_seed(protocol.seed, m.name, p["id"], s))
            for m in methods for s in range(protocol.samples) for p in problems]


def _protocol_record(protocol: EvalProtocol) -> dict:
    return {"protocol": protocol.name, **asdict(protocol.sampling)}


def _check_resume(existing: Mapping[tuple, dict], jobs: Sequence[_Job], protocol: EvalProtocol, path: Path) -> None:
    """Rows already in the file must come from the same method definitions, sampling settings and seeds."""
    sampling = asdict(protocol.sampling)
    for job in jobs:
        row = existing.get(job.key)
        if row is None:
            continue
        expected = {**job.method.record(), **sampling, "seed": job.seed}
        diff = {k: (row.get(k), v) for k, v in expected.items() if row.get(k) != v}
        if diff:
            raise EvalResumeError(
                f"{path} already holds {job.key} with other settings (file, now): {diff}. Use a new out_path, "
                "a new method name, or the settings the file was written with."
            )


def _batches(jobs: Sequence[_Job], batch_size: int) -> Iterator[list[_Job]]:
    """Consecutive jobs of one method, at most ``batch_size`` at a time."""
    batch: list[_Job] = []
    for job in jobs:
        if batch and (len(batch) == batch_size or job.method is not batch[0].method):
            yield batch
            batch = []
        batch.append(job)
    if batch:
        yield batch


def score_sample(job: _Job, trace: Trace, protocol: EvalProtocol, batch_wall_s: float, batch_size: int,
                 decoder: dict | None = None) -> dict:
    """Grade one trace (its generation only, never the prompt) and build its samples-file row."""
    verdict = grading.grade(trace.text, job.problem["answer"], truncated=trace.truncated)
    return {
        "method": job.method.name, "problem_id": job.problem["id"], "sample": job.sample, "seed": job.seed,
        **job.method.record(), **_protocol_record(protocol),
        "answer": job.problem["answer"], "extracted": verdict.extracted, "correct": verdict.correct,
        "reason": verdict.reason, "scorable": verdict.scorable, "grader_version": grading.GRADER_VERSION,
        **trace.summary(), "truncated": verdict.truncated,
        "batch_wall_s": batch_wall_s, "batch_size": batch_size, "decoder": decoder,
        "generation": trace.text, "trace": trace.to_json(),
    }


def _run_batch(batch: list[_Job], decode_fn: DecodeFn, protocol: EvalProtocol) -> list[dict]:
    method = batch[0].method
    start = time.perf_counter()
    traces = decode_fn(method, [j.problem["question"] for j in batch], [j.seed for j in batch], protocol.sampling)
    wall_s = time.perf_counter() - start
    if len(traces) != len(batch):
        raise RuntimeError(f"decode_fn returned {len(traces)} traces for {len(batch)} questions (method {method.name})")
    decoder = _decoder_settings(decode_fn)
    return [score_sample(j, t, protocol, wall_s, len(batch), decoder) for j, t in zip(batch, traces, strict=True)]


def _decoder_settings(decode_fn: DecodeFn) -> dict | None:
    settings = getattr(decode_fn, "settings", None)
    return json.loads(json.dumps(settings, default=str)) if settings is not None else None


def _warn_on_changes(existing: Mapping[tuple, dict], decode_fn: DecodeFn, path: Path) -> None:
    """Decoder settings and grader versions are recorded, not enforced (directories move between machines, a
    grader fix applies to old generations through ``regrade``): a change is logged."""
    if not existing:
        return
    now = _decoder_settings(decode_fn)
    if {json.dumps(r.get("decoder"), sort_keys=True) for r in existing.values()} != {json.dumps(now, sort_keys=True)}:
        log.warning("%s: rows were decoded with other decoder settings than now (%s); the file mixes them", path, now)
    graders = {r.get("grader_version") for r in existing.values()} - {grading.GRADER_VERSION}
    if graders:
        log.warning("%s: rows graded by %s; the current grader is %s — regrade(rows) re-scores them",
                    path, sorted(map(str, graders)), grading.GRADER_VERSION)


def evaluate(methods: Sequence[Method], problems: Sequence[Any], protocol: EvalProtocol, decode_fn: DecodeFn,
             out_path: str | Path, progress: bool = True, batch_size: int = 16) -> list[dict]:
    """Decode and grade every (method, problem, sample) not yet in ``out_path``; return the grid's rows.

    ``batch_size`` questions go to ``decode_fn`` at once (the engine decodes them concurrently); each finished batch
    is appended to the file before the next starts.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size}: expected ≥ 1")
    problems = [_as_problem(p) for p in problems]
    _unique([m.name for m in methods], "method names")
    _unique([p["id"] for p in problems], "problem ids")
    path = Path(out_path)
    jobs = _plan(methods, problems, protocol)
    existing = {tuple(r[k] for k in KEY): r for r in runs.read_jsonl(path)}
    _check_resume(existing, jobs, protocol, path)
    _warn_on_changes(existing, decode_fn, path)
    todo = [j for j in jobs if j.key not in existing]
    log.info("%s: %d of %d samples to run (%d already done)", path, len(todo), len(jobs), len(jobs) - len(todo))
    with tqdm(total=len(todo), disable=not progress, desc="evaluate", unit="sample") as bar:
        for batch in _batches(todo, batch_size):
            runs.append_jsonl(path, _run_batch(batch, decode_fn, protocol))
            bar.update(len(batch))
    done = {tuple(r[k] for k in KEY): r for r in runs.read_jsonl(path)}
    return [done[j.key] for j in jobs]


def regrade(rows: Sequence[dict], fallback: grading.Fallback = "none") -> list[dict]:
    """Rows graded again from their stored generation (e.g. after a grader change); nothing is decoded."""
    out = []
    for row in rows:
        v = grading.grade(row["generation"], row["answer"], truncated=row["truncated"], fallback=fallback)
        out.append({**row, "extracted": v.extracted, "correct": v.correct, "reason": v.reason,
                    "scorable": v.scorable, "grader_version": grading.GRADER_VERSION})
    return out


# -- the real engine as a DecodeFn --------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Item:
    """What ``decoding.decode_many`` reads: the question, and ``id`` as the key of all its randomness."""

    id: str
    question: str


class EngineDecoder:
    """A ``DecodeFn`` over ``splitlib.decoding.decode_many``; backends are loaded once per model and kept.

    ``model_dirs`` maps a method's ``small``/``big`` keys ("base", "sft", "grpo", "big") to directories or hub ids;
    a key not in it is used as a directory itself. ``decode`` sets the other ``DecodeConfig`` fields (chunk size,
    offload cap, take-back rule, reference mode); sampling settings always come from the protocol. Each sample's
    seed is handed to the engine as the problem key, from which the engine derives every random choice (sampling
    and policy), so one sample reruns identically in any batch.
    """

    def __init__(self, model_dirs: Mapping[str, str | Path], kind: str = "hf", big_kind: str | None = None,
                 decode: Mapping[str, Any] | None = None, backend_opts: Mapping[str, Mapping[str, Any]] | None = None):
        self.model_dirs = {k: str(v) for k, v in model_dirs.items()}
        self.kinds = {"small": kind, "big": big_kind or kind}
        self.decode = dict(decode or {})
        clash = sorted(set(self.decode) & {"max_new_tokens", "temperature", "top_p", "seed"})
        if clash:
            raise ValueError(f"decode settings {clash} come from the evaluation protocol; leave them out")
        self.backend_opts = {k: dict(v) for k, v in (backend_opts or {}).items()}  # per model key
        self._loaded: dict[tuple[str, str], Any] = {}

    @property
    def settings(self) -> dict:
        return {"engine": "splitlib.decoding", "kinds": self.kinds, "decode": self.decode,
                "model_dirs": self.model_dirs}

    def backend(self, role: str, ref: str | None) -> Any:
        if ref is None:
            return None
        from splitlib.backends import load_backend

        target = self.model_dirs.get(ref, ref)
        key = (self.kinds[role], target)
        if key not in self._loaded:
            log.info("loading the %s backend for %s (%s)", self.kinds[role], ref, target)
            self._loaded[key] = load_backend(self.kinds[role], target, **self.backend_opts.get(ref, {}))
        return self._loaded[key]

    def __call__(self, method: Method, questions: list[str], seeds: list[int], sampling: Sampling) -> list[Trace]:
        from splitlib.decoding import DecodeConfig, decode_many
        from splitlib.policies import make_policy

        policy = make_policy(method.policy, **method.policy_params)
        small = self.backend("small", method.small) if "small" in policy.models else None
        big = self.backend("big", method.big) if "big" in policy.models else None
        cfg = DecodeConfig(max_new_tokens=sampling.max_new_tokens, temperature=sampling.temperature,
                           top_p=sampling.top_p, seed=0, **self.decode)
        items = [_Item(id=f"seed-{seed}", question=q) for q, seed in zip(questions, seeds, strict=True)]
        return decode_many(items, small, big, policy, cfg, progress=False)


# -- aggregation --------------------------------------------------------------------------------------------------
_NUMERIC = ("offload_token_fraction", "offload_char_fraction", "tokens_small", "tokens_big", "handoffs",
            "rejected_requests", "wall_s")


def _frame(rows: Sequence[dict]) -> pd.DataFrame:
    """The scalar columns of sample rows (generations and traces left out)."""
    if not rows:
        raise ValueError("no sample rows to aggregate")
    df = pd.DataFrame([{k: v for k, v in r.items() if k not in ("generation", "trace", "policy_params")}
                       for r in rows])
    df["correct"] = df["correct"].astype(float)
    return df


def per_problem_accuracy(rows: Sequence[dict]) -> pd.DataFrame:
    """Mean correctness per (method, problem) over its samples (scorable rows only)."""
    df = _frame(rows)
    df = df[df["scorable"]]
    out = df.groupby(["method", "problem_id"], sort=False)["correct"].agg(["mean", "size"]).reset_index()
    return out.rename(columns={"mean": "accuracy", "size": "n_samples"})


def per_run_accuracy(rows: Sequence[dict]) -> pd.DataFrame:
    """Accuracy of each run (sample index) per method over its problems (scorable rows only)."""
    df = _frame(rows)
    df = df[df["scorable"]]
    out = df.groupby(["method", "sample"], sort=False)["correct"].agg(["mean", "size"]).reset_index()
    return out.rename(columns={"sample": "run", "mean": "accuracy", "size": "n_problems"})


def _t_central(t: float, dof: int) -> float:
    """P(|T| ≤ t) for Student's t with integer ``dof`` (closed form, Abramowitz & Stegun 26.7.3–4)."""
    theta = math.atan(t / math.sqrt(dof))
    c2, term = math.cos(theta) ** 2, 1.0
    if dof % 2 == 0:
        total = 1.0
        for k in range(2, dof - 1, 2):
            term *= c2 * (k - 1) / k
            total += term
        return math.sin(theta) * total
    term = total = math.cos(theta) if dof > 1 else 0.0
    for k in range(3, dof - 1, 2):
        term *= c2 * (k - 1) / k
        total += term
    return 2 / math.pi * (theta + math.sin(theta) * total)


def t_quantile(level: float, dof: int) -> float:
    """Half-width multiplier of a two-sided ``level`` t-interval with ``dof`` degrees of freedom."""
    if dof < 1 or not 0 < level < 1:
        raise ValueError(f"t_quantile(level={level}, dof={dof}): need 0 < level < 1 and dof ≥ 1")
    lo, hi = 0.0, 1.0
    while _t_central(hi, dof) < level:
        hi *= 2
    for _ in range(200):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if _t_central(mid, dof) < level else (lo, mid)
    return (lo + hi) / 2


def bootstrap_mean_ci(values: Sequence[float], n_boot: int, level: float, seed: int) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean (resampling the values with replacement, seeded)."""
    x = np.asarray(values, dtype=float)
    if x.size == 0:
        return math.nan, math.nan
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, x.size, size=(n_boot, x.size))].mean(axis=1)
    tail = (1 - level) / 2
    return float(np.quantile(means, tail)), float(np.quantile(means, 1 - tail))


def _accuracy_ci(method_rows: pd.DataFrame, protocol: EvalProtocol) -> dict:
    run_acc = method_rows.groupby("sample")["correct"].mean()
    run_sd = float(run_acc.std(ddof=1)) if len(run_acc) > 1 else math.nan
    if protocol.aggregate == "runs":
        acc = float(run_acc.mean())
        half = t_quantile(protocol.ci_level, len(run_acc) - 1) * run_sd / math.sqrt(len(run_acc)) \
            if len(run_acc) > 1 else math.nan
        return {"accuracy": acc, "ci_low": acc - half, "ci_high": acc + half, "ci_method": "t over runs",
                "run_sd": run_sd}
    problem_acc = method_rows.groupby("problem_id")["correct"].mean()
    lo, hi = bootstrap_mean_ci(problem_acc.to_numpy(), protocol.n_boot, protocol.ci_level, protocol.seed)
    return {"accuracy": float(problem_acc.mean()), "ci_low": lo, "ci_high": hi,
            "ci_method": "bootstrap over problems", "run_sd": run_sd}


def _method_summary(m: pd.DataFrame, protocol: EvalProtocol) -> dict:
    scorable = m[m["scorable"]]
    per_problem = scorable.groupby("problem_id").size()
    if per_problem.nunique() > 1:
        log.warning("method %s: problems have unequal sample counts (%d–%d): an incomplete grid",
                    m["method"].iat[0], per_problem.min(), per_problem.max())
    first = m.iloc[0]
    return {
        "method": first["method"], "policy": first.get("policy"), "sweep": first.get("sweep"),
        **(_accuracy_ci(scorable, protocol) if len(scorable) else
           {"accuracy": math.nan, "ci_low": math.nan, "ci_high": math.nan, "ci_method": "", "run_sd": math.nan}),
        **{c: float(m[c].mean()) for c in _NUMERIC},
        "truncated_share": float(m["truncated"].mean()),
        "n_problems": int(per_problem.size), "samples_per_problem": int(per_problem.min()) if len(per_problem) else 0,
        "n_rows": len(m), "n_unscorable": int((~m["scorable"]).sum()),
    }


def aggregate(rows: Sequence[dict], protocol: EvalProtocol) -> pd.DataFrame:
    """One row per method (in order of appearance): accuracy with its CI, offload, tokens, time, truncation, n."""
    df = _frame(rows)
    return pd.DataFrame([_method_summary(m, protocol) for _, m in df.groupby("method", sort=False)])


def paired_difference(rows: Sequence[dict], method_a: str, method_b: str, n_boot: int = 10_000,
                      seed: int = 0, level: float = 0.95) -> dict:
    """Accuracy of A minus B on their common problems, with a paired bootstrap CI over problems."""
    acc = per_problem_accuracy(rows).pivot(index="problem_id", columns="method", values="accuracy")
    missing = [m for m in (method_a, method_b) if m not in acc.columns]
    if missing:
        raise ValueError(f"no scorable rows for {missing}; methods present: {list(acc.columns)}")
    diffs = (acc[method_a] - acc[method_b]).dropna()
    if diffs.empty:
        raise ValueError(f"{method_a} and {method_b} share no problem")
    lo, hi = bootstrap_mean_ci(diffs.to_numpy(), n_boot, level, seed)
    return {"method_a": method_a, "method_b": method_b, "diff": float(diffs.mean()), "ci_low": lo, "ci_high": hi,
            "n_problems": int(diffs.size)}


def gap_recovered(acc: float, small_acc: float, big_acc: float) -> float:
    """Share of the small→big accuracy gap a method closes: (acc − small) / (big − small); NaN without a gap."""
    if big_acc == small_acc:
        log.warning("gap_recovered: big and small accuracies are equal (%.4f); no gap to recover", big_acc)
        return math.nan
    return (acc - small_acc) / (big_acc - small_acc)


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, np.generic):
        return _json_safe(value.item())
    return value


def write_metrics(rows: Sequence[dict], protocol: EvalProtocol, path: str | Path, extra: dict | None = None) -> Path:
    """``metrics.json``: the protocol, grader versions, and per method its summary and per-run accuracies."""
    summary = aggregate(rows, protocol)
    run_acc = per_run_accuracy(rows)
    methods = {
        rec["method"]: {**{k: _json_safe(v) for k, v in rec.items()},
                        "run_accuracy": [float(a) for a in run_acc.loc[run_acc["method"] == rec["method"], "accuracy"]]}
        for rec in summary.to_dict("records")
    }
    body = {"protocol": asdict(protocol), "grader_versions": sorted({r["grader_version"] for r in rows}),
            "methods": methods, **(extra or {})}
    return runs.atomic_write_json(path, body)


# -- presentation (no I/O) ----------------------------------------------------------------------------------------
def results_table(df: pd.DataFrame) -> Any:
    """``aggregate``'s frame styled for a notebook: percentages, CIs, tokens, seconds."""
    cols = ["method", "accuracy", "ci_low", "ci_high", "offload_char_fraction", "offload_token_fraction",
            "tokens_small", "tokens_big", "wall_s", "truncated_share", "n_problems", "samples_per_problem"]
    pct = "{:.1%}".format
    fmt = {c: pct for c in ("accuracy", "ci_low", "ci_high", "offload_char_fraction", "offload_token_fraction",
                            "truncated_share")}
    fmt |= {"tokens_small": "{:,.0f}", "tokens_big": "{:,.0f}", "wall_s": "{:.2f}"}
    return df[cols].style.format(fmt, na_rep="–").hide(axis="index")


def accuracy_vs_offload(df: pd.DataFrame, offload: str = "offload_char_fraction") -> Figure:
    """Accuracy (with CI bars) against offload, one marker per method; points of a budget sweep joined by a line."""
    fig = Figure(figsize=(6, 4), layout="constrained")
    ax = fig.add_subplot()
    markers = "osD^vP*Xhp<>"
    for sweep, points in df.dropna(subset=["sweep"]).groupby("sweep", sort=False):
        points = points.sort_values(offload)
        ax.plot(points[offload] * 100, points["accuracy"] * 100, color="0.6", linewidth=1, zorder=1)
    for i, rec in enumerate(df.to_dict("records")):
        x, y = rec[offload] * 100, rec["accuracy"] * 100
        yerr = [[max(y - rec["ci_low"] * 100, 0)], [max(rec["ci_high"] * 100 - y, 0)]]
        ax.errorbar([x], [y], yerr=None if math.isnan(rec["ci_low"]) else yerr, marker=markers[i % len(markers)],
                    linestyle="none", capsize=3, label=rec["method"], zorder=2)
    unit = "characters" if offload == "offload_char_fraction" else "tokens"
    ax.set(xlabel=f"offloaded to the big model (% of {unit})", ylabel="accuracy (%)")
    ax.legend(fontsize="small")
    return fig
