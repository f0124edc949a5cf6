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
# # 04 · Random switching — the baseline learned offloading must beat
#
# **Purpose.** The paper's control (PAPER_FACTS §3): the base small model and the big model take turns at random.
# Generation proceeds in chunks of `switch_chunk` tokens; each chunk is written by the big model with probability
# `p_big = 1 / (1 + ratio)`, else by the small one, and no tags are written. The paper ran ratios 19 and 9 with
# 32-token chunks (realised 5.05 % and 10.0 % offload). Here the same two ratios run beside a sweep of ratios, so
# that `05_evaluate` can compare learned offloading with random offloading **at the same realised offload** (±2
# points) on the same problems. Toy traces are ~120 tokens, so the toy profile uses shorter chunks than the
# paper's 32. The models read the evaluation prompt of `prompt_style` (`splitlib.prompts`; `authors`: the problem and
# `\n Put your final answer within \boxed{}.`, `<｜Assistant｜>\n<think>\n`, no hint — in the authors' code only
# the split flow shows the hint); `05_evaluate` must use the same.
#
# | | |
# |---|---|
# | inputs | `outputs/<run>/data/test.jsonl` (toy) or a benchmark; `outputs/<run>/models/{small,big}/` (from `00_models`) |
# | outputs | `outputs/<run>/04_random_switch/{samples.jsonl, metrics.json, accuracy_vs_offload.png, manifest.json}`; `samples.stale.jsonl`: rows set aside because models or settings changed since |
# | runtime | smoke < 30 s · toy ≈ 1.5 min (vLLM on CPU, one thread, 300 problems × 7 ratios; measured 86 s) · paper: GPU hours |

# %%
import logging
import os

import matplotlib.pyplot as plt
import pandas as pd
import torch

from splitlib import progressbar, prompts, runrecord, runs
from splitlib import serve as vllm_serve  # (the parameter `serve` holds the server settings)
from splitlib import evaluate as ev
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
benchmark: str = "toy"  # toy | aime24 | math500
benchmark_source: str = "data/test.jsonl"  # toy: inside the run dir; else a hub id or a local copy
n_problems: int = 300  # held-out problems (the first n)
protocol: str = "custom"  # paper | deepseek | custom
protocol_settings: dict = {"temperature": 0.0, "top_p": 1.0, "max_new_tokens": 192, "samples": 1,
                           "aggregate": "pass@1"}  # greedy, one sample; toy traces are 118 tokens (+ tags, + margin)
prompt_style: str = "project"  # splitlib.prompts evaluation style: authors | authors_lm_eval | project (05 checks it is the same)
kind: str = "vllm"  # backend of the small model: vllm batches the problems (hf would run them one at a time)
big_kind: str = "vllm"  # backend of the big model
backend_opts: dict = {"base": {"max_model_len": 512, "max_num_seqs": 512},
                      "big": {"max_model_len": 512, "max_num_seqs": 512}}  # per model key: loader options (all problems in one engine batch)
decode: dict = {"big_chunk_tokens": 4, "max_offload_tokens": 64}  # DecodeConfig besides sampling; toy spans are ~3 tokens
batch_size: int = 300  # problems per engine call (and per append to samples.jsonl)
torch_threads: int = 1  # CPU threads (0: the libraries' defaults); 1 runs tiny models 3-5x faster on 2 busy shared cores
small_model: str = "models/small"  # base small model (inside the run dir, a directory, or a hub id)
big_model: str = "models/big"  # big model
switch_chunk: int = 8  # tokens per random-switch chunk (paper: 32 of up to 16,384)
paper_ratios: list[float] = [19.0, 9.0]  # the paper's ratios: p_big 5 % and 10 %
sweep_ratios: list[float] = [49.0, 5.667, 4.0, 2.333, 1.5]  # p_big 2, 15, 20, 30, 40 % (05 aims one more at the learned offload if none is near)
serve: dict = {}  # {} or {big: vllm serve settings; its model is big_model}: started here, reached by the openai backend (big_kind: openai)

# %%
P = load_from_notebook("04_random_switch", globals(), _names_before)
if P.torch_threads:  # before any engine starts: vLLM's CPU engine keeps the threads it finds (nobind: no pinning)
    torch.set_num_threads(P.torch_threads)
    os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", "nobind")
