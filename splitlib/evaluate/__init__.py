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
    preload = getattr(decode_fn, "preload", None)
    if todo and preload is not None:  # start engines before the clock of the first batch starts
        preload(list({j.method.name: j.method for j in todo}.values()))
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

    def preload(self, methods: Sequence[Method]) -> None:
        """Load every backend ``methods`` use now, so that loading is not timed as decoding."""
        from splitlib.policies import POLICIES

        for m in methods:
            uses = POLICIES[m.policy].models if m.policy in POLICIES else {"small", "big"}
            for role in ("small", "big"):
                if role in uses:
                    self.backend(role, getattr(m, role))

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


def _accuracy_by_problem(rows: Sequence[dict], methods: Sequence[str]) -> pd.DataFrame:
    """Per-problem accuracy, one column per method; every one of ``methods`` must have scorable rows."""
    acc = per_problem_accuracy(rows).pivot(index="problem_id", columns="method", values="accuracy")
    missing = [m for m in methods if m not in acc.columns]
    if missing:
        raise ValueError(f"no scorable rows for {missing}; methods present: {list(acc.columns)}")
    return acc


def paired_difference(rows: Sequence[dict], method_a: str, method_b: str, n_boot: int = 10_000,
                      seed: int = 0, level: float = 0.95) -> dict:
    """Accuracy of A minus B on their common problems, with a paired bootstrap CI over problems."""
    acc = _accuracy_by_problem(rows, (method_a, method_b))
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


# -- run-directory inputs -----------------------------------------------------------------------------------------
# first folder of a model reference inside a run directory -> the notebook that writes it
MODEL_MADE_BY = {"models": "notebooks/00_models.ipynb", "02_sft": "notebooks/02_sft.ipynb",
                 "03_grpo": "notebooks/03_grpo.ipynb"}


def resolve_model_ref(run: str | Path, ref: str) -> str:
    """A model reference from a parameter file: ``models/small``, ``02_sft/model``, ``03_grpo/<mode>/model``
    (inside the run directory: must hold a ``config.json``, else the error names the notebook that writes it), an
    absolute directory, or a hub id (returned as is)."""
    if not ref:
        raise ValueError("empty model reference: give a path inside the run directory, a directory or a hub id")
    head = Path(ref).parts[0]
    if head in MODEL_MADE_BY:
        return str(runs.require(Path(run) / ref / "config.json", made_by=MODEL_MADE_BY[head]).parent)
    if Path(ref).is_absolute():
        return str(runs.require(Path(ref) / "config.json", made_by="whatever wrote that model directory").parent)
    return ref


def load_problems(run: str | Path, benchmark: str, source: str, limit: int | None = None) -> list[dict]:
    """Evaluation problems: the toy world's ``source`` is a file inside the run directory (``data/test.jsonl``);
    other benchmarks take a hub id or a local copy (``splitlib.eval_data``)."""
    from splitlib import eval_data

    if benchmark == "toy":
        return eval_data.load_benchmark("toy", path=Path(run) / source, limit=limit)
    key = "source" if benchmark == "aime24" else "path_or_id"
    return eval_data.load_benchmark(benchmark, **{key: source}, limit=limit)


def methods_from_rows(rows: Sequence[dict], names: Sequence[str]) -> list[Method]:
    """The ``Method``s that wrote ``rows`` (to re-run some of them elsewhere, e.g. at batch 1 for timing)."""
    first: dict[str, dict] = {}
    for r in rows:
        first.setdefault(r["method"], r)
    missing = [n for n in names if n not in first]
    if missing:
        raise ValueError(f"methods {missing} are not in the rows; present: {list(first)}")
    return [Method(n, policy=first[n]["policy"], small=first[n]["small_model"], big=first[n]["big_model"],
                   policy_params=first[n]["policy_params"] or {}, sweep=first[n]["sweep"]) for n in names]


# -- the claim: learned vs random offloading at the same realised offload (issue 8) -------------------------------
OffloadMeasure = Literal["offload_token_fraction", "offload_char_fraction"]


def random_ratio_for(offload: float) -> float:
    """The ``random_switch`` ratio whose expected big share is ``offload``: p_big = 1 / (1 + ratio)."""
    if not 0 < offload <= 1:
        raise ValueError(f"offload={offload!r}: expected a fraction in (0, 1]")
    return 1.0 / offload - 1.0


def best_method(summary: pd.DataFrame, candidates: Sequence[str], max_offload: float | None = None,
                offload: OffloadMeasure = "offload_token_fraction") -> str | None:
    """The most accurate of ``candidates`` (ties: less offload) whose mean offload is ≤ ``max_offload``; None if
    none qualifies."""
    df = summary[summary["method"].isin(list(candidates))].dropna(subset=["accuracy"])
    if max_offload is not None:
        df = df[df[offload] <= max_offload + 1e-12]
    if df.empty:
        return None
    return str(df.sort_values(["accuracy", offload], ascending=[False, True], kind="stable").iloc[0]["method"])


