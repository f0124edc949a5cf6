"""Stand-ins for the paper's data sets, in the layout and schema of their hub repositories.

Each folder loads with ``datasets.load_dataset(str(folder), <config>, split=...)`` offline, which is the call
``splitlib.data.load_table`` makes for a hub id. The rows are synthetic arithmetic word problems (``problems``).

Schemas, and where they were confirmed:

- ``open-r1/OpenR1-Math-220k`` (config ``default``, split ``train``; parquet under ``data/``, ``configs:`` in the
  README): problem, solution, answer, problem_type, question_type, source, uuid (string); is_reasoning_complete
  (list[bool]); generations (list[str]); correctness_math_verify, correctness_llama (list[bool]); finish_reasons
  (list[str]); correctness_count (int64); messages (list of {content, role}). Confirmed by the hub README's
  ``dataset_info`` (revision 075afe0). The hub also has configs ``all`` and ``extended``; only ``default`` is
  built. Values not confirmed: ``finish_reasons`` holds "stop" here, ``correctness_llama`` is null (the Llama
  judge was used for a minority of rows), ``messages`` pairs the problem with the first correct generation.
- ``simplescaling/aime24_nofigures`` (split ``train``): one JSON-lines file ``aime24_nofigures.jsonl`` and a
  README with no ``configs:`` (hub file listing). Columns: id (int), problem, solution, answer (string), url, the
  columns of its source ``AI-MO/aimo-validation-aime`` (ids 60-89 for 2024); the authors' lm-eval task reads
  problem, solution, answer. Not confirmed: whether this file also has a ``year`` column (HuggingFaceH4's AIME 2024
  copy does); it is left out.
- ``HuggingFaceH4/MATH-500`` (split ``test``): one file ``test.jsonl`` and a short README (hub file listing).
  Columns: problem, solution, answer, subject (string), level (int), unique_id (string, "test/<subject>/<n>.json")
  (README ``dataset_info`` of its copies).
- ``akhauriyash/OpenR1_Math_SpeculativeReasoning`` (the annotated SFT set, split ``train``): the OpenR1 columns
  plus annotated_generations (list[str]). Confirmed by the README of the same author's
  ``OpenR1_Math_SplitReasoning`` (18,521 rows, the paper's ~18.5k) and by the authors' code
  (``annotated_dataset/data_generator.py`` writes ``annotated_generations``; ``hf_Dataset/proprocess.py``
  filters on it and writes the annotated trace into ``messages[1].content``). As that code writes them: spans are
  wrapped in ``<bigmodel>`` … ``<\\bigmodel>`` (sic, a backslash) in ``annotated_generations``, whose entries are
  [annotated first generation, second generation, annotated second generation] (the loop appends the raw
  generation AND its annotation for every generation after the first). ``messages[1].content``: see ``SftTags``.
- ``akhauriyash/OpenR1_Math_SpecR_GRPO`` (5,000 rows, split ``train``): NOT confirmed; nothing in the authors'
  repository builds it. Their GRPO recipe reads ``problem`` (``dataset_prompt_column``) and ``solution`` (open-r1's
  accuracy reward), so it is built here as a subset of the SFT set, with the SFT set's columns.
"""

from __future__ import annotations

import json
import random
import uuid
from pathlib import Path
from typing import Any

import datasets
import yaml

from splitlib.rehearsal.layout import AIME24, GRPO_DATA, MATH500, OPENR1, SFT_DATA, STANDINS, SftTags, StandinSizes
from splitlib.rehearsal.problems import Problem, Trace, make_problems, make_trace

# ``SftTags``: how ``messages[1].content`` of the SFT set writes the tags. "padded" (PAPER_FACTS §4, and what
# proprocess.py means to do): "\n <bigmodel> \n" and "\n </bigmodel> \n". "as_released": what proprocess.py does,
# because its second ``replace`` starts again from ``annotated_generations[0]``: only the opening tag is padded and
# the closing tag stays "<\bigmodel>". Which one the hub rows hold is not confirmed.
RELEASED_OPEN, RELEASED_CLOSE = "<bigmodel>", "<\\bigmodel>"
WRONG_FIRST_RATE = 0.15  # share of rows whose first generation has an arithmetic slip (a wrong boxed answer)
_PARQUET = "data/train-00000-of-00001.parquet"
_OPENR1_TYPES = {"Prealgebra": "Algebra", "Algebra": "Algebra", "Number Theory": "Number Theory"}
_SOURCES = ("olympiads", "aops_forum", "cn_contest", "amc_aime", "number_theory")

