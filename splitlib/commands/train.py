"""``splitreason train``: notebook 02's SFT or notebook 03's GRPO for a profile, on several GPUs of one machine.

    splitreason train --stage sft --profile paper --gpus 8

runs ``accelerate launch --config_file configs/accelerate/zeroK.yaml --num_processes N ... -m
splitlib.training.launch`` with the profile's validated parameters, written to ``<run>/<notebook>/launch_params.json``.
DeepSpeed as the authors ran it: ZeRO-3 for SFT, ZeRO-2 for GRPO (``--zero`` picks the other). The notebook run
afterwards (``splitreason run``) finds the model with the same settings and reuses it. Refused before any work when
``--gpus`` exceeds the visible GPUs or accelerate/deepspeed is missing (``requirements/gpu.txt``), and, as
``splitreason run`` is, when the run holds this notebook made with other parameters (``--force`` replaces the record).
"""

from __future__ import annotations

import argparse
import importlib.util
import shlex
import subprocess
import sys
from pathlib import Path

from splitlib import notebook_params as nbp
from splitlib import pipeline, runlock, runrecord, runs
from splitlib.params import ParamError, as_dict

ACCELERATE_CONFIGS = pipeline.REPO / "configs" / "accelerate"
STAGES = {"sft": "02_sft", "grpo": "03_grpo"}  # stage -> the notebook whose training it runs
ZERO_STAGE = {"sft": 3, "grpo": 2}  # the authors' launches (PAPER_FACTS §10)
REQUIRED_PACKAGES = ("accelerate", "deepspeed")


def visible_gpus() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def mixed_precision() -> str:
    """accelerate's ``--mixed_precision``, matching what each process's TRL config will use (bf16 where supported)."""
    if not visible_gpus():
        return "bf16"  # the config files' value; such a launch is refused anyway
    from splitlib.training.configs import precision  # imports TRL: only where it can matter

    return precision("cuda").accelerate


def refusals(gpus: int, device: str) -> list[str]:
    """Why this machine cannot run the launch (empty: it can)."""
    problems = []
    if gpus < 1:
        problems.append(f"--gpus {gpus}: expected at least 1")
    if gpus > (n := visible_gpus()):
        problems.append(f"--gpus {gpus} but {n} CUDA GPU(s) visible (CUDA_VISIBLE_DEVICES picks which); "
                        "lower --gpus or run on a machine with more GPUs")
    if device == "cpu":
        problems.append("the profile trains with device: cpu; multi-GPU training needs device cuda or auto")
    missing = [name for name in REQUIRED_PACKAGES if importlib.util.find_spec(name) is None]
    if missing:
        problems.append(f"{', '.join(missing)} not installed: pip install -r requirements/gpu.txt")
    return problems


def accelerate_config(stage: str, zero: int | None = None) -> Path:
    return ACCELERATE_CONFIGS / f"zero{zero or ZERO_STAGE[stage]}.yaml"


def launch_command(stage: str, params_file: Path, gpus: int, zero: int | None = None,
                   precision: str = "bf16") -> list[str]:
    """The ``accelerate launch`` command line that trains ``stage`` on ``gpus`` processes of this machine."""
    accelerate = Path(sys.executable).with_name("accelerate")
    return [str(accelerate) if accelerate.exists() else "accelerate", "launch",
            "--config_file", str(accelerate_config(stage, zero)), "--num_processes", str(gpus),
            "--mixed_precision", precision,
            "-m", "splitlib.training.launch", "--stage", stage, "--params", str(params_file)]


def _load(args: argparse.Namespace, modes: bool = True) -> dict:
    """The stage's notebook parameters for the profile (``modes``: with ``--modes`` applied)."""
    notebook = STAGES[args.stage]
    profile_dir = pipeline.profile_dir(args.profile)
    overrides = {"run_name": args.run_name or args.profile, "outputs_root": args.outputs_root}
    if args.modes and modes:
        overrides["modes"] = args.modes
    return as_dict(nbp.load_yaml(notebook, profile_dir / f"{notebook}.yaml", overrides))


