"""``outputs/<run>/SUMMARY.md``: one page saying what a run did, read from the files it left.

What ran (``manifest.json``: status and time per notebook, commit, machine), the headline numbers from each
notebook's ``metrics.json`` (the claim of 05, offload fractions, the speed-ups of 06, ...), and links to the figures
and executed notebooks, as paths relative to the run directory so the page reads the same wherever the run is
copied. ``headline(run)`` is the one line the CLI prints. Nothing here fails a run: a metrics file of another
shape is named, not parsed.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from splitlib import runs

SUMMARY = "SUMMARY.md"


def write(run_dir: str | Path) -> tuple[Path, str]:
    """Write ``<run_dir>/SUMMARY.md``; returns its path and the headline."""
    run = Path(run_dir)
    return runs.atomic_write_text(run / SUMMARY, page(run)), headline(run)


def page(run_dir: str | Path) -> str:
    run = Path(run_dir)
    manifest = _json(run / "manifest.json")
    git = manifest.get("git") or {}
    hw = manifest.get("hardware") or {}
    lines = [f"# Run `{run.name}` — profile `{manifest.get('profile', '?')}`", "",
             f"{headline(run)}", "",
             (f"Started {manifest.get('started_at', '?')}, last notebook ended {manifest.get('ended_at', '?')}; "
              f"commit `{(git.get('commit') or '?')[:10]}`{' (dirty tree)' if git.get('dirty') else ''}; "
              f"{hw.get('cpu', '?')}, {hw.get('cpu_count', '?')} CPUs, GPUs: {', '.join(hw.get('gpus') or []) or 'none'}. "
              "Details: [manifest.json](manifest.json)."), "",
              "## Notebooks", "", "| notebook | status | time | executed copy | figures |", "|---|---|---|---|---|"]
    for rec in sorted(manifest.get("notebooks", []), key=lambda r: r.get("name", "")):  # pipeline order (NN_ names)
        name = rec.get("name", "?")
        executed = f"notebooks/{name}.ipynb"
        copy = f"[{executed}]({executed})" if (run / executed).exists() else "—"
        figures = ", ".join(f"[{p.name}]({p.relative_to(run).as_posix()})" for p in sorted((run / name).glob("*.png")))
        lines.append(f"| {name} | {rec.get('status', '?')} | {_duration(rec.get('duration_s'))} | {copy} | "
                     f"{figures or '—'} |")
    lines += ["", "## Headline numbers", ""]
    for name, describe in NOTEBOOK_LINES.items():
        metrics_path = run / name / "metrics.json"
        if metrics_path.exists():
            found = _safely(describe, metrics_path)
            lines += [f"- **{name}**: {found[0]}"] if len(found) == 1 else [f"- **{name}**", *(f"  - {x}" for x in found)]
    if (run / "05_evaluate" / "results.md").exists():
        lines += ["", "The evaluation table: [05_evaluate/results.md](05_evaluate/results.md)."]
    return "\n".join(lines) + "\n"


def headline(run_dir: str | Path) -> str:
    """The run's result in one line: the claim of 05 and the measured speed-up of 06, where they exist."""
    run = Path(run_dir)
    parts = []
    ev = _json(run / "05_evaluate" / "metrics.json")
    claim = ev.get("claim") if isinstance(ev.get("claim"), dict) else None
    if claim:
        learned = claim.get("learned")
        offload = (claim.get("offload") or {}).get(learned)
        gap = (claim.get("gap_recovered") or {}).get("gap_recovered")
        parts.append(f"claim {'holds' if claim.get('holds') else 'does not hold'}: {learned} at "
                     f"{_pct(offload)} offload recovers {_pct(gap)} of the small->big gap")
    fig = _json(run / "06_figure5" / "metrics.json")
    speedups = ((fig.get("learned") or {}).get("speedup_over_big") or {}) if isinstance(fig.get("learned"), dict) else {}
    if "measured (batch 1)" in speedups:
        parts.append(f"measured speed-up over the big model alone {speedups['measured (batch 1)']:.2f}x")
    return "; ".join(parts) if parts else "no headline yet (it comes from 05_evaluate and 06_figure5)"


# ---------------------------------------------------------------------------------------------------------
# one function per notebook: its metrics.json -> a few lines of words and numbers
def _models(m: dict) -> list[str]:
    if "models" not in m:
        return [f"paper models checked: {', '.join(m.get('paper_models', {}))}"]
    rows = {r["model"]: r for r in m["models"]}
    return [(f"accuracy small {_pct(rows['small']['accuracy'])}, big {_pct(rows['big']['accuracy'])}; the big model "
             f"costs {rows['big']['decode_s_per_token'] / rows['small']['decode_s_per_token']:.1f}x the small one per "
             f"token; hard steps are {_pct(m['hard_char_fraction'])} of trace characters")]


