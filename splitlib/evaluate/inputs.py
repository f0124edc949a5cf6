"""Inputs of an evaluation inside a run directory: model references and the held-out problems."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

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


def open_decoder(setup: Any, run: str | Path, log_dir: str | Path, model_dirs: Mapping[str, str],
                 style: Any) -> tuple[dict, Any]:
    """Notebook 04's and 05's decoder: the big model's ``vllm serve`` first when the parameters ``setup`` serve it
    (``serve.big``, started now; stop it with ``splitlib.serve.stop_all``), then the decoder service over the
    engines of ``setup`` (one method's models at a time: a small one and the big one), checked to render the
    prompt ``style``. Returns ``(servers, decoder)``."""
    from splitlib import decoder_service, prompts, serve

    servers = serve.start_servers(setup.serve, run, log_dir, models={"big": model_dirs["big"]})
    decoder = decoder_service.DecoderService(model_dirs, kind=setup.kind, big_kind=setup.big_kind,
                                             decode=setup.decode, max_loaded=2, prompt_style=style,
                                             backend_opts=serve.with_servers(setup.backend_opts, servers))
    prompts.check_decoder_style(decoder.settings, style)
    return servers, decoder
