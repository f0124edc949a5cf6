"""`splitreason run`: notebook selection, all parameters validated before anything runs, the run manifest,
a failing notebook stopping the run, and the smoke profile end to end through papermill."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import nbformat
import pytest
import yaml

from splitlib import cli, pipeline, runlock, runrecord
from splitlib import notebook_params as nbp
from splitlib import params as sp
from splitlib.notebook_params import SCHEMAS, Common

NAMES = ["00_models", "01_annotate", "02_sft", "03_grpo", "05_evaluate", "06_figure5"]


# ---------------------------------------------------------------------------------------------------------
# select
@pytest.mark.parametrize(
    "only, start, expected",
    [
        (None, None, NAMES),
        (["02"], None, ["02_sft"]),
        (["2"], None, ["02_sft"]),
        (["02_sft", "05"], None, ["02_sft", "05_evaluate"]),
        (["05", "00"], None, ["00_models", "05_evaluate"]),  # pipeline order, not argument order
        (None, "03", ["03_grpo", "05_evaluate", "06_figure5"]),
        (None, "00_models", NAMES),
        (["01", "05"], "02", ["05_evaluate"]),
    ],
    ids=["all", "only_prefix", "only_unpadded_prefix", "only_full_name_and_prefix", "only_keeps_pipeline_order",
         "from_prefix", "from_full_name", "from_and_only"],
)
def test_select_filters_by_only_and_from(only, start, expected):
    assert pipeline.select(NAMES, only, start) == expected


@pytest.mark.parametrize("only, start, bad", [(["04"], None, "04"), (["02", "sft"], None, "sft"), (None, "9", "9"),
                                              (["02_sf"], None, "02_sf")],
                         ids=["only_missing_number", "only_unknown_word", "from_unknown", "only_partial_name"])
def test_select_unknown_notebook_names_it_and_lists_the_notebooks(only, start, bad):
    with pytest.raises(sp.ParamError) as info:
        pipeline.select(NAMES, only, start)
    assert repr(bad) in str(info.value)
    assert ", ".join(NAMES) in str(info.value)


# ---------------------------------------------------------------------------------------------------------
# a scratch project: temp notebooks/ and params/ with fake schemas, so faults can be injected
@dataclass(frozen=True)
class ScratchParams(Common):
    """A notebook with only the common parameters."""


def common_values(profile: str) -> dict:
    return {"profile": profile, "run_name": profile, "outputs_root": "outputs", "seed": 0, "progress": False,
            "overwrite": False}


def write_notebook(path: Path, body: str) -> None:
    params_cell = nbformat.v4.new_code_cell("\n".join(f"{k} = {v!r}" for k, v in common_values("smoke").items()))
    params_cell.metadata["tags"] = ["parameters"]
    nb = nbformat.v4.new_notebook(cells=[params_cell, nbformat.v4.new_code_cell(body)])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)


@pytest.fixture
def scratch(tmp_path, monkeypatch):
    """Point the pipeline at empty temp notebooks/ and params/smoke/; returns a helper adding notebooks."""
    nb_dir, params_dir = tmp_path / "notebooks", tmp_path / "params"
    (params_dir / "smoke").mkdir(parents=True)
    nb_dir.mkdir()
    monkeypatch.setattr(pipeline, "NOTEBOOKS_DIR", nb_dir)
    monkeypatch.setattr(pipeline, "PARAMS_DIR", params_dir)

    def add(name: str, body: str = "print('ok')", values: dict | None = None) -> None:
        monkeypatch.setitem(SCHEMAS, name, ScratchParams)
        write_notebook(nb_dir / f"{name}.ipynb", body)
        (params_dir / "smoke" / f"{name}.yaml").write_text(yaml.safe_dump(values or common_values("smoke")))

    return add


@pytest.fixture
def fake_papermill(monkeypatch):
    """Record notebook executions instead of starting kernels (only for the bookkeeping tests)."""
    import papermill

    calls: list[dict] = []

    def execute_notebook(input_path, output_path, parameters=None, **kwargs):
        calls.append({"input": input_path, "output": output_path, "parameters": parameters})
        Path(output_path).write_text("{}")

    monkeypatch.setattr(papermill, "execute_notebook", execute_notebook)
    return calls


def test_a_bad_yaml_anywhere_fails_before_any_notebook_runs(scratch, fake_papermill, tmp_path):
    scratch("00_first")
    scratch("01_second", values={**common_values("smoke"), "seed": "zero"})
    with pytest.raises(sp.ParamError, match=r"01_second\.yaml.*seed='zero'"):
        pipeline.run("smoke", outputs_root=str(tmp_path / "out"))
    assert fake_papermill == []
    assert not (tmp_path / "out").exists()


def test_a_missing_yaml_fails_before_any_notebook_runs(scratch, fake_papermill, tmp_path):
    scratch("00_first")
    scratch("01_second")
    (pipeline.PARAMS_DIR / "smoke" / "01_second.yaml").unlink()
    with pytest.raises(sp.ParamError, match=r"missing parameter file .*01_second\.yaml"):
        pipeline.run("smoke", outputs_root=str(tmp_path / "out"))
    assert fake_papermill == []


def test_cli_reports_a_bad_yaml_and_exits_1_without_running(scratch, fake_papermill, tmp_path, caplog):
    scratch("00_first", values={**common_values("smoke"), "colour": "red"})
    assert cli.main(["run", "--profile", "smoke", "--outputs-root", str(tmp_path / "out")]) == 1
    assert "unknown parameter(s) colour" in caplog.text
    assert fake_papermill == []


def test_a_second_run_into_the_same_run_directory_is_refused_before_any_notebook(scratch, fake_papermill, tmp_path,
                                                                                   caplog, monkeypatch):
    scratch("00_first", values=common_values("smoke"))
    monkeypatch.delenv(runlock.ENV_TOKEN, raising=False)
    run_dir = tmp_path / "out" / "smoke"
    hold = "import sys, time\nfrom splitlib import runlock\nrunlock.acquire(sys.argv[1], 'the first run')\n" \
           "print('locked', flush=True)\ntime.sleep(60)\n"
    first = subprocess.Popen([sys.executable, "-c", hold, str(run_dir)], stdout=subprocess.PIPE, text=True)
    try:
        assert first.stdout.readline().strip() == "locked"
        assert cli.main(["run", "--profile", "smoke", "--outputs-root", str(tmp_path / "out")]) == 1
    finally:
        first.kill()
        first.wait()
    assert f"is being written by the first run (pid {first.pid}" in caplog.text
    assert fake_papermill == []
    assert cli.main(["run", "--profile", "smoke", "--outputs-root", str(tmp_path / "out")]) == 0  # free again
    assert len(fake_papermill) == 1


def test_unknown_profile_names_the_known_profiles(scratch, fake_papermill, tmp_path):
    scratch("00_first")
    with pytest.raises(sp.ParamError, match="unknown profile 'huge'; profiles: smoke"):
        pipeline.run("huge", outputs_root=str(tmp_path / "out"))


def test_run_passes_validated_params_with_run_name_and_absolute_outputs_root(scratch, fake_papermill, tmp_path,
                                                                              monkeypatch):
    scratch("00_first")
    monkeypatch.chdir(tmp_path)
    pipeline.run("smoke", run_name="ci", outputs_root="rel_out")
    (call,) = fake_papermill
    assert call["parameters"] == {**common_values("smoke"), "run_name": "ci", "outputs_root": str(tmp_path / "rel_out")}
    assert (tmp_path / "rel_out" / "ci" / "manifest.json").exists()  # where the notebooks write too


def test_rerunning_part_of_a_run_keeps_the_records_of_the_other_notebooks(scratch, fake_papermill, tmp_path):
    for name in ("00_first", "01_second", "02_third"):
        scratch(name)
    out = str(tmp_path / "out")
    manifest_path = pipeline.run("smoke", outputs_root=out)
    pipeline.run("smoke", start="01", outputs_root=out)
    manifest = json.loads(manifest_path.read_text())
    assert [n["name"] for n in manifest["notebooks"]] == ["00_first", "01_second", "02_third"]
    assert [c["input"].rsplit("/", 1)[1] for c in fake_papermill] == [
        "00_first.ipynb", "01_second.ipynb", "02_third.ipynb", "01_second.ipynb", "02_third.ipynb"]


def test_an_interrupted_notebook_is_recorded_as_interrupted(scratch, fake_papermill, tmp_path, monkeypatch):
    import papermill

    scratch("00_first")

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(papermill, "execute_notebook", interrupted)
    with pytest.raises(KeyboardInterrupt):
        pipeline.run("smoke", outputs_root=str(tmp_path / "out"))
    manifest = json.loads((tmp_path / "out" / "smoke" / "manifest.json").read_text())
    assert [(n["name"], n["status"]) for n in manifest["notebooks"]] == [("00_first", "interrupted")]


def test_kernels_log_their_progress_and_their_output_stays_in_the_executed_copies(scratch, tmp_path, monkeypatch):
    import papermill

    from splitlib import progressbar

    seen = {}

    def execute_notebook(input_path, output_path, parameters=None, **kwargs):
        seen.update(kwargs, env=os.environ.get(progressbar.ENV))
        Path(output_path).write_text("{}")

    monkeypatch.setattr(papermill, "execute_notebook", execute_notebook)
    monkeypatch.delenv(progressbar.ENV, raising=False)
    scratch("00_first")
    pipeline.run("smoke", outputs_root=str(tmp_path / "out"))
    assert seen["env"] == "log" and seen["log_output"] is False  # no "WARNING papermill:" line per output
    assert progressbar.ENV not in os.environ  # restored after the run


def test_every_run_ends_with_a_summary_page_and_the_cli_prints_it_with_the_headline(scratch, fake_papermill,
                                                                                    tmp_path, capsys):
    scratch("00_first")
    assert cli.main(["run", "--profile", "smoke", "--outputs-root", str(tmp_path / "out")]) == 0
    page = tmp_path / "out" / "smoke" / "SUMMARY.md"
    assert "| 00_first | ok |" in page.read_text()
    assert capsys.readouterr().out.splitlines() == [f"done: {page}",
                                                    "no headline yet (it comes from 05_evaluate and 06_figure5)"]


# ---------------------------------------------------------------------------------------------------------
# the reference-run guard (splitlib.runrecord; its unit tests: test_runrecord.py)
@pytest.fixture
def recording_papermill(monkeypatch):
    """papermill without kernels, recording each notebook's parameters as its validation cell would."""
    import papermill

    calls: list[dict] = []

    def execute_notebook(input_path, output_path, parameters=None, **kwargs):
        calls.append(parameters)
        run = Path(parameters["outputs_root"]) / parameters["run_name"]
        if not parameters["overwrite"]:
            runrecord.check(run, Path(input_path).stem, parameters)
        runrecord.record(run, Path(input_path).stem, parameters)
        Path(output_path).write_text("{}")

    monkeypatch.setattr(papermill, "execute_notebook", execute_notebook)
    return calls


