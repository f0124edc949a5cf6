"""``splitreason train`` (the accelerate command line, its refusals) and ``splitlib.training.launch`` (argument
parsing, the notebooks' training arguments, one real SFT step on CPU without accelerate)."""

from __future__ import annotations

import ast
import json
import shlex
from pathlib import Path

import pytest
import yaml

from splitlib import cli, pipeline, runrecord, runs, tags
from splitlib import notebook_params as nbp
from splitlib.commands import train
from splitlib.params import as_dict
from splitlib.training import launch

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def gpus(monkeypatch) -> None:
    """A machine with 8 GPUs and accelerate + deepspeed installed; nothing may actually be launched."""
    monkeypatch.setattr(train, "visible_gpus", lambda: 8)
    monkeypatch.setattr(train, "mixed_precision", lambda: "bf16")
    monkeypatch.setattr(train, "REQUIRED_PACKAGES", ("yaml",))


def launched(monkeypatch) -> list[list[str]]:
    calls: list[list[str]] = []

    class Done:
        returncode = 0

    real_run = train.subprocess.run

    def run(command, check=False, **kwargs):  # the launch is recorded; git (the run record's state) really runs
        if command[0] == "git":
            return real_run(command, check=check, **kwargs)
        calls.append(command)
        return Done()

    monkeypatch.setattr(train.subprocess, "run", run)
    return calls


def option(command: list[str], name: str) -> str:
    return command[command.index(name) + 1]


@pytest.mark.parametrize(("stage", "n", "zero", "notebook"), [("sft", 8, 3, "02_sft"), ("grpo", 7, 2, "03_grpo")])
def test_dry_run_prints_the_accelerate_command(stage, n, zero, notebook, tmp_path, capsys) -> None:
    argv = ["train", "--stage", stage, "--profile", "paper", "--gpus", str(n), "--outputs-root", str(tmp_path),
            "--run-name", "r", "--dry-run"]
    assert cli.main(argv) == 0
    command = shlex.split(capsys.readouterr().out.strip())
    assert command[0].endswith("accelerate") and command[1] == "launch"
    config = Path(option(command, "--config_file"))
    assert config.is_file() and config.parent == REPO / "configs" / "accelerate"
    settings = yaml.safe_load(config.read_text())
    assert settings["distributed_type"] == "DEEPSPEED" and settings["deepspeed_config"]["zero_stage"] == zero
    assert settings["mixed_precision"] == "bf16" and settings["num_processes"] == 8  # the file: one 8-GPU node
    assert option(command, "--num_processes") == str(n)  # the command line: --gpus
    assert command[command.index("-m") + 1:][:3] == ["splitlib.training.launch", "--stage", stage]
    params_file = Path(option(command, "--params"))
    assert params_file == tmp_path / "r" / notebook / "launch_params.json"
    params = launch.load_params(params_file, stage)
    assert (params["run_name"], params["outputs_root"], params["preset"]) == ("r", str(tmp_path), "paper")


def test_zero_and_modes_options(tmp_path, capsys) -> None:
    argv = ["train", "--stage", "grpo", "--gpus", "4", "--modes", "offload", "--zero", "3",
            "--outputs-root", str(tmp_path), "--dry-run"]
    assert cli.main(argv) == 0
    command = shlex.split(capsys.readouterr().out.strip())
    assert Path(option(command, "--config_file")).name == "zero3.yaml"
    assert json.loads(Path(option(command, "--params")).read_text())["modes"] == ["offload"]
    assert cli.main(["train", "--stage", "sft", "--gpus", "1", "--modes", "paper", "--dry-run"]) == 2
    assert "--modes applies to --stage grpo only" in capsys.readouterr().err


def test_refused_without_gpus_before_any_work(monkeypatch, tmp_path, capsys) -> None:
    monkeypatch.setattr(train, "visible_gpus", lambda: 0)
    calls = launched(monkeypatch)
    argv = ["train", "--stage", "sft", "--gpus", "8", "--outputs-root", str(tmp_path)]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert "refused, nothing was run" in err and "--gpus 8 but 0 CUDA GPU(s) visible" in err
    assert calls == [] and not (tmp_path / "paper").exists()


def test_refused_without_deepspeed_or_with_a_cpu_profile(gpus, monkeypatch, tmp_path, capsys) -> None:
    monkeypatch.setattr(train, "REQUIRED_PACKAGES", ("accelerate", "no_such_package_for_this_test"))
    calls = launched(monkeypatch)
    assert cli.main(["train", "--stage", "grpo", "--gpus", "8", "--outputs-root", str(tmp_path)]) == 2
    assert "no_such_package_for_this_test not installed: pip install -r requirements/gpu.txt" in capsys.readouterr().err
    assert cli.main(["train", "--stage", "sft", "--profile", "smoke", "--gpus", "2", "--outputs-root", str(tmp_path)]) == 2
    assert "device: cpu" in capsys.readouterr().err
    assert train.refusals(0, "cuda")[0] == "--gpus 0: expected at least 1"
    assert calls == []


def test_runs_the_command_under_the_run_lock(gpus, monkeypatch, tmp_path) -> None:
    calls = launched(monkeypatch)
    assert cli.main(["train", "--stage", "sft", "--gpus", "8", "--outputs-root", str(tmp_path)]) == 0
    [command] = calls
    assert option(command, "--num_processes") == "8" and option(command, "--mixed_precision") == "bf16"
    assert Path(option(command, "--params")).is_file()


