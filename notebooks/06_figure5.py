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
# # 06 · Figure 5 — accuracy per offloading mode, and what offloading buys in time
#
# **Purpose.** Reproduce the paper's Figure 5 and its speed-up claims (PAPER_FACTS §8–9), then check the simulator
# against measured runs:
#
# - **left**: box plot of accuracy per offloading mode — the paper's per-run AIME24 numbers (later retracted as
#   inflated, §7) beside this run's `04`/`05` records (with one greedy sample per problem, disjoint problem
#   subsets stand in for runs);
# - **right**: fraction of the generation written by the small model vs simulated speed-up over the big model
#   alone, for 7B/8B/14B/32B/70B big models on the paper's A6000 profile (the paper's simulator: 2,048-token
#   prompt, 16,384 tokens decoded, 256-token chunks), dashed lines at 1.4/5/10 % offload, plus curves for this
#   run's models on a profile **measured here**;
# - a speed-up table at 0, 1.35, 2, 5, 10, 20 % offload in the `paper` and `continuous` modes;
# - **validation**: this run's methods decoded again at batch 1 (the latency a user sees), each trace priced by the
#   `serial` simulator with the measured profile, compared with its measured wall time;
# - the learned method's simulated speed-up over big-only (serial and pipelined) next to the measured one;
# - accuracy against speed-up over big-only for every method of 04/05, simulated and (where timed) measured;
# - the Pareto figure: every trained checkpoint (SFT, GRPO arms, rl4e weights) against small-only, big-only and
#   the random-switch sweep, with the frontier of non-dominated points (`splitlib.pareto`).
#
# **Source.** With `source: run` (smoke, toy) everything below measures this run. With `source: paper`, or
# `auto` (paper, rehearsal) when 05 has not run, §0 regenerates the paper's Figure 5, Figure 6's table and
# Figure 1 from its published numbers and the simulator (`splitlib.paper_figures`; the same as `splitreason
# figures --paper`) and every later cell is skipped: no 04/05 outputs, no model, no GPU, seconds on a CPU.
# This run's 04/05 points are drawn over the paper's when it has them (`splitlib.paper_overlay`).
#
# | | |
# |---|---|
# | inputs | `04_random_switch/samples.jsonl`, `05_evaluate/{samples.jsonl, metrics.json, manifest.json}`, the run's models |
# | outputs | `outputs/<run>/06_figure5/{figure5.png, figure5.pdf, speedup_paper.csv, speedup_measured.csv, profile.json, profile_rounds.json, profile_settings.json, timing_<i>.jsonl, validation.png, validation.csv, accuracy_vs_speedup.png, pareto.png, pareto.pdf, metrics.json, manifest.json}` |
# | outputs (`source: paper`) | `outputs/<run>/06_figure5/{figure5.png, figure5.pdf, figure5_speedup.csv, figure6.md, figure1.png, README.md, metrics.json, manifest.json}` |
# | runtime | source paper: seconds · smoke < 1 min · toy ≈ 4 min (measured 224 s in a fresh clone, 339 s on a busy machine, 120 s before the arms were timed; 15 rounds of profiling and timing, 10 methods — 4 roles and 05's 6 checkpoints (`@arms`) — × 60 problems × 3 runs at batch 1, one CPU thread; a rerun with the same settings reuses the timing: 9 s) · paper: GPU minutes |

# %%
import json
import logging

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch

from splitlib import decoder_service, evaluate as ev, paper_results, plots, profiling, provenance, runs
from splitlib import decoding, paper_figures, paper_overlay, pareto, progressbar, runrecord, simulator, trace
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
source: str = "run"  # run: measure this run (needs 04/05) | paper: the paper's figures from its numbers | auto: run if 05 ran
paper_profile: str = "a6000-paper"  # hardware profile of the paper's simulator (built-in name or JSON path)
paper_small: str = "1.5B"  # small model key in that profile
paper_bigs: list[str] = ["7B", "8B", "14B", "32B", "70B"]  # one curve per big model (Figure 5, right)
table_offloads: list[float] = [0.0, 0.0135, 0.02, 0.05, 0.1, 0.2]  # offload fractions of the speed-up table
table_modes: list[str] = ["paper", "continuous"]  # simulator modes of the speed-up table
figure5_left: list[list] = [
    ["small alone", "None — 1.5B alone (0.0 %)", "@small"],
    ["random, ratio 19", "Random (5.05 %)", "random r19"],
    ["random, ratio 9", "Random (10.0 %)", "random r9"],
    ["random at the learned offload", None, "@random"],
    ["learned (paper: 1.35 %)", "Learned (1.352 %)", None],
    ["learned (paper: 5 %, 32B)", "Learned (5.0 %), SplitR-32B", "@learned"],
    ["big alone", "32B alone", "@big"],
]  # boxes in order: [label, paper mode (paper_results.PAPER_AIME24) or None, this run's method, @small/@big/@learned/@random, or None]
n_subsets: int = 5  # one sample per problem: this many disjoint problem subsets stand in for runs
profile_kind: str = "hf"  # backend profiled and timed at batch 1 (transformers: one problem at a time, as a user runs it)
profile_contexts: list[int] = [64, 128, 192, 256, 320]  # context lengths (tokens) at which throughput is measured
profile_repeats: int = 2  # repeats per measurement (median)
profile_rounds: int = 5  # profiling and timing alternate this many times per timing pass (the profile is the mean)
torch_threads: int = 1  # CPU threads for profiling and timing (0: torch's default); 1 suits tiny models at batch 1
backend_opts: dict = {}  # per model key ("base", "big", a checkpoint name): loader options of the timed backends
timing_problems: int = 60  # problems decoded at batch 1 per timed method
timing_runs: int = 3  # each timed problem decoded this many times; the median wall time is kept (noisy shared machine)
timing_methods: list[str] = ["@small", "@big", "@learned", "@random", "@arms"]  # 05/04 methods timed (names, @small/@big/@learned/@random, @arms: every checkpoint of 05)
validation_target: float = 0.15  # median |simulated - measured| / measured should be at most this

# %%
P = load_from_notebook("06_figure5", globals(), _names_before)
run = runrecord.open_run(P, "06_figure5")  # one writer per run; refuses a run made with other parameters
progressbar.setup(P.progress)  # JupyterLab: widget bars; papermill: a few log lines
out = run / "06_figure5"
out.mkdir(parents=True, exist_ok=True)
source = paper_figures.resolve_source(P.source, run)  # auto: "run" when 05 ran on this run, else "paper"
print(f"source: {source}")
P

# %% [markdown]
# ## 0 · The paper's figures from its published numbers (`source: paper`)
# Figure 5 in the paper's layout, the speed-up curves as data, Figure 6's table printed beside regenerated,
# and Figure 1, each with its source; `README.md` in the output folder says how each differs from print.

# %%
if source == "paper":  # 04/05's points go over the paper's when this run has them, marked as this run's
    has_05 = (run / "05_evaluate" / "metrics.json").is_file()
    overlay = paper_overlay.read_run(run, paper_overlay.left_refs(P.figure5_left)) if has_05 else None
    written = paper_figures.write_all(out, overlay)
    runs.atomic_write_json(out / "metrics.json", paper_figures.summary(written))
    runs.write_step_manifest(out, "06_figure5", as_dict(P), {"source": "paper"})
    print(written["figure6.md"].read_text())
    display(paper_figures.figure5(overlay), paper_figures.figure1(overlay))

