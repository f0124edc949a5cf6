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
# # 03 · GRPO — learning when offloading pays, with rollouts that really offload
#
# **Purpose.** The paper's second training stage ("RL4E", PAPER_FACTS §6): GRPO from the SFT model of notebook 02,
# through TRL's `GRPOTrainer`, in two rollout modes (parameter `modes`):
#
# - `paper` — the small model alone samples the rollouts, as in the paper. Its stated limitation: the accuracy reward
#   is then not the deployed system's accuracy (the big model never writes the offloaded spans).
# - `offload` — the project's addition: each rollout runs the cooperative decoder, the current policy as the small
#   model and the frozen big model writing every span the policy hands it. The reward sees the deployed system's
#   answer; the big model's tokens are left out of the policy loss (TRL's `env_mask`), the control tags stay on-policy.
#
# **Rewards** (`splitlib.rewards`, by name, with weights; weight 0 = logged only). The paper's total is
# accuracy + format + tag_count, but its format reward and most of its tag_count scaffold ask for
# `<think>…</think><answer>…</answer>`, which the project's prompts (ending in `<think>\n`, the R1 format) never
# produce — the authors' prompt style (paper profile) asks for it in its system prompt —, and its coverage term pays
# most at 40 % offloaded characters whatever the problem. The toy profile therefore uses
# `rl4e` (1.0): the rollout's accuracy minus 0.5 × its simulated latency relative to the big model alone (offload
# mode prices the real trace; paper mode, without a trace, pays 2 × the offloaded share above 5 %), plus
# `paper_fixed_format` (0.25), whose only earnable point here is for well-formed, non-empty spans. `paper_accuracy`,
# `tagged_char_fraction` and `tag_failure` are logged with weight 0, so both modes plot accuracy, offload fraction and
# tag failures (`tag_failure`: 1 where a rollout's tags are unbalanced or, on the toy, a hard step is written without
# being offloaded — the definition notebook 05 counts, `splitlib.tag_failures`; offload-mode rollouts carry the tags
# and the big model's spans, so the check applies to them as deployed).
#
# **Arms.** Every arm starts from the same SFT model: one per mode (`paper`, `offload`: the same rewards, only the
# rollouts differ), then one offload-mode arm `rl4e_<w>` per weight of `rl4e_latency_weights`: rl4e with its latency
# term (the simulator's price of the rollout's trace) weighted `w` instead of 0.5. Notebook 05 evaluates them all.
#
# **Toy sampling.** The toy SFT model is close to deterministic: at the paper's temperature 0.7 the 8 rollouts of a
# prompt were often identical, every reward had zero spread within the group, and GRPO had no signal. The toy profile
# samples at temperature 1.0, where the rollouts of one prompt differ in which hard steps they hand off (the SFT data
# marks only some of them: notebook 01's `target_fraction`), which gives GRPO something to compare.
#
# **Is the policy improving?** Per step, the curves of §3 show each reward component, the rollouts' offload fraction,
# accuracy and tag failures. Rollouts are sampled, so a held-out evaluation runs beside them (`eval_every`,
# `heldout_problems`; `splitlib.training.heldout`): at step 0 (the SFT model), every `eval_every` steps and at the end,
# the current policy and the frozen big model split-decode the first `heldout_problems` problems of the toy world's
# test split (those 04 and 05 evaluate; never trained on), greedily, with the rollouts' decoder settings — for
# paper-mode arms too. It records accuracy, offloaded tokens and tag failures in `train_metrics.json` (`heldout`).
#
# An arm whose `model/` exists with the same settings (`train_settings.json`) is not retrained. The held-out
# evaluation's settings are part of them (when it is on): it does not change the model, but its curve is recorded
# during training and cannot be redone for a reused model.
#
# | | |
# |---|---|
# | inputs | `outputs/<run>/02_sft/model/` (02), `outputs/<run>/models/big/` (00; offload mode), training problems (toy: `data/train.jsonl`) |
# | outputs | `outputs/<run>/03_grpo/<arm>/{model/, train_settings.json, train_metrics.json (per-step logs, held-out evaluations), metrics.json}`, `03_grpo/{metrics.json, curves.png}` |
# | runtime | smoke ≈ 1 min · toy ≈ 4.5 min for five arms of 32 steps (2 CPU cores; measured 255 s in a fresh clone with five held-out evaluations of 32 problems per arm; 436 s with 64 problems on a busy machine) · paper: GPUs, vLLM rollouts, 5,000 prompts (held-out evaluation off) |