def test_a_run_into_a_run_made_with_other_parameters_is_refused_before_any_notebook(scratch, recording_papermill,
                                                                                    tmp_path, caplog):
    scratch("00_first")
    scratch("01_second")
    out = str(tmp_path / "out")
    assert cli.main(["run", "--profile", "smoke", "--outputs-root", out]) == 0
    assert cli.main(["run", "--profile", "smoke", "--outputs-root", out]) == 0  # same parameters: resumes
    assert len(recording_papermill) == 4
    scratch("01_second", values={**common_values("smoke"), "seed": 1})
    assert cli.main(["run", "--profile", "smoke", "--outputs-root", out]) == 1
    assert len(recording_papermill) == 4  # refused before 00_first ran again
    assert "holds 01_second made with other parameters" in caplog.text and "seed: 0 -> 1" in caplog.text
    assert cli.main(["run", "--profile", "smoke", "--outputs-root", out, "--run-name", "new"]) == 0
    assert cli.main(["run", "--profile", "smoke", "--outputs-root", out, "--force"]) == 0
    assert [c["overwrite"] for c in recording_papermill[-2:]] == [True, True]
    assert runrecord.records(Path(out) / "smoke")["01_second"]["params"]["seed"] == 1
    assert cli.main(["run", "--profile", "smoke", "--outputs-root", out]) == 0  # the forced run is the record now


