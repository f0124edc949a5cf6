"""``splitreason run``: the numbered notebooks in order with papermill (``splitlib.pipeline`` does the work)."""

from __future__ import annotations

import argparse
import logging

from splitlib import pipeline, runlock, runrecord, summary
from splitlib.params import ParamError

log = logging.getLogger(__name__)


def _cmd_run(args: argparse.Namespace) -> int:
    try:
        manifest = pipeline.run(args.profile, args.only, args.start, args.run_name, args.outputs_root, args.force)
    except (ParamError, pipeline.NotebookFailed, runlock.RunLocked, runrecord.RunMismatch) as err:
        log.error("%s", err)
        return 1
    print(f"done: {manifest.parent / summary.SUMMARY}\n{summary.headline(manifest.parent)}")
    return 0


def add_cli(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="run the notebooks in order with papermill")
    p.add_argument("--profile", default="toy", help="smoke | toy | paper | rehearsal (default: toy)")
    p.add_argument("--only", nargs="+", metavar="NN", help="run only these notebooks (e.g. 05 06)")
    p.add_argument("--from", dest="start", metavar="NN", help="start at this notebook")
    p.add_argument("--run-name", help="outputs/<run-name> (default: the profile name)")
    p.add_argument("--outputs-root", default="outputs", help="root folder for run outputs (default: outputs)")
    p.add_argument("--force", action="store_true",
                   help="write into a run directory made with other parameters, replacing its record (every "
                        "notebook gets overwrite: true); without it such a run is refused before anything runs")
    p.set_defaults(func=_cmd_run)
