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
# # 00 · Models and data — the toy world (and the paper's model pair)
#
# **Purpose.** Provide the small and the big model every later notebook uses, and show that the gap between them is
# real: the big model is much more accurate, the small model's errors sit in the hard steps, and the big model is
# several times slower per token — the situation of DeepSeek-R1-Distill-Qwen-1.5B vs 32B (PAPER_FACTS §1).
#
# **Toy world** (`world: toy`). A problem lists a few bonus digits; the value starts at 0, step *k* adds *k* mod 10,
# and after a few fixed steps the value becomes the next bonus digit. Easy steps only read tokens a short, fixed
# distance back (a 1-layer transformer learns them in minutes); a hard step copies a bonus digit from the start of the
# problem statement. The small model (1 layer) attends through a sliding window that never reaches the bonus list, so
# it can only guess hard steps (1 in 9); the big model (8 layers, full attention) reads them. The answer depends on the
# last bonus digit. Hard-step labels are ground truth for scoring, never model input.
#
# **Paper** (`world: paper`): records the hub ids and checks that config and tokenizer load (needs the hub or local copies).
#
# | | |
# |---|---|
# | inputs | none |
# | outputs | `outputs/<run>/data/{train,test}.jsonl`, `outputs/<run>/models/{small,big}/`, `outputs/<run>/00_models/{metrics.json, gap.png, pretrain.png}` |
# | runtime | smoke < 1 min · toy ≈ 5–7 min (2 CPU cores; measured 297 s in a fresh clone, pretraining most of it) · paper: seconds (config check) |

# %%
import logging

import matplotlib.pyplot as plt
import pandas as pd
import torch

from splitlib import progressbar, prompts, runrecord, runs
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
world: str = "toy"  # toy: build data + models here; paper: record hub ids and check they load; rehearsal: build hub-format stand-ins first
n_train: int = 2000  # training problems (annotation, SFT, GRPO)
n_test: int = 400  # held-out problems (evaluation)
n_steps: int = 10  # reasoning steps per toy trace
coded_steps: list[int] = [2, 4, 6, 8]  # 0-based steps after which the value becomes the next bonus digit (hard steps)
vocab_size: int = 384  # BPE vocabulary before the control tokens
small: dict = {"hidden_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 256,
               "pretrain_steps": 500, "lr": 0.005, "batch_size": 32,
               "sliding_window": 80}  # 1 layer; its window never reaches the bonus list
big: dict = {"hidden_size": 96, "num_hidden_layers": 8, "num_attention_heads": 3, "intermediate_size": 384,
             "pretrain_steps": 600, "lr": 0.005, "batch_size": 32, "sliding_window": None}  # 8 layers, full attention; 600 steps: at 400 it missed the hard steps on some CPUs
pretrain_threads: int = 2  # CPU threads while pretraining (0: the process's setting); the timings below run as set
eval_problems: int = 300  # held-out problems for the measurements below
eval_batch_size: int = 100  # batch size of greedy generation
speed_tokens: int = 256  # tokens decoded at batch 1 to time each model
speed_rounds: int = 7  # timing rounds, the models alternating (each model's speed is its median)
small_model_id: str = "deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B"  # paper and rehearsal worlds: hub id, directory or hub/models/<name>
big_model_id: str = "deepseek-ai/DeepSeek-R1-Distill-Qwen-32B"  # paper and rehearsal worlds

# %%
P = load_from_notebook("00_models", globals(), _names_before)
run = runrecord.open_run(P, "00_models")  # one writer per run; refuses a run made with other parameters
progressbar.setup(P.progress)  # JupyterLab: widget bars; papermill: a few log lines
out = run / "00_models"
torch.manual_seed(P.seed)
P

# %% [markdown]
# ## 1 · The problems
# A seeded generator writes disjoint train and held-out sets. Below, one problem, its trace, and its hard steps.

# %%
from splitlib.toy import build as toy_build
from splitlib.toy.models import PretrainConfig, ToyModelConfig
from splitlib.toy.world import ToyWorldConfig

if P.world == "toy":
    world_cfg = ToyWorldConfig(n_steps=P.n_steps, coded_steps=tuple(P.coded_steps))
    train, test = toy_build.write_data(run, world_cfg, P.n_train, P.n_test, P.seed)
    example = test[0]
    print(example.question, "\n")
    print(example.trace, "\n")
    print("hard steps:", [example.trace[s:e] for s, e in example.hard_spans])
    hard_chars = sum(e - s for p in train for s, e in p.hard_spans) / sum(len(p.trace) for p in train)
    print(f"{len(train)} train / {len(test)} test problems; hard steps = {hard_chars:.1%} of trace characters")

# %% [markdown]
# ## 2 · Tokenizer
# Byte-level BPE trained here, digits split individually; `<bigmodel>`/`</bigmodel>` are single **non-special** ids
# (so vLLM keeps them in returned text); a DeepSeek-R1-style chat template. The small model's prompt carries the hint.