# %%
if source == "run":
    made_by = {"04_random_switch": "notebooks/04_random_switch.ipynb", "05_evaluate": "notebooks/05_evaluate.ipynb"}
    ev_metrics = json.loads(runs.require(run / "05_evaluate" / "metrics.json", made_by["05_evaluate"]).read_text())
    ev_params = json.loads(runs.require(run / "05_evaluate" / "manifest.json", made_by["05_evaluate"]).read_text())["params"]
    rows = (ev.read_samples(runs.require(run / "04_random_switch" / "samples.jsonl", made_by["04_random_switch"]))
            + ev.read_samples(run / "05_evaluate" / "samples.jsonl"))  # one row per key, duplicates dropped
    claim = ev_metrics["claim"]
    proto_runs = ev_metrics["protocol"]["samples"]
    roles = {"@small": claim["small"], "@big": claim["big"], "@learned": claim["learned"], "@random": claim["random"]}
    method_of = lambda ref: roles.get(ref, ref)  # noqa: E731
    print({k: v for k, v in roles.items()})

# %% [markdown]
# ## 1 · Left panel: accuracy per offloading mode
# The paper's numbers are its five (six) AIME24 runs per mode; this run's are its own methods on its own benchmark,
# so compare shapes (who beats whom), not levels.

# %%
if source == "run":
    labels = [label for label, _, _ in P.figure5_left]
    paper_modes = {paper: label for label, paper, _ in P.figure5_left if paper is not None}
    paper_runs = paper_results.paper_per_run_accuracy(tuple(paper_modes)).assign(
        mode=lambda d: d["mode"].map(paper_modes), source="paper (AIME24, per run)")
    per_subset = ev.run_accuracies(rows, P.n_subsets)
    ours = pd.concat([per_subset[per_subset["method"] == method_of(ref)].assign(mode=label)
                      for label, _, ref in P.figure5_left if ref and method_of(ref)], ignore_index=True)
    ours["source"] = f"this run ({P.run_name}, " + ("per run)" if proto_runs > 1 else "per problem subset)")
    per_run = pd.concat([paper_runs, ours], ignore_index=True)
    per_run = per_run.sort_values("mode", key=lambda m: m.map(labels.index), kind="stable")
    display(per_run.groupby(["mode", "source"], sort=False)["accuracy"].agg(["mean", "std", "count"]).round(3))

# %% [markdown]
# ## 2 · A measured profile, and latency at batch 1
# Prefill and decode throughput of the base small model and the big model at batch 1 on this machine, at several
# context lengths (`splitlib.profiling`), with the backend the timed runs use. The timed methods run again on the
# first `timing_problems` problems, one problem at a time (same seeds, so the same decisions as in 04/05 up to
# engine numerics), in `timing_runs` passes (`timing_<i>.jsonl`); each trace keeps the pass with its median wall
# time. A shared machine's speed drifts (here, the same 118-token generation took 0.07–0.19 s within seconds), so
# profiling and timing alternate in `profile_rounds` rounds per pass, the passes are spread in time, and the
# profile is the mean of all rounds. A saved profile with the same settings is reused together with its timed
# rows; with other settings both are measured again.

# %%
if source == "run":
    model_dirs = ev_metrics["model_dirs"]
    if P.torch_threads:
        torch.set_num_threads(P.torch_threads)  # 2 threads on 2 busy shared cores stall each other (here: up to 10x)
    decoder = decoder_service.DecoderService(model_dirs, kind=P.profile_kind, decode=ev_metrics["decode"], backend_opts=P.backend_opts,
                                            max_loaded=3)  # the profiled base and big (pinned), one timed checkpoint
    proto = ev.EvalProtocol(**ev_metrics["protocol"])
    problems = ev.load_problems(run, ev_params["benchmark"], ev_params["benchmark_source"], P.timing_problems)
    timed_names = pareto.resolve_methods(P.timing_methods, roles, ev_metrics.get("grpo", {}))  # @arms: 05's checkpoints
    timed = ev.methods_from_rows(rows, timed_names)
    settings = {"kind": P.profile_kind, "contexts": list(P.profile_contexts), "repeats": P.profile_repeats,
                "rounds": P.profile_rounds, "torch_threads": P.torch_threads, "timed": timed_names,
                "timing_runs": P.timing_runs, "backend_opts": P.backend_opts,
                "problems": [p["id"] for p in problems], "models": {"small": model_dirs["base"], "big": model_dirs["big"]},
                "model_hashes": {r: provenance.model_hash(model_dirs[k]) for r, k in (("small", "base"), ("big", "big"))}}

