"""Evaluation rows are reused only when made by the same models and settings: each row carries its provenance and
key; rows under another key (new weights, other decode settings, no provenance at all) move to the stale file and
are decoded again; readers keep one row per (method, problem_id, sample). Real decoder service, tiny hf models."""

from __future__ import annotations

import copy
import json
import shutil

import pytest
import torch

from splitlib import evaluate as ev
from splitlib import prompts, provenance, tags
from splitlib.decoder_service import DecoderService
from splitlib.evaluate import Method
from splitlib.runs import read_jsonl, write_jsonl
from splitlib.toy.world import generate

PROTOCOL = ev.make_protocol("custom", temperature=0.0, top_p=1.0, max_new_tokens=8, samples=1, aggregate="pass@1")
SMALL = Method("small", policy="small_only", small="small")
RANDOM = Method("random", policy="random_switch", small="small", big="big", policy_params={"ratio": 1, "chunk": 2})


@pytest.fixture(autouse=True)
def private_hash_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SPLITREASON_CACHE", str(tmp_path / "hash-cache"))


@pytest.fixture
def problems():
    return [{"id": p.id, "question": p.question, "answer": p.answer} for p in generate(2, seed=5)]


@pytest.fixture
def model_dirs(tiny_model_dirs, tmp_path):
    """Copies of the tiny models that a test may overwrite."""
    return {role: shutil.copytree(d, tmp_path / "models" / role) for role, d in tiny_model_dirs.items()}


