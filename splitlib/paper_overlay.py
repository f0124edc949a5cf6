"""A run's own measured points, drawn over the paper's regenerated figures (``splitreason figures --paper --run``).

A run of this suite is not the paper's experiment: its benchmark, models, scale and machine differ (the toy profile
decodes toy problems with toy models on a CPU). So its points go on the same axes only where the quantity is the
same kind (accuracy per run, speed-up over the big model) and always with a label saying what they are; where the
scale differs (evaluation seconds), they get their own axes (top and right).

Inputs, all written by the numbered notebooks: ``04_random_switch/metrics.json`` and ``05_evaluate/metrics.json``
(required), ``06_figure5/metrics.json`` (optional: its measured speed-up, when 06 ran with ``source: run``).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure

log = logging.getLogger(__name__)

MADE_BY = {"04_random_switch": "notebooks/04_random_switch.ipynb", "05_evaluate": "notebooks/05_evaluate.ipynb",
           "06_figure5": "notebooks/06_figure5.ipynb"}
ROLES = ("small", "big", "learned", "random")  # 05's claim roles, referred to as @small, @big, …
_STYLE = {"color": "tab:blue", "marker": "D", "markersize": 7, "markerfacecolor": "none", "markeredgewidth": 1.5}


@dataclass(frozen=True)
class RunPoints:
    """What a run measured, in the shapes the paper's figures use."""

    name: str  # the run directory's name
    benchmark: str  # 05's benchmark (e.g. "toy", "aime24")
    per_run: pd.DataFrame  # Figure 5 (left): mode (the paper's), method, run, accuracy (a fraction)
    methods: pd.DataFrame  # role, method, accuracy, offload_token_fraction, eval_s (s per problem × problems)
    speedup: pd.DataFrame  # Figure 5 (right): kind, small_fraction, speedup (empty without 06's measurements)

    @property
    def label(self) -> str:
        return f"this run ({self.name}: {self.benchmark} benchmark, not AIME24)"


def _require(path: Path, notebook: str) -> dict:
    if not path.is_file():
        raise FileNotFoundError(f"missing {path} — run {MADE_BY[notebook]} for this run first "
                                f"(splitreason run --profile <profile> --only {notebook[:2]})")
    return json.loads(path.read_text(encoding="utf-8"))


def read_run(run_dir: str | Path, left_refs: Mapping[str, str]) -> RunPoints:
    """The run's points. ``left_refs`` maps a paper mode of Figure 5 (left) to the run's method drawn beside it: a
    method name of 04/05 or a role (@small, @big, @learned, @random); e.g. 06's ``figure5_left`` parameter."""
    run = Path(run_dir)
    m04 = _require(run / "04_random_switch" / "metrics.json", "04_random_switch")
    m05 = _require(run / "05_evaluate" / "metrics.json", "05_evaluate")
    claim, n_problems = m05["claim"], int(m05["n_problems"])
    methods = {**m04["methods"], **m05["methods"]}
    seconds = {**m04.get("s_per_problem", {}), **m05.get("s_per_problem", {})}
    resolve = lambda ref: claim.get(ref[1:]) if ref.startswith("@") else ref
    rows = [{"mode": mode, "method": resolve(ref), "run": i, "accuracy": float(a)}
            for mode, ref in left_refs.items() if resolve(ref) in methods
            for i, a in enumerate(methods[resolve(ref)]["run_accuracy"])]
    table = [{"role": role, "method": claim[role], "accuracy": methods[claim[role]]["accuracy"],
              "offload_token_fraction": methods[claim[role]]["offload_token_fraction"],
              "eval_s": seconds.get(claim[role], float("nan")) * n_problems}
             for role in ROLES if claim.get(role) in methods]
    return RunPoints(run.name, str(m05.get("benchmark", "?")), pd.DataFrame(rows, columns=["mode", "method", "run",
                     "accuracy"]), pd.DataFrame(table), _speedups(run / "06_figure5" / "metrics.json"))


def left_refs(figure5_left: list[list]) -> dict[str, str]:
    """06's ``figure5_left`` rows ([label, paper mode or None, method or role or None]) as paper mode -> method."""
    return {paper: ref for _, paper, ref in figure5_left if paper and ref}