def test_pipeline_plan_with_force_sets_overwrite_on_every_notebook(scratch, tmp_path):
    scratch("00_first")
    (step,) = pipeline.plan("smoke", ["00_first"], "r", str(tmp_path), force=True)
    assert step.params["overwrite"] is True
    (step,) = pipeline.plan("smoke", ["00_first"], "r", str(tmp_path))
    assert step.params["overwrite"] is False


# ---------------------------------------------------------------------------------------------------------
# real papermill runs (slow: a kernel start each)
@pytest.mark.slow
def test_failing_notebook_stops_the_run_names_itself_and_its_executed_copy(scratch, tmp_path, caplog):
    scratch("00_boom", body="raise RuntimeError('boom from the test notebook')")
    scratch("01_after", body="print('must not run')")
    out = tmp_path / "out"
    assert cli.main(["run", "--profile", "smoke", "--outputs-root", str(out)]) == 1

    executed = out / "smoke" / "notebooks" / "00_boom.ipynb"
    assert f"notebook 00_boom failed; executed copy: {executed}" in caplog.text
    assert "boom from the test notebook" in executed.read_text()
    assert not (out / "smoke" / "notebooks" / "01_after.ipynb").exists()
    manifest = json.loads((out / "smoke" / "manifest.json").read_text())
    (record,) = manifest["notebooks"]
    assert (record["name"], record["status"]) == ("00_boom", "failed")
    assert record["ended_at"] and isinstance(record["duration_s"], float)


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory) -> tuple[int, Path]:
    """`splitreason run --profile smoke --only 00 --outputs-root TMP`, once for the tests below."""
    root = tmp_path_factory.mktemp("smoke_outputs")
    rc = cli.main(["run", "--profile", "smoke", "--only", "00", "--outputs-root", str(root)])
    return rc, root / "smoke"