class Counting(DecoderService):
    """The real service, counting the questions it decodes."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.decoded = 0

    def __call__(self, route, questions, *args, **kwargs):
        self.decoded += len(questions)
        return super().__call__(route, questions, *args, **kwargs)


def run(methods, problems, out, model_dirs, decode=None):
    service = Counting(model_dirs, kind="hf", decode=decode or {"big_chunk_tokens": 8})
    return ev.evaluate(methods, problems, PROTOCOL, service, out, progress=False), service.decoded


def test_each_row_carries_what_made_it_and_its_key(problems, model_dirs, tmp_path):
    (row, _), _ = run([SMALL], problems, tmp_path / "s.jsonl", model_dirs)
    parts = row["provenance"]
    assert row["provenance_key"] == provenance.key(parts)
    assert parts["model"] == {"small": provenance.model_hash(model_dirs["small"]), "big": None}
    assert parts["backend"] == {"small": {"kind": "hf", "options": {}, "device": "cpu"}, "big": None}
    assert parts["decode"]["big_chunk_tokens"] == 8 and parts["decode"]["max_offload_tokens"] == 512
    assert parts["sampling"] == {"temperature": 0.0, "top_p": 1.0, "max_new_tokens": 8, "seed": row["seed"]}
    assert (parts["policy"], parts["prompt"], parts["grader"]) == ("small_only", prompts.TEMPLATE_ID,
                                                                   row["grader_version"])


def test_unchanged_models_and_settings_reuse_every_row_and_leave_the_file_as_it_was(problems, model_dirs, tmp_path):
    out = tmp_path / "s.jsonl"
    first, _ = run([SMALL, RANDOM], problems, out, model_dirs)
    before = out.read_bytes()
    again, decoded = run([SMALL, RANDOM], problems, out, model_dirs)
    assert decoded == 0 and again == first and out.read_bytes() == before
    assert not ev.stale_path(out).exists()


def test_new_weights_in_the_same_folder_recompute_that_models_rows(problems, model_dirs, tiny_models, tmp_path,
                                                                   caplog):
    out = tmp_path / "s.jsonl"
    first, _ = run([SMALL], problems, out, model_dirs)
    old_hash = provenance.model_hash(model_dirs["small"])
    retrained = copy.deepcopy(tiny_models["small"])
    with torch.no_grad():
        next(retrained.parameters()).add_(0.25)
    retrained.save_pretrained(model_dirs["small"])  # same path, other weights (a retrained SFT model)
    with caplog.at_level("WARNING", logger="splitlib.evaluate"):
        rows, decoded = run([SMALL], problems, out, model_dirs)
    new_hash = provenance.model_hash(model_dirs["small"])
    assert decoded == len(problems) and new_hash != old_hash
    assert f"model.small: {old_hash} -> {new_hash}" in caplog.text
    assert read_jsonl(ev.stale_path(out)) == first
    assert [r["provenance"]["model"]["small"] for r in read_jsonl(out)] == [new_hash] * len(problems) == [
        r["provenance"]["model"]["small"] for r in rows]


def test_other_decode_settings_recompute_the_rows_and_the_log_names_the_setting(problems, model_dirs, tmp_path,
                                                                                caplog):
    out = tmp_path / "s.jsonl"
    run([RANDOM], problems, out, model_dirs, decode={"big_chunk_tokens": 8})
    with caplog.at_level("WARNING", logger="splitlib.evaluate"):
        _, decoded = run([RANDOM], problems, out, model_dirs, decode={"big_chunk_tokens": 4})
    assert decoded == len(problems) and "decode.big_chunk_tokens: 8 -> 4" in caplog.text
    assert {r["provenance"]["decode"]["big_chunk_tokens"] for r in read_jsonl(out)} == {4}
    assert len(read_jsonl(ev.stale_path(out))) == len(problems)


def test_an_explicit_default_decode_setting_is_the_same_provenance_as_leaving_it_out(problems, model_dirs, tmp_path):
    out = tmp_path / "s.jsonl"
    run([SMALL], problems, out, model_dirs, decode={"max_offload_tokens": 512})
    assert run([SMALL], problems, out, model_dirs, decode={"big_chunk_tokens": 64})[1] == 0


def test_rows_written_without_provenance_are_recomputed(problems, model_dirs, tmp_path, caplog):
    out = tmp_path / "s.jsonl"
    first, _ = run([SMALL], problems, out, model_dirs)
    legacy = [{k: v for k, v in r.items() if k not in ("provenance", "provenance_key")} for r in first]
    write_jsonl(out, legacy)
    with caplog.at_level("WARNING", logger="splitlib.evaluate"):
        rows, decoded = run([SMALL], problems, out, model_dirs)
    assert decoded == len(problems) and "no provenance" in caplog.text
    assert read_jsonl(ev.stale_path(out)) == legacy
    assert [r["generation"] for r in rows] == [r["generation"] for r in first]  # same models: the same text


def test_rows_of_methods_not_asked_for_are_left_alone(problems, model_dirs, tmp_path):
    out = tmp_path / "s.jsonl"
    first, _ = run([SMALL, RANDOM], problems, out, model_dirs, decode={"big_chunk_tokens": 8})
    run([RANDOM], problems, out, model_dirs, decode={"big_chunk_tokens": 4})
    assert [r for r in read_jsonl(out) if r["method"] == "small"] == first[:len(problems)]


def test_readers_keep_the_last_row_per_key_and_say_how_many_duplicates_they_dropped(tmp_path, caplog):
    path = tmp_path / "s.jsonl"
    rows = [{"method": "m", "problem_id": "p0", "sample": 0, "v": 1}, {"method": "m", "problem_id": "p1", "sample": 0},
            {"method": "m", "problem_id": "p0", "sample": 0, "v": 2}, {"method": "m", "problem_id": "p0", "sample": 1}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with caplog.at_level("WARNING", logger="splitlib.evaluate"):
        kept = ev.read_samples(path)
    assert kept == [rows[2], rows[1], rows[3]]
    assert "1 duplicate rows" in caplog.text
    caplog.clear()
    assert ev.read_samples(tmp_path / "absent.jsonl") == [] and caplog.text == ""


def test_a_resumed_run_drops_duplicates_from_its_file_into_the_stale_file(problems, model_dirs, tmp_path, caplog):
    out = tmp_path / "s.jsonl"
    first, _ = run([SMALL], problems, out, model_dirs)
    out.write_text(out.read_text() * 2)  # a second writer appended the same rows
    with caplog.at_level("WARNING", logger="splitlib.evaluate"):
        rows, decoded = run([SMALL], problems, out, model_dirs)
    assert decoded == 0 and rows == first == read_jsonl(out)
    assert read_jsonl(ev.stale_path(out)) == first and "2 duplicate rows" in caplog.text


def test_metrics_record_each_methods_provenance_without_per_row_parts(problems, model_dirs, tmp_path):
    rows, _ = run([SMALL, RANDOM], problems, tmp_path / "s.jsonl", model_dirs)
    body = json.loads(ev.write_metrics(rows, PROTOCOL, tmp_path / "metrics.json").read_text())
    small = body["provenance"]["small"]
    assert small["rows"] == len(problems) and small["key"] == provenance.key(small["parts"])
    assert "problem" not in small["parts"] and "seed" not in small["parts"]["sampling"]
    assert small["parts"]["model"]["small"] == rows[0]["provenance"]["model"]["small"]
    assert body["provenance"]["random"]["parts"]["model"]["big"] == provenance.model_hash(model_dirs["big"])


def test_the_prompt_template_id_follows_the_instruction_hint_and_rendering_version():
    parts = {"instruction": prompts.INSTRUCTION, "hint": tags.HINT, "render": prompts.RENDER_VERSION}
    assert prompts.TEMPLATE_ID == provenance.value_hash(parts)
    assert provenance.value_hash({**parts, "instruction": prompts.INSTRUCTION + " "}) != prompts.TEMPLATE_ID
