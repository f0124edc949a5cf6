"""Notebook parameters: one frozen dataclass per notebook, validated before any work starts.

Field comments are the documentation users read; ``params/<profile>/NN_*.yaml`` hold exactly these keys (a test
holds them equal to the notebooks). A notebook's ``parameters`` cell holds one annotated literal per field,
``name: TYPE = value  # help``, with TYPE from ``annotation(field type)`` and no ``=`` in the help: the syntax
papermill's inspection reads (``papermill --help-notebook`` lists each with its type and help; injected names it
does not find there are "unknown" to it).

papermill only *warns* about parameters a notebook does not define, so each notebook checks itself: the cell
before ``parameters`` records ``_names_before = set(globals())``; right after the parameters (and papermill's
injected cell) ``load_from_notebook(NAME, globals(), _names_before)`` rejects unknown names, missing names, wrong
types and impossible values, naming the key, the value and what is allowed. The names it takes for parameters are
fixed at its first call (kept in the kernel as ``_parameter_names``) plus whatever the parameters cell annotates,
so re-running any cell in JupyterLab (the validation included, after later cells made ``P``, ``run``, ...) works.
The same schemas validate ``params/<profile>/NN_*.yaml`` in ``splitreason run`` before anything executes.

The schemas live by stage in ``common`` (shared fields, 00), ``training`` (01-03) and ``evaluation`` (04-06);
the generic checking they use is ``splitlib.params``.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping, MutableMapping
from pathlib import Path
from typing import Any

import yaml

from splitlib.notebook_params.common import Common, ModelsParams, ModelSpec
from splitlib.notebook_params.evaluation import EvaluateParams, Figure5Params, RandomSwitchParams
from splitlib.notebook_params.training import AnnotateParams, GRPOParams, OpenR1Spec, RolloutSpec, SFTParams
from splitlib.params import ParamError, build

__all__ = ["SCHEMAS", "AnnotateParams", "Common", "EvaluateParams", "Figure5Params", "GRPOParams", "ModelSpec",
           "ModelsParams", "OpenR1Spec", "RandomSwitchParams", "RolloutSpec", "SFTParams", "annotation",
           "load_from_notebook", "load_yaml", "schema"]


def schemas() -> dict[str, type]:
    """Notebook name -> its schema: every ``Common`` subclass declares ``NOTEBOOK``."""
    found: dict[str, type] = {}
    pending = list(Common.__subclasses__())
    while pending:
        cls = pending.pop()
        pending += cls.__subclasses__()
        if "NOTEBOOK" in vars(cls):
            found[cls.NOTEBOOK] = cls
    return dict(sorted(found.items()))


SCHEMAS: dict[str, type] = schemas()


def schema(notebook: str) -> type:
    known = SCHEMAS
    if notebook not in known:
        raise ParamError(f"no parameter schema for notebook {notebook!r}; known: {', '.join(known)}")
    return known[notebook]


PARAMETER_NAMES = "_parameter_names"  # where a kernel keeps the names its first validation took for parameters


def load_from_notebook(notebook: str, namespace: MutableMapping[str, Any], names_before: set[str]) -> Any:
    """Validate the parameters a notebook kernel holds (its parameters cell plus papermill's injected cell).

    The first call takes the names assigned since ``names_before`` (the parameters and injected cells; modules,
    private names and helper functions aside) and keeps them in the kernel; later calls (a cell re-run in Lab)
    read the same names, plus any the parameters cell annotates, never the notebook's own later variables."""
    cls = schema(notebook)
    fields = {f.name for f in dataclasses.fields(cls)}
    names = namespace.get(PARAMETER_NAMES)
    if names is None:
        names = {k for k in namespace if k not in names_before and not k.startswith("_")}
        names = {k for k in names if not isinstance(namespace[k], types.ModuleType)
                 and (k in fields or not callable(namespace[k]))}
        namespace[PARAMETER_NAMES] = frozenset(names)
    names = set(names) | set(namespace.get("__annotations__", {}))  # a name added to the cell in Lab
    return build(cls, {k: namespace[k] for k in names if k in namespace})


def annotation(tp: Any) -> str:
    """A schema field's type as a parameters-cell annotation papermill reads (``\\w``, ``[``, ``]``, ``,`` only):
    ``int | None`` -> ``Optional[int]``, a ``Literal`` of strings -> ``str``, a nested spec -> ``dict``, ``Any``
    left out (``dict[str, Any]`` -> ``dict``). The notebooks import ``Optional`` before ``_names_before``."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is typing.Literal:
        return annotation(type(args[0]))
    if origin in (typing.Union, types.UnionType):
        rest = [a for a in args if a is not type(None)]
        inner = annotation(rest[0]) if len(rest) == 1 else "object"
        return f"Optional[{inner}]" if len(rest) < len(args) else inner
    if origin in (list, tuple):
        return f"list[{annotation(args[0])}]" if args and args[0] is not Any else "list"
    if origin is dict:
        return f"dict[{annotation(args[0])}, {annotation(args[1])}]" if args and Any not in args else "dict"
    if dataclasses.is_dataclass(tp) or tp is dict:
        return "dict"
    if tp is Any:
        return "object"
    return tp.__name__


def load_yaml(notebook: str, path: str | Path, overrides: Mapping[str, Any] | None = None) -> Any:
    """Validate a ``params/<profile>/NN_*.yaml`` file (plus overrides) against the notebook's schema."""
    p = Path(path)
    if not p.exists():
        raise ParamError(f"missing parameter file {p}; every profile needs one per notebook")
    try:
        values = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as err:  # its message names "<unicode string>": say which file, and where
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(err, "problem", None) or str(err)
        raise ParamError(f"{p}: not valid YAML{where}: {problem}; fix the file (YAML syntax: key: value)") from None
    if not isinstance(values, Mapping):
        raise ParamError(f"{p}: expected a mapping of parameter names to values")
    try:
        return build(schema(notebook), {**values, **(overrides or {})})
    except ParamError as err:
        raise ParamError(f"{p}: {err}") from err
