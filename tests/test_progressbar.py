"""Progress bars: one rule picks widgets (a Jupyter server's kernel), a few log lines (papermill and other kernels),
a text bar (a terminal) or nothing; the log mode writes a line every so often and one at the end, never a bar."""

from __future__ import annotations

import logging
import os

import pytest
from tqdm.notebook import tqdm as widget_tqdm
from tqdm.std import tqdm as text_tqdm

from splitlib import progressbar


@pytest.fixture
def where(monkeypatch):
    """Place this process: where(kernel=..., jupyter_server=..., env=...)."""
    def place(kernel: bool, jupyter_server: bool = False, env: str | None = None) -> None:
        monkeypatch.setattr(progressbar, "_in_kernel", lambda: kernel)
        for name, value in ((progressbar.ENV, env), ("JPY_SESSION_NAME", "x.ipynb" if jupyter_server else None)):
            if value is None:
                monkeypatch.delenv(name, raising=False)
            else:
                monkeypatch.setenv(name, value)
    return place


@pytest.mark.parametrize("kernel, jupyter_server, env, expected", [
    (False, False, None, "text"),
    (True, False, None, "log"),  # papermill / nbclient
    (True, True, None, "widgets"),  # JupyterLab
    (True, True, "log", "log"),  # splitreason run started from a Lab cell: its kernels log
    (False, False, "off", "off"),
], ids=["terminal", "papermill_kernel", "lab_kernel", "env_overrides", "env_off"])
def test_the_mode_follows_where_the_process_runs(where, kernel, jupyter_server, env, expected):
    where(kernel, jupyter_server, env)
    assert progressbar.mode() == expected


def test_an_unknown_mode_in_the_environment_names_the_allowed_ones(where):
    where(False, env="fancy")
    with pytest.raises(ValueError, match="SPLITREASON_PROGRESS='fancy': expected one of widgets, log, text, off"):
        progressbar.mode()


@pytest.mark.parametrize("env, cls", [("text", text_tqdm), ("log", progressbar.LogBar), ("widgets", widget_tqdm)])
def test_progress_bar_makes_the_bar_of_the_mode(where, env, cls):
    where(False, env=env)
    with progressbar.progress_bar(total=3, desc="x") as bar:
        assert type(bar) is cls
        bar.update(3)


def test_off_disables_every_bar(where):
    where(False, env="off")
    assert progressbar.progress_bar(range(3), desc="x").disable


def test_a_log_bar_writes_one_line_at_the_end_of_a_short_loop(caplog):
    caplog.set_level(logging.INFO, logger="splitlib.progressbar")
    for _ in progressbar.LogBar(range(500), desc="annotate", unit="trace", mininterval=0):
        pass
    assert [r.getMessage() for r in caplog.records] == ["annotate: 500/500 (100%) trace in 00:00"]


def test_a_log_bar_writes_a_line_each_interval_and_says_what_is_left(caplog):
    caplog.set_level(logging.INFO, logger="splitlib.progressbar")
    bar = progressbar.LogBar(total=4, desc="decode", every_s=0.0, mininterval=0)
    bar.update(1)
    bar.close()
    bar.close()  # closing twice logs once
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0].startswith("decode: 1/4 (25%) it in 00:00, ~") and lines[0].endswith("left")
    assert lines[-1] == "decode: 1/4 (25%) it in 00:00" and len(lines) == 2


def test_a_disabled_log_bar_says_nothing(caplog):
    caplog.set_level(logging.INFO, logger="splitlib.progressbar")
    with progressbar.LogBar(total=3, desc="x", disable=True) as bar:
        bar.update(3)
    assert not caplog.records


def test_setup_quiets_library_bars_unless_they_are_widgets(where, monkeypatch):
    import transformers.utils.logging as hf_logging

    for name in progressbar.LIBRARY_ENV:
        monkeypatch.delenv(name, raising=False)
    was = hf_logging.is_progress_bar_enabled()
    try:
        hf_logging.enable_progress_bar()
        where(True, jupyter_server=True)
        assert progressbar.setup(True) == "widgets" and hf_logging.is_progress_bar_enabled()
        where(True)
        assert progressbar.setup(True) == "log" and not hf_logging.is_progress_bar_enabled()
        assert all(os.environ[name] == "1" for name in progressbar.LIBRARY_ENV)
    finally:
        (hf_logging.enable_progress_bar if was else hf_logging.disable_progress_bar)()


def test_hf_trainer_draws_its_bar_only_where_bars_are_drawn(where):
    where(True)
    assert not progressbar.draws(True)
    where(False)
    assert progressbar.draws(True) and not progressbar.draws(False)


def test_a_log_bar_writes_at_most_one_line_per_tenth_however_often_it_may(caplog):
    caplog.set_level(logging.INFO, logger="splitlib.progressbar")
    for _ in progressbar.LogBar(range(1000), desc="pretrain", every_s=0.0, mininterval=0):
        pass
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 11 and lines[0].startswith("pretrain: 100/1,000 (10%)")
    assert lines[-1].startswith("pretrain: 1,000/1,000 (100%)")
