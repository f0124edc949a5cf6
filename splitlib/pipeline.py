"""``splitreason run``: execute the numbered notebooks in order with papermill, one profile at a time.

All parameter files are validated, and checked against the run directory's record (``splitlib.runrecord``: a
run made with other parameters is refused unless ``force``), before the first notebook starts. Each executed
notebook is saved to ``outputs/<run>/notebooks/`` (written as it runs); ``outputs/<run>/manifest.json`` (git
state, versions, hardware, parameters and timings per notebook) is rewritten atomically after every notebook,
so a failed run still documents what ran, and ``outputs/<run>/SUMMARY.md`` (``splitlib.summary``) is written
at the end of every run, failed ones included.

The terminal shows one progress line per notebook (``[2/7] 01_annotate``, cells done; on a terminal only) or,
elsewhere, a log line as each starts and ends; the kernels' own output goes to the executed copies, not to this
log, and their progress bars are a few log lines there (``SPLITREASON_PROGRESS=log``, ``splitlib.progressbar``).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from splitlib import notebook_params as nbp
from splitlib import params as sp
from splitlib import progressbar, runlock, runrecord, runs, summary

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parent.parent
NOTEBOOKS_DIR = REPO / "notebooks"
PARAMS_DIR = REPO / "params"
# the kernel's own log: errors only (ipykernel warns on every start that its local TCP channels are unencrypted)
KERNEL_ARGS = ["--IPKernelApp.log_level=ERROR"]


class NotebookFailed(RuntimeError):
    """A notebook raised; the message names it and the path of its executed copy."""


@dataclass(frozen=True)
class Step:
    name: str  # e.g. "02_sft"
    notebook: Path
    params_file: Path
    params: dict


def notebook_names() -> list[str]:
    return sorted(p.stem for p in NOTEBOOKS_DIR.glob("[0-9][0-9]_*.ipynb"))


def select(names: list[str], only: list[str] | None, start: str | None) -> list[str]:
    """Filter notebook names by ``--only NN ...`` and ``--from NN`` (prefixes like "02" or full names)."""
    def match(name: str, key: str) -> bool:
        return name == key or name.split("_", 1)[0] == key.zfill(2)

    for key in (only or []) + ([start] if start else []):
        if not any(match(n, key) for n in names):
            raise sp.ParamError(f"no notebook matches {key!r}; notebooks: {', '.join(names)}")
    if start:
        first = next(i for i, n in enumerate(names) if match(n, start))
        names = names[first:]
    if only:
        names = [n for n in names if any(match(n, k) for k in only)]
    return names


def profile_dir(profile: str) -> Path:
    """``params/<profile>``; an unknown profile is a ParamError naming the known ones."""
    folder = PARAMS_DIR / profile
    if not folder.is_dir():
        known = sorted(p.name for p in PARAMS_DIR.iterdir() if p.is_dir())
        raise sp.ParamError(f"unknown profile {profile!r}; profiles: {', '.join(known)}")
    return folder


def plan(profile: str, names: list[str], run_name: str, outputs_root: str, force: bool = False) -> list[Step]:
    """Validate every notebook's parameter file for ``profile`` before anything runs (``force``: every notebook
    gets ``overwrite: true``)."""
    folder = profile_dir(profile)
    overrides = {"run_name": run_name, "outputs_root": outputs_root, **({"overwrite": True} if force else {})}
    steps = []
    for name in names:
        path = folder / f"{name}.yaml"
        validated = nbp.load_yaml(name, path, overrides)
        steps.append(Step(name, NOTEBOOKS_DIR / f"{name}.ipynb", path, sp.as_dict(validated)))
    return steps


def execute(steps: list[Step], profile: str, run_name: str, outputs_root: str) -> Path:
    """Run the planned notebooks; returns the manifest path. Raises NotebookFailed on the first failure, and
    before anything runs ``runlock.RunLocked`` when another process writes into the same run directory, or
    ``runrecord.RunMismatch`` when it holds results made with other parameters (a step without ``overwrite``)."""
    out = runs.run_dir(outputs_root, run_name)
    with runlock.acquire(out, f"splitreason run --profile {profile} (run {run_name})"):
        for step in steps:
            if not step.params.get("overwrite"):
                runrecord.check(out, step.name, step.params)
        try:
            with _kernel_env({progressbar.ENV: os.environ.get(progressbar.ENV) or "log"}), _quiet("papermill"):
                return _run_steps(steps, profile, run_name, out)
        finally:
            summary.write(out)


def _run_steps(steps: list[Step], profile: str, run_name: str, out: Path) -> Path:
    import papermill as pm

    manifest_path = out / "manifest.json"
    manifest = {"profile": profile, "run_name": run_name, "started_at": _now(), "notebooks": [],
                **runs.environment_info()}
    if manifest_path.exists():  # keep the record of earlier notebooks of this run (e.g. with --from)
        previous = json.loads(manifest_path.read_text())
        kept = [n for n in previous.get("notebooks", []) if n["name"] not in {s.name for s in steps}]
        manifest["notebooks"] = kept
    shown = sys.stderr.isatty()  # a bar per notebook on a terminal; log lines elsewhere (CI logs, files)
    for i, step in enumerate(steps, 1):
        executed = out / "notebooks" / f"{step.name}.ipynb"
        executed.parent.mkdir(parents=True, exist_ok=True)
        record = {"name": step.name, "params_file": _shown(step.params_file), "params": step.params,
                  "started_at": _now(), "executed_notebook": str(executed)}
        where = f"[{i}/{len(steps)}] {step.name}"
        (log.debug if shown else log.info)("%s: running (%s; executed copy %s)", where, _shown(step.params_file),
                                            executed)
        t0 = time.perf_counter()
        try:
            pm.execute_notebook(str(step.notebook), str(executed), parameters=step.params, cwd=str(REPO),
                                progress_bar={"desc": where, "leave": True} if shown else False,
                                log_output=False, kernel_name="python3", extra_arguments=KERNEL_ARGS)
            record["status"] = "ok"
        except Exception as err:  # papermill raises PapermillExecutionError with the cell's traceback
            record["status"] = "failed"
            raise NotebookFailed(f"notebook {step.name} failed; executed copy: {executed}\n{err}") from err
        finally:
            record.setdefault("status", "interrupted")  # e.g. Ctrl-C: the manifest still says what happened
            record["ended_at"], record["duration_s"] = _now(), round(time.perf_counter() - t0, 2)
            manifest["notebooks"] = [n for n in manifest["notebooks"] if n["name"] != step.name] + [record]
            manifest["ended_at"] = _now()
            runs.atomic_write_json(manifest_path, manifest)
        (log.debug if shown else log.info)("%s: ok in %.1f s", where, record["duration_s"])
    return manifest_path


@contextlib.contextmanager
def _quiet(logger: str) -> Iterator[None]:
    """``logger``'s INFO lines off (papermill's input/output/working-directory lines repeat this module's)."""
    target = logging.getLogger(logger)
    level = target.level
    target.setLevel(max(level, logging.WARNING))
    try:
        yield
    finally:
        target.setLevel(level)


@contextlib.contextmanager
def _kernel_env(values: dict[str, str]) -> Iterator[None]:
    """Environment variables the notebook kernels inherit, restored after."""
    before = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in before.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def run(profile: str = "toy", only: list[str] | None = None, start: str | None = None, run_name: str | None = None,
        outputs_root: str = "outputs", force: bool = False) -> Path:
    """Validate, check and run the selected notebooks of ``profile`` into ``<outputs_root>/<run_name>``
    (default: the profile's name); ``force``: replace a run made with other parameters. Returns the manifest."""
    # Notebooks run with cwd=REPO while this process may run elsewhere: one absolute root for both.
    outputs_root = str(Path(outputs_root).resolve())
    names = select(notebook_names(), only, start)
    steps = plan(profile, names, run_name or profile, outputs_root, force)
    return execute(steps, profile, run_name or profile, outputs_root)


def _shown(path: Path) -> str:
    """``path`` relative to the repository when inside it (portable manifests), else absolute."""
    return str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
