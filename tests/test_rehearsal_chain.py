"""The rehearsal: every notebook on the `rehearsal` profile — the paper profile with hub-format stand-ins, on CPU —
through `splitreason run`, then what each notebook promises to leave behind. The stand-ins learn nothing, so
numbers are not asserted; the paper's code path is: hub-format models and data sets loaded by their loaders, the
annotation LLM and the big model reached over HTTP on `vllm serve` servers that the notebooks start and stop,
vLLM engines for the small models, TRL training with the paper's presets."""

from __future__ import annotations

import json
import os
from pathlib import Path

import nbformat
import pytest

from splitlib import cli, pipeline, runs, tags

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("rehearsal")
    rc = cli.main(["run", "--profile", "rehearsal", "--outputs-root", str(root)])
    assert rc == 0, f"rehearsal failed; executed notebooks are in {root / 'rehearsal' / 'notebooks'}"
    return root / "rehearsal"


def metrics(run: Path, notebook: str) -> dict:
    return json.loads((run / notebook / "metrics.json").read_text())


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def test_every_notebook_ran_without_errors_and_is_in_the_manifest(run):
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["profile"] == "rehearsal"
    assert [r["name"] for r in manifest["notebooks"]] == pipeline.notebook_names()
    assert all(r["status"] == "ok" for r in manifest["notebooks"])
    for name in pipeline.notebook_names():
        nb = nbformat.read(run / "notebooks" / f"{name}.ipynb", as_version=4)
        errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
        assert not errors, f"{name}: {errors[0]['ename']}"


def test_00_built_the_stand_ins_and_checked_them_as_the_paper_world_checks_hub_models(run):
    m = metrics(run, "00_models")
    assert set(m["paper_models"]) == {"small", "big"}
    for role in ("small", "big"):
        assert m["paper_models"][role]["architecture"] == ["Qwen2ForCausalLM"]
    assert (run / "hub" / "models" / "DeepSeek-R1-Distill-Qwen-1.5B" / "config.json").exists()
    assert (run / "hub" / "datasets" / "OpenR1-Math-220k" / "README.md").exists()


def test_01_annotated_through_a_served_llm_that_is_gone_afterwards(run):
    m = metrics(run, "01_annotate")
    server = m["servers"]["annotator"]
    assert server["ready_s"] > 0 and gone(server["pid"])
    rows = runs.read_jsonl(run / "01_annotate" / "annotated.jsonl")
    assert len(rows) >= 0.8 * m["n_traces"]
    for row in rows:
        assert tags.strip_tags(row["annotated"]) == row["trace"] and tags.check(row["annotated"]).balanced


def test_02_trained_the_stand_in_with_the_paper_recipe(run):
    m = metrics(run, "02_sft")
    assert m["weights_changed"]["changed"]
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(run / "02_sft" / "model")
    assert tok.bos_token == "<｜begin▁of▁sentence｜>" and "<｜Assistant｜>" in tok.get_vocab()  # R1's tokens kept
    assert tok.convert_tokens_to_ids("<bigmodel>") != tok.unk_token_id  # and SFT added the control tokens


def test_03_trained_both_modes_and_offload_rollouts_reached_the_served_big_model(run):
    m = metrics(run, "03_grpo")
    assert set(m["arms"]) == {"paper", "offload"}
    for mode, row in m["arms"].items():
        assert row["steps"] == 2, mode
        # random stand-ins score every completion alike: no learning signal, so GRPO leaves the weights as they are
        assert row["weights_changed"]["changed"] or not row["learning_signal"], mode
    log = (run / "03_grpo" / "offload" / "big.log").read_text()
    assert "--model" in log.splitlines()[0] and "Application startup complete" in log  # served, then stopped


def test_04_and_05_decoded_with_the_big_model_on_a_server_they_started_and_stopped(run):
    for name in ("04_random_switch", "05_evaluate"):
        m = metrics(run, name)
        assert gone(m["servers"]["big"]["pid"]), f"{name} left its server running"
        rows = runs.read_jsonl(run / name / "samples.jsonl")
        keys = {(r["method"], r["problem_id"], r["sample"]) for r in rows}
        assert len(keys) == len(rows) > 0, f"{name}: duplicate records"
        per_method = {meth: sum(r["method"] == meth for r in rows) for meth in m["methods"]}
        assert len(set(per_method.values())) == 1, f"{name}: methods saw different problems {per_method}"
    claim = metrics(run, "05_evaluate")["claim"]
    assert {"gap_recovered", "difference", "checks", "holds"} <= set(claim)


def test_06_profiled_the_stand_ins_and_drew_figure5(run):
    assert (run / "06_figure5" / "figure5.png").exists()
    assert json.loads((run / "06_figure5" / "profile.json").read_text())
