"""`make lint` passes: ruff (pinned, rules from pyproject.toml) finds nothing in the library, tests and benchmarks."""

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_ruff_finds_nothing():
    ruff = Path(sys.executable).parent / "ruff"
    done = subprocess.run([str(ruff), "check", "--no-cache", "splitlib", "tests", "benchmarks"], cwd=REPO,
                          capture_output=True, text=True, check=False)
    assert done.returncode == 0, f"ruff found problems (run `make lint`):\n{done.stdout}{done.stderr}"