_TEXT, _BOOLS, _TEXTS = datasets.Value("string"), datasets.List(datasets.Value("bool")), datasets.List(
    datasets.Value("string"))
OPENR1_FEATURES = datasets.Features({
    "problem": _TEXT, "solution": _TEXT, "answer": _TEXT, "problem_type": _TEXT, "question_type": _TEXT,
    "source": _TEXT, "uuid": _TEXT, "is_reasoning_complete": _BOOLS, "generations": _TEXTS,
    "correctness_math_verify": _BOOLS, "correctness_llama": _BOOLS, "finish_reasons": _TEXTS,
    "correctness_count": datasets.Value("int64"),
    "messages": datasets.List({"content": _TEXT, "role": _TEXT}),
})
SFT_FEATURES = datasets.Features({**OPENR1_FEATURES, "annotated_generations": _TEXTS})
AIME24_COLUMNS = ("id", "problem", "solution", "answer", "url")
MATH500_COLUMNS = ("problem", "solution", "answer", "subject", "level", "unique_id")


def problem_pools(seed: int, sizes: StandinSizes) -> dict[str, list[Problem]]:
    """Distinct problems for the training sets (one pool: OpenR1, SFT and GRPO rows share problems, as the
    annotated sets are subsets of OpenR1), AIME24 (answers 0-999) and MATH-500."""
    rng = random.Random(f"rehearsal-problems-{seed}")
    train = make_problems(max(sizes.openr1_rows, sizes.sft_rows, sizes.grpo_rows), rng)
    aime = make_problems(sizes.aime24_rows, rng, max_answer=999, exclude={p.question for p in train})
    math500 = make_problems(sizes.math500_rows, rng, exclude={p.question for p in train + aime})
    return {"train": train, "aime24": aime, "math500": math500}


def openr1_rows(problems: list[Problem], seed: int) -> list[tuple[dict[str, Any], list[Trace]]]:
    """One OpenR1-Math-220k row per problem (two generations), with the generations' traces."""
    rng = random.Random(f"rehearsal-openr1-{seed}")
    out = []
    for problem in problems:
        slip = rng.choice((-3, -1, 1, 7)) if rng.random() < WRONG_FIRST_RATE else 0
        traces = [make_trace(problem, slip=slip, variant=0), make_trace(problem, variant=1)]
        correct = [t.boxed == problem.answer for t in traces]
        first_correct = next(t for t, ok in zip(traces, correct, strict=True) if ok)
        row = {
            "problem": problem.question, "solution": problem.solution, "answer": str(problem.answer),
            "problem_type": _OPENR1_TYPES[problem.topic], "question_type": "math-word-problem",
            "source": rng.choice(_SOURCES), "uuid": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
            "is_reasoning_complete": [True, True], "generations": [t.text for t in traces],
            "correctness_math_verify": correct, "correctness_llama": None, "finish_reasons": ["stop", "stop"],
            "correctness_count": sum(correct),
            "messages": [{"role": "user", "content": problem.question},
                         {"role": "assistant", "content": first_correct.text}],
        }
        out.append((row, traces))
    return out


def annotate_released(trace: Trace) -> str:
    """The trace with its hard spans wrapped as the authors' ``insert_annotations`` wraps them."""
    parts, last = [], 0
    for start, end in trace.hard_spans:
        parts += [trace.text[last:start], RELEASED_OPEN, trace.text[start:end], RELEASED_CLOSE]
        last = end
    return "".join(parts) + trace.text[last:]


def sft_message(annotated: str, sft_tags: SftTags) -> str:
    """``messages[1].content`` of the SFT set from an ``annotated_generations`` entry (see ``SftTags``)."""
    padded = annotated.replace(RELEASED_OPEN, "\n <bigmodel> \n")
    if sft_tags == "padded":
        return padded.replace(RELEASED_CLOSE, "\n </bigmodel> \n")
    if sft_tags == "as_released":
        return padded
    raise ValueError(f"sft_tags={sft_tags!r}: expected 'padded' or 'as_released'")