run = runrecord.open_run(P, "04_random_switch")  # one writer per run; refuses a run made with other parameters
progressbar.setup(P.progress)  # JupyterLab: widget bars; papermill: a few log lines
out = run / "04_random_switch"
out.mkdir(parents=True, exist_ok=True)
model_dirs = {"base": ev.resolve_model_ref(run, P.small_model), "big": ev.resolve_model_ref(run, P.big_model)}
problems = ev.load_problems(run, P.benchmark, P.benchmark_source, P.n_problems)
proto = ev.make_protocol(P.protocol, **{"seed": P.seed, **P.protocol_settings})
style = prompts.style("eval", P.prompt_style)  # what the models read (`splitreason prompt` prints it)
print(f"{len(problems)} problems; protocol {proto}")
P

# %% [markdown]
# ## 1 · Methods
# One method per ratio, all on the base small model and the big model, with the same chunk size. The expected
# offload is `p_big`; the realised one differs (the last chunk is cut by EOS, the two models write different
# lengths), which is why it is measured and matched rather than assumed.

# %%
ratios = sorted(set(P.paper_ratios) | set(P.sweep_ratios), reverse=True)
methods = [ev.Method(f"random r{r:g}", policy="random_switch", small="base", big="big", sweep="random switch",
                     policy_params={"ratio": r, "chunk": P.switch_chunk, "seed": P.seed}) for r in ratios]
p_big = {m.name: 1 / (1 + m.policy_params["ratio"]) for m in methods}
display(ev.methods_table(methods).assign(p_big=lambda t: t["method"].map(p_big)))

# %% [markdown]
# ## 2 · Decode and grade
# Rows are appended batch by batch to `samples.jsonl`. Each row records what made it (model hashes, backend kinds,
# decode and sampling settings, policy, prompt template, grader) and its key; a rerun reuses only rows under the
# same key, and moves the others to `samples.stale.jsonl` and decodes them again (the log says what changed).
# `metrics.json` records each method's provenance.

# %%
servers, decoder = ev.open_decoder(P, run, out, model_dirs, style)  # the big model's vllm serve first, if served
rows = ev.evaluate(methods, problems, proto, decoder, out / "samples.jsonl", progress=P.progress,
                   batch_size=P.batch_size)
summary = ev.aggregate(rows, proto)
s_per_problem = ev.time_per_problem(rows)
summary = summary.assign(p_big=summary["method"].map(p_big), s_per_problem=summary["method"].map(s_per_problem))
display(ev.results_table(summary))

# %% [markdown]
# ## 3 · Accuracy vs realised offload
# The paper's ratios 19 and 9 are among the points. Offload is measured in tokens of the generation (the
# characters' share is in the table above).

# %%
fig = ev.accuracy_vs_offload(summary, offload="offload_token_fraction")
fig.axes[0].set_title("random switching: accuracy vs realised offload")
fig.savefig(out / "accuracy_vs_offload.png", dpi=120, bbox_inches="tight")
display(fig)
display(summary[["method", "p_big", "offload_token_fraction", "offload_char_fraction", "accuracy", "ci_low",
                 "ci_high", "truncated_share", "s_per_problem"]].round(4))

# %%
extra = {"benchmark": P.benchmark, "n_problems": len(problems), "problem_ids": [p["id"] for p in problems],
         "switch_chunk": P.switch_chunk, "model_dirs": model_dirs, "decoder": decoder.settings,
         "prompt_style": style.describe(), "servers": vllm_serve.describe_all(servers),
         "s_per_problem": s_per_problem.to_dict(),
         "realised_offload": dict(zip(summary["method"], summary["offload_token_fraction"]))}
ev.write_metrics(rows, proto, out / "metrics.json", extra=extra)
runs.write_step_manifest(out, "04_random_switch", as_dict(P), {"prompt_style": style.describe()})
print("wrote", out / "metrics.json")
decoder.close()  # the stage's engines end with it: their memory (GPU memory on a GPU) is free again
vllm_serve.stop_all(servers)  # and the big model's server, if this notebook started one
