"""Annotation: mark the hardest parts of reasoning traces with ``<bigmodel>…</bigmodel>`` (PAPER_FACTS §4).

Annotators (``get_annotator(name, **params)``, registered in ``ANNOTATORS``; ``annotator_config`` checks the same
params without loading anything) map a trace row to sorted, disjoint character spans over the original text:

- ``llm``: the paper's method — an LLM behind an OpenAI-compatible chat API returns verbatim snippets, located by
  fuzzy matching (``matching``); ``preset="paper"`` is DeepSeek-V3 (``deepseek-chat``).
- ``surprisal``: no API — the small model's own per-token loss, aggregated per reasoning step.
- ``oracle``: the toy world's ground-truth hard steps.

``annotate_all`` runs one over many traces, resumable, crash-safe and stoppable with Ctrl-C, into
``annotated.jsonl`` / ``failures.jsonl`` / ``stats.json``, refusing to mix rows of another provenance
(``resume``); requests to an LLM end by a deadline (``transport``); ``analysis`` and ``figures`` measure and plot
the result.
"""

from splitlib.annotate import llm as _llm  # noqa: F401  (registers "llm")
from splitlib.annotate import surprisal as _surprisal  # noqa: F401  (registers "surprisal")
from splitlib.annotate.analysis import (
    offload_fractions,
    offload_token_fraction,
    position_profile,
    render_ansi,
    render_html,
    score_against_oracle,
    score_rows,
    token_mask,
)
from splitlib.annotate.base import (
    ANNOTATOR_CONFIGS,
    ANNOTATORS,
    Annotation,
    AnnotationFailure,
    Annotator,
    Cancelled,
    CancelSwitch,
    OracleAnnotator,
    RetryPolicy,
    annotator_config,
    annotator_params,
    get_annotator,
)
from splitlib.annotate.figures import offload_fraction_histogram, oracle_scores_figure, position_profile_figure
from splitlib.annotate.llm import LLM_PRESETS, LLMAnnotator, LLMConfig
from splitlib.annotate.matching import MatchConfig, locate, locate_snippets
from splitlib.annotate.resume import ANNOTATED, FAILURES, SETTINGS
from splitlib.annotate.run import (
    STATS,
    AnnotationAborted,
    RunSummary,
    annotate_all,
    compute_stats,
)
from splitlib.annotate.surprisal import SurprisalAnnotator, SurprisalConfig, generic_steps

__all__ = [
    "ANNOTATED", "ANNOTATORS", "ANNOTATOR_CONFIGS", "FAILURES", "LLM_PRESETS", "SETTINGS", "STATS", "Annotation",
    "AnnotationAborted", "AnnotationFailure", "Annotator", "CancelSwitch", "Cancelled", "LLMAnnotator", "LLMConfig",
    "MatchConfig", "OracleAnnotator", "RetryPolicy", "RunSummary", "SurprisalAnnotator", "SurprisalConfig",
    "annotate_all", "annotator_config", "annotator_params", "compute_stats", "generic_steps", "get_annotator", "locate", "locate_snippets", "offload_fraction_histogram", "offload_fractions",
    "offload_token_fraction", "oracle_scores_figure", "position_profile", "position_profile_figure",
    "render_ansi", "render_html", "score_against_oracle", "score_rows", "token_mask",
]
