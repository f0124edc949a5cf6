"""Rehearsal stand-ins: tiny local copies of the paper's models and data sets, in the hub's own formats.

The rehearsal profile runs the paper's code path (hub-style model folders, ``datasets.load_dataset`` on hub-style
repositories, a real vLLM server as the annotator) on CPU. ``build_standins(root)`` writes, under ``root`` (e.g.
``outputs/<run>/hub``):

- ``models/DeepSeek-R1-Distill-Qwen-1.5B`` and ``models/DeepSeek-R1-Distill-Qwen-32B``: random tiny Qwen2 models
  with the hub's config, generation config, bfloat16 safetensors and tokenizer (``models``, ``tokenizer``);
- ``models/deepseek-chat``: a hand-wired model that always answers one fixed snippet, to serve under the name
  ``deepseek-chat`` for the LLM annotator (``annotator``: plumbing, not annotation quality);
- ``datasets/{OpenR1-Math-220k, aime24_nofigures, MATH-500, OpenR1_Math_SpeculativeReasoning,
  OpenR1_Math_SpecR_GRPO}``: synthetic arithmetic problems in each hub repository's layout and columns
  (``datasets``, ``problems``).

Everything is determined by the seed and the sizes; a root that already holds a build with the same settings is
reused as it is (``runs.reuse_or_build``). ``standin_paths(root)`` names the folders by role; ``summary(root)``
describes a build, one row per stand-in.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import shutil
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from splitlib import params, runs
from splitlib.progressbar import progress_bar
from splitlib.rehearsal.layout import (
    ANNOTATOR_MODEL,
    ANNOTATOR_SERVED_NAME,
    BIG_MODEL,
    SMALL_MODEL,
    STANDINS,
    SftTags,
    StandinSizes,
    standin_paths,
)

log = logging.getLogger(__name__)

__all__ = ["ANNOTATOR_MODEL", "ANNOTATOR_SERVED_NAME", "BIG_MODEL", "BUILD_VERSION", "SMALL_MODEL", "STANDINS",
           "SftTags", "StandinSizes", "build_standins", "standin_paths", "summary"]

# Bump when the builder changes what it writes: a root built by an older version is then rebuilt, not reused.
BUILD_VERSION = "rehearsal-standins/1"
RESULT_FILE, SETTINGS_FILE = "standins.json", "standins.settings.json"
# what must exist beside the saved settings for a build to be reused
_REQUIRED = tuple(f"{STANDINS[r][0]}/{f}" for r in ("small", "big", "annotator")
                  for f in ("config.json", "model.safetensors", "tokenizer.json")) + tuple(
    f"{STANDINS[r][0]}/README.md" for r in ("openr1", "aime24", "math500", "sft", "grpo"))


def build_standins(root: str | Path, *, seed: int = 0, sizes: StandinSizes | Mapping[str, Any] | None = None,
                   sft_tags: SftTags = "padded", progress: bool = True) -> dict[str, Any]:
    """Build (or reuse) every stand-in under ``root``; returns what was written.

    ``sizes``: a ``StandinSizes`` or a mapping of its fields (None: the defaults). ``sft_tags``: how the SFT set's
    assistant turns write the tags ("padded" or "as_released"; ``SftTags``, explained in ``datasets``).
    Returns a JSON-able dict: ``root``, ``paths`` (role -> folder), ``files`` (paths relative to ``root``),
    ``counts`` (tokens, rows per data set), ``build_wall_s`` (per step, measured when built),
    ``reused`` and ``wall_s`` (this call).
    """
    if isinstance(sizes, StandinSizes):
        spec = sizes
    else:
        spec = params.build(StandinSizes, dict(sizes or {}), prefix="sizes.")
    if sft_tags not in ("padded", "as_released"):
        raise ValueError(f"sft_tags={sft_tags!r}: expected 'padded' or 'as_released'")
    root = Path(root)
    settings = {"version": BUILD_VERSION, "seed": seed, "sizes": dataclasses.asdict(spec), "sft_tags": sft_tags}
    start = time.perf_counter()
    value, reused = runs.reuse_or_build(root, settings, lambda: _build(root, seed, spec, sft_tags, progress),
                                        result=RESULT_FILE, settings_file=SETTINGS_FILE, requires=_REQUIRED)
    paths = {role: str(p) for role, p in standin_paths(root).items()}
    return {**value, "root": str(root), "paths": paths, "reused": reused, "wall_s": time.perf_counter() - start}


def summary(root: str | Path) -> list[dict[str, Any]]:
    """One row per stand-in of a built ``root``: role, the hub id it stands in for, its folder (relative to
    ``root``), files and bytes, and what it holds (models: layers, hidden size, embedding rows, dtype; data sets:
    rows). Read from the folders and the build's record; a root without a build names notebook 00."""
    base = Path(root)
    record = json.loads(runs.require(base / RESULT_FILE, made_by="notebooks/00_models.ipynb (world: rehearsal)")
                        .read_text())
    rows = []
    for role, (rel, hub_id) in STANDINS.items():
        folder = runs.require(base / rel, made_by="notebooks/00_models.ipynb (world: rehearsal)")
        files = [f for f in folder.rglob("*") if f.is_file()]
        row: dict[str, Any] = {"role": role, "stands_in": hub_id, "path": rel, "files": len(files),
                               "bytes": sum(f.stat().st_size for f in files)}
        if rel.startswith("models/"):
            config = json.loads((folder / "config.json").read_text())
            row.update(layers=config["num_hidden_layers"], hidden_size=config["hidden_size"],
                       vocab_rows=config["vocab_size"], dtype=config["torch_dtype"])
        else:
            row["rows"] = record["counts"][f"{role}_rows"]
        rows.append(row)
    return rows