# %%
if source == "run":
    timed_profile = profiling.measure_with_timing(
        out, settings, lambda: {"small": decoder.backend("small", "base", pin=True),  # pinned: kept while timing
                                "big": decoder.backend("big", "big", pin=True)},
        lambda path, n: ev.evaluate(timed, problems[:n], proto, decoder, path, progress=False, batch_size=1),
        len(problems), name=f"{P.run_name}-measured", device=runs.environment_info()["hardware"]["cpu"],
        rounds=P.profile_rounds, timing_runs=P.timing_runs, progress=P.progress, contexts=tuple(P.profile_contexts),
        repeats=P.profile_repeats, seed=P.seed)
    measured, round_profiles, profile_path = timed_profile.profile, timed_profile.round_profiles, out / "profile.json"
    timing_rows = ev.median_wall_rows([ev.evaluate(timed, problems, proto, decoder, path, progress=False, batch_size=1)
                                       for path in timed_profile.timing_paths])
    display(pd.DataFrame({k: {"prefill tok/s": m.prefill_tok_per_s, "decode tok/s": m.decode_tok_per_s,
                              "prefill call ms": 1e3 * m.prefill_call_s} for k, m in measured.models.items()}).T.round(1))

# %% [markdown]
# ## 3 · The simulator against measured latency
# Each timed trace is priced by the `serial` simulator — both models on one device taking turns, every segment's
# prefill, decode and take-back check at its context length — with the mean measured profile, and compared with
# its measured wall time (the median of its `timing_runs` passes).

# %%
if source == "run":
    sim = simulator.simulate_rows(timing_rows, measured, "small", "big", mode="serial")
    errors = plots.relative_errors(sim["sim_s"], sim["wall_s"])
    by_method = sim.assign(err=(sim["sim_s"] - sim["wall_s"]).abs() / sim["wall_s"]).groupby("method", sort=False)
    display(by_method.agg(wall_s=("wall_s", "mean"), sim_s=("sim_s", "mean"),
                          median_abs_rel_err=("err", "median")).round(4))
    fig_val = plots.sim_vs_measured(sim, hue="method")
    fig_val.savefig(out / "validation.png", dpi=120, bbox_inches="tight")
    sim.to_csv(out / "validation.csv", index=False)

# %%
if source == "run":
    spread = pd.DataFrame([{"profile": i, **{k: m.decode_tok_per_s for k, m in p.models.items()}}
                           for i, p in enumerate(round_profiles)])
    print(f"|simulated − measured| / measured over {len(sim)} traces: median {errors['median']:.1%}, p90 "
          f"{errors['p90']:.1%} (target: median ≤ {P.validation_target:.0%}); decode tok/s across the "
          f"{len(round_profiles)} profiling rounds: " + ", ".join(f"{k} {spread[k].min():.0f}–{spread[k].max():.0f}"
                                                                  for k in measured.models))
    display(fig_val)

# %% [markdown]
# ## 4 · Right panel and the speed-up tables
# The paper's curves use its simulator exactly (`paper` mode: 256-token chunks assigned whole, so 1.35 % of
# 16,384 tokens is no offload at all). This run's curves use the measured profile at this run's own generation
# length, pipelined (`continuous`: two devices, as in the paper's design) and `serial` (one device, as measured).

# %%
if source == "run":
    learned_traces = [trace.Trace.from_json(r["trace"]) for r in rows if r["method"] == claim["learned"]]  # all of 05's
    prompt_tokens = int(np.mean([t.prompt_tokens.get("small", 0) for t in learned_traces]))
    decode_tokens = max(1, int(np.mean([t.total_tokens for t in learned_traces])))
    switch = simulator.switch_costs_from(learned_traces)
    chunk = decoding.DecodeConfig(**ev_metrics["decode"]).big_chunk_tokens  # 05's chunk, its default included
    own = dict(prompt_tokens=prompt_tokens, decode_tokens=decode_tokens, chunk=chunk, switch=switch)