def recorded_left_refs(run_dir: str | Path) -> dict[str, str] | None:
    """The ``figure5_left`` that notebook 06 last ran with on this run (its step manifest), or None."""
    path = Path(run_dir) / "06_figure5" / "manifest.json"
    params = json.loads(path.read_text(encoding="utf-8")).get("params", {}) if path.is_file() else {}
    return left_refs(params["figure5_left"]) if "figure5_left" in params else None


def _speedups(path: Path) -> pd.DataFrame:
    """06's measured speed-ups of the learned method over big-only at its offload (run path only)."""
    learned = json.loads(path.read_text(encoding="utf-8")).get("learned") if path.is_file() else None
    if not learned or "speedup_over_big" not in learned:
        log.warning("no measured speed-up in %s (run %s with source: run); Figure 5 (right) gets no run points",
                    path, MADE_BY["06_figure5"])
        return pd.DataFrame(columns=["kind", "small_fraction", "speedup"])
    kinds = ("measured (batch 1)", "serial simulation of the same traces")
    return pd.DataFrame([{"kind": k, "small_fraction": 1 - learned["offload_token_fraction"], "speedup": v}
                         for k, v in learned["speedup_over_big"].items() if k in kinds])


def draw_figure5(fig: Figure, run: RunPoints, positions: Mapping[str, float]) -> None:
    """The run's per-run accuracies beside the paper's boxes (left; ``positions``: paper mode -> x of its box); its
    measured speed-up at its learned offload (right)."""
    left, right = fig.axes[:2]
    shown = run.per_run[run.per_run["mode"].isin(list(positions))]
    for i, (mode, part) in enumerate(shown.groupby("mode", sort=False)):
        left.plot([positions[mode] + 0.38] * len(part), 100 * part["accuracy"], linestyle="none",
                  label=run.label if i == 0 else None, **_STYLE)
    if len(shown):
        left.legend(fontsize="small", loc="upper left")
    for kind, part in run.speedup.groupby("kind", sort=False):
        filled = {} if kind.startswith("measured") else {"markerfacecolor": "tab:blue"}
        right.plot(part["speedup"], part["small_fraction"], linestyle="none",
                   label=f"this run: {kind} ({run.benchmark} benchmark)", **{**_STYLE, **filled})
    right.legend(loc="lower right", fontsize="small")


def draw_figure1(fig: Figure, run: RunPoints) -> None:
    """The run's methods as accuracy against evaluation seconds, on axes of their own (top and right)."""
    top = fig.axes[0].twiny()
    twin = top.twinx()
    table = run.methods.dropna(subset=["eval_s"])
    twin.plot(table["eval_s"], 100 * table["accuracy"], linestyle="none", label=run.label, **_STYLE)
    for r in table.itertuples():
        twin.annotate(f"{r.role}: {r.method}", (r.eval_s, 100 * r.accuracy), xytext=(5, 4),
                      textcoords="offset points", fontsize="x-small", color="tab:blue")
    top.set_xlabel(f"this run: evaluation time (s, measured, {run.benchmark})", color="tab:blue")
    twin.set_ylabel(f"this run: accuracy (%) on {run.benchmark}", color="tab:blue")
    twin.legend(loc="upper left", fontsize="small")


def markdown(run: RunPoints) -> str:
    """The run's methods as a Markdown table (for figure6.md)."""
    lines = [f"### {run.label}", "", "| role | method | accuracy (%) | offload (tokens, %) | evaluation time (s) |",
             "|---|---|---|---|---|"]
    lines += [f"| {r.role} | {r.method} | {100 * r.accuracy:.1f} | {100 * r.offload_token_fraction:.2f} | "
              f"{r.eval_s:.1f} |" for r in run.methods.itertuples()]
    for r in run.speedup.itertuples():
        lines.append(f"\nSpeed-up of the learned method over big-only ({r.kind}): {r.speedup:.2f}× at "
                     f"{100 * (1 - r.small_fraction):.2f} % offload.")
    return "\n".join(lines) + "\n"
