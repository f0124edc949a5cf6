"""Notebook 02's or 03's training step as a script, for ``accelerate launch`` on several GPUs.

    python -m splitlib.training.launch --stage sft --params outputs/<run>/02_sft/launch_params.json

``--params`` is a JSON file of the notebook's parameters, already validated against its schema
(``splitreason train`` writes it). Every process of the launch trains; the main process writes what the notebook's
training cell writes (``model/``, ``train_settings.json``, ``train_metrics.json``) with the same settings, so the
notebook run afterwards reuses the model instead of training again. The notebooks build the arguments of
``run_sft`` / ``run_grpo`` and the settings their reuse is keyed on with the same functions (``trl_params``,
``rollout_params``, ``sft_settings``, ``grpo_settings``), so a launched model is the one the notebook would train.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from splitlib import data, prompts, provenance, runlock, runs, serve
from splitlib.training.grpo import run_grpo
from splitlib.training.heldout import HeldoutConfig
from splitlib.training.sft import run_sft

log = logging.getLogger(__name__)

STAGES = {"sft": "02_sft", "grpo": "03_grpo"}  # stage -> the notebook whose training it runs
# The notebook parameters passed to TRL when set (notebook 02 / 03, "2 · Training").
SFT_KEYS = ("num_train_epochs", "max_steps", "learning_rate", "per_device_train_batch_size", "global_batch_size",
            "max_length", "logging_steps")
GRPO_KEYS = ("max_steps", "num_generations", "per_device_train_batch_size", "global_batch_size", "learning_rate",
             "temperature", "max_completion_length", "beta", "logging_steps")
DECODE_KEYS = ("big_chunk_tokens", "max_offload_tokens", "takeback", "takeback_threshold")


def is_main_process() -> bool:
    """Rank 0 of an accelerate/torchrun launch, or a process launched alone."""
    return int(os.environ.get("RANK", "0")) == 0


def trl_params(p: Mapping[str, Any], keys: Sequence[str], overrides_key: str) -> dict[str, Any]:
    """The ``params`` of ``run_sft`` / ``run_grpo``: preset, device, seed, the set keys, the notebook's overrides."""
    return {"preset": p["preset"], "device": p["device"], "seed": p["seed"],
            **{k: p[k] for k in keys if p[k] is not None}, **p[overrides_key]}


def rollout_params(rollout: Mapping[str, Any]) -> dict[str, Any]:
    """Offload mode's decoder settings (notebook 03's ``rollout`` parameter, as the notebook passes it)."""
    return {"policy": "split", "policy_params": rollout["policy_params"],
            "decode": {k: rollout[k] for k in DECODE_KEYS},
            "big_backend": rollout["big_backend"], "big_backend_options": rollout["big_backend_options"],
            "policy_engine": rollout["policy_engine"]}


def sft_settings(base: str, annotated_path: Path, n_train: int, train_params: Mapping[str, Any],
                 prompt_style: str = "project") -> dict[str, Any]:
    """What an SFT model is reused under: the base model (and its weights' hash), the annotations, the params and
    the prompt style (its id: a hash of its texts, so a changed text retrains)."""
    return {"base_model": base, "base_model_hash": provenance.model_hash(base),
            "annotated_sha256": provenance.file_hash(annotated_path), "n_train": n_train, "params": dict(train_params),
            "prompt": prompts.style("sft", prompt_style).describe()}


def grpo_inputs(sft_dir: Path, problems: Sequence[Mapping[str, Any]], gold: str = "answer") -> dict[str, str]:
    """Hashes of what every GRPO mode starts from: the SFT model, the training problems and their gold texts."""
    from splitlib.grading import gold_text

    return {"sft_model": provenance.model_hash(sft_dir),
            "problems": provenance.value_hash([(q["question"], gold_text(q, gold)) for q in problems]),
            **({"gold": gold} if gold != "answer" else {})}  # absent for "answer": earlier toy models stay reusable


