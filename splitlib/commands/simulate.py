"""``splitreason simulate``: simulated latency and speed-up of split decoding (``splitlib.simulator``)."""

from __future__ import annotations

import argparse
import json
import sys

from splitlib.hardware import BUILTIN_PROFILES
from splitlib.simulator import MODES, PAPER_CHUNK, PAPER_DECODE_TOKENS, PAPER_PROMPT_TOKENS, sweep


def add_cli(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("simulate", help="simulated latency and speed-up of split decoding",
                       description="Simulated latency of split decoding against the big model alone, for each "
                                   "offload fraction and big model, from a hardware profile of per-token costs "
                                   "(the paper's Figure 5 method). Nothing is decoded: seconds on any CPU.",
                       epilog="examples:\n"
                              "  splitreason simulate --offload 0.0135 0.05 0.10\n"
                              "  splitreason simulate --profile roofline-H100 --mode continuous --json")
    p.add_argument("--profile", default="a6000-paper",
                   help=f"a built-in hardware profile ({', '.join(BUILTIN_PROFILES)}) or the path of a profile "
                        "JSON (notebook 06 writes one: outputs/<run>/06_figure5/profile.json)")
    p.add_argument("--small", default="1.5B", help="small model key in the profile (default: 1.5B)")
    p.add_argument("--big", nargs="+", default=["32B"], help="big model key(s) in the profile (default: 32B)")
    p.add_argument("--offload", nargs="+", type=float, default=[0.0135, 0.05, 0.10],
                   help="fractions of decoded tokens written by the big model (0.05 = 5 %%)")
    p.add_argument("--mode", default="paper", choices=sorted(MODES),
                   help=" | ".join(f"{name}: {MODES[name].description}" for name in sorted(MODES)) + " (default: paper)")
    p.add_argument("--prompt-tokens", type=int, default=PAPER_PROMPT_TOKENS, help="prompt length in tokens")
    p.add_argument("--decode-tokens", type=int, default=PAPER_DECODE_TOKENS, help="generated tokens per answer")
    p.add_argument("--chunk", type=int, default=PAPER_CHUNK, help="tokens per chunk (paper: chunks assigned whole; overhead: sets the catch-up cost)")
    p.add_argument("--seed", type=int, default=0, help="paper mode: seed of which chunk goes to which model")
    p.add_argument("--json", action="store_true", help="print a JSON list instead of a table")
    p.set_defaults(func=_cmd_simulate)


def _cmd_simulate(args: argparse.Namespace) -> int:
    kwargs = {"mode": args.mode, "prompt_tokens": args.prompt_tokens, "decode_tokens": args.decode_tokens,
              "chunk": args.chunk, "seed": args.seed}
    try:
        df = sweep(args.offload, args.profile, args.small, args.big, **kwargs)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(df.to_dict(orient="records"), indent=2))
        return 0
    print(f"profile {args.profile}, mode {args.mode}, small {args.small}, "
          f"prompt {args.prompt_tokens} + decode {args.decode_tokens} tokens")
    print(f"{'big':>6} {'offload %':>10} {'big-only s':>11} {'simulated s':>12} {'speed-up':>9}")
    for r in df.itertuples():
        print(f"{r.big:>6} {100 * r.offload:>10.2f} {r.big_only_s:>11.1f} {r.simulated_s:>12.1f} {r.speedup:>8.2f}x")
    return 0
