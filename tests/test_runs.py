"""splitlib.runs: atomic writes, crash-safe JSONL appends and resume keys, missing-input errors, manifests, reuse of
results built with the same settings."""

from __future__ import annotations

import importlib.metadata as md
import json
import logging
import os
import re
from datetime import datetime
from pathlib import Path

import pytest

from splitlib import runs


def leftovers(directory: Path) -> list[str]:
    """Temp files an interrupted atomic write could leave behind."""
    return sorted(p.name for p in directory.iterdir() if p.name.startswith(".") or p.suffix == ".tmp")


# ---------------------------------------------------------------------------------------------------------
# atomic writes
def test_atomic_write_text_creates_parents_writes_content_and_leaves_no_temp_file(tmp_path):
    path = runs.atomic_write_text(tmp_path / "a" / "b" / "out.txt", "héllo\n")
    assert path.read_text(encoding="utf-8") == "héllo\n"
    assert leftovers(path.parent) == []


def test_atomic_write_gives_the_file_the_mode_open_would(tmp_path):
    mask = os.umask(0o022)
    try:
        plain = tmp_path / "plain.txt"
        plain.write_text("x")
        written = runs.atomic_write_text(tmp_path / "atomic.txt", "x")
    finally:
        os.umask(mask)
    assert written.stat().st_mode & 0o777 == plain.stat().st_mode & 0o777 == 0o644  # readable by others, as open()


def test_atomic_write_replaces_existing_content(tmp_path):
    path = tmp_path / "out.txt"
    runs.atomic_write_text(path, "old, longer content\n")
    runs.atomic_write_text(path, "new\n")
    assert path.read_text() == "new\n"
    assert leftovers(tmp_path) == []


