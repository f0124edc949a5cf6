"""The reference-run guard: a run directory made with other parameters is refused (naming both sides and the ways
out) unless told to overwrite; the same parameters rerun and resume; where the run lives and how it shows do not
count; runs older than run.json are judged by their step manifests; `splitreason run` checks before any notebook
and `--force` passes `overwrite: true` on (those two in test_pipeline.py, beside its scratch project)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from splitlib import runlock, runrecord, runs
from splitlib.notebook_params import ModelsParams
from splitlib.params import build

SMOKE_00 = Path(__file__).resolve().parent.parent / "params" / "smoke" / "00_models.yaml"


def params(**changes) -> dict:
    return {"profile": "smoke", "run_name": "smoke", "outputs_root": "outputs", "seed": 0, "progress": False,
            "overwrite": False, "n_train": 48, "lr": 0.005, **changes}


def test_first_writer_is_recorded_and_the_same_parameters_pass(tmp_path):
    runrecord.check(tmp_path, "02_sft", params())  # nothing recorded yet
    runrecord.record(tmp_path, "02_sft", params())
    runrecord.check(tmp_path, "02_sft", params())
    entry = json.loads((tmp_path / "run.json").read_text())["notebooks"]["02_sft"]
    assert entry["params"] == params() and entry["key"] == runrecord.key(params())
    assert {"commit", "dirty"} <= set(entry["git"]) and entry["recorded_at"]


def test_other_parameters_are_refused_naming_the_run_each_difference_and_both_ways_out(tmp_path):
    runrecord.record(tmp_path, "02_sft", params())
    with pytest.raises(runrecord.RunMismatch) as info:
        runrecord.check(tmp_path, "02_sft", params(n_train=10, lr=0.01))
    text = str(info.value)
    for fragment in (str(tmp_path), "02_sft", "n_train: 48 -> 10", "lr: 0.005 -> 0.01", "--run-name NEW",
                     "-p run_name NEW", "--force", "-p overwrite True", "overwrite = True"):
        assert fragment in text, f"{fragment!r} not in {text!r}"


@pytest.mark.parametrize("change", [{"run_name": "copy"}, {"outputs_root": "/elsewhere"}, {"progress": True},
                                    {"overwrite": True}, {"added_since": 1}],
                         ids=["run_name", "outputs_root", "progress", "overwrite", "parameter_only_one_side_has"])
def test_what_does_not_decide_results_does_not_count(tmp_path, change):
    runrecord.record(tmp_path, "00_models", params())
    runrecord.check(tmp_path, "00_models", params(**change))
    assert runrecord.key(params(**{k: v for k, v in change.items() if k != "added_since"})) == runrecord.key(params())


def test_a_notebook_not_yet_recorded_joins_a_run_of_its_profile_but_not_of_another(tmp_path):
    runrecord.record(tmp_path, "00_models", params())
    runrecord.check(tmp_path, "01_annotate", params(annotator="oracle"))
    with pytest.raises(runrecord.RunMismatch, match=r"holds a run of profile 'smoke' \(00_models\), not 'toy'"):
        runrecord.check(tmp_path, "01_annotate", params(profile="toy"))


def test_a_run_older_than_run_json_is_judged_by_its_step_manifests(tmp_path):
    runs.write_step_manifest(tmp_path / "00_models", "00_models", params())
    runrecord.check(tmp_path, "00_models", params())
    with pytest.raises(runrecord.RunMismatch, match=r"(?s)from .*00_models/manifest.json.*n_train: 48 -> 5"):
        runrecord.check(tmp_path, "00_models", params(n_train=5))


def test_a_run_json_that_is_not_json_names_itself(tmp_path):
    (tmp_path / "run.json").write_text("{")
    with pytest.raises(runrecord.RunMismatch, match=r"run.json: not JSON .*fix or delete it"):
        runrecord.check(tmp_path, "00_models", params())


def test_open_run_refuses_other_parameters_unless_overwrite_and_then_records_them(tmp_path, monkeypatch):
    monkeypatch.setattr(runlock, "_HELD", {})
    monkeypatch.delenv(runlock.ENV_TOKEN, raising=False)
    base = {**yaml.safe_load(SMOKE_00.read_text()), "outputs_root": str(tmp_path), "run_name": "r"}
    try:
        run = runrecord.open_run(build(ModelsParams, base), "00_models")
        assert runrecord.records(run)["00_models"]["params"]["n_train"] == base["n_train"]
        other = {**base, "n_train": base["n_train"] - 1}
        with pytest.raises(runrecord.RunMismatch):
            runrecord.open_run(build(ModelsParams, other), "00_models")
        runrecord.open_run(build(ModelsParams, {**other, "overwrite": True}), "00_models")
        assert runrecord.records(run)["00_models"]["params"]["n_train"] == other["n_train"]
        runrecord.open_run(build(ModelsParams, other), "00_models")  # the new record is the reference now
    finally:
        for lock in runlock._HELD.values():
            lock.release()
