"""``make install`` / ``make post-install`` / ``make lint`` as the Makefile runs them, with a stand-in python that
records each call instead of installing: when PyTorch's CPU index is passed to pip, that the steps after pip run
for a venv and for the conda env of environment.yml alike, and that lint fails without ruff."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
TORCH_INDEX = "https://download.pytorch.org/whl/cpu"
FAKE_PYTHON = """#!/bin/bash
echo "$*" >> "$CALLS"
if [[ " $* " == *" --dry-run "* ]]; then exit "$PROBE_RC"; fi
"""

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="needs GNU make")


def fake_env(root: Path) -> Path:
    """A folder laid out like a venv whose python logs its arguments to ``root/calls``."""
    python = root / "bin" / "python"
    python.parent.mkdir(parents=True)
    python.write_text(FAKE_PYTHON)
    python.chmod(0o755)
    return root


def make(target: str, env_dir: Path, *args: str, probe_rc: int = 1, **env: str) -> tuple[subprocess.CompletedProcess,
                                                                                           list[str]]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("CONDA", "MAKE"))}
    environ.update({"CALLS": str(env_dir / "calls"), "PROBE_RC": str(probe_rc), **env})
    done = subprocess.run(["make", "--no-print-directory", target, *args], cwd=REPO, env=environ,
                          capture_output=True, text=True, timeout=60, check=False)
    calls = (env_dir / "calls").read_text().splitlines() if (env_dir / "calls").exists() else []
    return done, calls


def pip_install_requirements(calls: list[str]) -> str:
    (line,) = [c for c in calls if "-r requirements/cpu.txt" in c]
    return line


def test_plain_pypi_machine_gets_pytorchs_cpu_index(tmp_path):
    venv = fake_env(tmp_path / "venv")
    done, calls = make("install", venv, f"VENV={venv}", probe_rc=1)  # pip alone does not find torch==...+cpu
    assert done.returncode == 0, done.stderr
    assert any("--dry-run --no-deps --ignore-installed --quiet torch==2.13.0+cpu" in c for c in calls)
    assert f"--extra-index-url {TORCH_INDEX} -r requirements/cpu.txt" in pip_install_requirements(calls)
    assert (venv / ".installed").exists()


def test_a_machine_whose_pip_finds_the_build_installs_without_the_index(tmp_path):
    venv = fake_env(tmp_path / "venv")
    done, calls = make("install", venv, f"VENV={venv}", probe_rc=0)  # e.g. a local wheel mirror in pip.conf
    assert done.returncode == 0, done.stderr
    assert "--extra-index-url" not in pip_install_requirements(calls)
    assert "pip already finds torch==2.13.0+cpu" in done.stdout


@pytest.mark.parametrize("index, expected", [("", None), ("file:///srv/torch-mirror", "file:///srv/torch-mirror")])
def test_torch_index_is_overridable_and_empty_disables_it(tmp_path, index, expected):
    venv = fake_env(tmp_path / "venv")
    done, calls = make("install", venv, f"VENV={venv}", f"TORCH_INDEX={index}", probe_rc=1)
    assert done.returncode == 0, done.stderr
    line = pip_install_requirements(calls)
    assert (f"--extra-index-url {expected} " in line) if expected else ("--extra-index-url" not in line)
    assert any("--dry-run" in c for c in calls) == bool(index)  # no probe when there is no index to add


def test_install_runs_the_post_install_steps(tmp_path):
    venv = fake_env(tmp_path / "venv")
    done, calls = make("install", venv, f"VENV={venv}")
    assert done.returncode == 0, done.stderr
    after = calls[calls.index(pip_install_requirements(calls)) + 1:]
    assert after[0].startswith("-m pip uninstall --yes --quiet torchvision torchaudio torchcodec triton")
    assert after[1] == "-m pip install --quiet --no-deps -e ."
    assert after[2].startswith("-m ipykernel install --sys-prefix --name splitreason ")


def test_the_conda_env_of_environment_yml_is_used_instead_of_a_venv(tmp_path):
    prefix = fake_env(tmp_path / "envs" / "splitreason")
    done, calls = make("post-install", prefix, CONDA_DEFAULT_ENV="splitreason", CONDA_PREFIX=str(prefix))
    assert done.returncode == 0, done.stderr
    assert any(c.startswith("-m ipykernel install --sys-prefix --name splitreason") for c in calls)
    assert str(prefix / "bin" / "python") in done.stdout and ".venv" not in done.stdout
    assert not (REPO / "envs").exists()


def test_lint_fails_when_ruff_is_missing(tmp_path):
    venv = fake_env(tmp_path / "venv")
    (venv / ".installed").touch()  # newer than requirements/cpu.txt: install has nothing to do
    done, calls = make("lint", venv, f"VENV={venv}")
    assert done.returncode != 0
    assert "ruff is not installed" in done.stderr
    assert calls == []