def _build(root: Path, seed: int, sizes: StandinSizes, sft_tags: SftTags, progress: bool) -> dict[str, Any]:
    t0 = time.perf_counter()
    from splitlib.rehearsal import annotator, datasets, models, tokenizer  # torch, transformers, datasets: seconds

    timings: dict[str, float] = {"imports_s": round(time.perf_counter() - t0, 3)}
    for rel, _ in STANDINS.values():  # a rebuild starts clean: no file of an older build survives
        shutil.rmtree(root / rel, ignore_errors=True)
    files: list[Path] = []
    with _library_bars(progress), progress_bar(total=5, desc="rehearsal stand-ins", disable=not progress) as bar:

        @contextlib.contextmanager
        def step(name: str):
            t0 = time.perf_counter()
            yield
            timings[f"{name}_s"] = round(time.perf_counter() - t0, 3)
            bar.update()

        with step("tokenizer"):
            pools = datasets.problem_pools(seed, sizes)
            tok = tokenizer.train_tokenizer(_corpus(pools), sizes.vocab_size)
        for role in ("small", "big"):
            with step(role):
                files += models.build_reasoner(tok, sizes, role, _weight_seed(seed, role), root / STANDINS[role][0])
        with step("annotator"):
            files += annotator.build_annotator(tok, sizes, root / ANNOTATOR_MODEL)
        with step("datasets"):
            written = datasets.build_datasets(root, pools, sizes, seed, sft_tags)
            files += [f for role_files in written.values() for f in role_files]
    log.info("rehearsal stand-ins built under %s in %.1f s", root, sum(timings.values()))
    counts = {"tokens": tok.get_vocab_size(with_added_tokens=True), "openr1_rows": sizes.openr1_rows,
              "aime24_rows": sizes.aime24_rows, "math500_rows": sizes.math500_rows, "sft_rows": sizes.sft_rows,
              "grpo_rows": sizes.grpo_rows}
    return {"version": BUILD_VERSION, "seed": seed, "files": sorted(str(f.relative_to(root)) for f in files),
            "counts": counts, "build_wall_s": timings}


@contextlib.contextmanager
def _library_bars(progress: bool) -> Iterator[None]:
    """Silence transformers' and datasets' own progress bars (saving shards, writing parquet) unless ``progress``."""
    import datasets.utils
    import transformers.utils.logging as hf_logging

    shown = hf_logging.is_progress_bar_enabled(), not datasets.utils.are_progress_bars_disabled()
    if not progress:
        hf_logging.disable_progress_bar()
        datasets.utils.disable_progress_bars()
    try:
        yield
    finally:
        (hf_logging.enable_progress_bar if shown[0] else hf_logging.disable_progress_bar)()
        (datasets.utils.enable_progress_bars if shown[1] else datasets.utils.disable_progress_bars)()


def _corpus(pools: dict[str, list]) -> list[str]:
    """The tokenizer's training text: every problem, trace and solution, and the prompts' fixed sentences."""
    from splitlib import prompts, tags
    from splitlib.annotate.llm import SNIPPETS_TEMPLATE
    from splitlib.rehearsal.problems import make_trace

    texts: list[str] = []
    for pool in pools.values():
        for p in pool:
            texts += [p.question, p.solution, make_trace(p).text, make_trace(p, variant=1).text]
    return texts + [prompts.INSTRUCTION, tags.HINT, SNIPPETS_TEMPLATE] * 8


def _weight_seed(seed: int, role: str) -> int:
    from splitlib.seeds import derive_seed

    return derive_seed("rehearsal-weights", seed, role)
