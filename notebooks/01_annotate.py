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
# # 01 · Annotation — marking the hard spans of reasoning traces
#
# **Purpose.** The paper's data step (PAPER_FACTS §4): wrap the most difficult spans of existing reasoning traces in
# `<bigmodel> … </bigmodel>`, so that SFT (notebook 02) can teach the small model where to ask the big one for help.
# The annotator is a parameter (`splitlib.annotate` registry):
#
# - `llm` — the paper's method: an LLM behind an OpenAI-compatible chat API (preset `paper` = `deepseek-chat`) returns
#   verbatim snippets covering about `target_fraction` of the trace; they are located by fuzzy matching and merged.
#   The API key is read from the environment variable *named* by `api_key_env`; it never reaches a file.
# - `surprisal` — no API: the small model reads the trace teacher-forced; the reasoning steps with the highest mean
#   token loss are marked until they cover `target_fraction` (the toy default; it also works for the 1.5B on OpenR1).
# - `oracle` — the toy world's ground-truth hard steps: the yardstick the others are scored against.
#
# Every trace ends as exactly one row of `annotated.jsonl` or `failures.jsonl` (with the reason); removing the tags
# from an annotated trace gives back the original byte for byte, or the row is a failure. Runs resume: each annotator
# writes into its own folder, keyed by trace id; Ctrl-C (Interrupt) stops within seconds and a re-run carries on. A
# folder's rows are never mixed with rows of another provenance (settings, the served model's name, the prompt, the
# small model's weights and tokenizer, the trace text): a resume that differs is refused, saying what changed; use a
# new `run_name` or delete `01_annotate/<annotator>/` to recompute. `retry_failures` attempts earlier failures again.
#
# | | |
# |---|---|
# | inputs | toy: `outputs/<run>/data/train.jsonl`, `outputs/<run>/models/small/` (00) · paper: OpenR1-Math-220k, an LLM API |
# | outputs | `outputs/<run>/01_annotate/{annotated.jsonl, failures.jsonl, stats.json, oracle.jsonl (toy), metrics.json, *.png}`, one resumable folder per annotator |
# | runtime | smoke ≈ 15 s · toy ≈ 30 s (2,000 traces, 2 CPU cores; measured 30 s) · paper: hours of API calls (~18.5k traces, 200 in flight) |

# %%
import logging
import time
from typing import Optional

from IPython.display import HTML, Image, display
import pandas as pd
from transformers import AutoTokenizer

from splitlib import annotate, data, progressbar, runrecord, runs, serve as vllm_serve  # `serve`: a parameter
from splitlib.annotate.run import write_stats
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
dataset: str = "toy"  # toy: outputs/<run>/data/train.jsonl (00); openr1: OpenR1-Math-220k
openr1: dict = {"source": "open-r1/OpenR1-Math-220k", "config": "default", "only_correct": False,
                "min_chars": 1024}  # dataset: openr1 only
n_traces: Optional[int] = None  # first n traces; null: all
annotator: str = "surprisal"  # surprisal | llm | oracle
annotator_params: dict = {"steps": "toy", "aggregate": "mean", "unit": "chars", "batch_size": 64,
                          "max_batch_tokens": 16384}  # passed to splitlib.annotate.get_annotator (llm: model is the served name)
target_fraction: float = 0.15  # share of each trace to mark (paper 0.2); toy 0.15 < the hard steps' 18-22 % of characters
small_model: Optional[str] = None  # surprisal model + tokenizer for token fractions; null: outputs/<run>/models/small
api_key_env: Optional[str] = None  # llm: NAME of the environment variable with the API key (never the key itself)
concurrency: int = 8  # llm: requests in flight
request_timeout_s: float = 300.0  # llm: deadline per request (connecting, waiting, reading the whole reply)
max_retries: int = 5  # llm: retries on 429/5xx/timeouts, exponential backoff
max_failure_fraction: float = 0.2  # abort when more than this share of traces fails
retry_failures: bool = False  # attempt again the traces that failed in an earlier run (after fixing the cause)
sft_source: str = "annotator"  # what annotated.jsonl (SFT's input) holds: annotator | oracle (toy only)
n_render: int = 4  # annotated traces shown with their spans highlighted
position_bins: int = 200  # bins of the position profile (paper Fig. 7)
min_token_recall: float = 0.7  # toy: acceptance check, the annotator's token recall against the oracle
min_token_precision: float = 0.5  # toy: acceptance check, the annotator's token precision against the oracle
serve: dict = {}  # {} or {annotator: vllm serve settings (splitlib.serve.ServerSpec)}: a server started here for the llm annotator

