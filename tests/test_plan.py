"""``splitreason plan``: what each stage needs, from the parameter files alone, checked against the hardware."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from splitlib import cli, pipeline, plan
from splitlib import notebook_params as nbp

GiB = 2**30


def _params(profile: str) -> dict:
    return {n: nbp.load_yaml(n, pipeline.PARAMS_DIR / profile / f"{n}.yaml") for n in pipeline.notebook_names()}


def test_the_paper_profile_names_every_stage_a_cpu_machine_cannot_hold():
    stages = plan.stage_needs(_params("paper"), None, cuda=False)
    problems = plan.check(stages, plan.Hardware(gpus=0, gpu_memory_bytes=0, ram_bytes=24 * GiB))
    assert "02_sft needs 1 CUDA GPU(s); 0 visible" in problems
    assert "03_grpo needs 8 CUDA GPU(s); 0 visible" in problems  # training from GPU 0, its big-model server on 6-7
    assert any(p.startswith("05_evaluate needs ~") and "on the CPU" in p for p in problems)


def test_the_paper_profile_fits_one_8_gpu_node_and_its_plan_names_servers_and_downloads():
    stages = {s.notebook: s for s in plan.stage_needs(_params("paper"), None, cuda=True)}
    assert plan.check(list(stages.values()), plan.Hardware(gpus=8, gpu_memory_bytes=80 * GiB, ram_bytes=1e12)) == []
    evaluate = stages["05_evaluate"]
    assert evaluate.gpus == 3  # the small engines on GPU 0, the big model's server on GPUs 1 and 2
    big = next(m for m in evaluate.models if m.role == "big")
    assert big.n_params == pytest.approx(32.8e9)
    assert "simplescaling/aime24_nofigures" in evaluate.downloads
    assert any("starts vllm serve" in s and "127.0.0.1:8000" in s for s in stages["03_grpo"].servers)
    assert any("starts vllm serve" in s and "GPUs 1,2" in s for s in evaluate.servers)
    assert any("api.deepseek.com" in s for s in stages["01_annotate"].servers)
    # 16 bytes per trained parameter: a 1.5B full fine-tune needs ~23 GiB before activations
    assert stages["02_sft"].memory_bytes == pytest.approx(1.54e9 * 16)


def test_a_local_model_is_sized_from_its_weight_headers(tmp_path):
    save_file({"a": torch.zeros(3, 4), "b": torch.zeros(5, dtype=torch.bfloat16)}, str(tmp_path / "model.safetensors"))
    assert plan.n_params(str(tmp_path)) == 17
    assert plan.n_params("02_sft/model", run_dir=tmp_path / "nowhere", base=str(tmp_path)) == 17  # its base's size
    assert plan.n_params("some-org/mystery-model") is None


def test_cli_plan_passes_for_smoke_here_and_refuses_an_unknown_profile(capsys):
    assert cli.main(["plan", "--profile", "smoke"]) == 0
    out = capsys.readouterr().out
    assert "05_evaluate" in out and "every stage fits" in out
    assert cli.main(["plan", "--profile", "nope"]) == 2
    assert "unknown profile 'nope'" in capsys.readouterr().err


def test_the_rehearsal_passes_here_and_names_the_servers_it_starts(capsys):
    stages = {s.notebook: s for s in plan.stage_needs(_params("rehearsal"), None, cuda=False)}
    assert plan.check(list(stages.values()), plan.Hardware(gpus=0, gpu_memory_bytes=0, ram_bytes=24 * GiB)) == []
    assert any("hub/models/deepseek-chat" in s for s in stages["01_annotate"].servers)
    assert all(not s.downloads for s in stages.values())  # everything is a stand-in built by notebook 00
    assert cli.main(["plan", "--profile", "rehearsal"]) == 0