def sft_row(row: dict[str, Any], traces: list[Trace], sft_tags: SftTags) -> dict[str, Any]:
    """An OpenR1 row as the authors' annotated set holds it."""
    annotated = [annotate_released(traces[0]), traces[1].text, annotate_released(traces[1])]
    messages = [row["messages"][0], {"role": "assistant", "content": sft_message(annotated[0], sft_tags)}]
    return {**row, "messages": messages, "annotated_generations": annotated}


def benchmark_rows(pools: dict[str, list[Problem]], seed: int) -> dict[str, list[dict[str, Any]]]:
    """AIME24 and MATH-500 rows in their hub columns."""
    rng = random.Random(f"rehearsal-benchmarks-{seed}")
    aime = [{"id": 60 + i, "problem": p.question, "solution": p.solution, "answer": str(p.answer),
             "url": f"https://artofproblemsolving.com/wiki/index.php/2024_AIME_{'I' * (1 + i // 15)}_Problems/"
                    f"Problem_{1 + i % 15}"} for i, p in enumerate(pools["aime24"])]
    math500 = [{"problem": p.question, "solution": p.solution, "answer": str(p.answer), "subject": p.topic,
                "level": rng.randint(1, 5), "unique_id": f"test/{p.topic.lower().replace(' ', '_')}/{n}.json"}
               for n, p in zip(rng.sample(range(100, 5000), len(pools["math500"])), pools["math500"], strict=True)]
    return {"aime24": aime, "math500": math500}


# -- writing, in hub layout -------------------------------------------------------------------------------------
def _card(role: str, front_matter: dict[str, Any]) -> str:
    hub_id = STANDINS[role][1]
    header = yaml.safe_dump(front_matter, sort_keys=False, allow_unicode=True)
    return (f"---\n{header}---\n\n# Rehearsal stand-in for {hub_id}\n\nSynthetic arithmetic word problems in the "
            f"schema and file layout of `{hub_id}`, built by `splitlib.rehearsal` for CPU rehearsals of the "
            "pipeline. Not the real data.\n")


def write_parquet_repo(directory: Path, role: str, rows: list[dict], features: datasets.Features) -> list[Path]:
    """``data/train-00000-of-00001.parquet`` and a README whose ``configs:`` names it (config ``default``)."""
    data = directory / _PARQUET
    data.parent.mkdir(parents=True, exist_ok=True)
    table = datasets.Dataset.from_list(rows, features=features)
    table.to_parquet(str(data))
    split = {"name": "train", "num_bytes": table.data.nbytes, "num_examples": len(rows)}
    front = {"license": "apache-2.0",
             "configs": [{"config_name": "default", "data_files": [{"split": "train", "path": "data/train-*"}]}],
             "dataset_info": {"features": features._to_yaml_list(), "splits": [split],
                              "download_size": data.stat().st_size, "dataset_size": table.data.nbytes}}
    (directory / "README.md").write_text(_card(role, front), encoding="utf-8")
    return [directory / "README.md", data]


def write_jsonl_repo(directory: Path, role: str, filename: str, rows: list[dict]) -> list[Path]:
    """One JSON-lines file (its name gives the split) and a README without ``configs:``, as the hub repo has."""
    directory.mkdir(parents=True, exist_ok=True)
    data = directory / filename
    data.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    (directory / "README.md").write_text(_card(role, {"license": "apache-2.0"}), encoding="utf-8")
    return [directory / "README.md", data]


def build_datasets(root: Path, pools: dict[str, list[Problem]], sizes: StandinSizes, seed: int,
                   sft_tags: SftTags) -> dict[str, list[Path]]:
    """Write the five data sets under ``root``; returns the files written per role."""
    base = openr1_rows(pools["train"], seed)
    sft = [sft_row(row, traces, sft_tags) for row, traces in base]
    bench = benchmark_rows(pools, seed)
    return {
        "openr1": write_parquet_repo(root / OPENR1, "openr1", [r for r, _ in base[: sizes.openr1_rows]],
                                     OPENR1_FEATURES),
        "sft": write_parquet_repo(root / SFT_DATA, "sft", sft[: sizes.sft_rows], SFT_FEATURES),
        "grpo": write_parquet_repo(root / GRPO_DATA, "grpo", sft[: sizes.grpo_rows], SFT_FEATURES),
        "aime24": write_jsonl_repo(root / AIME24, "aime24", "aime24_nofigures.jsonl", bench["aime24"]),
        "math500": write_jsonl_repo(root / MATH500, "math500", "test.jsonl", bench["math500"]),
    }