# %%
if source == "run":
    curves = {}
    for mode in ("continuous", "serial"):
        s = simulator.sweep(plots.FIGURE5_OFFLOADS[::5], measured, "small", "big", mode, **own)
        curves[f"this run's models, measured profile ({mode})"] = (1 - s["offload"], s["speedup"])
    fig5 = plots.figure5(per_run, P.paper_profile, P.paper_small, P.paper_bigs, mode="paper", extra_curves=curves,
                         ylabel="accuracy per run (paper: AIME24; this run: its benchmark)")
    for ext in ("png", "pdf"):
        fig5.savefig(out / f"figure5.{ext}", dpi=150, bbox_inches="tight")
    display(fig5)

# %%
if source == "run":
    speedup_paper = simulator.speedup_table(P.paper_profile, P.paper_small, P.paper_bigs, P.table_offloads, P.table_modes)
    speedup_paper.to_csv(out / "speedup_paper.csv")
    speedup_measured = simulator.speedup_table(measured, "small", ["big"], P.table_offloads,
                                               ("continuous", "overhead", "serial"), **own)
    speedup_measured.to_csv(out / "speedup_measured.csv")
    display(speedup_paper.round(2), speedup_measured.round(2))
    headline = simulator.simulate(0.0135, P.paper_profile, P.paper_small, "32B", "paper").speedup \
        if "32B" in P.paper_bigs else None
    print(f"paper mode, 32B at 1.35 % offload: speed-up {headline:.2f} (the paper: 8–9x)" if headline else "")

# %% [markdown]
# ## 5 · The learned method: simulated vs measured speed-up over the big model alone
# At the learned method's realised offload: measured (mean batch-1 wall time of big-only over the learned method's,
# same problems), the serial simulation of the same traces, and the simulator at that offload fraction with this
# run's generation length and measured hand-off costs — serial, and pipelined (`continuous`, and `overhead` with
# switch costs) as a two-device deployment would run it.

# %%
if source == "run":
    walls = sim.pivot_table(index="problem_id", columns="method", values=["wall_s", "sim_s"])
    learned_offload = float(np.mean([t.offload_token_fraction for t in learned_traces]))
    speedups = {}
    if {claim["big"], claim["learned"]} <= set(timed_names):
        pair = walls.dropna()
        ratio = lambda col: pair[col][claim["big"]].mean() / pair[col][claim["learned"]].mean()  # noqa: E731
        speedups["measured (batch 1)"] = ratio("wall_s")
        speedups["serial simulation of the same traces"] = ratio("sim_s")

# %%
if source == "run":
    for mode in ("serial", "continuous", "overhead"):
        speedups[f"simulator at {learned_offload:.1%} offload ({mode})"] = simulator.simulate(
            learned_offload, measured, "small", "big", mode, **own).speedup
    spp = ev_metrics.get("s_per_problem", {})
    if claim["big"] in spp and claim["learned"] in spp:
        speedups["05 throughput ratio (batched engine)"] = spp[claim["big"]] / spp[claim["learned"]]
    speedup_at_learned = pd.Series(speedups, name=f"speed-up of {claim['learned']} over {claim['big']}")
    display(speedup_at_learned.round(2).to_frame())

# %% [markdown]
# ## 6 · Accuracy against speed-up, per method
# Every method of 04/05: accuracy (95 % CI, as in 05) against speed-up over big-only on the same problems —
# simulated for all (each recorded trace of 04/05 priced by the `serial` simulator with the measured profile;
# hollow markers) and measured at batch 1 for the timed methods (filled). Sweeps are joined by lines.