def test_applies_and_records_the_run_guard_like_the_notebook_run(gpus, monkeypatch, tmp_path, capsys) -> None:
    """A launch records the profile's parameters (not --modes) in run.json, so the notebook run after it passes the
    guard; a run that holds the notebook made with other parameters refuses before anything is launched, unless
    --force, which records the new parameters."""
    calls = launched(monkeypatch)
    base = ["train", "--stage", "grpo", "--profile", "smoke", "--gpus", "2", "--outputs-root", str(tmp_path)]
    monkeypatch.setattr(train, "refusals", lambda gpus, device: [])  # smoke trains on cpu: allow it here
    assert cli.main([*base, "--modes", "paper"]) == 0 and len(calls) == 1
    assert json.loads(Path(option(calls[0], "--params")).read_text())["modes"] == ["paper"]
    run = tmp_path / "smoke"
    [step] = pipeline.plan("smoke", ["03_grpo"], "smoke", str(tmp_path))
    assert runrecord.records(run)["03_grpo"]["params"]["modes"] == step.params["modes"] != ["paper"]
    runrecord.check(run, "03_grpo", step.params)  # the notebook run after the launch is not refused

    runrecord.record(run, "03_grpo", {**step.params, "max_steps": step.params["max_steps"] + 1})
    assert cli.main(base) == 2 and len(calls) == 1
    err = capsys.readouterr().err
    assert "refused, nothing was run" in err and "max_steps: 3 -> 2" in err and "--force" in err
    assert cli.main([*base, "--force"]) == 0 and len(calls) == 2
    runrecord.check(run, "03_grpo", step.params)


def test_an_unknown_profile_is_a_parameter_error(capsys) -> None:
    assert cli.main(["train", "--stage", "sft", "--profile", "nope", "--gpus", "1", "--dry-run"]) == 2
    assert "unknown profile 'nope'" in capsys.readouterr().err


# -- splitlib.training.launch -----------------------------------------------------------------------------------
def test_launch_argument_parsing(tmp_path) -> None:
    args = launch.parse_args(["--stage", "grpo", "--params", "p.json"])
    assert (args.stage, args.params) == ("grpo", Path("p.json"))
    with pytest.raises(SystemExit):
        launch.parse_args(["--stage", "dpo", "--params", "p.json"])
    with pytest.raises(FileNotFoundError, match="splitreason train --dry-run"):
        launch.load_params(tmp_path / "missing.json", "sft")
    (tmp_path / "p.json").write_text(json.dumps({"run_name": "r"}))
    with pytest.raises(ValueError, match="missing .*'outputs_root'.*notebook 02_sft's parameters"):
        launch.load_params(tmp_path / "p.json", "sft")


def calls(notebook: str) -> set[str]:
    """``module.function`` names the notebook's script calls."""
    tree = ast.parse((REPO / "notebooks" / f"{notebook}.py").read_text())
    return {f"{node.func.value.id}.{node.func.attr}" for node in ast.walk(tree)
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
            and isinstance(node.func.value, ast.Name)}


def test_the_notebooks_build_their_training_arguments_and_settings_with_the_launchs_functions() -> None:
    """One piece of code builds what is trained and what it is reused under, for the notebook and the launch."""
    assert {"launch.trl_params", "launch.sft_settings"} <= calls("02_sft")
    assert {"launch.trl_params", "launch.grpo_arms", "launch.arm_params", "launch.grpo_inputs", "launch.grpo_settings"} <= calls(
        "03_grpo")


def test_launch_trains_sft_like_notebook_02_and_reuses_it(tiny_model_dirs, toy_problems, tmp_path) -> None:
    """One real SFT step on CPU, without accelerate: the notebook's files, then reuse under the same settings."""
    run = tmp_path / "r"
    rows = [{"id": p.id, "question": p.question, "annotated": tags.apply_spans(p.trace, list(p.hard_spans))}
            for p in toy_problems[:2]]
    runs.write_jsonl(run / "01_annotate" / "annotated.jsonl", rows)
    overrides = {"run_name": "r", "outputs_root": str(tmp_path), "base_model": str(tiny_model_dirs["small"]),
                 "max_steps": 1, "per_device_train_batch_size": 2, "global_batch_size": 2}
    params = as_dict(nbp.load_yaml("02_sft", REPO / "params" / "smoke" / "02_sft.yaml", overrides))
    params_file = tmp_path / "launch_params.json"
    params_file.write_text(json.dumps(params))
    assert launch.main(["--stage", "sft", "--params", str(params_file)]) == 0
    out = run / "02_sft"
    assert (out / "model" / "config.json").is_file()
    settings = json.loads((out / "train_settings.json").read_text())
    assert settings["params"] == {"preset": "smoke", "device": "cpu", "seed": 0, "max_steps": 1,
                                  "learning_rate": 0.01, "per_device_train_batch_size": 2, "global_batch_size": 2,
                                  "max_length": 256, "logging_steps": 1}
    assert json.loads((out / "train_metrics.json").read_text())["steps"] == 1
    assert launch.train_sft(params)["02_sft"]["reused"] is True
