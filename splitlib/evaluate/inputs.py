"""Inputs of an evaluation inside a run directory: model references and the held-out problems."""

from __future__ import annotations

from pathlib import Path

from splitlib import data, runs


def resolve_model_ref(run: str | Path, ref: str) -> str:
    """A model reference from a parameter file: ``models/small``, ``hub/models/<name>``, ``02_sft/model``,
    ``03_grpo/<mode>/model`` (inside the run directory: must hold a ``config.json``, else the error names the
    notebook that writes it), an absolute directory, or a hub id (returned as is)."""
    if not ref:
        raise ValueError("empty model reference: give a path inside the run directory, a directory or a hub id")
    head = Path(ref).parts[0]
    if head in runs.RUN_FOLDERS:
        return str(runs.require(Path(run) / ref / "config.json", made_by=runs.RUN_FOLDERS[head]).parent)
    if Path(ref).is_absolute():
        return str(runs.require(Path(ref) / "config.json", made_by="whatever wrote that model directory").parent)
    return ref


def load_problems(run: str | Path, benchmark: str, source: str, limit: int | None = None) -> list[dict]:
    """Evaluation problems from ``source``: a path inside the run directory (the toy world's ``data/test.jsonl``,
    a rehearsal's ``hub/datasets/<name>``), a hub id or a local copy (``splitlib.data.load_benchmark``)."""
    return data.load_benchmark(benchmark, runs.in_run(run, source), limit=limit)
