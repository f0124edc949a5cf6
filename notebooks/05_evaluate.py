# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: splitreason (.venv)
#     language: python
#     name: splitreason
# ---

# %% [markdown]
# # 05 · Evaluation — does learned offloading beat random offloading?
#
# **Purpose.** Every method under one protocol, on the same held-out problems as `04_random_switch`
# (PAPER_FACTS §7–8): the base small model alone, the big model alone, split decoding with the SFT model and with
# each GRPO checkpoint, and an offload-budget sweep of the best checkpoint (requests for `<bigmodel>` are refused
# while the big model's share of the generation is above the budget — one checkpoint, a whole
# accuracy-vs-offload curve). Grading is math-verify on the generation only; truncated generations count as wrong
# and their share is reported. Every model reads the evaluation prompt of `prompt_style` (`splitlib.prompts`, as in
# `04`; `authors`: the small model sees the hint only when split decoding acts on its tags).
#
# **The claim** (the paper's central one, tested honestly): the best learned method recovers most of the
# small→big accuracy gap, `(acc − small) / (big − small)`, while offloading little, and random switching at the
# **same realised offload** (±2 points, from `04`, or run here aimed at that offload) recovers clearly less — the
# paired bootstrap CI of the difference (learned − random, same problems) excludes 0.
#
# | | |
# |---|---|
# | inputs | `models/{small,big}/` (`00_models`), `02_sft/model/`, `03_grpo/<mode>/model/`, `04_random_switch/{samples.jsonl, metrics.json}` |
# | outputs | `outputs/<run>/05_evaluate/{samples.jsonl, metrics.json, results.md, accuracy_vs_offload.png, manifest.json}`; `samples.stale.jsonl`: rows set aside because models or settings changed since |
# | runtime | smoke < 1 min · toy ≈ 2.5 min (vLLM on CPU, one thread, 300 problems × 11 methods, each decoding path warmed up once; measured 136 s in a fresh clone) · paper: GPU hours |

# %%
import json
import logging
import os

import matplotlib.pyplot as plt
import torch
from IPython.display import Markdown

from splitlib import evaluate as ev, plots, progressbar, prompts, runrecord, runs, serve as vllm_serve  # `serve`: a parameter
from splitlib.evaluate import baselines
from splitlib.notebook_params import load_from_notebook
from splitlib.params import as_dict

logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
_names_before = set(globals())

# %% tags=["parameters"]
profile: str = "toy"  # parameter set: smoke | toy | paper | rehearsal
run_name: str = "lab"  # outputs/<run_name>/; "lab": a scratch run (params/<profile>/ name the profile's run)
outputs_root: str = "outputs"  # root of all runs (relative: from the repository)
seed: int = 0  # every random choice derives from it
progress: bool = True  # progress bars
overwrite: bool = False  # True: write into a run made with other parameters (it refuses otherwise: splitlib.runrecord)
benchmark: str = "toy"  # toy | aime24 | math500 (as in 04)
benchmark_source: str = "data/test.jsonl"  # toy: inside the run dir; else a hub id or a local copy
n_problems: int = 300  # held-out problems (the first n; as in 04)
protocol: str = "custom"  # paper | deepseek | custom (as in 04)
protocol_settings: dict = {"temperature": 0.0, "top_p": 1.0, "max_new_tokens": 192, "samples": 1,
                           "aggregate": "pass@1"}  # greedy, one sample (as in 04)
prompt_style: str = "project"  # splitlib.prompts evaluation style: authors | authors_lm_eval | project (as in 04)
kind: str = "vllm"  # backend of the small models: vllm batches the problems (hf would run them one at a time)
big_kind: str = "vllm"  # backend of the big model
backend_opts: dict = {"base": {"max_model_len": 512, "max_num_seqs": 512},
                      "big": {"max_model_len": 512, "max_num_seqs": 512},
                      "sft": {"max_model_len": 512, "max_num_seqs": 512},
                      "grpo-offload": {"max_model_len": 512, "max_num_seqs": 512},
                      "grpo-paper": {"max_model_len": 512, "max_num_seqs": 512},
                      "grpo-rl4e_0": {"max_model_len": 512, "max_num_seqs": 512},
                      "grpo-rl4e_4": {"max_model_len": 512, "max_num_seqs": 512},
                      "grpo-rl4e_16": {"max_model_len": 512, "max_num_seqs": 512}}  # per model key: loader options
