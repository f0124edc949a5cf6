"""Notebook parameters: one frozen dataclass per notebook, validated before any work starts.

Field comments are the documentation users read; ``params/<profile>/NN_*.yaml`` hold exactly these keys (a test
holds them equal to the notebooks). papermill only *warns* about parameters a notebook does not define, so each
notebook checks itself: the cell before ``parameters`` records ``_names_before = set(globals())``; right after the
parameters (and papermill's injected cell) ``load_from_notebook(NAME, globals(), _names_before)`` rejects unknown
names, missing names, wrong types and impossible values, naming the key, the value and what is allowed. The same
schemas validate ``params/<profile>/NN_*.yaml`` in ``splitreason run`` before anything executes.

The schemas live by stage in ``common`` (shared fields, 00), ``training`` (01-03) and ``evaluation`` (04-06);
the generic checking they use is ``splitlib.params``.
"""

from __future__ import annotations

import dataclasses
import types
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from splitlib.notebook_params.common import Common, ModelsParams, ModelSpec
from splitlib.notebook_params.evaluation import EvaluateParams, Figure5Params, RandomSwitchParams
from splitlib.notebook_params.training import AnnotateParams, GRPOParams, OpenR1Spec, RolloutSpec, SFTParams
from splitlib.params import ParamError, build

__all__ = ["SCHEMAS", "AnnotateParams", "Common", "EvaluateParams", "Figure5Params", "GRPOParams", "ModelSpec",
           "ModelsParams", "OpenR1Spec", "RandomSwitchParams", "RolloutSpec", "SFTParams", "load_from_notebook",
           "load_yaml", "schema"]


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


def load_from_notebook(notebook: str, namespace: Mapping[str, Any], names_before: set[str]) -> Any:
    """Validate the parameters a notebook kernel holds (its parameters cell plus papermill's injected cell)."""
    cls = schema(notebook)
    fields = {f.name for f in dataclasses.fields(cls)}
    new = {k for k in namespace if k not in names_before and not k.startswith("_")}
    values = {k: namespace[k] for k in new if not isinstance(namespace[k], types.ModuleType)}
    values = {k: v for k, v in values.items() if k in fields or not callable(v)}
    return build(cls, values)


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