def grpo_settings(mode: str, inputs: Mapping[str, str], big: str | None, rewards: Sequence[str],
                  reward_weights: Sequence[float], params: Mapping[str, Any],
                  prompt_style: str = "project",
                  reward_overrides: Mapping[str, Mapping[str, Any]] | None = None,
                  heldout: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """What one GRPO arm's model is reused under (offload mode adds the big model and its hash), with the prompt
    style (its id: a hash of its texts) and, when set, the arm's reward settings and its held-out evaluation
    (``heldout_settings``; the big model then counts in paper mode too)."""
    offload = mode == "offload" or heldout is not None
    return {"mode": mode, "sha256": dict(inputs), "big_model": big if offload else None,
            "big_model_hash": provenance.model_hash(big) if offload else None,
            "rewards": list(rewards), "reward_weights": list(reward_weights), "params": dict(params),
            "prompt": prompts.style("grpo", prompt_style).describe(),
            **({"reward_overrides": {k: dict(v) for k, v in reward_overrides.items()}} if reward_overrides else {}),
            **({"heldout": dict(heldout)} if heldout else {})}


def grpo_arms(p: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Notebook 03's arms, all from the same SFT model: each mode of ``modes`` with the rewards as given (arm name =
    mode), then one offload-mode arm ``rl4e_<w>`` per weight of ``rl4e_latency_weights`` (rl4e's latency weight)."""
    arms: dict[str, dict[str, Any]] = {m: {"mode": m, "reward_overrides": {}} for m in p["modes"]}
    for weight in p["rl4e_latency_weights"]:
        arms[f"rl4e_{weight:g}"] = {"mode": "offload", "reward_overrides": {"rl4e": {"latency_weight": weight}}}
    return arms


def needs_big(p: Mapping[str, Any]) -> bool:
    """Whether notebook 03 needs the big model: an arm rolls out with it (offload mode), or held-out evaluations
    decode with it (``eval_every`` > 0)."""
    return any(a["mode"] == "offload" for a in grpo_arms(p).values()) or heldout_on(p)


def heldout_on(p: Mapping[str, Any]) -> bool:
    """Whether notebook 03 evaluates each arm on held-out problems during training."""
    return p["eval_every"] > 0 and p["heldout_problems"] > 0


def heldout_problems(p: Mapping[str, Any], run: Path) -> list[dict]:
    """The held-out problems of the evaluations during training: the first ``heldout_problems`` of the toy world's
    test split (``data/test.jsonl``, the problems notebooks 04 and 05 evaluate on, never trained on); [] when off."""
    if not heldout_on(p):
        return []
    if p["dataset"] != "toy":
        raise ValueError(f"eval_every={p['eval_every']} with dataset={p['dataset']!r}: held-out evaluation during "
                         "GRPO reads the toy world's test split only; set eval_every: 0")
    source = runs.require(run / "data" / "test.jsonl", made_by="notebooks/00_models.ipynb")
    return data.load_toy(source.parent, "test")[: p["heldout_problems"]]


def heldout_config(p: Mapping[str, Any], problems: Sequence[Mapping[str, Any]], big: str | None
                   ) -> HeldoutConfig | None:
    """``run_grpo``'s held-out evaluation: ``problems`` split-decoded with the policy and the big model ``big``,
    with the rollouts' decoder settings (notebook 03's ``rollout``), every ``eval_every`` steps; None when off."""
    if not heldout_on(p):
        return None
    if big is None:
        raise ValueError("held-out evaluation (eval_every > 0) needs the big model; set big_model or eval_every: 0")
    decoder = {k: v for k, v in rollout_params(p["rollout"]).items() if k != "policy_engine"}
    return HeldoutConfig(problems=tuple(problems), big_dir=str(big), every_steps=p["eval_every"], decoder=decoder,
                         hard_steps=p["dataset"] == "toy")


def heldout_settings(p: Mapping[str, Any], problems: Sequence[Mapping[str, Any]]) -> dict[str, Any] | None:
    """The held-out evaluation's part of an arm's settings (None when off). The evaluation does not change the
    model, but its curve is recorded during training and cannot be redone afterwards (no intermediate checkpoints
    are kept), so an arm trained under other evaluation settings is retrained rather than reused with a curve that
    does not match the parameters. Off, nothing is added: models trained before the evaluation existed stay
    reusable."""
    if not heldout_on(p):
        return None
    return {"every": p["eval_every"], "n": len(problems),
            "problems": provenance.value_hash([(q["question"], q["answer"]) for q in problems])}


def reuse_or_train(directory: Path, settings: Mapping[str, Any], train: Callable[[], dict]) -> tuple[dict, bool]:
    """``runs.reuse_or_build`` for a training launched on several processes: all train, the main one writes."""
    result, settings_file = directory / "train_metrics.json", directory / "train_settings.json"
    if runs.saved_settings_match(settings_file, settings, [result, directory / "model" / "config.json"]):
        return json.loads(result.read_text()), True
    value = train()
    if is_main_process():
        runs.atomic_write_json(result, value)
        runs.save_settings(settings_file, settings)
    return value, False


def _run_dir(p: Mapping[str, Any], notebook: str) -> Path:
    # Only the main process takes the run's writer lock (or joins the one `splitreason train` holds).
    if is_main_process():
        return runlock.open_run(p["outputs_root"], p["run_name"], notebook)
    return runs.run_dir(p["outputs_root"], p["run_name"])


def train_sft(p: Mapping[str, Any]) -> dict:
    """Notebook 02's training cell: SFT of the base model on ``01_annotate/annotated.jsonl``."""
    run = _run_dir(p, "02_sft")
    out = run / "02_sft"
    annotated_path = runs.require(run / "01_annotate" / "annotated.jsonl", made_by="notebooks/01_annotate.ipynb")
    base = runs.in_run(run, p["base_model"]) or str(runs.require(run / "models" / "small",
                                                                  made_by="notebooks/00_models.ipynb"))
    rows = runs.read_jsonl(annotated_path)[: p["n_train"]]
    train_params = trl_params(p, SFT_KEYS, "sft_overrides")
    settings = sft_settings(base, annotated_path, len(rows), train_params, p["prompt_style"])
    progress = p["progress"] and is_main_process()
    result, reused = reuse_or_train(out, settings, lambda: run_sft(base, rows, out / "model", train_params, progress,
                                                                   prompt_style=p["prompt_style"]))
    return {"02_sft": {"reused": reused, "steps": result["steps"], "train_wall_s": result["train_wall_s"]}}


def grpo_problems(p: Mapping[str, Any], run: Path) -> list[dict]:
    """Notebook 03's training problems: the toy world's, the authors' GRPO subset (``specr``) or OpenR1-Math."""
    if p["dataset"] == "toy":
        runs.require(run / "data" / "train.jsonl", made_by="notebooks/00_models.ipynb")
        return data.load_toy(run / "data", "train")[: p["n_prompts"]]
    if p["dataset"] == "specr":
        return data.load_specr(runs.in_run(run, p["specr"]["source"]), limit=p["n_prompts"],
                               config=p["specr"]["config"])
    o = p["openr1"]
    return data.load_openr1(runs.in_run(run, o["source"]), limit=p["n_prompts"], config=o["config"], only_correct=o["only_correct"],
                            min_chars=o["min_chars"])


def train_grpo(p: Mapping[str, Any]) -> dict:
    """Notebook 03's training cell: GRPO from the SFT model, one mode of ``modes`` after the other."""
    run = _run_dir(p, "03_grpo")
    out = run / "03_grpo"
    sft_dir = runs.require(run / "02_sft" / "model" / "config.json", made_by="notebooks/02_sft.ipynb").parent
    big = None
    if needs_big(p):
        big = runs.in_run(run, p["big_model"]) or str(runs.require(run / "models" / "big" / "config.json",
                                                 made_by="notebooks/00_models.ipynb").parent)
    problems = grpo_problems(p, run)
    base_params = trl_params(p, GRPO_KEYS, "grpo_overrides")
    fingerprints = grpo_inputs(sft_dir, problems, p["gold"])
    heldout = heldout_settings(p, heldout_problems(p, run))
    done = {}
    for name, arm in grpo_arms(p).items():
        params = arm_params(base_params, p["rollout"], arm["mode"])
        settings = grpo_settings(arm["mode"], fingerprints, big, p["rewards"], p["reward_weights"], params,
                                 p["prompt_style"], arm["reward_overrides"], heldout)

        def train(name: str = name, arm: dict = arm, params: dict = params) -> dict:
            return train_mode(p, arm["mode"], sft_dir, big, problems, params, run, p["progress"] and is_main_process(),
                              arm=name, reward_overrides=arm["reward_overrides"])

        result, reused = reuse_or_train(out / name, settings, train)
        done[f"03_grpo/{name}"] = {"reused": reused, "steps": result["global_steps"],
                                   "train_wall_s": result["train_wall_s"]}
    return done


def arm_params(base_params: Mapping[str, Any], rollout: Mapping[str, Any], mode: str) -> dict[str, Any]:
    """``run_grpo``'s params for one arm: the TRL params, and offload mode's decoder settings."""
    return {**base_params, **({"rollout": rollout_params(rollout)} if mode == "offload" else {})}


def train_mode(p: Mapping[str, Any], mode: str, sft_dir: str | Path, big: str | None, problems: Sequence[Any],
               params: Mapping[str, Any], run: Path, progress: bool, arm: str | None = None,
               reward_overrides: Mapping[str, Mapping[str, Any]] | None = None) -> dict:
    """One arm of notebook 03's training (``arm``: its folder under 03_grpo/, default the mode's name). Offload mode
    with ``serve.big`` reaches the big model on a ``vllm serve`` started for the training and stopped after it; a
    launch over several processes reaches the one server that ``splitreason train`` started (its URL in
    ``SPLITREASON_BIG_BASE_URL``) instead. The server's address is not part of the settings a model is reused under
    (``grpo_settings`` gets ``params`` without it)."""
    folder = run / "03_grpo" / (arm or mode)
    heldout = heldout_config(p, heldout_problems(p, run), big)  # None when eval_every is 0

    def train(params: Mapping[str, Any]) -> dict:
        return run_grpo(sft_dir, big if mode == "offload" else None, problems, folder / "model",
                        mode=mode, reward_names=p["rewards"], reward_weights=p["reward_weights"], params=params,
                        progress=progress, prompt_style=p["prompt_style"], gold=p["gold"],
                        reward_overrides=reward_overrides, heldout=heldout)

    if mode != "offload" or "big" not in p["serve"]:
        return train(params)
    served = os.environ.get(BIG_URL_ENV)
    if served:
        return train(with_big_server(params, {"base_url": served, "tokenizer": big}))
    with serve.serve_all({"big": {"model": big, **p["serve"]["big"]}}, folder) as servers:
        return train(with_big_server(params, serve.backend_options(servers["big"])))


BIG_URL_ENV = "SPLITREASON_BIG_BASE_URL"


def with_big_server(params: Mapping[str, Any], options: Mapping[str, Any]) -> dict[str, Any]:
    """``params`` whose offload rollouts reach the big model with the openai backend ``options`` added."""
    rollout = dict(params["rollout"])
    rollout["big_backend_options"] = {**rollout["big_backend_options"], **options}
    return {**params, "rollout": rollout}


TRAIN = {"sft": train_sft, "grpo": train_grpo}


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m splitlib.training.launch", description=__doc__.splitlines()[0])
    parser.add_argument("--stage", required=True, choices=sorted(STAGES), help="sft: notebook 02 | grpo: notebook 03")
    parser.add_argument("--params", required=True, type=Path, help="JSON file of the notebook's validated parameters")
    return parser.parse_args(argv)


def load_params(path: Path, stage: str) -> dict[str, Any]:
    """The parameters file, checked to hold the notebook's training parameters (the schema checked their values)."""
    if not path.is_file():
        raise FileNotFoundError(f"no parameters file {path}; `splitreason train --dry-run` writes one")
    p = json.loads(path.read_text())
    keys = ("outputs_root", "run_name", "preset", "device", "seed", "progress", "prompt_style",
            *(SFT_KEYS if stage == "sft" else GRPO_KEYS))
    missing = [k for k in keys if k not in p]
    if missing:
        raise ValueError(f"{path}: missing {missing}; expected notebook {STAGES[stage]}'s parameters")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    done = TRAIN[args.stage](load_params(args.params, args.stage))
    if is_main_process():
        log.info("trained: %s", json.dumps(done))
    return 0


if __name__ == "__main__":
    sys.exit(main())