def _cmd_train(args: argparse.Namespace) -> int:
    try:
        if args.modes and args.stage != "grpo":
            raise ParamError("--modes applies to --stage grpo only")
        # the run guard judges the profile's parameters: --modes picks what to train now, not what 03 records
        params, profile_params = _load(args), _load(args, modes=False)
    except ParamError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    problems = refusals(args.gpus, params["device"])
    if problems and not args.dry_run:
        print("refused, nothing was run:\n" + "\n".join(f"  - {p}" for p in problems), file=sys.stderr)
        return 2
    run_dir = runs.run_dir(params["outputs_root"], params["run_name"])
    params_file = run_dir / STAGES[args.stage] / "launch_params.json"
    if args.dry_run:
        runs.atomic_write_json(params_file, params)
        print(shlex.join(launch_command(args.stage, params_file, args.gpus, args.zero, mixed_precision())))
        if problems:
            print("note: this machine would refuse it:\n" + "\n".join(f"  - {p}" for p in problems), file=sys.stderr)
        return 0
    with runlock.acquire(run_dir, f"splitreason train --stage {args.stage} --profile {args.profile}"):
        try:
            runrecord.claim(run_dir, STAGES[args.stage], profile_params, overwrite=args.force)
        except runrecord.RunMismatch as err:
            print(f"refused, nothing was run: {err}\n(splitreason train: --force replaces the record)", file=sys.stderr)
            return 2
        runs.atomic_write_json(params_file, params)
        command = launch_command(args.stage, params_file, args.gpus, args.zero, mixed_precision())
        from splitlib.training.launch import needs_big  # imported here: it loads TRL

        if args.stage != "grpo" or not needs_big(params) or "big" not in params["serve"]:
            return subprocess.run(command, check=False).returncode  # the processes join this lock
        return _with_big_server(params, run_dir, command)


def _with_big_server(params: dict, run_dir: Path, command: list[str]) -> int:
    """Offload-mode GRPO over several processes: one ``vllm serve`` of the big model (the profile's ``serve.big``,
    on the GPUs it pins) for all of them, its URL passed down in ``SPLITREASON_BIG_BASE_URL``; stopped after."""
    import os

    from splitlib import serve
    from splitlib.training.launch import BIG_URL_ENV

    big = runs.in_run(run_dir, params["big_model"])
    with serve.serve_all({"big": {"model": big, **params["serve"]["big"]}}, run_dir / "03_grpo" / "offload") as up:
        env = {**os.environ, BIG_URL_ENV: up["big"].base_url}
        return subprocess.run(command, check=False, env=env).returncode


def add_cli(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="notebook 02's SFT or 03's GRPO on several GPUs (accelerate + DeepSpeed)",
                       description="Run notebook 02's SFT or notebook 03's GRPO training for a profile on several "
                                   "GPUs of this machine with accelerate and DeepSpeed (ZeRO-3 for SFT, ZeRO-2 for "
                                   "GRPO), with the profile's validated parameters. The notebook run afterwards "
                                   "(splitreason run) finds the model and reuses it. Refused before any work when "
                                   "--gpus exceeds the visible GPUs or accelerate/deepspeed is missing "
                                   "(pip install -r requirements/gpu.txt).",
                       epilog="examples:\n"
                              "  splitreason train --stage sft --profile paper --gpus 8\n"
                              "  splitreason train --stage grpo --profile paper --gpus 7 --modes paper\n"
                              "  splitreason train --stage sft --gpus 8 --dry-run    # print the accelerate launch line")
    p.add_argument("--stage", required=True, choices=sorted(STAGES), help="sft: notebook 02 | grpo: notebook 03")
    p.add_argument("--profile", default="paper",
                   help="a folder of params/: smoke, toy, rehearsal or paper (default: paper)")
    p.add_argument("--gpus", type=int, required=True,
                   help="training processes, one per GPU (CUDA_VISIBLE_DEVICES picks which)")
    p.add_argument("--run-name", help="outputs/<run-name> (default: the profile name)")
    p.add_argument("--outputs-root", default="outputs", help="root folder for run outputs (default: outputs)")
    p.add_argument("--modes", nargs="+", choices=["paper", "offload"], help="grpo: train only these modes")
    p.add_argument("--zero", type=int, choices=[2, 3], help="DeepSpeed ZeRO stage (default: sft 3, grpo 2)")
    p.add_argument("--force", action="store_true",
                   help="train even where the run records this notebook with other parameters, and record these")
    p.add_argument("--dry-run", action="store_true",
                   help="write the parameters file and print the command without running it")
    p.set_defaults(func=_cmd_train)
