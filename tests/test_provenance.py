"""Provenance hashes: a model's hash follows its weights and tokenizer, not its path; changes are named."""

from __future__ import annotations

import json
import os

import pytest

from splitlib import provenance


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SPLITREASON_CACHE", str(tmp_path / "cache"))


def _model(folder, weights=b"w" * 100, tokenizer='{"v": 1}'):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text('{"model_type": "qwen2"}')
    (folder / "model.safetensors").write_bytes(weights)
    (folder / "tokenizer.json").write_text(tokenizer)
    (folder / "README.md").write_text("notes do not count")
    return folder


def test_the_same_files_in_another_folder_have_the_same_hash(tmp_path):
    assert provenance.model_hash(_model(tmp_path / "a")) == provenance.model_hash(_model(tmp_path / "b"))


@pytest.mark.parametrize("change", ["weights", "tokenizer"])
def test_changed_weights_or_tokenizer_change_the_hash(tmp_path, change):
    before = provenance.model_hash(_model(tmp_path / "m"))
    if change == "weights":
        (tmp_path / "m" / "model.safetensors").write_bytes(b"x" * 100)
    else:
        (tmp_path / "m" / "tokenizer.json").write_text('{"v": 2}')
    assert provenance.model_hash(tmp_path / "m") != before


def test_a_file_rewritten_with_the_same_size_is_hashed_again_not_served_from_the_cache(tmp_path):
    m = _model(tmp_path / "m")
    before = provenance.model_hash(m)
    weights = m / "model.safetensors"
    stat = weights.stat()
    weights.write_bytes(b"y" * 100)
    os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    assert provenance.model_hash(m) != before
    assert json.loads((tmp_path / "cache" / "model_hashes.json").read_text())  # the cache was written


def test_files_that_do_not_decide_outputs_do_not_count(tmp_path):
    m = _model(tmp_path / "m")
    before = provenance.model_hash(m)
    (m / "README.md").write_text("other notes")
    assert provenance.model_hash(m) == before


def test_a_folder_without_config_is_not_a_model(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no config.json"):
        provenance.model_hash(tmp_path / "empty")


def test_an_uncached_hub_id_stands_for_itself_with_a_warning(caplog):
    assert provenance.model_hash("nobody-here/no-such-model") == "hub:nobody-here/no-such-model"
    assert "cannot be hashed" in caplog.text


def test_changed_names_each_part_that_differs():
    diff = provenance.changed({"small": "a", "decode": {"chunk": 8}}, {"small": "a", "decode": {"chunk": 4}})
    assert diff == {"decode": ({"chunk": 8}, {"chunk": 4})}
    assert provenance.describe_changes(diff) == 'decode: {"chunk": 8} -> {"chunk": 4}'
    assert provenance.key({"a": 1, "b": 2}) == provenance.key({"b": 2, "a": 1})


def test_the_trainers_own_files_do_not_count(tmp_path):
    a, b = _model(tmp_path / "run1" / "model"), _model(tmp_path / "run2" / "model")
    (a / "training_args.bin").write_bytes(b"output_dir=run1")  # TRL writes the output path in here
    (b / "training_args.bin").write_bytes(b"output_dir=run2")
    assert provenance.model_hash(a) == provenance.model_hash(b)