# %%
P = load_from_notebook("01_annotate", globals(), _names_before)
run = runrecord.open_run(P, "01_annotate")  # one writer per run; refuses a run made with other parameters
progressbar.setup(P.progress)  # JupyterLab: widget bars; papermill: a few log lines
out = run / "01_annotate"
if P.dataset == "toy":
    runs.require(run / "data" / "train.jsonl", made_by="notebooks/00_models.ipynb")
small_dir = runs.in_run(run, P.small_model) or str(runs.require(run / "models" / "small", made_by="notebooks/00_models.ipynb"))
P

# %% [markdown]
# The annotator, built now so that a bad setting or a missing API key fails before any work; the small model's
# tokenizer, in whose tokens the offloaded fractions are counted.

# %%
servers = vllm_serve.start_servers(P.serve, run, out)  # the annotator's vllm serve, if the profile asks
kwargs = annotate.annotator_params(P.annotator, P.annotator_params, target_fraction=P.target_fraction,
                                   api_key_env=P.api_key_env, small_model=small_dir, served=servers.get("annotator"))
chosen = annotate.get_annotator(P.annotator, **kwargs)  # fails now on a bad setting or a missing key
tokenizer = AutoTokenizer.from_pretrained(small_dir)  # token fractions are counted in the small model's tokens


def show(fig, name: str) -> None:
    """Save a figure under ``out`` and show it inline."""
    fig.savefig(out / name, dpi=120, bbox_inches="tight")
    display(Image(filename=str(out / name)))

# %% [markdown]
# ## 1 · The traces
# Toy: the training problems of notebook 00 (each with its ground-truth `hard_spans`). Paper: the first generation of
# each OpenR1-Math problem, longer than `min_chars` characters, optionally only the ones verified correct.

# %%
if P.dataset == "toy":
    traces = data.load_toy(run / "data", "train")[: P.n_traces]
else:
    traces = data.load_openr1(runs.in_run(run, P.openr1.source), limit=P.n_traces, config=P.openr1.config,
                              only_correct=P.openr1.only_correct, min_chars=P.openr1.min_chars)
ids = {t["id"] for t in traces}
n_chars = pd.Series([len(t["trace"]) for t in traces])
print(f"{len(traces)} traces, {n_chars.mean():.0f} characters on average (min {n_chars.min()}, max {n_chars.max()})")
print(traces[0]["trace"][:600])

# %% [markdown]
# ## 2 · Annotate
# The chosen annotator, and in the toy world also `oracle` (the ground truth, to score against). Each writes into
# `01_annotate/<name>/`; a re-run annotates only traces that are in neither its `annotated.jsonl` nor `failures.jsonl` (and refuses rows
# whose trace changed since, e.g. after 00 regenerated the data).

# %%
names = [P.annotator] + (["oracle"] if P.dataset == "toy" and P.annotator != "oracle" else [])
summaries, wall_s = {}, {}
for name in names:
    annotator = chosen if name == P.annotator else annotate.get_annotator(name)
    t0 = time.perf_counter()
    summaries[name] = annotate.annotate_all(
        traces, annotator, out / name, concurrency=P.concurrency, max_failure_fraction=P.max_failure_fraction,
        timeout_s=P.request_timeout_s, max_retries=P.max_retries, tokenizer=tokenizer,
        retry_failures=P.retry_failures, progress=P.progress)
    wall_s[name] = time.perf_counter() - t0
vllm_serve.stop_all(servers)  # the annotation server's work is done
display(pd.DataFrame({n: {"annotated now": s.n_annotated, "failed now": s.n_failed, "done before": s.n_skipped,
                          "wall_s": round(wall_s[n], 1), **{f"failed: {k}": v for k, v in s.failure_reasons.items()}}
                      for n, s in summaries.items()}).T)


# %% [markdown]
# Publish what SFT reads: `annotated.jsonl` holds the rows of `sft_source` (the chosen annotator by default),
# `failures.jsonl` and `stats.json` describe them; in the toy world `oracle.jsonl` holds the ground truth for comparison.

# %%
def rows_of(name: str, file: str = annotate.ANNOTATED) -> list[dict]:
    return [r for r in runs.read_jsonl(out / name / file) if r["id"] in ids]


source = "oracle" if P.sft_source == "oracle" else P.annotator
runs.write_jsonl(out / annotate.ANNOTATED, rows_of(source))
runs.write_jsonl(out / annotate.FAILURES, rows_of(source, annotate.FAILURES))
stats = write_stats(out, summaries[source].stats["annotator"])
if "oracle" in names:
    runs.write_jsonl(out / "oracle.jsonl", rows_of("oracle"))
