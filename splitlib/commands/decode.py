"""``splitreason decode``: one question through the cooperative loop; prints the generation with the big
model's text marked (colour on a terminal, ⟦…⟧ otherwise) and a one-line summary."""

from __future__ import annotations

import argparse
import json
import sys

from splitlib import tags
from splitlib.policies import POLICIES
from splitlib.trace import Trace

BIG_ON, BIG_OFF = "\x1b[1;35m", "\x1b[0m"


def render(trace: Trace, color: bool) -> str:
    """The generation without tags, the big model's text marked."""
    parts = []
    for seg in trace.segments:
        if seg.model == "big":
            parts.append(f"{BIG_ON}{seg.text}{BIG_OFF}" if color else f"⟦{seg.text}⟧")
        else:
            parts.append(tags.strip_tags(seg.text))
    return "".join(parts)


def summary_line(trace: Trace) -> str:
    return (
        f"[{trace.policy}] small {trace.tokens('small')} tok · big {trace.tokens('big')} tok · "
        f"offload {100 * trace.offload_token_fraction:.1f}% of tokens ({100 * trace.offload_char_fraction:.1f}% of "
        f"chars) · {trace.handoffs} hand-offs, {trace.rejected_requests} refused · {trace.wall_s:.2f} s · "
        f"finish {trace.finish}"
    )


def add_cli(subparsers) -> None:
    from splitlib.decoding import DecodeConfig

    d = DecodeConfig()
    p = subparsers.add_parser("decode", help="decode one question cooperatively (small + big model)",
                              description=__doc__.splitlines()[0])
    p.add_argument("question")
    p.add_argument("--small", help="small model: directory or hub id")
    p.add_argument("--big", help="big model: directory or hub id (with --big-base-url: the served model name)")
    p.add_argument("--backend", choices=("hf", "vllm", "openai"), default="hf", help="engine for local models")
    p.add_argument("--base-url", help="OpenAI-compatible server for --backend openai")
    p.add_argument("--big-base-url", help="run the big model on this OpenAI-compatible server")
    p.add_argument("--big-tokenizer", help="tokenizer directory/id of the served big model")
    p.add_argument("--api-key-env", default="OPENAI_API_KEY", help="environment variable holding the API key")
    p.add_argument("--timeout-s", type=float, default=60.0, help="per-request timeout for servers")
    p.add_argument("--policy", choices=sorted(POLICIES), default="split")
    p.add_argument("--ratio", type=float, default=19.0, help="random_switch: p_big = 1/(1+ratio)")
    p.add_argument("--chunk", type=int, default=32, help="random_switch: tokens per chunk")
    p.add_argument("--max-offload-fraction", type=float, default=1.0, help="split: offload budget")
    p.add_argument("--reject-probability", type=float, default=0.0, help="split: refuse requests at random")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--max-new-tokens", type=int, default=d.max_new_tokens)
    p.add_argument("--big-chunk-tokens", type=int, default=d.big_chunk_tokens)
    p.add_argument("--max-offload-tokens", type=int, default=d.max_offload_tokens)
    p.add_argument("--takeback", choices=("greedy", "threshold"), default=d.takeback)
    p.add_argument("--takeback-threshold", type=float, default=d.takeback_threshold)
    p.add_argument("--temperature", type=float, default=d.temperature)
    p.add_argument("--top-p", type=float, default=d.top_p)
    p.add_argument("--reference", action="store_true", help="the released code's probe check")
    p.add_argument("--json", action="store_true", help="print the Trace as JSON instead")
    p.set_defaults(func=run)


def _policy_params(args) -> dict:
    if args.policy == "random_switch":
        return {"ratio": args.ratio, "chunk": args.chunk, "seed": args.seed}
    if args.policy == "split":
        return {"max_offload_fraction": args.max_offload_fraction, "reject_probability": args.reject_probability,
                "seed": args.seed}
    return {}


def _backends(args, models: frozenset[str]):
    from splitlib.backends import load_backend

    def local(model: str):
        if args.backend == "openai":
            return load_backend("openai", model, base_url=args.base_url, api_key_env=args.api_key_env,
                                timeout_s=args.timeout_s)
        return load_backend(args.backend, model)

    for role in sorted(models):
        if getattr(args, role) is None and not (role == "big" and args.big_base_url):
            raise SystemExit(f"policy {args.policy!r} needs --{role}")
    small = local(args.small) if "small" in models else None
    big = None
    if "big" in models:
        big = (load_backend("openai", args.big, base_url=args.big_base_url, api_key_env=args.api_key_env,
                            timeout_s=args.timeout_s, tokenizer=args.big_tokenizer)
               if args.big_base_url else local(args.big))
    return small, big


def run(args: argparse.Namespace) -> int:
    from splitlib.decoding import DecodeConfig, decode
    from splitlib.policies import make_policy

    policy = make_policy(args.policy, **_policy_params(args))
    cfg = DecodeConfig(max_new_tokens=args.max_new_tokens, big_chunk_tokens=args.big_chunk_tokens,
                       max_offload_tokens=args.max_offload_tokens, takeback=args.takeback,
                       takeback_threshold=args.takeback_threshold, temperature=args.temperature, top_p=args.top_p,
                       seed=args.seed, reference=args.reference)
    small, big = _backends(args, policy.models)
    trace = decode(args.question, small, big, policy, cfg)
    if args.json:
        print(json.dumps(trace.to_json(), ensure_ascii=False))
        return 0
    print(render(trace, color=sys.stdout.isatty()))
    print(summary_line(trace))
    return 0
