"""The paper's published numbers (PAPER_FACTS §8–9), read from the files in ``splitlib/paper_data/``.

Every value there carries its source: a figure or table of the paper, or a file of the authors' repository
(``abdelfattah-lab/SplitReason``) at commit 33e455a, the last one holding ``official_results/``. Nothing is
computed here beyond the means the paper itself prints; ``paper_data/README.md`` says what each file holds.

The AIME24 accuracies were later retracted by the authors as inflated by their evaluation code (PAPER_FACTS §7);
they are kept to compare against, not to trust.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

import pandas as pd

from splitlib.registry import Registry, UnknownNameError

DATA_DIR = Path(__file__).resolve().parent / "paper_data"
AUTHORS_COMMIT = "33e455a"


@cache
def _read_csv(name: str) -> pd.DataFrame:
    path = DATA_DIR / name
    if not path.is_file():
        raise FileNotFoundError(f"missing {path}: the paper's data ships inside the package; reinstall splitreason "
                                "(pip install -e .) or restore splitlib/paper_data/ from git")
    return pd.read_csv(path, dtype={"run": int, "system": str, "model": str})


@cache
def _constants() -> dict[str, dict[str, Any]]:
    return json.loads((DATA_DIR / "constants.json").read_text(encoding="utf-8"))


def constant(name: str) -> Any:
    """A published setting of a figure (``paper_data/constants.json``), e.g. ``figure5_marked_offloads``."""
    entries = _constants()
    if name not in entries:
        raise UnknownNameError(f"unknown paper constant {name!r}; allowed: {', '.join(entries)}")
    return entries[name]["value"]


def constant_source(name: str) -> str:
    """Where ``constant(name)`` comes from."""
    constant(name)
    return _constants()[name]["source"]


def mode_table() -> pd.DataFrame:
    """The paper's labels of its evaluated systems (``mode``), the authors' names for them (``system``), the order
    of the five boxes of Figure 5 (left) and the (type, offload %) of ``random_offload_ablation.csv``."""
    return _read_csv("modes.csv").copy()


def aime24_runs() -> pd.DataFrame:
    """One row per evaluation run of every system: mode, system, run, accuracy (a fraction), eval_time_s (30
    problems, 16 concurrent), offload_pct_mean / offload_pct_median (per-problem character offload over the run's
    30 problems), results_dir and source (the authors' aggregated metrics)."""
    runs = _read_csv("aime24_runs.csv")
    out = mode_table()[["mode", "system"]].merge(runs, on="system", how="left", validate="one_to_many")
    if out["run"].isna().any():
        raise ValueError(f"paper_data/modes.csv names systems without runs: {sorted(out[out['run'].isna()].system)}")
    return out


def _registry() -> Registry[tuple[tuple[float, ...], float, float]]:
    """label -> (per-run accuracies, mean accuracy in % to one decimal, mean eval time in s to the second), the
    means rounded as the paper prints them."""
    entries = {}
    for mode, rows in aime24_runs().groupby("mode", sort=False):
        acc = tuple(float(a) for a in rows["accuracy"])
        entries[mode] = (acc, round(100 * sum(acc) / len(acc), 1), float(round(rows["eval_time_s"].mean())))
    return Registry("paper mode", entries)


# label (as in the paper) -> (per-run accuracies, mean in %, mean eval time in s for 30 problems, 16 concurrent).
# "Learned (5.0 %), SplitR-32B" has six runs in the authors' results; kept as published.
PAPER_AIME24: Registry[tuple[tuple[float, ...], float, float]] = _registry()
FIGURE5_LEFT_MODES: tuple[str, ...] = tuple(
    mode_table().dropna(subset=["figure5_left"]).sort_values("figure5_left")["mode"])  # the five boxes, in order


def paper_per_run_accuracy(modes: tuple[str, ...] = FIGURE5_LEFT_MODES) -> pd.DataFrame:
    """Long table: one row per (mode, run) with columns mode, run, accuracy (a fraction), source="paper"."""
    rows = [{"mode": m, "run": i, "accuracy": acc, "source": "paper"}  # unknown modes: UnknownNameError
            for m in modes for i, acc in enumerate(PAPER_AIME24[m][0])]
    return pd.DataFrame(rows)


def paper_results_table() -> pd.DataFrame:
    """One row per mode: runs, reported mean accuracy (%) and mean evaluation wall time (s)."""
    rows = [{"mode": m, "runs": len(runs), "mean_accuracy_pct": mean, "eval_wall_s": wall_s}
            for m, (runs, mean, wall_s) in PAPER_AIME24.items()]
    return pd.DataFrame(rows)


def figure5_left_runs() -> pd.DataFrame:
    """The per-run accuracies the printed Figure 5 (left) was drawn from (the authors' ``random_offload_ablation.csv``,
    rounded in places), as columns mode, run, accuracy, source="paper"; modes in the figure's order."""
    df = _read_csv("figure5_left.csv")
    keys = mode_table().dropna(subset=["figure5_left"])
    key = lambda t, p: (str(t), round(float(p), 3))
    label = {key(t, p): m for m, t, p in zip(keys["mode"], keys["ablation_type"], keys["ablation_offload_percent"])}
    mode = [label[key(t, p)] for t, p in zip(df["offload_type"], df["offload_percent"])]
    out = pd.DataFrame({"mode": mode, "run": df["run"], "accuracy": df["accuracy"], "source": "paper"})
    order = {m: i for i, m in enumerate(FIGURE5_LEFT_MODES)}
    return out.sort_values("mode", key=lambda s: s.map(order), kind="stable").reset_index(drop=True)


def a6000_throughput() -> pd.DataFrame:
    """The throughput table of the paper's simulator: model, prefill_tok_per_s, decode_tok_per_s, gpus, source."""
    return _read_csv("a6000_throughput.csv").copy()


def figure6_table() -> pd.DataFrame:
    """Figure 6 (right) as printed: model, system, accuracy_pct, nonpipelined_s (NaN: "–"), pipelined_s, source."""
    return _read_csv("figure6_table.csv").copy()
