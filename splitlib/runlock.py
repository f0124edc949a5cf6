"""One writer per run directory.

Whatever writes into ``outputs/<run>/`` (a ``splitreason run``, or a notebook run on its own from Lab or papermill)
first takes ``acquire(run_dir)``: an exclusive ``flock`` on ``<run>/.writer.lock``, held until the writer ends. A
second writer is refused at once with a message naming the holder (what, pid, host, since when) and the way out.
The operating system drops the lock when its holder dies, however it dies (kill -9 included), so a crashed run
leaves nothing to clean up: the next writer takes the lock and overwrites the stale description.

``splitreason run`` holds the lock for the whole run and hands it to the notebook kernels it starts through the
environment variable ``SPLITREASON_RUN_LOCK`` (a random token, also written in the lock file): a kernel whose
token matches works under its parent's lock, and exits when that parent dies, so that a killed run leaves no
kernel appending to its files. A notebook takes it with ``open_run``, which holds it for the kernel's life.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import socket
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Self

from splitlib import runs

log = logging.getLogger(__name__)

LOCK_NAME = ".writer.lock"
ENV_TOKEN = "SPLITREASON_RUN_LOCK"


_HELD: dict[Path, RunLock] = {}  # what this process holds, by run directory


class RunLocked(RuntimeError):
    """Another live process writes into this run directory."""


@dataclass
class RunLock:
    """A held lock (``fd`` set) or the parent's lock a notebook kernel works under (``inherited``)."""

    path: Path
    token: str
    fd: int | None = None
    inherited: bool = False

    def release(self) -> None:
        if self.fd is not None:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None
            if os.environ.get(ENV_TOKEN) == self.token:
                del os.environ[ENV_TOKEN]

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def open_run(outputs_root: str | Path, run_name: str, what: str) -> Path:
    """``runs.run_dir(outputs_root, run_name)`` with its writer lock held for the rest of this process (a
    notebook kernel): raises ``RunLocked`` before any work when another live process writes there."""
    path = runs.run_dir(outputs_root, run_name)
    if path.resolve() not in _HELD:
        _HELD[path.resolve()] = acquire(path, what)
    return path


def acquire(run_dir: str | Path, what: str) -> RunLock:
    """Take the run directory's writer lock for ``what`` (e.g. "splitreason run --profile toy", "05_evaluate").

    Raises ``RunLocked`` when another live process holds it. Under a ``splitreason run`` whose token this process
    carries, returns the parent's lock (``inherited``) and arranges for this process to exit with its parent.
    """
    path = Path(run_dir) / LOCK_NAME
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = _read(fd)
        os.close(fd)
        token = os.environ.get(ENV_TOKEN)
        if token and holder.get("token") == token:
            if holder.get("pid") != os.getpid():  # a kernel started by the holder: it ends with its parent
                _exit_with_parent()
            return RunLock(path, token, inherited=True)
        raise RunLocked(
            f"{path.parent} is being written by {holder.get('what', 'another process')} (pid {holder.get('pid')} on "
            f"{holder.get('host')}, since {holder.get('since')}); two writers would mix or duplicate its records. "
            "Wait for that run to end (or stop it), or write to another run name (--run-name / run_name)."
        ) from None
    token = uuid.uuid4().hex
    record = {"what": what, "pid": os.getpid(), "host": socket.gethostname(), "token": token,
              "since": datetime.now(UTC).isoformat(timespec="seconds")}
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps(record).encode(), 0)
    os.environ[ENV_TOKEN] = token  # the notebook kernels this process starts work under this lock
    return RunLock(path, token, fd=fd)


def holder(run_dir: str | Path) -> dict | None:
    """The description of the live writer of ``run_dir``, or None when nobody holds its lock."""
    path = Path(run_dir) / LOCK_NAME
    if not path.exists():
        return None
    fd = os.open(path, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _read(fd)
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def _read(fd: int) -> dict:
    try:
        return json.loads(os.pread(fd, 4096, 0).decode() or "{}")
    except (UnicodeDecodeError, json.JSONDecodeError):
        return {}


_watching = threading.Event()


def _exit_with_parent(poll_s: float = 0.5) -> None:
    """Exit this process once its parent is gone (its parent id changes when the parent dies)."""
    if _watching.is_set():
        return
    _watching.set()
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(poll_s)
        log.error("the run that started this process (pid %d) has ended; exiting so that nothing more is written",
                  parent)
        os._exit(1)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()
