"""Provenance: what determined a record, as hashes, so that a result is reused only when it was made by the same
model weights, tokenizer, settings, prompt and grader.

- ``model_hash(ref)``: sha256 of a saved model folder's config, weight and tokenizer files (names and bytes). A hub
  id is hashed from its local snapshot when the hub cache has one; otherwise it stands for itself (``hub:<id>``),
  and a warning says that its weights could not be checked. Hashing a 1.5B model reads ~3.5 GB, so results are
  cached in ``~/.cache/splitreason/model_hashes.json`` (or ``$SPLITREASON_CACHE``), keyed by each file's path,
  size and modification time: a rewritten file is hashed again.
- ``file_hash(path)``: sha256 of one file, e.g. ``annotated.jsonl``.
- ``value_hash(value)``: sha256 of a JSON-able value (settings, a list of problems).
- ``key(parts)``: one key for a record from its named parts; ``changed(old, new)`` says which parts differ, for
  messages such as "02_sft/model changed: weights 3f2a… -> 9c41…".

All hashes are the first 16 hex digits of sha256.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

# what of a saved model folder decides its outputs: config, weights, tokenizer and chat template (not, e.g., the
# trainer's training_args.bin, which holds the output path: the same model saved elsewhere must hash the same)
MODEL_FILE_PATTERNS = ("config.json", "generation_config.json", "*.safetensors", "pytorch_model*.bin", "tokenizer.json",
                       "tokenizer_config.json", "special_tokens_map.json", "vocab.json", "merges.txt",
                       "tokenizer.model", "added_tokens.json", "chat_template.jinja", "chat_template.json")
_BLOCK = 1 << 20


def _digest(parts: list[tuple[str, Path]]) -> str:
    h = hashlib.sha256()
    for name, path in parts:
        h.update(name.encode() + b"\0")
        with path.open("rb") as f:
            for block in iter(lambda: f.read(_BLOCK), b""):
                h.update(block)
    return h.hexdigest()[:16]


def file_hash(path: str | Path) -> str:
    """sha256 (16 hex digits) of one file's bytes."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"nothing to hash at {p}: expected a file")
    return _digest([("", p)])


def value_hash(value: Any) -> str:
    """sha256 (16 hex digits) of a JSON-able value, keys sorted."""
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:16]


def model_files(folder: str | Path) -> list[Path]:
    """The files of a saved model folder that decide what it generates, sorted by name."""
    d = Path(folder)
    files = {p for pattern in MODEL_FILE_PATTERNS for p in d.glob(pattern) if p.is_file()}
    return sorted(files, key=lambda p: p.name)


def model_hash(ref: str | Path) -> str:
    """sha256 (16 hex digits) of a model's config, weights and tokenizer: a folder, or a hub id (its cached
    snapshot when there is one, else ``hub:<id>``)."""
    folder = Path(ref).expanduser()
    if not folder.is_dir():
        folder = _hub_snapshot(str(ref))
        if folder is None:
            log.warning("model %s is not a local folder and not in the hub cache: its weights cannot be hashed, so "
                        "results are keyed by its id alone", ref)
            return f"hub:{ref}"
    files = model_files(folder)
    if not any(f.name == "config.json" for f in files):
        raise FileNotFoundError(f"{folder} has no config.json: not a saved model (save_pretrained writes one)")
    signature = [[str(f.resolve()), f.stat().st_size, f.stat().st_mtime_ns] for f in files]
    cache = _load_cache()
    sig_key = value_hash(signature)
    if sig_key in cache:
        return cache[sig_key]
    digest = _digest([(f.name, f) for f in files])
    cache[sig_key] = digest
    _save_cache(cache)
    return digest


def key(parts: Mapping[str, Any]) -> str:
    """One key for a record made from ``parts`` (model hashes, settings, prompt id, grader version, ...)."""
    return value_hash(dict(parts))


def changed(old: Mapping[str, Any] | None, new: Mapping[str, Any]) -> dict[str, tuple[Any, Any]]:
    """The parts that differ between two provenance records: name -> (old, new)."""
    old = old or {}
    names = sorted(set(old) | set(new))
    return {n: (old.get(n), new.get(n)) for n in names if old.get(n) != new.get(n)}


def describe_changes(diff: Mapping[str, tuple[Any, Any]], limit: int = 6) -> str:
    """``changed``'s result as one line: "model.small: 3f2a… -> 9c41…; decode: {…} -> {…}"."""
    def short(v: Any) -> str:
        text = json.dumps(v, sort_keys=True, default=str) if not isinstance(v, str) else v
        return text if len(text) <= 60 else text[:57] + "..."

    items = [f"{n}: {short(a)} -> {short(b)}" for n, (a, b) in list(diff.items())[:limit]]
    more = len(diff) - limit
    return "; ".join(items) + (f"; and {more} more" if more > 0 else "")


def _hub_snapshot(repo_id: str) -> Path | None:
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(repo_id, local_files_only=True))
    except Exception:  # not a valid id, or not cached: the caller keys by the id instead  # noqa: BLE001
        return None


def _cache_path() -> Path:
    root = os.environ.get("SPLITREASON_CACHE") or Path.home() / ".cache" / "splitreason"
    return Path(root) / "model_hashes.json"


def _load_cache() -> dict[str, str]:
    try:
        return json.loads(_cache_path().read_text())
    except (OSError, json.JSONDecodeError):
        return {}


def _save_cache(cache: dict[str, str]) -> None:
    path = _cache_path()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(cache))
        os.replace(tmp, path)
    except OSError as err:  # a read-only home: hashing still works, only slower next time
        log.debug("could not write the model-hash cache %s: %s", path, err)
