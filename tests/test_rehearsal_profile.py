"""The rehearsal profile is the paper profile: every parameter of params/rehearsal equals params/paper's except the
short list below (ids and paths of the stand-ins, sizes, CPU hardware, the annotation server). A change to the
paper profile that the rehearsal does not follow fails here, and so does an entry below that no longer differs."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest
import yaml

from splitlib import pipeline

# notebook -> {dotted parameter key: why the rehearsal may differ}; "*" applies to every notebook
ID, PATH, SIZE, CPU = "id", "stand-in path", "size", "CPU hardware"
SERVER_ON_CPU = {"serve.big.port": "free port (tests run beside other servers)", "serve.big.env.CUDA_VISIBLE_DEVICES": CPU,
                 "serve.big.env.VLLM_CPU_KVCACHE_SPACE": CPU, "serve.big.args.tensor_parallel_size": CPU,
                 "serve.big.args.dtype": CPU, "serve.big.args.enforce_eager": CPU}
EVAL_SIZES = {"benchmark_source": PATH, "n_problems": SIZE, "protocol_settings.max_new_tokens": SIZE,
              "protocol_settings.samples": SIZE, "batch_size": SIZE, "small_model": PATH, "big_model": PATH}
ALLOWED: dict[str, dict[str, str]] = {
    "*": {"profile": ID, "run_name": ID},
    "00_models": {"world": "builds the stand-ins, then checks them as the paper world checks the hub models",
                  "small_model_id": PATH, "big_model_id": PATH},
    "01_annotate": {"openr1.source": PATH, "n_traces": SIZE, "small_model": PATH, "concurrency": SIZE,
                    "serve.annotator": "deepseek-chat is played by a stand-in on a local vllm serve"},
    "02_sft": {"base_model": PATH, "device": CPU, "max_steps": SIZE, "global_batch_size": SIZE, "max_length": SIZE,
               "logging_steps": SIZE, "eval_source": PATH, "n_eval": SIZE, "eval_max_new_tokens": SIZE,
               "eval_batch_size": SIZE},
    "03_grpo": {"big_model": PATH, "openr1.source": PATH, "specr.source": PATH, "n_prompts": SIZE, "device": CPU,
                "max_steps": SIZE, "num_generations": SIZE, "per_device_train_batch_size": SIZE,
                "global_batch_size": SIZE, "max_completion_length": SIZE,
                **{k: v for k, v in SERVER_ON_CPU.items() if k != "serve.big.args.tensor_parallel_size"}},
    "04_random_switch": {**EVAL_SIZES, **SERVER_ON_CPU},
    "05_evaluate": {**EVAL_SIZES, **SERVER_ON_CPU,
                    "checkpoints.authors-grpo": "the base stand-in (no tag tokens) plays the authors' released model"},
    "06_figure5": {"profile_contexts": SIZE, "profile_repeats": SIZE, "timing_problems": SIZE,
                   "backend_opts.big.tensor_parallel_size": CPU},
}


def flat(mapping: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested mappings as {"a.b.c": value}; lists and scalars are leaves (an empty mapping adds no key)."""
    out: dict[str, Any] = {}
    for key, value in mapping.items():
        if isinstance(value, Mapping):
            out.update(flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def differences(paper: Mapping[str, Any], rehearsal: Mapping[str, Any]) -> set[str]:
    a, b = flat(paper), flat(rehearsal)
    return {k for k in a.keys() | b.keys() if a.get(k, "<absent>") != b.get(k, "<absent>")}


def allowed(notebook: str, key: str) -> bool:
    entries = {**ALLOWED["*"], **ALLOWED[notebook]}
    return any(key == e or key.startswith(e + ".") for e in entries)


def load(profile: str, notebook: str) -> dict:
    return yaml.safe_load((pipeline.profile_dir(profile) / f"{notebook}.yaml").read_text())


@pytest.mark.parametrize("notebook", pipeline.notebook_names())
def test_rehearsal_differs_from_paper_only_where_allowed(notebook):
    diff = differences(load("paper", notebook), load("rehearsal", notebook))
    unexplained = sorted(k for k in diff if not allowed(notebook, k))
    assert not unexplained, (f"params/rehearsal/{notebook}.yaml differs from params/paper in {unexplained}: follow "
                             "the paper profile, or add the key to ALLOWED with the reason")
    stale = sorted(e for e in ALLOWED[notebook] if not any(k == e or k.startswith(e + ".") for k in diff))
    assert not stale, f"ALLOWED[{notebook!r}] lists {stale}, which no longer differ: remove them"


def test_the_allow_list_catches_a_change_to_the_paper_profile():
    paper = load("paper", "03_grpo")
    changed = {**paper, "beta": 0.5, "rollout": {**paper["rollout"], "big_chunk_tokens": 32}}
    diff = differences(changed, load("rehearsal", "03_grpo"))
    assert {"beta", "rollout.big_chunk_tokens"} <= {k for k in diff if not allowed("03_grpo", k)}


def test_every_profile_file_validates():
    for profile in ("paper", "rehearsal"):
        pipeline.plan(profile, pipeline.notebook_names(), profile, "outputs")
