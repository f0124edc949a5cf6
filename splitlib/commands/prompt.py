"""``splitreason prompt``: print exactly the text a model reads at one stage of a profile, nothing else on stdout.

    splitreason prompt --profile rehearsal --stage grpo --problem "What is 2+3?"

The stage's notebook parameters say the prompt style (``prompt_style``: 02 for ``sft``, 03 for ``grpo``, 05 for
``eval``) and the model whose tokenizer renders it (``sft``/``grpo``: 02's ``base_model``, the big role 03's
``big_model``; ``eval``: 05's ``small_model`` or ``big_model``). ``sft`` prints the whole training example
(``--completion`` = the annotated trace); ``grpo``/``eval`` print the prompt, followed by ``--completion`` if given.
``annotate`` prints the user message the LLM annotator sends (01's settings; the trace = ``--completion`` or
``--problem``; the served model's chat template wraps it on the server). A ``hub/...`` model of a run that has no
stand-ins yet (rehearsal) is read from stand-ins built once under the cache directory. Logs go to stderr.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import Any

from splitlib import notebook_params as nbp
from splitlib import pipeline, prompts, runs
from splitlib.params import ParamError

log = logging.getLogger(__name__)

NOTEBOOKS = {"sft": "02_sft", "grpo": "03_grpo", "eval": "05_evaluate", "annotate": "01_annotate"}


def default_cache_dir() -> Path:
    """Where stand-ins are built for a run that has none: ``$SPLITREASON_CACHE`` or ``~/.cache/splitreason``."""
    if os.environ.get("SPLITREASON_CACHE"):
        return Path(os.environ["SPLITREASON_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "splitreason"


def stage_params(profile: str, stage: str, outputs_root: str | None = None) -> Any:
    """The validated parameters of the notebook that renders ``stage`` in ``profile``."""
    notebook = NOTEBOOKS[stage]
    overrides = {"outputs_root": outputs_root} if outputs_root else {}
    return nbp.load_yaml(notebook, pipeline.profile_dir(profile) / f"{notebook}.yaml", overrides)


def model_ref(profile: str, stage: str, role: str, outputs_root: str | None = None) -> tuple[Any, str | None]:
    """``(params, reference)``: the parameters that name the model whose tokenizer renders ``stage`` for ``role``."""
    if stage == "eval":
        p = stage_params(profile, "eval", outputs_root)
        return p, p.small_model if role == "small" else p.big_model
    if stage == "grpo" and role == "big":
        p = stage_params(profile, "grpo", outputs_root)
        return p, p.big_model or "models/big"
    p = stage_params(profile, "sft", outputs_root)
    return p, p.base_model or "models/small"


def resolve_model(p: Any, ref: str, cache_dir: Path) -> str:
    """``ref`` inside the run directory; a missing ``hub/...`` stand-in comes from stand-ins built in ``cache_dir``."""
    root = Path(p.outputs_root)  # as runs.run_dir resolves it, without creating the run directory
    run = (root if root.is_absolute() else runs.REPO_ROOT / root) / p.run_name
    if Path(ref).parts[0] == "hub" and not (run / ref).exists():
        from splitlib.rehearsal import build_standins

        root = cache_dir / f"rehearsal-standins-seed{p.seed}"
        log.info("%s has no stand-ins: using (building once) %s", run, root)
        build_standins(root, seed=p.seed, progress=False)
        return str(root / Path(*Path(ref).parts[1:]))
    return runs.in_run(run, ref)


def load_tokenizer(ref: str) -> Any:
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(ref)
    except OSError as err:  # a hub id offline, a folder without a tokenizer
        raise ValueError(f"cannot load the tokenizer of {ref!r} ({err}); offline, the paper profile's hub models "
                         "need a local copy (HF_HOME) — the rehearsal profile renders the same prompts") from None


def render(args: argparse.Namespace) -> str:
    """The text of ``args.stage`` (see the module docstring)."""
    if args.stage == "annotate":
        return annotator_prompt(stage_params(args.profile, "annotate", args.outputs_root), args.completion or args.problem)
    if args.stage == "sft" and args.completion is None:
        raise ValueError("--stage sft prints a whole training example: give the annotated trace as --completion")
    p, ref = model_ref(args.profile, args.stage, args.role, args.outputs_root)
    chosen = prompts.style(args.stage, args.style or p.prompt_style)
    tokenizer = load_tokenizer(resolve_model(p, ref, Path(args.cache_dir)))
    if args.stage == "sft":
        prompt, completion = prompts.sft_texts(tokenizer, args.problem, args.completion, chosen)
        return prompt + completion
    text = prompts.build_prompt(tokenizer, args.problem, args.role, chosen, offloading=not args.alone)
    return text + (args.completion or "")


def annotator_prompt(p: Any, trace: str) -> str:
    """The user message notebook 01's LLM annotator sends for ``trace``."""
    from splitlib.annotate import LLMAnnotator, annotator_config, annotator_params

    if p.annotator != "llm":
        raise ValueError(f"profile {p.profile!r} annotates with {p.annotator!r}, which sends no prompt (llm does)")
    settings = annotator_params("llm", p.annotator_params, target_fraction=p.target_fraction)
    return LLMAnnotator(annotator_config("llm", settings), client=_NoClient()).prompt(trace)


class _NoClient:
    """Stands in for the OpenAI client: rendering a prompt contacts no server and needs no key."""


def _cmd_prompt(args: argparse.Namespace) -> int:
    try:
        text = render(args)
    except (ParamError, ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    sys.stdout.write(text)
    sys.stdout.flush()
    return 0


def add_cli(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("prompt", help="print exactly the text a model reads at one stage of a profile",
                       description="Print exactly the text a model reads at one stage of a profile, and nothing "
                                   "else on stdout (logs go to stderr): an SFT training example, a GRPO rollout "
                                   "prompt, an evaluation prompt or the LLM annotator's request. The stage's "
                                   "notebook parameters choose the prompt style and the tokenizer that renders it.",
                       epilog="examples:\n"
                              "  splitreason prompt --profile rehearsal --stage grpo --problem \"What is 2+3?\"\n"
                              "  splitreason prompt --profile toy --stage eval --role big --problem \"QUESTION\"\n"
                              "  splitreason prompt --stage sft --problem \"QUESTION\" --completion \"ANNOTATED TRACE\"")
    p.add_argument("--profile", default="paper",
                   help="a folder of params/: smoke, toy, rehearsal or paper (default: paper)")
    p.add_argument("--stage", required=True, choices=sorted(NOTEBOOKS),
                   help="sft: a training example | grpo: a rollout prompt | eval: an evaluation prompt | annotate")
    p.add_argument("--problem", required=True, help="the problem (annotate: the trace, unless --completion)")
    p.add_argument("--completion", help="sft: the annotated trace; grpo/eval: appended; annotate: the trace")
    p.add_argument("--role", default="small", choices=["small", "big"], help="grpo/eval: whose prompt (default: small)")
    p.add_argument("--alone", action="store_true",
                   help="eval: the small model decoding alone (small-only, random switch), not split")
    p.add_argument("--style", help="a prompt style name instead of the profile's prompt_style")
    p.add_argument("--outputs-root", help="root folder of run outputs (default: the profile's)")
    p.add_argument("--cache-dir", default=str(default_cache_dir()),
                   help="where stand-ins are built for a run without them (default: %(default)s)")
    p.set_defaults(func=_cmd_prompt)
