"""One writer per run directory: a second writer is refused, a crashed writer's lock is free again, and a notebook
kernel started by a run works under the run's lock and ends with it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from splitlib import runlock

HOLD = textwrap.dedent("""
    import sys, time
    from splitlib import runlock
    lock = runlock.acquire(sys.argv[1], "holder script")
    print("locked", flush=True)
    time.sleep(60)
""")


def _start_holder(run: Path) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k != runlock.ENV_TOKEN}
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(run)], stdout=subprocess.PIPE, text=True, env=env)
    assert proc.stdout.readline().strip() == "locked"
    return proc


@pytest.fixture
def clean_env(monkeypatch):
    monkeypatch.delenv(runlock.ENV_TOKEN, raising=False)


def test_a_second_writer_is_refused_with_the_holders_description(tmp_path, clean_env):
    holder = _start_holder(tmp_path)
    try:
        with pytest.raises(runlock.RunLocked, match=rf"holder script \(pid {holder.pid} on .*--run-name"):
            runlock.acquire(tmp_path, "second writer")
        assert runlock.holder(tmp_path)["pid"] == holder.pid
    finally:
        holder.kill()
        holder.wait()


def test_the_lock_of_a_writer_killed_with_sigkill_is_free_at_once(tmp_path, clean_env):
    holder = _start_holder(tmp_path)
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    assert runlock.holder(tmp_path) is None
    with runlock.acquire(tmp_path, "after the crash") as lock:
        assert not lock.inherited
        assert runlock.holder(tmp_path)["what"] == "after the crash"
    assert runlock.holder(tmp_path) is None
    assert runlock.ENV_TOKEN not in os.environ  # released: children no longer inherit it


CHILD = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from splitlib import runlock
    lock = runlock.acquire(sys.argv[1], "kernel")
    print("inherited" if lock.inherited else "own", flush=True)
    while True:  # a kernel still appending after its run died would keep writing here
        with open(Path(sys.argv[1]) / "rows.txt", "a") as f:
            f.write("row\\n")
        time.sleep(0.1)
""")

PARENT = textwrap.dedent("""
    import subprocess, sys, time
    from splitlib import runlock
    lock = runlock.acquire(sys.argv[1], "splitreason run")
    child = subprocess.Popen([sys.executable, "-c", sys.argv[2], sys.argv[1]], stdout=subprocess.PIPE, text=True)
    print(child.stdout.readline().strip(), child.pid, flush=True)
    time.sleep(60)
""")


def test_a_kernel_started_by_the_run_works_under_its_lock_and_exits_when_the_run_is_killed(tmp_path, clean_env):
    parent = subprocess.Popen([sys.executable, "-c", PARENT, str(tmp_path), CHILD], stdout=subprocess.PIPE, text=True)
    mode, child_pid = parent.stdout.readline().split()
    assert mode == "inherited"
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and _alive(int(child_pid)):
        time.sleep(0.1)
    assert not _alive(int(child_pid)), "the kernel outlived its run"
    rows = (tmp_path / "rows.txt").read_text().count("row")
    time.sleep(0.5)
    assert (tmp_path / "rows.txt").read_text().count("row") == rows  # nothing appended after the run died


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie (exited, not yet reaped by init) counts as gone
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except FileNotFoundError:
        return False


def test_an_unrelated_process_with_a_wrong_token_is_still_refused(tmp_path, monkeypatch):
    monkeypatch.delenv(runlock.ENV_TOKEN, raising=False)
    holder = _start_holder(tmp_path)
    monkeypatch.setenv(runlock.ENV_TOKEN, "not-the-holders-token")
    try:
        with pytest.raises(runlock.RunLocked):
            runlock.acquire(tmp_path, "impostor")
    finally:
        holder.kill()
        holder.wait()


def test_open_run_holds_the_lock_for_the_process_and_a_second_call_reuses_it(tmp_path, clean_env):
    run = runlock.open_run(tmp_path, "r", "05_evaluate")
    try:
        assert run == tmp_path / "r"
        assert runlock.open_run(tmp_path, "r", "05_evaluate again") == run  # re-running a cell in Lab
        assert runlock.holder(run)["what"] == "05_evaluate"
        refused = subprocess.run([sys.executable, "-c", HOLD, str(run)], capture_output=True, text=True,
                                 env={k: v for k, v in os.environ.items() if k != runlock.ENV_TOKEN}, check=False)
        assert refused.returncode != 0 and "is being written by 05_evaluate" in refused.stderr
    finally:
        runlock._HELD.pop(run.resolve()).release()


def test_the_holder_acquiring_again_gets_its_own_lock_back_without_watching_its_parent(tmp_path, clean_env,
                                                                                     monkeypatch):
    watched = []
    monkeypatch.setattr(runlock, "_exit_with_parent", lambda: watched.append(True))
    with runlock.acquire(tmp_path, "first"):
        again = runlock.acquire(tmp_path, "second")
        assert again.inherited and watched == []