def _annotate(m: dict) -> list[str]:
    return [(f"{m['n_annotated']} of {m['n_traces']} traces annotated by {m['annotator']} ({m['n_failed']} failed); "
             f"offload {_pct(m['offload_char_fraction_mean'])} of characters, "
             f"{_pct(m['offload_token_fraction_mean'])} of tokens")]


def _sft(m: dict) -> list[str]:
    usage = m["tag_usage"]
    return [(f"final loss {m['final_loss']:.3g}; alone, the SFT model offloads {_pct(usage['offload_char_fraction_mean'])} "
             f"of characters, tags well-formed in {_pct(usage['balanced_fraction'])} of {usage['n']} generations")]


def _grpo_arm(name: str, r: dict) -> str:
    line = (f"arm {name}: {r['steps']} steps, reward {r['reward_first']:.3g} -> {r['reward_last']:.3g}, offload "
            f"{_pct(r['offload_fraction_first'])} -> {_pct(r['offload_fraction_last'])}")
    if r.get("heldout_accuracy_first") is not None:  # the held-out split-decoding evaluation ran
        line += (f"; held-out split accuracy {_pct(r['heldout_accuracy_first'])} -> "
                 f"{_pct(r['heldout_accuracy_last'])}, tag failures {_pct(r['heldout_tag_failure_rate_first'])} -> "
                 f"{_pct(r['heldout_tag_failure_rate_last'])}")
    return line


def _grpo(m: dict) -> list[str]:
    return [_grpo_arm(name, r) for name, r in m["arms"].items()]


def _random(m: dict) -> list[str]:
    points = sorted(m["methods"].values(), key=lambda r: r["offload_token_fraction"])
    return ["random switching: " + ", ".join(f"{_pct(r['accuracy'])} at {_pct(r['offload_token_fraction'])} offload"
                                            for r in points)]


def _evaluate(m: dict) -> list[str]:
    claim, methods = m["claim"], m["methods"]
    acc = ", ".join(f"{name} {_pct(r['accuracy'])} ({_pct(r['offload_token_fraction'])} offload)"
                    for name, r in methods.items())
    failed = [k for k, ok in claim.get("checks", {}).items() if not ok]
    verdict = "holds" if claim.get("holds") else f"does not hold (failed: {', '.join(failed)})"
    return [f"claim {verdict}", f"accuracy: {acc}"]


def _figure5(m: dict) -> list[str]:
    lines = []
    if m.get("paper_headline_32B_at_1.35pct") is not None:
        lines.append(f"the paper's simulator, 32B at 1.35 % offload: {m['paper_headline_32B_at_1.35pct']:.2f}x "
                     "(the paper: 8-9x)")
    learned = m.get("learned") or {}
    speedups = ", ".join(f"{k} {v:.2f}x" for k, v in (learned.get("speedup_over_big") or {}).items())
    if speedups:
        lines.append(f"{learned.get('method')} at {_pct(learned.get('offload_token_fraction'))} offload, speed-up over "
                     f"the big model alone: {speedups}")
    v = m.get("validation") or {}
    if v:
        lines.append(f"simulator vs measured: median error {_pct(v['median'])} over {v['n_traces']} traces (target "
                     f"<= {_pct(v['target_median'])}: {'passes' if v['passes'] else 'fails'})")
    return lines


NOTEBOOK_LINES: dict[str, Callable[[dict], list[str]]] = {
    "00_models": _models, "01_annotate": _annotate, "02_sft": _sft, "03_grpo": _grpo,
    "04_random_switch": _random, "05_evaluate": _evaluate, "06_figure5": _figure5}


def _safely(describe: Callable[[dict], list[str]], path: Path) -> list[str]:
    try:
        return describe(_json(path)) or ["(no headline numbers)"]
    except (KeyError, TypeError, ValueError, AttributeError, ZeroDivisionError) as err:
        return [(f"[metrics.json]({path.parent.name}/metrics.json) has another shape than this page reads "
                 f"({type(err).__name__}: {err})")]


def _json(path: Path) -> dict[str, Any]:
    try:
        body = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {}
    return body if isinstance(body, dict) else {}


def _pct(x: Any) -> str:
    return "n/a" if x is None else f"{100 * x:.1f} %"


def _duration(seconds: Any) -> str:
    if seconds is None:
        return "—"
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"