# %%
if P.world == "toy":
    tok = toy_build.make_tokenizer(train, P.vocab_size)
    small_prompt = prompts.build_prompt(tok, example.question, "small")
    ids = tok(small_prompt + example.trace, add_special_tokens=False)["input_ids"]
    print(f"vocabulary {len(tok)}; control tokens -> ids {tok.convert_tokens_to_ids(['<bigmodel>', '</bigmodel>'])}")
    print(f"small prompt {len(tok(small_prompt, add_special_tokens=False)['input_ids'])} tokens, "
          f"prompt+trace {len(ids)} tokens")
    print(repr(small_prompt))
    reach = toy_build.window_reach(tok, example, P.small.sliding_window)
    print(f"small model window {P.small.sliding_window}: the nearest bonus digit is {reach['nearest_bonus']} tokens "
          f"back from the first hard step (must be >= window)")
    assert not reach["bonus_visible"], reach

# %% [markdown]
# ## 3 · Pretraining on un-annotated traces
# Both models learn the traces from their own role's prompt (loss on the trace only), on a seeded stream of fresh
# problems. A saved model with identical settings is reused.

# %%
if P.world == "toy":
    models, curves = {}, {}
    for role, spec in (("small", P.small), ("big", P.big)):
        arch = ToyModelConfig(spec.hidden_size, spec.num_hidden_layers, spec.num_attention_heads, spec.intermediate_size,
                              sliding_window=spec.sliding_window)
        pre = PretrainConfig(steps=spec.pretrain_steps, batch_size=spec.batch_size, lr=spec.lr, seed=P.seed + (role == "big"),
                             threads=P.pretrain_threads)
        models[role], curves[role] = toy_build.train_or_load(run, role, arch, pre, world_cfg, tok, P.progress)
    fig, ax = plt.subplots(figsize=(6, 3.2))
    for role, curve in curves.items():
        ax.plot([c["step"] for c in curve], [c["loss"] for c in curve], label=role)
    ax.set(xlabel="step", ylabel="loss (trace tokens)", yscale="log", title="Pretraining")
    ax.legend()
    out.mkdir(parents=True, exist_ok=True)
    fig.savefig(out / "pretrain.png", dpi=120, bbox_inches="tight")

# %% [markdown]
# ## 4 · The gap
# Final-answer accuracy of each model alone (greedy), per-step accuracy (teacher-forced) on easy vs hard steps,
# where the first wrong step of a free generation falls, and decode speed at batch 1 with a KV cache (both models
# timed in alternating rounds, so that a slow spell of the machine hits both alike).

# %%
from splitlib.toy.diagnostics import gap_figure, measure_gap

if P.world == "toy":
    problems = test[: P.eval_problems]
    prompts_by_role = {r: [prompts.build_prompt(tok, p.question, r) for p in problems] for r in models}
    max_new = len(tok(problems[0].trace)["input_ids"]) + 16
    rows, checks = measure_gap(models, tok, problems, prompts_by_role, max_new, P.eval_batch_size, P.speed_tokens,
                               P.speed_rounds, P.progress)
    gap = pd.DataFrame(rows).set_index("model")
    gap["decode_cost_vs_small"] = gap["decode_s_per_token"] / gap.loc["small", "decode_s_per_token"]
    display(gap.T)

# %%
if P.world == "toy":
    fig = gap_figure(gap)
    fig.savefig(out / "gap.png", dpi=120, bbox_inches="tight")
    display(fig)
    where = pd.Series([c.first_error_step for c in checks["small"] if c.first_error_step is not None]).value_counts().sort_index()
    print("small model: index of the first wrong step (steps = lines, with each bonus clause its own step)")
    print(where.to_string())

# %% [markdown]
# ## Rehearsal stand-ins
# With `world: rehearsal` (the paper profile on CPU) this builds, in `outputs/<run>/hub/`, what a GPU user downloads,
# in the same formats: tiny Qwen2 models for the 1.5B and the 32B with the DeepSeek-R1-Distill tokenizer's special
# tokens and chat template, the paper's data sets with their hub columns and splits, and a hand-wired model that
# plays the annotation LLM behind a real `vllm serve` (notebook 01). Everything after reads them as it reads the hub.

# %%
if P.world == "rehearsal":
    from splitlib import rehearsal

    standins = rehearsal.build_standins(run / "hub", seed=P.seed, progress=P.progress)
    display(pd.DataFrame(rehearsal.summary(run / "hub")))

# %% [markdown]
# ## Paper models
# With `world: paper` (and the rehearsal's stand-ins) this checks that both hub ids (or local directories) resolve
# to a config and a tokenizer.

# %%
if P.world in ("paper", "rehearsal"):
    from transformers import AutoConfig, AutoTokenizer

    paper_models = {}
    for role, ref in (("small", P.small_model_id), ("big", P.big_model_id)):
        model_id = runs.in_run(run, ref)  # a hub id, or a stand-in inside the run directory
        cfg = AutoConfig.from_pretrained(model_id)
        tok_p = AutoTokenizer.from_pretrained(model_id)
        paper_models[role] = {"id": model_id, "architecture": cfg.architectures, "layers": cfg.num_hidden_layers,
                              "hidden": cfg.hidden_size, "vocab": len(tok_p)}
    display(pd.DataFrame(paper_models).T)

# %%
if P.world == "toy":
    metrics = {"models": gap.reset_index().to_dict(orient="records"), "hard_char_fraction": hard_chars,
               "n_train": len(train), "n_test": len(test), "eval_problems": len(problems)}
else:
    metrics = {"paper_models": paper_models, **({"standins": standins} if P.world == "rehearsal" else {})}
runs.atomic_write_json(out / "metrics.json", metrics)
runs.write_step_manifest(out, "00_models", as_dict(P))
print("wrote", out / "metrics.json")
