"""When a generation's tags fail, per generation: shared by GRPO (the logged ``tag_failure`` metric reward) and the
evaluation of notebook 05 (``splitlib.evaluate.arms``).

A generation's tags fail when they are unbalanced (``splitlib.tags.check``) or, on the toy world, when a hard step
(a ``bonus`` clause, ``splitlib.toy.world.step_spans``) is written without being offloaded. A span that runs over
more than one line (a "runaway" span, which the decoder closes when the generation ends) is counted apart.
"""

from __future__ import annotations

from typing import Any

from splitlib import tags


def _hard_clauses(plain: str) -> list[tuple[int, int]]:
    from splitlib.toy.world import step_spans  # the toy world's steps; its bonus clauses are the hard ones

    return [(a, b) for a, b in step_spans(plain) if plain[a:b].startswith(" bonus ")]


def tag_outcome(generation: str, hard_steps: bool) -> dict[str, Any]:
    """One generation's tags: ``balanced``, ``hard_steps`` (toy: bonus clauses written), ``hard_missed`` (those not
    inside an offloaded span; with unbalanced tags every one counts as missed), ``runaway`` (a span over a line
    break) and ``failure`` (unbalanced, or a hard step missed)."""
    check = tags.check(generation)
    plain = tags.strip_tags(generation)
    spans = tags.spans(generation) if check.balanced else []
    clauses = _hard_clauses(plain) if hard_steps else []
    missed = sum(not any(s <= a and b <= e for s, e in spans) for a, b in clauses)
    return {"balanced": check.balanced, "hard_steps": len(clauses), "hard_missed": missed,
            "runaway": any("\n" in plain[s:e] for s, e in spans), "failure": not check.balanced or missed > 0}
