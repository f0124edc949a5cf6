"""The parameters cells speak papermill's language, and the validation cell survives JupyterLab's re-runs.

papermill reads a notebook's parameters from its ``parameters`` cell with a regular expression (``name: TYPE =
value  # help``; a line with a second ``=``, in a comment too, is skipped): ``--help-notebook`` must list every
parameter with its type and help; as the parameter files hold the schema's keys (test_params), ``splitreason
run`` then injects none that papermill calls unknown. In Lab,
re-running the validation cell after later cells (``P``, ``run``, ``out``, ...) or the imports cell must validate
the same parameters again.
"""

from __future__ import annotations

import ast
import dataclasses
import json
import logging
import re
import typing
from pathlib import Path

import nbformat
import pytest
import yaml
from click.testing import CliRunner
from papermill.cli import papermill as papermill_cli
from papermill.inspection import inspect_notebook

from splitlib import notebook_params as nbp
from splitlib import params as sp
from splitlib import runs
from splitlib.notebook_params import SCHEMAS

REPO = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted(p.stem for p in (REPO / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def notebook_path(name: str) -> Path:
    return REPO / "notebooks" / f"{name}.ipynb"


def code_cells(name: str) -> list[str]:
    return [c.source for c in nbformat.read(notebook_path(name), as_version=4).cells if c.cell_type == "code"]


# ---------------------------------------------------------------------------------------------------------
# papermill's view of the parameters
@pytest.mark.parametrize("name", NOTEBOOKS)
def test_papermill_infers_every_parameter_with_the_schema_type_and_a_help_text(name, caplog):
    caplog.set_level(logging.WARNING, logger="papermill")
    inferred = inspect_notebook(str(notebook_path(name)))
    hints = typing.get_type_hints(SCHEMAS[name])
    fields = [f.name for f in dataclasses.fields(SCHEMAS[name])]
    assert sorted(inferred) == sorted(fields), f"papermill sees {sorted(inferred)}; the schema has {sorted(fields)}"
    for field in fields:
        p = inferred[field]
        assert p["inferred_type_name"] == nbp.annotation(hints[field]), (
            f"{name}.{field}: annotated {p['inferred_type_name']!r}, schema {hints[field]} -> "
            f"{nbp.annotation(hints[field])!r}")
        assert p["help"], f"{name}.{field} has no help comment"
    assert "Unable to parse" not in caplog.text  # a second "=" on a line (a comment too) hides a parameter


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_help_notebook_lists_every_parameter_with_its_type(name):
    shown = CliRunner().invoke(papermill_cli, ["--help-notebook", str(notebook_path(name))])
    assert shown.exit_code == 0, shown.output
    assert "Unknown type" not in shown.output
    for field in dataclasses.fields(SCHEMAS[name]):
        assert re.search(rf"^  {field.name}: \S.* \(default ", shown.output, re.MULTILINE), f"{field.name} not listed"


@pytest.mark.parametrize("tp, expected", [
    (int, "int"), (bool, "bool"), (int | None, "Optional[int]"), (typing.Literal["a", "b"], "str"),
    (list[typing.Literal["x"]], "list[str]"), (list[list[typing.Any]], "list[list]"), (dict[str, typing.Any], "dict"),
    (dict[str, str], "dict[str, str]"), (nbp.ModelSpec, "dict"), (list[float], "list[float]"),
], ids=lambda v: str(v))
def test_annotation_renders_types_papermill_can_read(tp, expected):
    assert nbp.annotation(tp) == expected
    assert re.fullmatch(r"\w[\w\[\],\s]*", expected)  # papermill's annotation pattern


# ---------------------------------------------------------------------------------------------------------
# JupyterLab: cells run again, in any order
def kernel(name: str, injected: str = "") -> dict:
    """A namespace as a kernel holds it after the imports cell's ``_names_before``, the parameters cell and
    papermill's injected cell."""
    ns: dict = {"__name__": "__main__"}
    exec("import json\nfrom typing import Optional\n_names_before = set(globals())\n", ns)  # noqa: S102
    cell = next(s for s in code_cells(name) if s.startswith("profile: str"))
    exec(cell + "\n" + injected, ns)  # noqa: S102 -- the notebook's own cells, as a kernel runs them
    return ns


def validate(name: str, ns: dict):
    return nbp.load_from_notebook(name, ns, ns["_names_before"])


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_a_parameters_cell_using_optional_follows_an_import_of_it(name):
    cells = code_cells(name)
    index = next(i for i, s in enumerate(cells) if s.startswith("profile: str"))
    if "Optional[" in cells[index]:
        assert "from typing import Optional" in "\n".join(cells[:index]), f"{name}: import Optional before the parameters"


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_only_the_parameters_cell_annotates_names(name):
    """The validation takes annotated names for parameters (a name added to the parameters cell in Lab)."""
    for source in code_cells(name):
        if source.startswith("profile: str"):
            continue
        body = ast.parse("\n".join(line for line in source.splitlines() if not line.startswith(("%", "!"))))
        annotated = [ast.unparse(n.target) for n in body.body if isinstance(n, ast.AnnAssign)]
        assert not annotated, f"{name}: {annotated} annotated outside the parameters cell"


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_defaults_are_the_toy_profile_written_to_a_scratch_run(name):
    """"Run All" in Lab never writes into outputs/toy; pointed there (run_name = "toy"), the same parameters
    resume the reference run instead of being refused by its record."""
    ns = kernel(name)
    defaults = sp.as_dict(validate(name, ns))
    toy = runs.json_value(yaml.safe_load((REPO / "params" / "toy" / f"{name}.yaml").read_text()))
    assert defaults["run_name"] == "lab" and toy["run_name"] == "toy"
    assert {k: v for k, v in defaults.items() if k != "run_name"} == {k: v for k, v in toy.items() if k != "run_name"}


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_validation_runs_again_after_the_notebook_made_its_own_variables(name):
    ns = kernel(name)
    first = validate(name, ns)
    exec("P = 1\nrun = 'outputs/lab'\nout = 2\nrows = [1, 2]\n", ns)  # noqa: S102 -- later cells' variables
    assert validate(name, ns) == first


def test_validation_reads_the_values_of_a_parameters_cell_run_again():
    ns = kernel("00_models")
    validate("00_models", ns)
    exec("P = 1\nseed: int = 7\n", ns)  # noqa: S102 -- the user edits and re-runs the parameters cell
    assert validate("00_models", ns).seed == 7


def test_rerunning_the_imports_cell_does_not_turn_parameters_into_imports():
    ns = kernel("00_models", "seed = 3\n")
    validate("00_models", ns)
    exec("import json\n_names_before = set(globals())\nP = 1\n", ns)  # noqa: S102 -- imports cell again
    assert validate("00_models", ns).seed == 3


def test_a_misspelled_name_added_to_the_parameters_cell_later_is_still_refused():
    ns = kernel("00_models")
    validate("00_models", ns)
    exec("n_trian: int = 5\n", ns)  # noqa: S102
    with pytest.raises(sp.ParamError, match="unknown parameter.*n_trian"):
        validate("00_models", ns)


def test_an_injected_misspelled_name_is_refused_on_the_first_validation_and_every_one_after():
    ns = kernel("00_models", "n_trian = 5\n")
    for _ in range(2):
        with pytest.raises(sp.ParamError, match="unknown parameter.*n_trian"):
            validate("00_models", ns)


@pytest.mark.slow
def test_a_real_kernel_reruns_the_first_cells_and_the_validation(tmp_path):
    """Notebook 00's first cells in one IPython kernel: imports, parameters, validation; then the validation
    again after the notebook's variables exist, then imports + validation again (as Lab's "run all above")."""
    from nbclient import NotebookClient

    cells = code_cells("00_models")
    params = next(i for i, s in enumerate(cells) if s.startswith("profile: str"))
    validation = cells[params + 1].split("\n")[0]  # P = load_from_notebook(...)
    assert validation.startswith("P = load_from_notebook(")
    root = json.dumps(str(tmp_path))
    sources = [cells[params - 1], cells[params], f"outputs_root = {root}\n{validation}\nrun, out = 1, 2",
               validation, cells[params - 1], validation + "\nprint(P.run_name, P.seed)"]
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(s) for s in sources])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(REPO)}}).execute()
    assert nb.cells[-1].outputs[-1]["text"].strip() == "lab 0"
