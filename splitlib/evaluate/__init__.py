"""Evaluation: methods × problems × samples → one graded record per sample; aggregation with confidence intervals.

The parts, each importing only those above it:

- ``protocols``: ``EvalProtocol``, the ``PROTOCOLS`` registry (``paper``, ``deepseek``) and ``make_protocol``.
- ``methods``: ``Method`` (a policy on a small/big model pair), the method table, ``KEY`` of a samples file.
- ``records``: ``read_samples`` (one row per key, the last written wins, duplicates warned about), each row's
  provenance (what made it) and its key, the stale file, ``method_provenance`` for ``metrics.json``.
- ``runner``: ``evaluate`` decodes (through a ``splitlib.decoder_service.DecodeFn``) and grades, one JSONL row per
  (method, problem, sample), resumable: a row is reused only when made by the same models and settings; ``regrade``.
- ``stats``: rows → numbers: ``aggregate`` (accuracy with a t- or bootstrap interval per method),
  ``paired_difference``, ``gap_recovered``, per-run accuracies, timing, ``write_metrics``.
- ``claim``: learned vs random offloading at the same realised offload (``match_random``, ``claim``).
- ``arms``: the trained checkpoints side by side (``grpo_block``: accuracy, offload, tag failures, a paired
  difference between two GRPO arms).
- ``report``: tables, a figure and Markdown (no I/O).
- ``inputs``: model references and benchmark problems inside a run directory.

Notebooks use the names below as ``ev.<name>`` (``from splitlib import evaluate as ev``).
"""

from splitlib.evaluate.arms import grpo_block, grpo_table, tag_failures
from splitlib.evaluate.claim import best_method, claim, gap_recovered_ci, match_random, random_ratio_for
from splitlib.evaluate.inputs import load_problems, open_decoder, resolve_model_ref
from splitlib.evaluate.methods import KEY, Method, methods_from_rows, methods_table
from splitlib.evaluate.protocols import PROTOCOLS, EvalProtocol, make_protocol
from splitlib.evaluate.records import method_provenance, read_samples, stale_path
from splitlib.evaluate.report import (
    accuracy_vs_offload,
    claim_markdown,
    dodge_offsets,
    method_styles,
    results_markdown,
    results_table,
)
from splitlib.evaluate.runner import evaluate, regrade, score_sample
from splitlib.evaluate.stats import (
    aggregate,
    bootstrap_mean_ci,
    gap_recovered,
    median_wall_rows,
    paired_difference,
    per_problem_accuracy,
    per_run_accuracy,
    run_accuracies,
    speedup_over,
    t_quantile,
    time_per_problem,
    write_metrics,
)

__all__ = [
    "KEY",
    "PROTOCOLS",
    "EvalProtocol",
    "Method",
    "accuracy_vs_offload",
    "aggregate",
    "best_method",
    "bootstrap_mean_ci",
    "claim",
    "claim_markdown",
    "dodge_offsets",
    "evaluate",
    "gap_recovered",
    "gap_recovered_ci",
    "grpo_block",
    "grpo_table",
    "load_problems",
    "make_protocol",
    "match_random",
    "median_wall_rows",
    "method_provenance",
    "method_styles",
    "methods_from_rows",
    "methods_table",
    "open_decoder",
    "paired_difference",
    "per_problem_accuracy",
    "per_run_accuracy",
    "random_ratio_for",
    "read_samples",
    "regrade",
    "resolve_model_ref",
    "results_markdown",
    "results_table",
    "run_accuracies",
    "score_sample",
    "speedup_over",
    "stale_path",
    "t_quantile",
    "tag_failures",
    "time_per_problem",
    "write_metrics",
]