def match_random(summary: pd.DataFrame, target: float, random_methods: Sequence[str], tolerance: float = 0.02,
                 offload: OffloadMeasure = "offload_token_fraction") -> str | None:
    """The random method whose realised mean offload is nearest ``target``, if within ``tolerance`` (an absolute
    fraction: 0.02 = ±2 points); else None."""
    df = summary[summary["method"].isin(list(random_methods))]
    if df.empty:
        return None
    gap = (df[offload] - target).abs()
    best = gap.idxmin()
    return str(df.loc[best, "method"]) if gap[best] <= tolerance + 1e-12 else None


def gap_recovered_ci(rows: Sequence[dict], method: str, small: str, big: str, n_boot: int = 10_000, seed: int = 0,
                     level: float = 0.95) -> dict:
    """``gap_recovered`` of ``method`` on the problems all three share, with a paired bootstrap CI over problems."""
    x = _accuracy_by_problem(rows, (method, small, big))[[method, small, big]].dropna().to_numpy()
    if not len(x):
        raise ValueError(f"{method}, {small} and {big} share no problem")
    point = gap_recovered(*x.mean(axis=0))
    means = x[np.random.default_rng(seed).integers(0, len(x), size=(n_boot, len(x)))].mean(axis=1)
    span = means[:, 2] - means[:, 1]
    ok = span != 0
    boots = (means[ok, 0] - means[ok, 1]) / span[ok]
    tail = (1 - level) / 2
    lo, hi = (float(np.quantile(boots, tail)), float(np.quantile(boots, 1 - tail))) if boots.size else (math.nan,) * 2
    return {"method": method, "gap_recovered": point, "ci_low": lo, "ci_high": hi, "n_problems": len(x)}


def claim(rows: Sequence[dict], summary: pd.DataFrame, learned: str, random: str | None, small: str, big: str,
          offload: OffloadMeasure = "offload_token_fraction", max_offload: float = 0.15, min_gap: float = 0.7,
          tolerance: float = 0.02, n_boot: int = 10_000, seed: int = 0, level: float = 0.95) -> dict:
    """The paper's central claim on this run: ``learned`` offloads ≤ ``max_offload``, recovers ≥ ``min_gap`` of the
    small→big gap, and beats ``random`` (at the same realised offload ± ``tolerance``) with a CI excluding 0."""
    by = summary.set_index("method")
    off = {m: float(by.loc[m, offload]) for m in (learned, random) if m is not None}
    gap = gap_recovered_ci(rows, learned, small, big, n_boot, seed, level)
    out: dict[str, Any] = {
        "offload_measure": offload, "learned": learned, "random": random, "small": small, "big": big,
        "accuracy": {m: _json_safe(float(by.loc[m, "accuracy"])) for m in (small, big, learned, random) if m},
        "offload": off, "gap_recovered": {k: _json_safe(v) for k, v in gap.items()},
        "random_gap_recovered": None, "difference": None,
    }
    if random is not None:
        rgap = gap_recovered_ci(rows, random, small, big, n_boot, seed, level)
        out["random_gap_recovered"] = {k: _json_safe(v) for k, v in rgap.items()}
        out["difference"] = paired_difference(rows, learned, random, n_boot, seed, level)
    diff = out["difference"]
    out["checks"] = {
        "learned_offload_at_most_max": off[learned] <= max_offload + 1e-12,
        "gap_recovered_at_least_min": bool(gap["gap_recovered"] >= min_gap),
        "random_matched_within_tolerance": random is not None and abs(off[random] - off[learned]) <= tolerance + 1e-12,
        "difference_ci_excludes_0": diff is not None and (diff["ci_low"] > 0 or diff["ci_high"] < 0),
        "learned_beats_random": diff is not None and diff["ci_low"] > 0,
    }
    out["thresholds"] = {"max_offload": max_offload, "min_gap": min_gap, "tolerance": tolerance, "ci_level": level}
    out["holds"] = all(out["checks"].values())
    return out


