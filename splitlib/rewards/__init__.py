"""TRL-compatible reward functions, in a registry looked up by name (``REWARDS[name]``).

Every reward has TRL's signature ``fn(completions, **kwargs) -> list[float | None]``: ``completions`` are strings
or conversational message lists (``[{"role": "assistant", "content": ...}]``); gold texts come as ``solution``
(the TRL/open-r1 column name) or ``answer``, and the optional column ``gold_rule`` says how each parses
(``splitlib.grading.GOLD_RULES``: ``answer``, a short answer; ``solution``, a worked solution read as the released
reward reads it). Without ``gold_rule``, ``paper_accuracy`` reads its gold as released (``solution``) and ``rl4e``
as a short answer (``answer``). Other kwargs (``prompts``, ``completion_ids``, ``trainer_state``, ``log_metric``,
dataset columns) are ignored unless a reward says it reads them. ``None`` means "skip this sample" (TRL turns it
into NaN and sums the other rewards with ``nansum``).

Families:

- ``paper_accuracy``, ``paper_format``, ``paper_tag_count`` and their sum ``paper``: the released GRPO reward,
  PAPER_FACTS §6, quirks included: a free nesting point for a completion without tags, stray ``</bigmodel>``
  undetected, a floor-divided count term, coverage over all characters (tags included in the denominator), a
  ``$`` that under MULTILINE also matches before any newline (text after ``</answer>\\n`` still passes).
- ``paper_fixed_format``, ``paper_fixed_tag_count`` and ``paper_fixed`` (accuracy + those two): the same shape
  with the quirks repaired — the nesting point needs a well-formed, non-empty set of spans (``tags.check``); the
  format regex must match the whole completion (trailing whitespace allowed); the count term is ``c(n) / 2``
  without floor division (0.25 per span up to 8 spans, then -0.25 per extra span); coverage is measured on the
  untagged text, in tokens when a ``tokenizer`` kwarg (fast tokenizer, offsets) or ``offload_token_fraction``
  values (measured, used as given) are passed, else in characters; malformed tags (stray closer, nesting,
  unclosed) cost -2 and earn no coverage term.
- ``rl4e`` and ``make_rl4e(...)``: latency-aware, the project's own (the paper's objective has no latency term,
  PAPER_FACTS §6): accuracy of the offloaded rollout (``splitlib.grading``, last box, truncation counted wrong)
  minus ``latency_weight · latency_cost``, the trace's simulated seconds over the big model's alone for the same
  prompt and length; without a trace, minus ``budget_weight · max(0, offload_fraction - target_offload)``.
- ``tagged_char_fraction``: a metric, not a reward — the offloaded share of characters, logged with weight 0.
- ``tag_failure``: a metric, not a reward — 1.0 where the tags fail (``splitlib.tag_failures``), logged with weight 0.

Modules: ``base`` (the registry, TRL's inputs), imported by ``paper`` (the paper's rewards and their repaired
variant) and ``latency`` (``rl4e`` and the ``tagged_char_fraction`` metric), which do not import each other.
"""

from splitlib.rewards.base import REWARDS, RewardFn, completion_text
from splitlib.rewards.latency import (
    LatencyFn,
    RL4EConfig,
    RL4EReward,
    lenient_char_coverage,
    make_rl4e,
    rl4e,
    simulated_latency_cost,
    tag_failure,
    tagged_char_fraction,
)
from splitlib.rewards.paper import (
    COVERAGE_PEAK,
    FIXED_FORMAT_RE,
    PAPER_FORMAT_RE,
    count_shape,
    coverage_shape,
    fixed_count_term,
    fixed_nesting_ok,
    fixed_tag_count_score,
    paper,
    paper_accuracy,
    paper_accuracy_score,
    paper_count_term,
    paper_coverage_ratio,
    paper_fixed,
    paper_fixed_format,
    paper_fixed_tag_count,
    paper_format,
    paper_nesting_ok,
    paper_tag_count,
    scaffold_score,
    token_coverage_ratio,
)

__all__ = [
    "COVERAGE_PEAK", "FIXED_FORMAT_RE", "PAPER_FORMAT_RE", "REWARDS", "LatencyFn", "RL4EConfig", "RL4EReward",
    "RewardFn", "completion_text", "count_shape", "coverage_shape", "fixed_count_term", "fixed_nesting_ok",
    "fixed_tag_count_score", "lenient_char_coverage", "make_rl4e", "paper", "paper_accuracy",
    "paper_accuracy_score", "paper_count_term", "paper_coverage_ratio", "paper_fixed", "paper_fixed_format",
    "paper_fixed_tag_count", "paper_format", "paper_nesting_ok", "paper_tag_count", "rl4e", "scaffold_score",
    "simulated_latency_cost", "tag_failure", "tagged_char_fraction", "token_coverage_ratio",
]