# %%
import logging
from functools import partial
from typing import Optional

import matplotlib.pyplot as plt
import pandas as pd
from IPython.display import display

from splitlib import data, progressbar, prompts, runrecord, runs
from splitlib.notebook_params import load_from_notebook
from splitlib.params import as_dict
from splitlib.training import figures, launch, report

logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
_names_before = set(globals())

# %% tags=["parameters"]
profile: str = "toy"  # parameter set: smoke | toy | paper | rehearsal
run_name: str = "lab"  # outputs/<run_name>/; "lab": a scratch run (params/<profile>/ name the profile's run)
outputs_root: str = "outputs"  # root of all runs (relative: from the repository)
seed: int = 0  # every random choice derives from it
progress: bool = True  # progress bars
overwrite: bool = False  # True: write into a run made with other parameters (it refuses otherwise: splitlib.runrecord)
modes: list[str] = ["offload", "paper"]  # paper: small model alone samples | offload: rollouts really offload to the big model
rl4e_latency_weights: list[float] = [0.0, 4.0, 16.0]  # one offload-mode arm rl4e_<w> per weight: rl4e's latency weight (offload arm: 0.5)
big_model: Optional[str] = None  # offload mode; null: outputs/<run>/models/big (00); else a hub id or local directory
dataset: str = "toy"  # toy: outputs/<run>/data/train.jsonl | openr1: OpenR1-Math-220k questions | specr: the authors' GRPO subset
openr1: dict = {"source": "open-r1/OpenR1-Math-220k", "config": "default", "only_correct": False,
                "min_chars": 1024}  # dataset: openr1 only
specr: dict = {"source": "akhauriyash/OpenR1_Math_SpecR_GRPO", "config": None}  # dataset: specr only
gold: str = "answer"  # the accuracy reward's gold: answer | solution (the worked solution, parsed as the authors did)
n_prompts: Optional[int] = None  # first n training problems; null: all
preset: str = "toy"  # splitlib.training.configs.GRPO_PRESETS: paper | toy | smoke (the fields below override it)
device: str = "auto"  # auto | cpu | cuda
prompt_style: str = "project"  # splitlib.prompts: authors (the recipe's system prompt + problem, ends <｜Assistant｜>) | project (problem, hint, instruction; <think> opened)
rewards: list[str] = ["rl4e", "paper_fixed_format", "paper_accuracy", "tagged_char_fraction", "tag_failure"]  # splitlib.rewards names
reward_weights: list[float] = [1.0, 0.25, 0.0, 0.0, 0.0]  # one per reward; weight 0: logged only
max_steps: Optional[int] = 32  # optimizer steps per mode
num_generations: Optional[int] = 8  # completions per prompt
per_device_train_batch_size: Optional[int] = 8  # completions per device per micro-step: 1 prompt x 8
global_batch_size: Optional[int] = None  # completions per optimiser step (null: the preset's; paper 112: 8 prompts x 14)
learning_rate: Optional[float] = 0.0001  # peak LR, cosine to 0.1x
temperature: Optional[float] = 1.0  # rollout sampling temperature (paper 0.7; toy: at 0.7 all rollouts agree)
max_completion_length: Optional[int] = 160  # tokens per completion (toy traces: 121 with tags)
beta: Optional[float] = 0.04  # KL coefficient (paper 0.04)
logging_steps: Optional[int] = 1  # log every step
grpo_overrides: dict = {}  # any other trl.GRPOConfig field
rollout: dict = {"policy_params": {}, "big_chunk_tokens": 8, "max_offload_tokens": 64, "takeback": "greedy",
                 "takeback_threshold": 0.5, "big_backend": "hf", "big_backend_options": {},
                 "policy_engine": "hf"}  # offload mode: the decoder (policy_engine vllm: the batch decodes together)
