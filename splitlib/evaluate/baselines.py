"""The random baseline of the claim (notebook 05): random switching at the learned method's realised offload.

Notebook 04 sweeps random-switch ratios; notebook 05 compares its learned method with the 04 point whose realised
offload is nearest, if within a tolerance. When none is that close, a random switch aimed at the learned offload
runs on the same problems (``p_big = offload``), and, if its realised offload misses, once more with ``p_big``
corrected by the ratio of target to realised offload: the last chunk is cut by EOS and the two models write
different lengths, so the realised offload is measured, never assumed.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import pandas as pd

from splitlib.evaluate import EvalProtocol, Method, aggregate, match_random, random_ratio_for
from splitlib.evaluate.records import flat_changes, method_parts

log = logging.getLogger(__name__)

RunMethods = Callable[[list[Method]], list[dict]]  # aimed methods -> every row of the notebook's methods


def check_same_setup(random_metrics: Mapping[str, Any], protocol: EvalProtocol, problems: Sequence[Mapping],
                     decoder: Any = None) -> None:
    """Raise unless the random-switch run (its ``metrics.json``) used this ``protocol`` and these ``problems``
    in this order (the baseline is compared problem by problem), and, given this notebook's ``decoder``, decoded
    with everything else that determines a row the same way: model weights and tokenizers, engines, decode
    settings, prompt template and grader (the random switch's own parameters aside)."""
    same = {"protocol": (random_metrics["protocol"], json.loads(json.dumps(asdict(protocol)))),
            "problems": (random_metrics["problem_ids"], [p["id"] for p in problems])}
    different = [k for k, (then, now) in same.items() if then != now]
    if different:
        raise ValueError(f"04_random_switch ran with other {' and '.join(different)} than this notebook's; rerun "
                         "notebooks/04_random_switch.ipynb with the same n_problems and protocol settings")
    if decoder is None:
        return
    own = method_parts(aimed_random_method(0.5, 1, 0), protocol, decoder)
    for method, record in (random_metrics.get("provenance") or {}).items():
        for variant in record.get("variants", [record]):
            then = {k: v for k, v in (variant.get("parts") or {}).items() if k not in _RANDOM_OWN}
            diff = flat_changes(then, {k: v for k, v in own.items() if k not in _RANDOM_OWN})
            if diff:
                what = "; ".join(f"{k}: {a} there, {b} here" for k, (a, b) in list(diff.items())[:4])
                raise ValueError(f"04_random_switch's {method!r} was decoded differently ({what}): its baseline would "
                                 "not compare like with like; rerun notebooks/04_random_switch.ipynb")


_RANDOM_OWN = ("policy", "policy_params")  # what a random switch sets for itself


@dataclass(frozen=True)
class RandomBaseline:
    """The outcome of ``random_baseline``."""

    matched: str | None  # the random method at the learned offload (within tolerance), or None
    rows: list[dict]  # the notebook's own rows, those of the aimed random switches included
    summary: pd.DataFrame  # ``aggregate`` of the own rows and the random-sweep rows together
    aimed: tuple[Method, ...]  # random switches run aimed at the target, in order
    realised: dict[str, float]  # realised offload of each aimed method


def aimed_random_method(p_big: float, chunk: int, seed: int, small: str = "base", big: str = "big") -> Method:
    """A random switch whose expected big share is ``p_big`` (capped at 1), named after its ratio."""
    ratio = random_ratio_for(min(p_big, 1.0))
    return Method(f"random r{ratio:.4g} (aimed)", policy="random_switch", small=small, big=big,
                  policy_params={"ratio": ratio, "chunk": chunk, "seed": seed}, sweep="random switch")


def random_baseline(rows: list[dict], random_rows: list[dict], protocol: EvalProtocol, target: float,
                    run_methods: RunMethods, *, chunk: int, seed: int, tolerance: float = 0.02,
                    offload: str = "offload_token_fraction", aim_if_missing: bool = True,
                    attempts: int = 2) -> RandomBaseline:
    """Find the random method at ``target`` offload among ``random_rows``, else run one aimed at it.

    ``rows`` are the notebook's rows so far; ``run_methods(aimed)`` evaluates the notebook's methods plus the
    aimed ones and returns all their rows (a resumable evaluation only decodes the new method). Aiming happens
    only when nothing in ``random_rows`` is within ``tolerance``, ``aim_if_missing`` is set and ``target`` > 0; it
    stops after ``attempts`` runs, on a match, or when a run realises no offload at all.
    """
    summary = aggregate(rows + random_rows, protocol)
    random_names = [n for n, pol in zip(summary["method"], summary["policy"]) if pol == "random_switch"]
    matched = match_random(summary, target, random_names, tolerance, offload)
    p_big, aimed, realised = target, [], {}
    for _ in range(attempts if matched is None and aim_if_missing and target > 0 else 0):
        method = aimed_random_method(p_big, chunk, seed)
        aimed.append(method)
        rows = run_methods(list(aimed))
        summary = aggregate(rows + random_rows, protocol)
        realised[method.name] = float(summary.set_index("method").loc[method.name, offload])
        matched = match_random(summary, target, [method.name], tolerance, offload)
        log.info("aimed random switch %s: realised offload %.3f for a target of %.3f", method.name,
                 realised[method.name], target)
        if matched or realised[method.name] == 0:
            break
        p_big *= target / realised[method.name]
    return RandomBaseline(matched, rows, summary, tuple(aimed), realised)