@pytest.mark.slow
def test_smoke_run_of_00_succeeds_and_keeps_the_executed_copy(smoke_run):
    rc, run = smoke_run
    assert rc == 0
    executed = run / "notebooks" / "00_models.ipynb"
    nb = nbformat.read(executed, as_version=4)
    assert any(c.get("outputs") for c in nb.cells if c.cell_type == "code")
    assert not [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]


@pytest.mark.slow
def test_smoke_run_manifest_records_git_versions_hardware_and_each_notebook(smoke_run):
    _rc, run = smoke_run
    manifest = json.loads((run / "manifest.json").read_text())
    assert (manifest["profile"], manifest["run_name"]) == ("smoke", "smoke")
    assert re.fullmatch(r"[0-9a-f]{40}", manifest["git"]["commit"])
    assert isinstance(manifest["git"]["dirty"], bool)
    assert {"torch", "transformers", "papermill"} <= set(manifest["versions"])
    assert {"cpu", "cpu_count", "gpus", "python", "platform"} <= set(manifest["hardware"])
    (record,) = manifest["notebooks"]
    expected = sp.as_dict(nbp.load_yaml("00_models", pipeline.PARAMS_DIR / "smoke" / "00_models.yaml",
                                       {"run_name": "smoke", "outputs_root": str(run.parent)}))
    assert record["params"] == expected
    assert record["params_file"] == "params/smoke/00_models.yaml"
    assert record["status"] == "ok"
    assert record["executed_notebook"] == str(run / "notebooks" / "00_models.ipynb")
    assert datetime.fromisoformat(record["started_at"]) <= datetime.fromisoformat(record["ended_at"])
    assert isinstance(record["duration_s"], float)


@pytest.mark.slow
def test_smoke_run_of_00_writes_data_models_and_metrics_for_both_models(smoke_run):
    _rc, run = smoke_run
    metrics = json.loads((run / "00_models" / "metrics.json").read_text())
    assert sorted(row["model"] for row in metrics["models"]) == ["big", "small"]
    assert (metrics["n_train"], metrics["n_test"]) == (48, 24)
    for role in ("small", "big"):
        assert (run / "models" / role / "config.json").exists()
    assert len((run / "data" / "train.jsonl").read_text().splitlines()) == 48
    step_manifest = json.loads((run / "00_models" / "manifest.json").read_text())
    assert step_manifest["params"]["outputs_root"] == str(run.parent)


def test_scratch_helpers_leave_the_real_project_untouched():
    """Guards the monkeypatching above: the real notebooks and schemas are what the pipeline sees by default."""
    assert pipeline.NOTEBOOKS_DIR == Path(pipeline.__file__).resolve().parent.parent / "notebooks"
    assert "00_models" in pipeline.notebook_names()
    assert all(not name.startswith(("00_first", "00_boom")) for name in SCHEMAS)