# %%
if source == "run":
    table = ev.aggregate(rows, proto)
    sim_all = simulator.simulate_rows(rows, measured, "small", "big", mode="serial")
    speedup_by_method = pd.DataFrame({"simulated (serial)": ev.speedup_over(sim_all, claim["big"], "sim_s")})
    if claim["big"] in timed_names:  # measured: the timed methods only
        speedup_by_method["measured (batch 1)"] = ev.speedup_over(sim, claim["big"], "wall_s")
    fig_speed = plots.accuracy_vs_speedup(table, speedup_by_method.to_dict("series"), baseline=claim["big"])
    fig_speed.savefig(out / "accuracy_vs_speedup.png", dpi=120, bbox_inches="tight")
    speedup_json = {kind: s.dropna().to_dict() for kind, s in speedup_by_method.items()}  # for metrics.json
    display(table.set_index("method")[["accuracy", "offload_token_fraction"]].join(speedup_by_method).round(3))
    display(fig_speed)

# %% [markdown]
# ## 7 · The trained checkpoints on the accuracy–speed-up plane (Pareto figure)
# Every checkpoint of 05 decoded with split decoding (SFT, each GRPO arm, each rl4e latency weight), the learned
# method of the claim, small-only, big-only and the random-switch sweep of 04: accuracy (95 % CI) against speed-up
# over big-only, simulated (hollow) and measured at batch 1 (filled, the methods timed in §2, `@arms` among them).
# The dashed step line joins the points no other point beats on both axes (the Pareto frontier, on the simulated
# speed-up, which every point has). This is the toy analogue of the paper's two checkpoints, "1.35 %" (the 1.5B
# offloading little, fast) and "5 %" (offloading more, more accurate): here the arms differ in how much they offload
# and how often their tags fail, and the frontier says which of them a user should pick for a given speed-up.
# On the toy run (measured at `37098fa`): `rl4e_4` is the only trained point on the frontier (100 % at 7.6 % offload,
# 2.59x simulated, 2.52x measured), beside grpo-offload and rl4e_0 (100 % at 10.7 %, 2.33x / 2.25-2.27x), SFT (61 %),
# rl4e_16 (66 %) and grpo-paper (11 %) at about the same speed; small alone and the fastest random ratios make up the
# rest of the frontier. rl4e_4 is the toy's faster checkpoint (the paper's "1.35 %"), grpo-offload its "5 %" one.

# %%
if source == "run":
    pareto_names = pareto.pareto_methods(table, ev_metrics.get("grpo", {}), claim)  # small, arms, learned, big, sweep
    pareto_points = pareto.pareto_points(table, speedup_by_method, pareto_names)
    fig_pareto = pareto.pareto_figure(table, pareto_points, claim)
    for ext in ("png", "pdf"):
        fig_pareto.savefig(out / f"pareto.{ext}", dpi=150, bbox_inches="tight")
    display(pareto_points.set_index("method").round(3), fig_pareto)

# %%
if source == "run":
    metrics = {
        "paper_headline_32B_at_1.35pct": headline, "paper_headline_in_8_9": headline is not None and 8 <= headline <= 9,
        "speedup_paper": {f"{m}|{b}": row.to_dict() for (m, b), row in speedup_paper.iterrows()},
        "speedup_measured": {f"{m}|{b}": row.to_dict() for (m, b), row in speedup_measured.iterrows()},
        "validation": {**errors, "target_median": P.validation_target, "passes": errors["median"] <= P.validation_target,
                       "n_traces": len(sim), "mode": "serial", "kind": P.profile_kind, "rounds": P.profile_rounds,
                       "timing_runs": P.timing_runs},
        "learned": {"method": claim["learned"], "offload_token_fraction": learned_offload,
                    "speedup_over_big": speedup_at_learned.to_dict()}, "speedup_by_method": speedup_json,
        "own_generation": {"prompt_tokens": prompt_tokens, "decode_tokens": decode_tokens, "chunk": chunk,
                           "switch": vars(switch)}, "profile": str(profile_path), "roles": roles,
        "timed": timed_names, "pareto": pareto.pareto_block(pareto_points)}

# %%
if source == "run":
    runs.atomic_write_json(out / "metrics.json", metrics)
    runs.write_step_manifest(out, "06_figure5", as_dict(P), {"provenance": settings})  # what determined the profile
    print("wrote", out / "metrics.json")
    decoder.close()  # the profiled and timed engines end with it: their memory (GPU memory on a GPU) is free again