def test_failed_atomic_write_keeps_the_old_file_and_removes_its_temp(tmp_path, monkeypatch):
    path = tmp_path / "out.json"
    runs.atomic_write_json(path, {"v": 1})

    def crash(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(runs.os, "replace", crash)
    with pytest.raises(OSError, match="disk full"):
        runs.atomic_write_json(path, {"v": 2})
    assert json.loads(path.read_text()) == {"v": 1}
    assert leftovers(tmp_path) == []


def test_atomic_write_json_serialises_numpy_paths_and_dataclasses(tmp_path):
    import dataclasses

    import numpy as np

    @dataclasses.dataclass(frozen=True)
    class Row:
        x: int

    path = runs.atomic_write_json(tmp_path / "m.json", {"arr": np.arange(3), "p": Path("/x"), "row": Row(2)})
    assert json.loads(path.read_text()) == {"arr": [0, 1, 2], "p": "/x", "row": {"x": 2}}


def test_atomic_write_json_refuses_unserialisable_values_without_touching_the_file(tmp_path):
    path = tmp_path / "m.json"
    runs.atomic_write_json(path, {"ok": True})
    with pytest.raises(TypeError, match="cannot serialise object"):
        runs.atomic_write_json(path, {"bad": object()})
    assert json.loads(path.read_text()) == {"ok": True}
    assert leftovers(tmp_path) == []


def test_write_jsonl_replaces_the_whole_file(tmp_path):
    path = tmp_path / "rows.jsonl"
    runs.append_jsonl(path, [{"id": 1}, {"id": 2}])
    runs.write_jsonl(path, [{"id": 3}])
    assert runs.read_jsonl(path) == [{"id": 3}]


# ---------------------------------------------------------------------------------------------------------
# JSONL appends and the torn last line
def test_append_jsonl_appends_whole_lines_and_counts_them(tmp_path):
    path = tmp_path / "sub" / "rows.jsonl"
    assert runs.append_jsonl(path, [{"id": 1}, {"id": 2}]) == 2
    assert runs.append_jsonl(path, []) == 0
    assert runs.append_jsonl(path, ({"id": i} for i in (3,))) == 1
    assert runs.read_jsonl(path) == [{"id": 1}, {"id": 2}, {"id": 3}]
    assert path.read_text().endswith("\n")


def test_reading_an_absent_file_gives_no_rows(tmp_path):
    assert runs.read_jsonl(tmp_path / "none.jsonl") == []


def test_blank_lines_are_skipped(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_text('{"id": 1}\n\n{"id": 2}\n')
    assert runs.read_jsonl(path) == [{"id": 1}, {"id": 2}]


@pytest.mark.parametrize(
    "complete, torn",
    [([{"id": 1}, {"id": 2}], '{"id": 3, "text": "half a ro'),
     ([{"id": 1}], '{"id": 2}'),  # valid JSON but no newline: the write was not finished
     ([], '{"id": 1, "te')],
    ids=["partial_json", "complete_json_without_newline", "torn_first_line"],
)
def test_torn_last_line_is_skipped_on_read_and_cut_before_the_next_append(tmp_path, caplog, complete, torn):
    path = tmp_path / "rows.jsonl"
    runs.append_jsonl(path, complete)
    with path.open("a") as f:  # a process killed mid-write
        f.write(torn)
    with caplog.at_level(logging.WARNING, logger="splitlib.runs"):
        assert runs.read_jsonl(path) == complete
    assert "torn last line" in caplog.text

    runs.append_jsonl(path, [{"id": "next"}])
    lines = path.read_text().split("\n")
    assert lines[-1] == ""  # line-aligned
    assert [json.loads(line) for line in lines[:-1]] == complete + [{"id": "next"}]


@pytest.mark.parametrize("block", [4, 1 << 16], ids=["torn_line_spans_many_read_blocks", "default_block"])
def test_cutting_a_long_torn_line_reads_back_block_by_block(tmp_path, monkeypatch, block):
    monkeypatch.setattr(runs, "_TAIL_BLOCK", block)
    path = tmp_path / "rows.jsonl"
    runs.append_jsonl(path, [{"id": 1, "text": "x" * 50}])
    with path.open("a") as f:
        f.write('{"id": 2, "text": "' + "y" * 70_000)
    runs.append_jsonl(path, [{"id": 3}])
    assert runs.read_jsonl(path) == [{"id": 1, "text": "x" * 50}, {"id": 3}]


def test_a_corrupt_complete_line_is_an_error_naming_file_and_line(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_text('{"id": 1}\nnot json\n{"id": 3}\n')
    with pytest.raises(ValueError, match=rf"{re.escape(str(path))}:2: not a JSON row"):
        runs.read_jsonl(path)


def test_done_keys_collects_single_and_composite_keys_of_complete_rows(tmp_path):
    path = tmp_path / "samples.jsonl"
    assert runs.done_keys(path, "problem") == set()
    runs.append_jsonl(path, [{"problem": "p1", "sample": 0}, {"problem": "p1", "sample": 1},
                             {"problem": "p2", "sample": 0}])
    with path.open("a") as f:
        f.write('{"problem": "p3", "sample": 0')
    assert runs.done_keys(path, "problem") == {"p1", "p2"}
    assert runs.done_keys(path, ("problem", "sample")) == {("p1", 0), ("p1", 1), ("p2", 0)}


def test_resume_by_done_keys_has_neither_duplicates_nor_gaps(tmp_path):
    path = tmp_path / "samples.jsonl"
    todo = [f"p{i}" for i in range(6)]
    runs.append_jsonl(path, [{"problem": p} for p in todo[:3]])
    with path.open("a") as f:
        f.write('{"problem": "p3"')  # killed while writing p3
    done = runs.done_keys(path, "problem")
    runs.append_jsonl(path, [{"problem": p} for p in todo if p not in done])
    assert [r["problem"] for r in runs.read_jsonl(path)] == todo


# ---------------------------------------------------------------------------------------------------------
# missing inputs
def test_require_returns_an_existing_path(tmp_path):
    assert runs.require(tmp_path, made_by="notebooks/00_models.ipynb") == tmp_path


def test_require_names_the_missing_path_and_the_notebook_that_makes_it(tmp_path):
    missing = tmp_path / "02_sft" / "model"
    with pytest.raises(runs.MissingInputError) as info:
        runs.require(missing, made_by="notebooks/02_sft.ipynb")
    assert str(missing) in str(info.value)
    assert "run notebooks/02_sft.ipynb first" in str(info.value)
    assert isinstance(info.value, FileNotFoundError)


# ---------------------------------------------------------------------------------------------------------
# environment and manifests
@pytest.fixture(scope="module")
def env_info() -> dict:
    return runs.environment_info()


def test_environment_info_records_git_state(env_info):
    assert set(env_info) >= {"git", "versions", "hardware"}
    assert re.fullmatch(r"[0-9a-f]{40}", env_info["git"]["commit"])
    assert isinstance(env_info["git"]["dirty"], bool)


def test_environment_info_records_installed_versions(env_info):
    for name in ("torch", "transformers", "papermill"):
        assert env_info["versions"][name] == md.version(name)


def test_environment_info_records_hardware(env_info):
    hw = env_info["hardware"]
    assert set(hw) >= {"platform", "python", "cpu", "cpu_count", "gpus"}
    assert hw["cpu_count"] == os.cpu_count()
    assert isinstance(hw["gpus"], list)


def test_git_state_outside_a_checkout_is_none(tmp_path):
    assert runs.git_state(tmp_path) == {"commit": None, "dirty": None}


def test_run_dir_is_created_under_the_outputs_root(tmp_path):
    path = runs.run_dir(tmp_path / "outputs", "toy")
    assert path == tmp_path / "outputs" / "toy" and path.is_dir()


def test_step_manifest_records_notebook_params_time_environment_and_extras(tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-never-in-outputs-123")
    params = {"seed": 0, "small": {"hidden_size": 32}, "coded_steps": [1]}
    path = runs.write_step_manifest(tmp_path / "00_models", "00_models", params, extra={"n_problems": 12})
    assert path == tmp_path / "00_models" / "manifest.json"
    body = json.loads(path.read_text())
    assert body["notebook"] == "00_models"
    assert body["params"] == params
    assert body["n_problems"] == 12
    assert datetime.fromisoformat(body["written_at"]).tzinfo is not None
    assert set(body) >= {"git", "versions", "hardware"}
    assert "sk-test-never-in-outputs-123" not in path.read_text()
    assert leftovers(path.parent) == []


# ---------------------------------------------------------------------------------------------------------
# reuse what was built with the same settings
def test_saved_settings_match_only_with_what_it_requires_and_equal_settings(tmp_path):
    model_config, path = tmp_path / "model" / "config.json", tmp_path / "train_settings.json"
    settings = {"lr": 0.001, "rewards": ("a", "b"), "nested": {"x": 1}}
    runs.save_settings(path, settings)
    assert not runs.saved_settings_match(path, settings, [model_config])  # no model saved yet
    runs.atomic_write_text(model_config, "{}")
    assert runs.saved_settings_match(path, settings, [model_config])  # tuples and lists compare equal through JSON
    assert not runs.saved_settings_match(path, {**settings, "lr": 0.002}, [model_config])
    assert not runs.saved_settings_match(tmp_path / "absent.json", settings)
    assert json.loads(path.read_text())["rewards"] == ["a", "b"]


class Builder:
    """A build function that counts its calls and leaves a file beside its result, like a trained model."""

    def __init__(self, directory: Path, value: dict):
        self.directory, self.value, self.calls = directory, value, 0

    def __call__(self) -> dict:
        self.calls += 1
        runs.atomic_write_text(self.directory / "model" / "config.json", "{}")
        return self.value


def test_reuse_or_build_builds_once_then_reuses_while_the_settings_are_unchanged(tmp_path):
    build = Builder(tmp_path, {"steps": 3, "curve": (1, 2)})
    kwargs = {"result": "train_metrics.json", "settings_file": "train_settings.json", "requires": ["model/config.json"]}
    first, reused = runs.reuse_or_build(tmp_path, {"lr": 1}, build, **kwargs)
    assert (first, reused, build.calls) == ({"steps": 3, "curve": (1, 2)}, False, 1)
    assert json.loads((tmp_path / "train_settings.json").read_text()) == {"lr": 1}
    again, reused = runs.reuse_or_build(tmp_path, {"lr": 1}, build, **kwargs)
    assert (again, reused, build.calls) == ({"steps": 3, "curve": [1, 2]}, True, 1)  # read back from JSON
    _, reused = runs.reuse_or_build(tmp_path, {"lr": 2}, build, **kwargs)
    assert (reused, build.calls) == (False, 2)
    assert json.loads((tmp_path / "train_settings.json").read_text()) == {"lr": 2}


@pytest.mark.parametrize("lost", ["result.json", "model/config.json"])
def test_reuse_or_build_rebuilds_when_the_result_or_a_required_file_is_gone(tmp_path, lost):
    build = Builder(tmp_path, {"x": 1})
    runs.reuse_or_build(tmp_path, {"s": 1}, build, requires=["model/config.json"])
    (tmp_path / lost).unlink()
    _, reused = runs.reuse_or_build(tmp_path, {"s": 1}, build, requires=["model/config.json"])
    assert (reused, build.calls) == (False, 2)


def test_reuse_or_build_writes_no_settings_when_the_build_fails(tmp_path):
    def boom():
        raise RuntimeError("killed half-way")

    with pytest.raises(RuntimeError, match="half-way"):
        runs.reuse_or_build(tmp_path, {"s": 1}, boom)
    assert not (tmp_path / "settings.json").exists() and not (tmp_path / "result.json").exists()
