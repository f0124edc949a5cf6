"""``splitreason figures --paper``: the paper's figures and tables regenerated from its published numbers and the
latency simulator (``splitlib.paper_figures``), optionally with a run's own measured points (``--run``)."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

from splitlib import notebook_params as nbp
from splitlib import paper_figures, paper_overlay, pipeline
from splitlib.params import ParamError

log = logging.getLogger(__name__)


def add_cli(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("figures", help="regenerate the paper's figures and tables from its published numbers")
    p.add_argument("--paper", action="store_true",
                   help="the paper's Figures 5, 6 (table) and 1 from its published numbers and the simulator "
                        "(no model runs; seconds on a CPU)")
    p.add_argument("--out", default="outputs/paper_figures", help="output folder (default: outputs/paper_figures)")
    p.add_argument("--run", metavar="RUN_DIR",
                   help="also draw this run's measured points (outputs/<run>: needs its 04 and 05 outputs)")
    p.set_defaults(func=_cmd_figures)


def _left_refs(run_dir: Path) -> dict[str, str]:
    """Which of the run's methods stand beside the paper's boxes: as notebook 06 last ran on it, else as the run's
    profile's parameters say."""
    recorded = paper_overlay.recorded_left_refs(run_dir)
    if recorded is not None:
        return recorded
    manifest = run_dir / "manifest.json"
    profile = json.loads(manifest.read_text()).get("profile", "toy") if manifest.is_file() else "toy"
    params = nbp.load_yaml("06_figure5", pipeline.profile_dir(profile) / "06_figure5.yaml")
    return paper_overlay.left_refs(params.figure5_left)


def _cmd_figures(args: argparse.Namespace) -> int:
    if not args.paper:
        print("error: say --paper (the paper's figures from its published numbers); a run's own Figure 5 is "
              "written by notebooks/06_figure5.ipynb into outputs/<run>/06_figure5/", file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    if args.run and not Path(args.run).is_dir():
        print(f"error: --run {args.run}: no such run directory; give outputs/<run> of a run made by "
              "splitreason run (its 04 and 05 outputs are drawn)", file=sys.stderr)
        return 2
    try:
        run = paper_overlay.read_run(args.run, _left_refs(Path(args.run))) if args.run else None
    except (FileNotFoundError, ParamError, KeyError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    paths = paper_figures.write_all(args.out, run)
    for path in paths.values():
        print(path)
    print(f"wrote {len(paths)} files to {args.out} in {time.perf_counter() - t0:.1f} s; {args.out}/README.md says "
          "what each reproduces and how it differs from print")
    return 0
