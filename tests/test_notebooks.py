"""Every notebook, in order, on the smoke profile through `splitreason run` (papermill), into a temporary outputs
root; then what each notebook promises to leave behind. Numbers are not asserted here (smoke models learn nothing);
shapes, invariants and the "weights really changed" checks are."""

from __future__ import annotations

import json
from pathlib import Path

import nbformat
import pytest

from splitlib import cli, pipeline, runs, tags

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("smoke_chain")
    rc = cli.main(["run", "--profile", "smoke", "--outputs-root", str(root)])
    assert rc == 0, f"smoke run failed; executed notebooks are in {root / 'smoke' / 'notebooks'}"
    return root / "smoke"


def metrics(run: Path, notebook: str) -> dict:
    return json.loads((run / notebook / "metrics.json").read_text())


def test_every_notebook_ran_without_errors_and_is_in_the_manifest(run):
    manifest = json.loads((run / "manifest.json").read_text())
    names = pipeline.notebook_names()
    assert [r["name"] for r in manifest["notebooks"]] == names and len(names) == 7
    assert all(r["status"] == "ok" for r in manifest["notebooks"])
    for name in names:
        nb = nbformat.read(run / "notebooks" / f"{name}.ipynb", as_version=4)
        errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
        assert not errors, f"{name}: {errors[0]['ename']}"
        assert (run / name / "manifest.json").exists(), f"{name} wrote no step manifest"


def test_01_annotations_remove_to_the_original_trace_and_cover_every_input(run):
    rows = runs.read_jsonl(run / "01_annotate" / "annotated.jsonl")
    failures = runs.read_jsonl(run / "01_annotate" / "failures.jsonl")
    train = runs.read_jsonl(run / "data" / "train.jsonl")
    assert sorted(r["id"] for r in rows + failures) == sorted(r["id"] for r in train)
    for row in rows:
        assert tags.strip_tags(row["annotated"]) == row["trace"]
        assert tags.check(row["annotated"]).balanced
    assert (run / "01_annotate" / "stats.json").exists()


def test_02_sft_changed_the_weights_and_measured_tag_usage(run):
    m = metrics(run, "02_sft")
    assert m["weights_changed"]["changed"] and m["weights_changed"]["max_abs_diff"] > 0
    assert 0.0 <= m["tag_usage"]["balanced_fraction"] <= 1.0 and m["tag_usage"]["n"] == m["n_eval"]
    assert (run / "02_sft" / "model" / "config.json").exists()


def test_03_grpo_trained_each_mode_and_changed_its_weights(run):
    m = metrics(run, "03_grpo")
    assert set(m["arms"]) == {"paper", "offload", "rl4e_0", "rl4e_2"}
    for mode, row in m["arms"].items():
        assert row["weights_changed"]["changed"], mode
        assert row["steps"] >= 1 and (run / "03_grpo" / mode / "model" / "config.json").exists()
        trained = json.loads((run / "03_grpo" / mode / "train_metrics.json").read_text())
        assert [h["step"] for h in trained["heldout"]] == list(range(row["steps"] + 1)), mode  # eval_every 1
        assert all(h["n"] == 4 and 0 <= h["accuracy"] <= 1 for h in trained["heldout"])
        assert row["tag_failure_first"] is not None and row["heldout_accuracy_first"] is not None


def test_04_and_05_wrote_one_record_per_method_and_problem_and_the_claim(run):
    for name in ("04_random_switch", "05_evaluate"):
        rows = runs.read_jsonl(run / name / "samples.jsonl")
        keys = {(r["method"], r["problem_id"], r["sample"]) for r in rows}
        assert len(keys) == len(rows) > 0, f"{name}: duplicate records"
        methods = metrics(run, name)["methods"]
        assert {r["method"] for r in rows} == set(methods)
        per_method = {m: sum(r["method"] == m for r in rows) for m in methods}
        assert len(set(per_method.values())) == 1, f"{name}: methods saw different problems {per_method}"
    claim = metrics(run, "05_evaluate")["claim"]
    assert {"gap_recovered", "difference", "checks", "holds"} <= set(claim)
    assert (run / "05_evaluate" / "results.md").read_text().strip()


def test_06_drew_figure5_and_validated_the_simulator_on_measured_traces(run):
    m = metrics(run, "06_figure5")
    assert (run / "06_figure5" / "figure5.png").stat().st_size > 10_000
    assert (run / "06_figure5" / "figure5.pdf").exists()
    assert 8 <= m["paper_headline_32B_at_1.35pct"] <= 9
    assert m["validation"]["n_traces"] > 0 and m["validation"]["median"] >= 0
    assert json.loads((run / "06_figure5" / "profile.json").read_text())
    assert (run / "06_figure5" / "accuracy_vs_speedup.png").stat().st_size > 10_000
    by_method, big = m["speedup_by_method"], m["roles"]["@big"]
    assert by_method["simulated (serial)"][big] == 1.0 and by_method["measured (batch 1)"][big] == 1.0
    assert m["roles"]["@small"] in by_method["measured (batch 1)"]
    arms = [v["method"] for v in metrics(run, "05_evaluate")["grpo"].values() if "method" in v]
    assert arms and set(arms) <= set(m["timed"]) <= set(by_method["measured (batch 1)"])  # @arms: every checkpoint
    pareto = {p["method"]: p for p in m["pareto"]}
    assert set(arms) | {big, m["roles"]["@small"]} <= set(pareto) and any(p["on_frontier"] for p in pareto.values())
    assert all(pareto[a]["speedup_measured"] is not None for a in arms)
    assert (run / "06_figure5" / "pareto.png").stat().st_size > 10_000 and (run / "06_figure5" / "pareto.pdf").exists()
