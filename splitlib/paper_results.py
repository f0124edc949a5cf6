"""The paper's published AIME24 results (PAPER_FACTS §8), as data. Nothing is computed here.

These accuracies were later retracted by the authors as inflated by their evaluation code (PAPER_FACTS §7);
they are kept to compare against, not to trust.
"""

from __future__ import annotations

import pandas as pd

from splitlib.registry import Registry

# label (as in the paper) -> (per-run accuracies, reported mean in %, mean eval time in s for 30 problems,
# 16 concurrent). "Learned (5.0 %), SplitR-32B" lists six runs in the paper; kept as published.
PAPER_AIME24: Registry[tuple[tuple[float, ...], float, float]] = Registry("paper mode", {
    "None — 1.5B alone (0.0 %)": ((0.133, 0.233, 0.133, 0.200, 0.167), 17.3, 683.0),
    "Random (5.05 %)": ((0.333, 0.433, 0.333, 0.367, 0.400), 37.3, 1590.0),
    "Random (10.0 %)": ((0.400, 0.400, 0.433, 0.333, 0.333), 38.0, 2154.0),
    "Learned (1.352 %)": ((0.400, 0.400, 0.400, 0.433, 0.433), 41.3, 1128.0),
    "Learned (5.0 %), SplitR-32B": ((0.467, 0.500, 0.467, 0.467, 0.433, 0.400), 45.6, 1751.0),
    "SplitR-14B": ((0.467, 0.433, 0.533, 0.433, 0.400), 45.3, 1640.0),
    "SplitR-8B": ((0.500, 0.400, 0.467, 0.400, 0.433), 44.0, 1190.0),
    "8B alone": ((0.300, 0.267, 0.333, 0.367, 0.300), 31.3, 1934.0),
    "14B alone": ((0.533, 0.500, 0.500, 0.600, 0.467), 52.0, 2090.0),
    "32B alone": ((0.700, 0.667, 0.667, 0.567, 0.600), 64.0, 3143.0),
})
FIGURE5_LEFT_MODES = tuple(PAPER_AIME24)[:5]  # the box plot shows the first five rows


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