rows = runs.read_jsonl(out / annotate.ANNOTATED)
display(pd.DataFrame({k: stats[k] for k in ("offload_char_fraction", "offload_token_fraction", "spans_per_trace")}).T
        .round(3))
print(f"{stats['n_annotated']} annotated, {stats['n_failed']} failed ({stats['failure_reasons']})")

# %% [markdown]
# ## 3 · How much is offloaded
# Per-trace offloaded fraction in tokens (the small model's) and characters. The paper reports most traces under 20 %.

# %%
fractions = annotate.offload_fractions(rows, tokenizer)
fig = annotate.offload_fraction_histogram(fractions, target=None if P.annotator == "oracle" else P.target_fraction,
                                         target_unit=P.annotator_params.get("unit", "chars"))  # what the target counts
show(fig, "offload_fractions.png")

# %% [markdown]
# ## 4 · Where the spans sit (paper Fig. 7)
# Mean offload mask over normalised position in the trace (each trace weighted equally), in characters and tokens.
# The paper found a slight bias towards the start of traces; the toy's hard steps sit at fixed steps.

# %%
profiles = {"characters": {name: annotate.position_profile(rows_of(name), P.position_bins) for name in names},
            "tokens": {name: annotate.position_profile(rows_of(name), P.position_bins, tokenizer) for name in names}}
for unit, curves in profiles.items():
    fig = annotate.position_profile_figure(curves, unit=unit)
    show(fig, f"position_profile_{unit}.png")

# %% [markdown]
# ## 5 · Agreement with the ground truth (toy world)
# Precision, recall and F1 of the marked tokens (and characters) against `oracle`, pooled over all traces. The
# acceptance check asks the annotator for token recall ≥ `min_token_recall` and precision ≥ `min_token_precision`.
# `surprisal` finds what is hard *for the small model*: where that differs from the oracle (say the small model also
# fails a step next to a hard one), precision and recall say so. The toy profile marks less than the hard share on
# purpose (`target_fraction` 0.15), so that its annotations miss some hard steps as real annotators do, and asks
# for recall ≥ 0.7 (params/toy/01_annotate.yaml says why).

# %%
scores = {}
if P.dataset == "toy":
    truth = {t["id"]: t["hard_spans"] for t in traces}
    for name in names:
        scores[name] = {"tokens": annotate.score_rows(rows_of(name), truth, tokenizer),
                        "characters": annotate.score_rows(rows_of(name), truth)}
    table = pd.DataFrame([{"annotator": n, "unit": u, **s} for n, by in scores.items() for u, s in by.items()])
    display(table.set_index(["annotator", "unit"]).round(3))
    fig = annotate.oracle_scores_figure({n: by["tokens"] for n, by in scores.items()})
    show(fig, "oracle_scores.png")

# %% [markdown]
# ## 6 · A few annotated traces
# Highlighted: the spans inside `<bigmodel> … </bigmodel>` (in the toy world the oracle's version follows each one).

# %%
shown = rows[: P.n_render]
oracle_by_id = {r["id"]: r for r in rows_of("oracle")} if "oracle" in names and source != "oracle" else {}
texts, titles = [], []
for r in shown:
    texts.append(r["annotated"])
    titles.append(f"{r['id']} — {source} ({r['offload_char_fraction']:.0%} of characters)")
    if r["id"] in oracle_by_id:
        texts.append(oracle_by_id[r["id"]]["annotated"])
        titles.append(f"{r['id']} — oracle")
display(HTML(annotate.render_html(texts, titles)))

# %%
metrics = {
    "annotator": P.annotator, "sft_source": source, "n_traces": len(traces), "n_annotated": stats["n_annotated"],
    "n_failed": stats["n_failed"], "failure_reasons": stats["failure_reasons"],
    "offload_char_fraction_mean": stats["offload_char_fraction"]["mean"] if stats["offload_char_fraction"] else None,
    "offload_token_fraction_mean": stats["offload_token_fraction"]["mean"] if stats["offload_token_fraction"] else None,
    "wall_s": wall_s, "oracle_scores": scores, "servers": vllm_serve.describe_all(servers),
}
if P.dataset == "toy" and P.annotator in scores:
    tokens = scores[P.annotator]["tokens"]
    metrics["acceptance"] = {f"recall_at_least_{P.min_token_recall}": tokens["recall"] >= P.min_token_recall,
                             f"precision_at_least_{P.min_token_precision}": tokens["precision"] >= P.min_token_precision}
runs.atomic_write_json(out / "metrics.json", metrics)
runs.write_step_manifest(out, "01_annotate", as_dict(P))
print("wrote", out / "metrics.json")
