"""What made a run directory, and the guard that keeps one run's results from being overwritten by another's.

``outputs/<run>/run.json`` records, per notebook, the parameters that write its outputs (``params``; ``key``, a
hash of those that decide results), when, and the git state then. Before a notebook writes (``open_run``, its
validation cell) and before ``splitreason run`` starts its first notebook (``check`` for each one planned):

- no record, or the same parameters: go on. The run resumes and reuses what its results' own keys allow. A
  different git commit (or a dirty tree) does not refuse: each reusable result carries its own provenance key
  (weights hashes, settings, prompt ids, grader versions), so the code that matters is checked where it matters.
- this notebook recorded with other parameters, or the run holding another profile's notebooks: refuse, naming
  the run, both sides of every difference, and the two ways out: another run name, or ``overwrite`` (the
  parameter ``overwrite: true``, or ``splitreason run --force``), which records the new parameters.

Not compared: where the run lives and how it shows (``IGNORED``), and parameters only one side has (added or
removed since the record was written). A run written before run.json existed is judged by its notebooks' step
manifests (``<run>/<notebook>/manifest.json``, written when a notebook ends). Call these with the run's writer
lock held (``runlock``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from splitlib import provenance, runlock, runs
from splitlib.params import as_dict

RECORD = "run.json"
IGNORED = frozenset({"run_name", "outputs_root", "progress", "overwrite"})


class RunMismatch(RuntimeError):
    """The run directory holds results made with other parameters."""


def open_run(params: Any, notebook: str) -> Path:
    """A notebook's run directory (``params``: its validated parameters): the writer lock taken
    (``runlock.open_run``), the run checked against ``params`` (unless ``params.overwrite``) and ``params`` recorded."""
    run = runlock.open_run(params.outputs_root, params.run_name, notebook)
    values = as_dict(params)
    claim(run, notebook, values, overwrite=bool(values.get("overwrite")))
    return run


def claim(run_dir: str | Path, notebook: str, params: Mapping[str, Any], overwrite: bool = False) -> None:
    """Check ``run_dir`` against ``params`` for ``notebook`` (``RunMismatch``; skipped with ``overwrite``), then
    record them. Call with the run's writer lock held."""
    if not overwrite:
        check(run_dir, notebook, params)
    record(run_dir, notebook, params)


def key(params: Mapping[str, Any]) -> str:
    """Hash of the parameters that decide results."""
    return provenance.value_hash(_compared(params))


def records(run_dir: str | Path) -> dict[str, dict]:
    """Notebook -> its record: run.json's, else (runs older than run.json) its step manifest's."""
    run = Path(run_dir)
    found = {}
    for path in sorted(run.glob("*/manifest.json")):
        body = _read(path)
        if isinstance(body.get("params"), dict) and body.get("notebook") == path.parent.name:
            found[path.parent.name] = {"params": body["params"], "recorded_at": body.get("written_at"),
                                       "git": body.get("git"), "source": str(path)}
    found.update(_read(run / RECORD).get("notebooks", {}))
    return found


def check(run_dir: str | Path, notebook: str, params: Mapping[str, Any]) -> None:
    """Raise ``RunMismatch`` when ``run_dir`` holds ``notebook`` made with other parameters, or other notebooks of
    another profile; otherwise return (nothing recorded yet, or the same parameters)."""
    run, held = Path(run_dir), records(run_dir)
    if notebook in held:
        diffs = differences(held[notebook]["params"], params)
        if diffs:
            raise RunMismatch(f"{run} holds {notebook} made with other parameters ({_when(held[notebook])}):\n"
                              + "\n".join(f"  {d}" for d in diffs) + "\n" + _ways_out(run))
        return
    profiles = {n: r["params"].get("profile") for n, r in held.items()}
    others = sorted(n for n, p in profiles.items() if p is not None and p != params.get("profile"))
    if others:
        raise RunMismatch(f"{run} holds a run of profile {profiles[others[0]]!r} ({', '.join(others)}), not "
                          f"{params.get('profile')!r}; its results would mix with this one's.\n" + _ways_out(run))


def record(run_dir: str | Path, notebook: str, params: Mapping[str, Any]) -> Path:
    """Record ``params`` as what makes ``notebook``'s outputs in ``run_dir`` (atomic)."""
    path = Path(run_dir) / RECORD
    body = _read(path) or {"notebooks": {}}
    body.setdefault("notebooks", {})[notebook] = {
        "params": runs.json_value(params), "key": key(params), "git": runs.git_state(),
        "recorded_at": datetime.now(UTC).isoformat(timespec="seconds")}
    return runs.atomic_write_json(path, body)


def differences(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """``name: old -> new`` for each compared parameter both sides have and that differs."""
    before, after = _compared(old), _compared(new)
    return [f"{k}: {_short(before[k])} -> {_short(after[k])}" for k in sorted(before.keys() & after.keys())
            if before[k] != after[k]]


def _compared(params: Mapping[str, Any]) -> dict:
    return runs.json_value({k: v for k, v in params.items() if k not in IGNORED})


def _ways_out(run: Path) -> str:
    return (f"Writing there would mix or replace those results. Either use another run name (splitreason run "
            f"--run-name NEW; papermill -p run_name NEW; in the notebook run_name = \"NEW\"), or replace {run.name}'s "
            "record on purpose (splitreason run --force; papermill -p overwrite True; overwrite = True).")


def _when(entry: Mapping[str, Any]) -> str:
    git = entry.get("git") or {}
    commit = f"commit {git['commit'][:10]}" if git.get("commit") else "an unknown commit"
    commit += " (dirty tree)" if git.get("dirty") else ""
    return f"recorded {entry.get('recorded_at', '?')} at {commit}" + (
        f", from {entry['source']}" if entry.get("source") else "")


def _short(value: Any, width: int = 60) -> str:
    text = json.dumps(value, sort_keys=True)
    return text if len(text) <= width else text[: width - 3] + "..."


def _read(path: Path) -> dict:
    if not path.is_file():
        return {}
    try:
        body = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise RunMismatch(f"{path}: not JSON ({err.msg} at line {err.lineno}); fix or delete it") from None
    return body if isinstance(body, dict) else {}