serve: dict = {}  # {} or {big: vllm serve settings; its model is big_model}: offload rollouts reach the big model there (big_backend: openai)
eval_every: int = 8  # held-out split decoding every n steps (and at step 0 and the end); 0: off (toy dataset only)
heldout_problems: int = 32  # the first n problems of data/test.jsonl (the split 04 and 05 evaluate on), greedy

# %%
P = load_from_notebook("03_grpo", globals(), _names_before)
run = runrecord.open_run(P, "03_grpo")  # one writer per run; refuses a run made with other parameters
progressbar.setup(P.progress)  # JupyterLab: widget bars; papermill: a few log lines
out = run / "03_grpo"
sft_dir = runs.require(run / "02_sft" / "model" / "config.json", made_by="notebooks/02_sft.ipynb").parent
big = None
if launch.needs_big(as_dict(P)):  # an offload-mode arm
    big = runs.in_run(run, P.big_model) or str(runs.require(run / "models" / "big" / "config.json",
                                          made_by="notebooks/00_models.ipynb").parent)
if P.dataset == "toy":
    runs.require(run / "data" / "train.jsonl", made_by="notebooks/00_models.ipynb")
out.mkdir(parents=True, exist_ok=True)
P

# %% [markdown]
# ## 1 · Prompts and rewards
# The small model's prompt per training problem, in the prompt style `prompt_style` (`authors`: the recipe's system
# prompt — the `<think>`/`<answer>` format, `\boxed{}` and the hint — then the problem, the generation prompt ending
# `<｜Assistant｜>` so that the model writes `<think>` itself and the format reward sees it; `project`: problem, hint
# and instruction in the user turn, `<think>` opened); the gold answer goes to the rewards as `solution`.

# %%
style = prompts.style("grpo", P.prompt_style)
print(f"prompt style {style.name} ({style.id}): {style.description}")
problems = launch.grpo_problems(as_dict(P), run)  # the toy world's, the authors' subset, or OpenR1-Math
print(f"{len(problems)} training problems; gold read from `{P.gold}`; e.g. {problems[0]['question']!r} -> "
      f"{problems[0][P.gold]!r}")
display(pd.DataFrame({"reward": P.rewards, "weight": P.reward_weights}).set_index("reward").T)

# %% [markdown]
# ## 2 · Training, one arm after the other
# The preset's TRL settings, overridden by the parameters above (those left `null` keep the preset's value).

# %%
base_params = launch.trl_params(as_dict(P), launch.GRPO_KEYS, "grpo_overrides")
inputs = launch.grpo_inputs(sft_dir, problems, P.gold)  # hashes of the SFT model and the problems
heldout = launch.heldout_settings(as_dict(P), launch.heldout_problems(as_dict(P), run))  # None: eval_every 0

# %%
results, provenances = {}, {}
for name, arm in launch.grpo_arms(as_dict(P)).items():
    params = launch.arm_params(base_params, as_dict(P)["rollout"], arm["mode"])
    provenances[name] = settings = launch.grpo_settings(arm["mode"], inputs, big, P.rewards, P.reward_weights,
                                                        params, P.prompt_style, arm["reward_overrides"], heldout)
    # offload mode with `serve.big`: a vllm serve of the big model runs for the training, stopped after it
    train = partial(launch.train_mode, as_dict(P), arm["mode"], sft_dir, big, problems, params, run, P.progress,
                    arm=name, reward_overrides=arm["reward_overrides"])
    results[name], reused = runs.reuse_or_build(out / name, settings, train, result="train_metrics.json",
                                                settings_file="train_settings.json", requires=["model/config.json"])
    print(f"{name}: reusing {out / name / 'model'} (same settings)" if reused else
          f"{name}: {results[name]['global_steps']} steps in {results[name]['train_wall_s']:.0f} s")

