"""Benchmark offload-mode GRPO rollouts: one completion at a time vs the whole batch in the same engine steps (prints
numbers, writes JSON; no timed assertions).

    .venv/bin/python benchmarks/bench_rollouts.py --size tiny      # random models built on the fly: tiny|toy|medium
    .venv/bin/python benchmarks/bench_rollouts.py --small outputs/toy/02_sft/model --big outputs/toy/models/big \
        --out outputs/toy/bench_rollouts.json

One rollout batch (``--prompts`` toy questions x ``--generations``) goes through the real rollout function
(``splitlib.training.rollout.OffloadRollout``, called as TRL calls it, from a real ``GRPOTrainer``) with the same
sampling, seeds, length cap and decoder settings in every configuration:

- ``hf policy + hf big``: today's default, ``decode_many`` decodes the batch one completion at a time;
- ``vllm policy + hf big``: TRL's colocated engine as the policy, but the big model does not batch: still one at a
  time (the rollout warns);
- ``vllm policy + vllm big``: every completion advances in the same engine steps (``_drive_together``).

The policy engine is TRL's own colocated ``vllm.LLM`` (``use_vllm=True, vllm_mode="colocate"``), loaded from the
policy's directory, so it holds the policy's weights without a sync (the rollout is called directly, not through
``GRPOTrainer._generate``). Throughput = generated tokens (both models', as kept in the traces) / the measured
wall time of the batch's decode (``rollout/tok_per_s`` of the training log); the rollout's wall time adds the
policy's log-probabilities (hf, one forward per completion, the same in every configuration).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import tempfile
import time
from pathlib import Path

# -- settings ------------------------------------------------------------------------------------------------
N_PROMPTS = 16  # --prompts: toy questions in the batch
N_GENERATIONS = 1  # --generations: completions per question (TRL repeats each prompt this many times)
MAX_COMPLETION_TOKENS = 200  # GRPO max_completion_length
TEMPERATURE = 0.7  # GRPO sampling temperature (the paper's)
DECODE = {"big_chunk_tokens": 32, "max_offload_tokens": 128}  # decoder settings (as bench_decoding.py)
MAX_MODEL_LEN = 512  # both engines' context window
CONFIGS = (("hf", "hf"), ("vllm", "hf"), ("vllm", "vllm"))  # (policy engine, big backend)
# --size: (small, big) shapes of random models built on the fly as (hidden, layers, heads, intermediate); the small
# one is taught to write <bigmodel>/</bigmodel> (splitlib.backends.testing). tiny: the test suite's; toy: the toy
# profile's (params/toy/00_models.yaml); medium: ~4M / ~34M parameters, where a forward pass costs more than its
# overhead (closer to real models, whose decoding is bound by reading the weights)
SIZES = {"tiny": None, "toy": ((64, 1, 2, 256), (96, 8, 3, 384)), "medium": ((256, 4, 8, 1024), (512, 8, 8, 2048))}


def build_models(size: str) -> tuple[str, str]:
    """Directories of a random (small, big) pair of ``size``."""
    from splitlib.backends.testing import TinySpec, build_tiny_models, tiny_model_dirs
    from splitlib.toy.models import ToyModelConfig

    if SIZES[size] is None:
        dirs = tiny_model_dirs()
    else:
        small, big = (ToyModelConfig(*shape) for shape in SIZES[size])
        root = tempfile.mkdtemp(prefix=f"bench-rollouts-{size}-")
        dirs = build_tiny_models(root, [TinySpec("big", big, seed=1), TinySpec("small", small, tags_from="big")])
    return str(dirs["small"]), str(dirs["big"])


def make_trainer(small_dir: str, problems: list, generations: int, use_vllm: bool, out_dir: str):
    """A real GRPOTrainer (CPU flags), with TRL's colocated vLLM engine when ``use_vllm``; the rollout is attached
    later. Rewards are never computed here (the rollout is called directly)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import GRPOTrainer

    from splitlib.training import grpo_config, grpo_dataset
    from splitlib.training.grpo import reward_functions

    tokenizer = AutoTokenizer.from_pretrained(small_dir)
    vllm = {"use_vllm": True, "vllm_mode": "colocate", "vllm_max_model_length": MAX_MODEL_LEN} if use_vllm else {}
    # TRL sizes its engine to one generation batch (max_num_seqs = per-device batch x steps per generation): the
    # rollout batch, as in training
    args = grpo_config("smoke", "cpu", output_dir=out_dir, temperature=TEMPERATURE,
                       max_completion_length=MAX_COMPLETION_TOKENS, num_generations=max(generations, 2),
                       per_device_train_batch_size=len(problems) * max(generations, 2), **vllm)
    dataset = grpo_dataset(problems, tokenizer)
    trainer = GRPOTrainer(model=AutoModelForCausalLM.from_pretrained(small_dir), reward_funcs=reward_functions(["paper"]),
                          args=args, train_dataset=dataset, processing_class=tokenizer)
    return trainer, dataset