decode: dict = {"big_chunk_tokens": 4, "max_offload_tokens": 64}  # DecodeConfig besides sampling; toy spans are ~3 tokens (as in 04)
batch_size: int = 300  # problems per engine call (and per append to samples.jsonl)
torch_threads: int = 1  # CPU threads (0: the libraries' defaults); 1 runs tiny models 3-5x faster on 2 busy shared cores
small_model: str = "models/small"  # base small model (inside the run dir, a directory, or a hub id)
big_model: str = "models/big"  # big model
checkpoints: dict[str, str] = {"sft": "02_sft/model", "grpo-offload": "03_grpo/offload/model",
                               "grpo-paper": "03_grpo/paper/model", "grpo-rl4e_0": "03_grpo/rl4e_0/model",
                               "grpo-rl4e_4": "03_grpo/rl4e_4/model", "grpo-rl4e_16": "03_grpo/rl4e_16/model"}  # trained small models (inside the run dir, a directory or a hub id)
budget_sweep: list[float] = [0.02, 0.04, 0.07]  # max_offload_fraction values swept on the best checkpoint (below its ~10 % unbudgeted offload)
offload_measure: str = "offload_token_fraction"  # offload the claim is about: the big model's share of generated tokens
claim_max_offload: float = 0.15  # the learned method offloads at most this
claim_min_gap: float = 0.7  # ... and recovers at least this share of the small->big gap
match_tolerance: float = 0.02  # random baseline within ±2 points of the learned offload
match_missing_random: bool = True  # no 04 point that close: run a random switch aimed at the learned offload here
n_boot: int = 10000  # bootstrap resamples for the claim's CIs
serve: dict = {}  # {} or {big: vllm serve settings; its model is big_model}: started here, reached by the openai backend (big_kind: openai)

# %%
P = load_from_notebook("05_evaluate", globals(), _names_before)
if P.torch_threads:  # before any engine starts: vLLM's CPU engine keeps the threads it finds (nobind: no pinning)
    torch.set_num_threads(P.torch_threads)
    os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", "nobind")
run = runrecord.open_run(P, "05_evaluate")  # one writer per run; refuses a run made with other parameters
progressbar.setup(P.progress)  # JupyterLab: widget bars; papermill: a few log lines
out = run / "05_evaluate"
out.mkdir(parents=True, exist_ok=True)
model_dirs = {"base": ev.resolve_model_ref(run, P.small_model), "big": ev.resolve_model_ref(run, P.big_model),
              **{name: ev.resolve_model_ref(run, ref) for name, ref in P.checkpoints.items()}}
problems = ev.load_problems(run, P.benchmark, P.benchmark_source, P.n_problems)
proto = ev.make_protocol(P.protocol, **{"seed": P.seed, **P.protocol_settings})
style = prompts.style("eval", P.prompt_style)  # what the models read (`splitreason prompt` prints it)
print(f"{len(problems)} problems; protocol {proto}; models {model_dirs}")
P

# %% [markdown]
# The random-switch records of `04_random_switch`, which must come from the same protocol and problems (one row
# per method, problem and sample: `read_samples` drops duplicates and says so).

# %%
rs_metrics = json.loads(runs.require(run / "04_random_switch" / "metrics.json",
                                     made_by="notebooks/04_random_switch.ipynb").read_text())
rs_rows = ev.read_samples(run / "04_random_switch" / "samples.jsonl")
servers, decoder = ev.open_decoder(P, run, out, model_dirs, style)  # the big model's vllm serve first, if served
baselines.check_same_setup(rs_metrics, proto, problems, decoder)  # same protocol, problems, models and settings

# %% [markdown]
# ## 1 · Small alone, big alone, and split decoding with each trained checkpoint

# %%
base_methods = [ev.Method("small only", policy="small_only", small="base"),
                ev.Method("big only", policy="big_only", small=None, big="big")]
split_methods = [ev.Method(f"split {name}", policy="split", small=name, big="big") for name in P.checkpoints]
samples = out / "samples.jsonl"


def run_methods(methods):
    return ev.evaluate(methods, problems, proto, decoder, samples, progress=P.progress, batch_size=P.batch_size)


# %%
rows = run_methods(base_methods + split_methods)
summary = ev.aggregate(rows, proto)
display(ev.results_table(summary))
best = ev.best_method(summary, [m.name for m in split_methods])
best_ckpt = next(m.small for m in split_methods if m.name == best)
print(f"best checkpoint: {best_ckpt} ({best})")

# %% [markdown]
# ## 2 · Offload-budget sweep of the best checkpoint
# Same checkpoint, same problems; only the policy's budget changes (`split` with `max_offload_fraction`).

# %%
budget_methods = [ev.Method(f"split {best_ckpt} budget {b:g}", policy="split", small=best_ckpt, big="big",
                            policy_params={"max_offload_fraction": b, "seed": P.seed}, sweep=f"budget ({best_ckpt})")
                  for b in P.budget_sweep]