def run_accuracies(rows: Sequence[dict], n_subsets: int = 5) -> pd.DataFrame:
    """Per-run accuracy (method, run, accuracy) for box plots: the protocol's runs when a method has several samples
    per problem; with one sample, ``n_subsets`` disjoint, equally sized problem subsets (in file order) stand in
    for runs."""
    if n_subsets < 1:
        raise ValueError(f"n_subsets={n_subsets}: expected ≥ 1")
    df = _frame(rows)
    df = df[df["scorable"]]
    out = []
    for name, m in df.groupby("method", sort=False):
        if m["sample"].nunique() > 1:
            acc = m.groupby("sample")["correct"].mean()
        else:
            ids = list(dict.fromkeys(m["problem_id"]))
            group = {pid: i * n_subsets // len(ids) for i, pid in enumerate(ids)}
            acc = m.groupby(m["problem_id"].map(group))["correct"].mean()
        out += [{"method": name, "run": int(k), "accuracy": float(v)} for k, v in acc.items()]
    return pd.DataFrame(out, columns=["method", "run", "accuracy"])


def median_wall_rows(passes: Sequence[Sequence[dict]]) -> list[dict]:
    """Per (method, problem, sample): the row whose measured ``wall_s`` is the median over several timing passes of
    the same grid (spread in time, so that a noisy machine's slow spells do not hit every pass of one problem)."""
    by_key: dict[tuple, list[dict]] = {}
    for rows in passes:
        for r in rows:
            by_key.setdefault(tuple(r[k] for k in KEY), []).append(r)
    counts = {len(v) for v in by_key.values()}
    if counts != {len(passes)}:
        raise ValueError(f"timing passes hold different grids (rows per key: {sorted(counts)}); run every pass fully")
    return [sorted(v, key=lambda r: r["wall_s"])[len(v) // 2] for v in by_key.values()]


def time_per_problem(rows: Sequence[dict]) -> pd.Series:
    """Measured seconds per problem by method: each batch's wall time over its size (throughput, not latency)."""
    df = pd.DataFrame([{"method": r["method"], "s": r["batch_wall_s"] / r["batch_size"]} for r in rows])
    return df.groupby("method", sort=False)["s"].mean()


def results_markdown(df: pd.DataFrame, s_per_problem: Mapping[str, float] | None = None) -> str:
    """``aggregate``'s frame as a Markdown table (for results.md and the README)."""
    head = ("| method | accuracy [95 % CI] | offload tokens | offload chars | tokens small / big | "
            "s / problem | truncated | n |")
    lines = [head, "|" + "---|" * 8]
    for r in df.to_dict("records"):
        ci = "" if math.isnan(r["ci_low"]) else f" [{r['ci_low']:.1%}, {r['ci_high']:.1%}]"
        spp = r["wall_s"] if s_per_problem is None else s_per_problem.get(r["method"], r["wall_s"])
        lines.append(f"| {r['method']} | {r['accuracy']:.1%}{ci} | {r['offload_token_fraction']:.1%} | "
                     f"{r['offload_char_fraction']:.1%} | {r['tokens_small']:.0f} / {r['tokens_big']:.0f} | "
                     f"{spp:.3f} | {r['truncated_share']:.1%} | {r['n_problems']} |")
    return "\n".join(lines) + "\n"


def _fmt(value: Any, spec: str) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else format(value, spec)


def claim_markdown(c: dict) -> str:
    """``claim``'s result as a few Markdown lines (for results.md and the README)."""
    acc, off, gap = c["accuracy"], c["offload"], c["gap_recovered"]
    unit = "tokens" if c["offload_measure"] == "offload_token_fraction" else "characters"
    lines = [f"- small alone ({c['small']}): {_fmt(acc[c['small']], '.1%')}; "
             f"big alone ({c['big']}): {_fmt(acc[c['big']], '.1%')}",
             f"- learned ({c['learned']}): {_fmt(acc[c['learned']], '.1%')} at {_fmt(off[c['learned']], '.1%')} "
             f"offload ({unit}); gap recovered {_fmt(gap['gap_recovered'], '.2f')} "
             f"[95 % CI {_fmt(gap['ci_low'], '.2f')}, {_fmt(gap['ci_high'], '.2f')}]"]
    if c["random"] is None:
        lines.append("- random switching: no point within the matching tolerance of the learned offload")
    else:
        d, rgap = c["difference"], c["random_gap_recovered"]
        lines += [f"- random ({c['random']}): {_fmt(acc[c['random']], '.1%')} at {_fmt(off[c['random']], '.1%')} "
                  f"offload; gap recovered {_fmt(rgap['gap_recovered'], '.2f')}",
                  f"- learned − random: {_fmt(d['diff'], '+.1%')} [95 % CI {_fmt(d['ci_low'], '+.1%')}, "
                  f"{_fmt(d['ci_high'], '+.1%')}] (paired over {d['n_problems']} problems)"]
    t = c["thresholds"]
    failed = [k for k, ok in c["checks"].items() if not ok]
    lines.append(f"- claim (offload ≤ {t['max_offload']:.0%}, gap recovered ≥ {t['min_gap']:.2f}, random matched "
                 f"±{t['tolerance'] * 100:.0f} points, CI of the difference excludes 0): "
                 f"**{'holds' if c['holds'] else 'does not hold'}**"
                 + (f" (failed: {', '.join(failed)})" if failed else ""))
    return "\n".join(lines) + "\n"