def measure(trainer, dataset, problems, generations: int, big_dir: str, policy_engine: str, big_backend: str,
            repeats: int) -> dict:
    """The rollout of one batch on these engines: a warm-up call, then ``repeats`` timed calls (best kept)."""
    from splitlib.training.grpo import build_offload_rollout

    opts = {"max_model_len": MAX_MODEL_LEN} if big_backend == "vllm" else {}
    rollout = build_offload_rollout(problems, dataset, trainer.processing_class, big_dir,
                                    {"policy_engine": policy_engine, "big_backend": big_backend,
                                     "big_backend_options": opts, "decode": DECODE}, run_seed=0)
    prompts = [row["prompt"] for row in dataset for _ in range(generations)]
    try:
        rollout(prompts[:2], trainer)  # warm-up: first engine steps, first hf forward
        rows, walls = [], []
        for _ in range(repeats):
            t0 = time.perf_counter()
            out = rollout(prompts, trainer)
            walls.append(time.perf_counter() - t0)
            rows.append(rollout.history[-1])
    finally:
        rollout.close()
    best = min(range(repeats), key=lambda i: rows[i]["decode_wall_s"])
    row = rows[best]
    return {"policy_engine": policy_engine, "big_backend": big_backend, "completions": len(prompts),
            "generated_tokens": row["generated_tokens"], "decode_wall_s": row["decode_wall_s"],
            "tok_per_s": row["tok_per_s"], "rollout_wall_s": walls[best],
            "offload_token_fraction": row["offload_token_fraction_mean"], "handoffs_mean": row["handoffs_mean"],
            "policy_tokens_in_loss": sum(sum(m) for m in out["env_mask"])}


def table(results: list[dict]) -> str:
    head = f"{'policy':>7} {'big':>5} {'compl':>5} {'tokens':>7} {'decode_s':>9} {'tok/s':>8} {'x':>6} {'offload':>8}"
    base = results[0]["tok_per_s"]
    lines = [head]
    for r in results:
        lines.append(f"{r['policy_engine']:>7} {r['big_backend']:>5} {r['completions']:>5} {r['generated_tokens']:>7} "
                     f"{r['decode_wall_s']:>9.2f} {r['tok_per_s']:>8.0f} {r['tok_per_s'] / base:>6.2f} "
                     f"{r['offload_token_fraction']:>8.1%}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", help="the policy's directory (a model that writes <bigmodel> tags)")
    parser.add_argument("--big", help="the frozen big model's directory")
    parser.add_argument("--size", choices=list(SIZES), help="use random models of this size, built on the fly")
    parser.add_argument("--prompts", type=int, default=N_PROMPTS, help="toy questions in the batch")
    parser.add_argument("--generations", type=int, default=N_GENERATIONS, help="completions per question")
    parser.add_argument("--repeats", type=int, default=2, help="timed rollouts per configuration (best kept)")
    parser.add_argument("--out", help="JSON file to write (optional)")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if args.size:
        args.small, args.big = build_models(args.size)
    if not (args.small and args.big):
        parser.error("give --small and --big, or --size")
    from splitlib.toy.world import generate

    problems = generate(args.prompts, seed=123)
    out_dir = tempfile.mkdtemp(prefix="bench-rollouts-")
    results = []
    n = args.generations
    hf_trainer, dataset = make_trainer(args.small, problems, n, use_vllm=False, out_dir=out_dir)
    results.append(measure(hf_trainer, dataset, problems, n, args.big, "hf", "hf", args.repeats))
    del hf_trainer
    vllm_trainer, dataset = make_trainer(args.small, problems, n, use_vllm=True, out_dir=out_dir)
    for policy_engine, big_backend in CONFIGS[1:]:
        results.append(measure(vllm_trainer, dataset, problems, n, args.big, policy_engine, big_backend, args.repeats))
    result = {"small": args.small, "big": args.big, "size": args.size, "settings": {
        "prompts": args.prompts, "generations": n, "max_completion_length": MAX_COMPLETION_TOKENS,
        "temperature": TEMPERATURE, **DECODE, "repeats": args.repeats}, "results": results,
        "speedup_batched_vs_one_at_a_time": results[-1]["tok_per_s"] / results[0]["tok_per_s"]}
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=2))
    print(table(results))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