rows = run_methods(base_methods + split_methods + budget_methods)
summary = ev.aggregate(rows, proto)
display(ev.results_table(summary))

# %% [markdown]
# ## 3 · The claim
# The learned method is the most accurate split method (checkpoints and budget points) within the offload limit.
# Its random counterpart is the random-switch point whose realised offload is nearest, if within the tolerance;
# otherwise a random switch aimed at the learned offload runs here (same models, chunk and problems as 04),
# corrected once if its realised offload misses.

# %%
learned_names = [m.name for m in split_methods + budget_methods]
learned = ev.best_method(summary, learned_names, P.claim_max_offload, P.offload_measure) or best
target = float(summary.set_index("method").loc[learned, P.offload_measure])
random_rows = list(rs_rows)
baseline = baselines.random_baseline(
    rows, random_rows, proto, target, lambda aimed: run_methods(base_methods + split_methods + budget_methods + aimed),
    chunk=rs_metrics["switch_chunk"], seed=P.seed, tolerance=P.match_tolerance, offload=P.offload_measure,
    aim_if_missing=P.match_missing_random)
rows, both, matched = baseline.rows, baseline.summary, baseline.matched
for name, realised in baseline.realised.items():
    print(f"aimed random switch {name}: realised offload {realised:.1%} for a target of {target:.1%}")
claim = ev.claim(rows + random_rows, both, learned, matched, "small only", "big only", P.offload_measure,
                 P.claim_max_offload, P.claim_min_gap, P.match_tolerance, P.n_boot, P.seed)
display(Markdown(ev.claim_markdown(claim)))

# %% [markdown]
# ## 4 · Results
# Every method, 04's random sweep included. Accuracy with its 95 % CI (bootstrap over problems, or a t-interval
# over runs for the `paper` protocol); offload as the big model's share of generated tokens and characters; mean
# tokens per generation by model; measured seconds per problem (engine batch time / batch size: throughput on
# this machine, not latency — `06_figure5` measures latency at batch 1); the share of truncated generations.

# %%
all_rows = rows + random_rows
table = ev.aggregate(all_rows, proto)
s_per_problem = ev.time_per_problem(all_rows)
display(ev.results_table(table))
results_md = (f"## Results — {P.profile} profile, run `{P.run_name}` ({len(problems)} held-out problems, protocol "
              f"`{proto.name}`)\n\n"
              + ev.results_markdown(table, s_per_problem) + "\n" + ev.claim_markdown(claim))
runs.atomic_write_text(out / "results.md", results_md)
fig = plots.accuracy_vs_offload_at(table, target, offload=P.offload_measure)
fig.savefig(out / "accuracy_vs_offload.png", dpi=120, bbox_inches="tight")
display(fig)

# %% [markdown]
# ## 5 · The GRPO arms side by side
# Per checkpoint: accuracy with its CI, offloaded tokens and how often its tags fail — unbalanced, or (toy) a hard
# step written without offloading it; spans over a line break ("runaway", closed by the decoder at the end) apart.
# Then the paired difference `grpo_offload − grpo_paper` (same SFT model, same rewards; only the rollouts differ).

# %%
grpo = ev.grpo_block(rows, ev.aggregate(rows, proto), list(P.checkpoints), hard_steps=P.benchmark == "toy",
                     n_boot=P.n_boot, seed=P.seed)
display(ev.grpo_table(grpo))
print("grpo_offload − grpo_paper:", grpo.get("grpo_offload_minus_grpo_paper", "not evaluated"))

# %%
sources = {r["method"]: "04_random_switch" for r in random_rows} | {r["method"]: "05_evaluate" for r in rows}
extra = {"claim": claim, "grpo": grpo, "best_checkpoint": best_ckpt, "learned": learned, "matched_random": matched,
         "prompt_style": style.describe(),
         "benchmark": P.benchmark, "n_problems": len(problems), "problem_ids": [p["id"] for p in problems],
         "model_dirs": model_dirs, "decoder": decoder.settings, "decode": P.decode, "sources": sources,
         "servers": vllm_serve.describe_all(servers),
         "s_per_problem": s_per_problem.to_dict(), "random_provenance": ev.method_provenance(random_rows)}
# this notebook's methods, each with its provenance (04's rows are in 04's metrics; what made them is repeated here)
ev.write_metrics(rows, proto, out / "metrics.json", extra=extra)
runs.write_step_manifest(out, "05_evaluate", as_dict(P), {"prompt_style": style.describe()})
print("wrote", out / "metrics.json", "and", out / "results.md")
decoder.close()  # the stage's engines end with it: their memory (GPU memory on a GPU) is free again
vllm_serve.stop_all(servers)  # and the big model's server, if this notebook started one
