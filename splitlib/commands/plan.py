"""``splitreason plan``: what each notebook of a profile needs (models, engines, GPUs, memory, servers,
downloads), said before anything loads; exits 1 naming each stage the visible hardware cannot hold."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from splitlib import notebook_params as nbp
from splitlib import pipeline, plan
from splitlib.params import ParamError


def _cmd_plan(args: argparse.Namespace) -> int:
    try:
        profile_dir = pipeline.profile_dir(args.profile)
        run_name = args.run_name or args.profile
        overrides = {"run_name": run_name, "outputs_root": args.outputs_root}
        params = {n: nbp.load_yaml(n, profile_dir / f"{n}.yaml", overrides) for n in pipeline.notebook_names()}
    except ParamError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    hw = plan.Hardware.visible()
    run_dir = Path(args.outputs_root) / run_name
    stages = plan.stage_needs(params, run_dir if run_dir.is_dir() else None, cuda=hw.gpus > 0)
    print(f"profile {args.profile}, run {run_name}")
    print(plan.render(stages, hw))
    problems = plan.check(stages, hw)
    if problems:
        print("\nthis machine cannot run profile " + args.profile + ":\n" + "\n".join(f"  - {p}" for p in problems))
        return 1
    print(f"\nevery stage fits the visible hardware (as far as estimated): splitreason run --profile {args.profile}")
    return 0


def add_cli(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("plan", help="what each notebook of a profile needs, checked against this machine",
                       description="For each notebook of a profile: the models it loads, the engines and servers "
                                   "it starts, the GPUs and memory it needs and what it downloads, read from the "
                                   "parameter files alone (nothing loads). Exits 1 naming each stage this machine "
                                   "cannot hold, 0 when every stage fits.",
                       epilog="example:\n  splitreason plan --profile paper")
    p.add_argument("--profile", default="toy",
                   help="a folder of params/: smoke, toy, rehearsal or paper (default: toy)")
    p.add_argument("--run-name", help="outputs/<run-name> whose models are measured when present (default: profile)")
    p.add_argument("--outputs-root", default="outputs", help="root folder for run outputs (default: outputs)")
    p.set_defaults(func=_cmd_plan)
