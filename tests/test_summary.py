"""SUMMARY.md: one page from a run's manifest and metrics files (a fake run here), with relative links, the
headline numbers of each notebook, and no failure when a metrics file has another shape."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from splitlib import summary


def write(path: Path, body: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(body))


@pytest.fixture
def fake_run(tmp_path) -> Path:
    run = tmp_path / "toy"
    write(run / "manifest.json", {
        "profile": "toy", "run_name": "toy", "started_at": "2025-01-01T10:00:00+00:00",
        "ended_at": "2025-01-01T10:30:00+00:00", "git": {"commit": "0123456789abcdef", "dirty": False},
        "hardware": {"cpu": "Test CPU", "cpu_count": 2, "gpus": []},
        "notebooks": [{"name": "00_models", "status": "ok", "duration_s": 297.4},
                      {"name": "05_evaluate", "status": "ok", "duration_s": 61.2},
                      {"name": "06_figure5", "status": "failed", "duration_s": 3.0}]})
    (run / "notebooks").mkdir()
    (run / "notebooks" / "00_models.ipynb").write_text("{}")
    write(run / "00_models" / "metrics.json", {"hard_char_fraction": 0.2, "models": [
        {"model": "small", "accuracy": 0.31, "decode_s_per_token": 0.002},
        {"model": "big", "accuracy": 0.98, "decode_s_per_token": 0.01}]})
    (run / "00_models" / "gap.png").write_bytes(b"png")
    write(run / "05_evaluate" / "metrics.json", {
        "claim": {"holds": True, "learned": "split grpo-offload", "offload": {"split grpo-offload": 0.098},
                  "gap_recovered": {"gap_recovered": 0.85}, "checks": {"learned_offload_at_most_max": True}},
        "methods": {"small only": {"accuracy": 0.31, "offload_token_fraction": 0.0},
                    "split grpo-offload": {"accuracy": 0.88, "offload_token_fraction": 0.098}}})
    (run / "05_evaluate" / "results.md").write_text("| table |")
    write(run / "06_figure5" / "metrics.json", {
        "paper_headline_32B_at_1.35pct": 8.76,
        "learned": {"method": "split grpo-offload", "offload_token_fraction": 0.098,
                    "speedup_over_big": {"measured (batch 1)": 2.41}},
        "validation": {"median": 0.07, "n_traces": 180, "target_median": 0.15, "passes": True}})
    return run


def test_the_headline_says_whether_the_claim_holds_and_the_measured_speed_up(fake_run):
    assert summary.headline(fake_run) == ("claim holds: split grpo-offload at 9.8 % offload recovers 85.0 % of the "
                                          "small->big gap; measured speed-up over the big model alone 2.41x")


def test_the_page_lists_each_notebook_with_status_time_and_relative_links(fake_run):
    path, headline = summary.write(fake_run)
    page = path.read_text()
    assert path == fake_run / "SUMMARY.md" and headline in page
    assert "| 00_models | ok | 5.0 min | [notebooks/00_models.ipynb](notebooks/00_models.ipynb) | " \
           "[gap.png](00_models/gap.png) |" in page
    assert "| 06_figure5 | failed | 3 s | — | — |" in page
    assert "commit `0123456789`" in page and "[manifest.json](manifest.json)" in page
    assert "[05_evaluate/results.md](05_evaluate/results.md)" in page
    assert str(fake_run) not in page  # relative links only: the page reads the same wherever the run is copied


def test_the_page_carries_each_notebooks_headline_numbers(fake_run):
    page = summary.page(fake_run)
    for fragment in ("accuracy small 31.0 %, big 98.0 %", "costs 5.0x the small one per token",
                     "claim holds", "split grpo-offload 88.0 % (9.8 % offload)", "32B at 1.35 % offload: 8.76x",
                     "measured (batch 1) 2.41x", "median error 7.0 % over 180 traces", "passes"):
        assert fragment in page, fragment


def test_a_metrics_file_of_another_shape_is_named_not_fatal(fake_run):
    write(fake_run / "00_models" / "metrics.json", {"models": "not rows"})
    page = summary.page(fake_run)
    assert "[metrics.json](00_models/metrics.json) has another shape than this page reads" in page


def test_a_run_without_05_and_06_says_where_the_headline_comes_from(tmp_path):
    write(tmp_path / "manifest.json", {"profile": "smoke", "notebooks": [{"name": "00_models", "status": "ok"}]})
    assert summary.headline(tmp_path) == "no headline yet (it comes from 05_evaluate and 06_figure5)"
    assert "| 00_models | ok | — | — | — |" in summary.page(tmp_path)


def test_grpo_arms_carry_their_held_out_accuracy_when_it_was_evaluated(fake_run):
    arm = {"steps": 32, "reward_first": 0.5, "reward_last": 0.9, "offload_fraction_first": 0.18,
           "offload_fraction_last": 0.2}
    write(fake_run / "03_grpo" / "metrics.json", {"arms": {
        "offload": {**arm, "heldout_accuracy_first": 0.5, "heldout_accuracy_last": 1.0,
                    "heldout_tag_failure_rate_first": 0.53, "heldout_tag_failure_rate_last": 0.0},
        "paper": {**arm, "heldout_accuracy_first": None}}})
    page = summary.page(fake_run)
    assert ("arm offload: 32 steps, reward 0.5 -> 0.9, offload 18.0 % -> 20.0 %; held-out split accuracy 50.0 % -> "
            "100.0 %, tag failures 53.0 % -> 0.0 %") in page
    assert "arm paper: 32 steps, reward 0.5 -> 0.9, offload 18.0 % -> 20.0 %\n" in page
