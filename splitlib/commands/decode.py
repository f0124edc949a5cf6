"""``splitreason decode``: one question through the cooperative loop (``splitlib.decoding``); prints the generation
with the big model's text marked and a one-line summary. What a user reads is ``DESCRIPTION`` and the options' help."""

from __future__ import annotations

import argparse
import json
import sys

from splitlib import tags
from splitlib.params import ParamError
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


DESCRIPTION = """\
Decode one question with a small and a big model working together, as SplitReason does: the small model writes until
it asks for help with <bigmodel>; the big model then writes in chunks until the small model takes back over
(</bigmodel>). Prints the generation with the big model's text marked (colour on a terminal, ⟦…⟧ otherwise) and
a one-line summary: tokens per model, offloaded share, hand-offs, wall time. Models are local directories (made by
notebooks/00_models.ipynb and 02/03) or hub ids; either can run on an OpenAI-compatible server instead."""

EPILOG = """\
examples:
  splitreason decode --small outputs/toy/03_grpo/offload/model --big outputs/toy/models/big \\
      --big-chunk-tokens 4 "Bonus: 9 3 8 3. Start at 0; step k adds k mod 10, ..."
  splitreason decode --policy small_only --small outputs/toy/models/small "QUESTION"
  splitreason decode --small MODEL_DIR --big Qwen/QwQ-32B --big-base-url http://127.0.0.1:8000/v1 \\
      --big-tokenizer Qwen/QwQ-32B "QUESTION"   # the big model on a server (splitreason serve)"""


def add_cli(subparsers) -> None:
    from splitlib.decoding import DecodeConfig

    d = DecodeConfig()
    p = subparsers.add_parser("decode", help="decode one question cooperatively (small + big model)",
                              description=DESCRIPTION, epilog=EPILOG)
    p.add_argument("question", help="the question, as one quoted argument")
    models = p.add_argument_group("models")
    models.add_argument("--small", help="small model: a directory or hub id (needed by every policy but big_only)")
    models.add_argument("--big", help="big model: a directory or hub id; with --big-base-url, the name the server "
                                      "serves (needed by every policy but small_only)")
    models.add_argument("--backend", choices=("hf", "vllm", "openai"), default="hf",
                        help="engine for the models: hf (transformers), vllm (in-process engine) or openai (a "
                             "server at --base-url)")
    models.add_argument("--base-url", help="--backend openai: the OpenAI-compatible server, e.g. "
                                           "http://127.0.0.1:8000/v1")
    models.add_argument("--big-base-url", help="run only the big model on this OpenAI-compatible server")
    models.add_argument("--big-tokenizer", help="with --big-base-url: tokenizer directory or hub id of the served "
                                                "big model (default: --big)")
    models.add_argument("--api-key-env", default="OPENAI_API_KEY", help="environment variable holding the API key")
    models.add_argument("--timeout-s", type=float, default=60.0, help="per-request timeout for servers, in seconds")
    policy = p.add_argument_group("policy: who writes which tokens")
    policy.add_argument("--policy", choices=sorted(POLICIES), default="split",
                        help="split: the small model offloads with <bigmodel> tags | random_switch: the paper's "
                             "baseline, random chunks to the big model | small_only / big_only: one model alone")
    policy.add_argument("--ratio", type=float, default=19.0,
                        help="random_switch: small chunks per big chunk on average (p_big = 1/(1+ratio))")
    policy.add_argument("--chunk", type=int, default=32, help="random_switch: tokens per chunk")
    policy.add_argument("--max-offload-fraction", type=float, default=1.0,
                        help="split: refuse <bigmodel> requests while the big model's share of tokens is above this "
                             "(1 = no budget)")
    policy.add_argument("--reject-probability", type=float, default=0.0,
                        help="split: refuse each <bigmodel> request with this probability")
    loop = p.add_argument_group("decoding")
    loop.add_argument("--max-new-tokens", type=int, default=d.max_new_tokens,
                      help="generated tokens in all, both models and tags included")
    loop.add_argument("--big-chunk-tokens", type=int, default=d.big_chunk_tokens,
                      help="big-model tokens per chunk before the small model checks whether to take back over")
    loop.add_argument("--max-offload-tokens", type=int, default=d.max_offload_tokens,
                      help="longest offloaded span: the big model's turn is closed with </bigmodel> after this many "
                           "tokens")
    loop.add_argument("--takeback", choices=("greedy", "threshold"), default=d.takeback,
                      help="when the small model takes back over: greedy = </bigmodel> is its most likely next token; "
                           "threshold = P(</bigmodel>) >= --takeback-threshold")
    loop.add_argument("--takeback-threshold", type=float, default=d.takeback_threshold,
                      help="--takeback threshold: the probability of </bigmodel> that hands back (0 < p <= 1)")
    loop.add_argument("--temperature", type=float, default=d.temperature,
                      help="sampling temperature of both models; 0 = greedy")
    loop.add_argument("--top-p", type=float, default=d.top_p, help="nucleus sampling: keep this probability mass")
    loop.add_argument("--seed", type=int, default=d.seed,
                      help="seed of sampling, random_switch's draws and split's refusals")
    loop.add_argument("--reference", action="store_true",
                      help="check take-backs as the authors' released code does (probe continuations at every prefix "
                           "of a chunk) instead of one forward pass")
    p.add_argument("--json", action="store_true", help="print the whole trace (segments, tokens, timings) as JSON")
    p.set_defaults(func=run)