# %% [markdown]
# ## 3 · Rewards, offload, accuracy and tag failures over training
# Per step and arm: the total reward, each reward of nonzero weight (its unweighted mean over the step's rollouts),
# and three numbers of the rollouts: offload fraction and accuracy (offload mode: the rollouts themselves, the
# deployed system; paper mode: the share of characters the small model tagged and the accuracy of its own answer,
# `paper_accuracy`) and tag failures (`tag_failure`: unbalanced tags, or a toy hard step written without being
# offloaded). Rollouts are sampled (temperature above), so these curves are noisy.
#
# Below them, the held-out evaluation (`eval_every`, `heldout_problems`): at step 0 (the SFT model), every
# `eval_every` steps and at the end, the current policy and the frozen big model split-decode the same held-out
# problems greedily (the decoder of notebook 05), whatever the arm's rollout mode: the deployed system's accuracy,
# tag failures and offloaded tokens on problems it never trained on.

# %%
curves = {mode: report.grpo_curves(r["steps"]) for mode, r in results.items()}
heldout_curves = {mode: report.heldout_curve(r.get("heldout", [])) for mode, r in results.items()}
fig = figures.grpo_curves_figure(curves, dict(zip(P.rewards, P.reward_weights)), heldout_curves)
fig.savefig(out / "curves.png", dpi=120, bbox_inches="tight")
display(fig)

# %% [markdown]
# ## 4 · Did the weights move?
# Each arm's model against the SFT model it started from (max |Δ| over all tensors).

# %%
summary = {}
for mode, r in results.items():
    summary[mode] = {"steps": r["global_steps"], "train_wall_s": r["train_wall_s"],
                     "weights_changed": report.weights_changed(sft_dir, out / mode / "model"),
                     "learning_signal": report.had_learning_signal(r["steps"]),  # LR > 0, rewards differing in a group
                     **report.curve_summary(curves[mode]),  # means over the first and last quarter of the steps
                     **report.heldout_summary(heldout_curves[mode])}  # held-out: at step 0 (SFT) and at the end
    runs.atomic_write_json(out / mode / "metrics.json", summary[mode])
table = pd.DataFrame(summary).T
table["max_abs_diff"] = [s["weights_changed"]["max_abs_diff"] for s in summary.values()]
display(table.drop(columns="weights_changed"))
assert all(s["weights_changed"]["changed"] or not s["learning_signal"] for s in summary.values()), \
    "a GRPO mode with a learning signal left every weight unchanged"

# %% [markdown]
# ## 5 · Did the policy improve on problems it never trained on?
# Per arm, the held-out split decoding at step 0 (`first`: the SFT model, the same for every arm) and at the end
# (`last`), beside the rollouts' tag failures (means over the first and the last quarter of the steps; sampled).

# %%
display(table[["heldout_accuracy_first", "heldout_accuracy_last", "heldout_tag_failure_rate_first",
               "heldout_tag_failure_rate_last", "heldout_offload_token_fraction_last", "tag_failure_first",
               "tag_failure_last"]])

# %%
metrics = {"arms": summary, "rewards": dict(zip(P.rewards, P.reward_weights)), "n_prompts": len(problems),
           "prompt_style": style.describe()}
runs.atomic_write_json(out / "metrics.json", metrics)
runs.write_step_manifest(out, "03_grpo", as_dict(P), {"provenance": provenances})  # what determined each model
print("wrote", out / "metrics.json")