def _policy_params(args) -> dict:
    if args.policy == "random_switch":
        return {"ratio": args.ratio, "chunk": args.chunk, "seed": args.seed}
    if args.policy == "split":
        return {"max_offload_fraction": args.max_offload_fraction, "reject_probability": args.reject_probability,
                "seed": args.seed}
    return {}


def _check_models(args, models: frozenset[str]) -> None:
    """The options the policy's models need, and their directories, checked before any engine loads."""
    from splitlib.backends.base import resolve_model

    roles = [role for role in ("small", "big") if role in models]
    for role in roles:
        if getattr(args, role) is None and not (role == "big" and args.big_base_url):
            raise ParamError(f"policy {args.policy!r} needs --{role} (a model directory or hub id)")
    local_roles = [role for role in roles if not (role == "big" and args.big_base_url)]
    if args.backend == "openai" and local_roles and not args.base_url:
        raise ParamError("--backend openai needs --base-url (the server's URL, e.g. http://127.0.0.1:8000/v1)")
    if args.backend != "openai":
        for role in local_roles:
            resolve_model(getattr(args, role))  # a missing directory: ModelNotFoundError naming it


def _backends(args, models: frozenset[str]):
    from splitlib.backends import load_backend

    def local(model: str):
        if args.backend == "openai":
            return load_backend("openai", model, base_url=args.base_url, api_key_env=args.api_key_env,
                                timeout_s=args.timeout_s)
        return load_backend(args.backend, model)

    _check_models(args, models)
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

    try:  # the options' values are checked here, before any model loads
        policy = make_policy(args.policy, **_policy_params(args))
        cfg = DecodeConfig(max_new_tokens=args.max_new_tokens, big_chunk_tokens=args.big_chunk_tokens,
                           max_offload_tokens=args.max_offload_tokens, takeback=args.takeback,
                           takeback_threshold=args.takeback_threshold, temperature=args.temperature,
                           top_p=args.top_p, seed=args.seed, reference=args.reference)
    except ValueError as err:  # "max_new_tokens=0: expected ..." -> "--max-new-tokens=0: expected ..."
        name, sep, rest = str(err).partition("=")
        option = f"--{name.replace('_', '-')}"
        raise ParamError(f"{option}={rest}" if sep and hasattr(args, name) else str(err)) from None
    small, big = _backends(args, policy.models)
    trace = decode(args.question, small, big, policy, cfg)
    if args.json:
        print(json.dumps(trace.to_json(), ensure_ascii=False))
        return 0
    print(render(trace, color=sys.stdout.isatty()))
    print(summary_line(trace))
    return 0
