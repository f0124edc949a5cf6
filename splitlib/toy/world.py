"""Seeded generator of toy problems with step-by-step traces and ground-truth difficulty labels.

A problem gives a code table (digit -> digit, entries in random order) and a start digit. Step k
(labelled A, B, C, ...) adds k to the running value mod 10; after the steps listed in ``coded_steps``
the value is passed through the code table. Example::

    A: 4+1=5
    B: 5+2=7
    C: 7+3=0, code 0>6        <- " code 0>6" is the hard step (a retrieval from the table)
    D: 6+4=0
    ...
    Answer: \\boxed{5}

Every easy step reads only tokens at fixed offsets (the previous value sits just before the newline; the
added number follows from the step label), so a 1-layer model learns them; a lookup needs an induction
circuit. Hard-step spans start at a space and end before a newline, i.e. on tokenizer pre-token
boundaries, so inserting ``<bigmodel>``/``</bigmodel>`` around them never changes the token ids of the rest.
Difficulty labels are character spans over the trace; they are never shown to a model.
"""

from __future__ import annotations

import random
import string
from dataclasses import asdict, dataclass, field




@dataclass(frozen=True)
class ToyWorldConfig:
    n_steps: int = 10  # labelled addition steps per trace
    coded_steps: tuple[int, ...] = (2, 5, 8)  # 0-based steps whose sum is passed through the code table
    table_size: int = 10  # code entries (keys are the digits 0..table_size-1)

    def __post_init__(self) -> None:
        if not 2 <= self.n_steps <= 26:
            raise ValueError(f"n_steps={self.n_steps}: expected 2..26 (steps are labelled A..Z)")
        if not 1 <= self.table_size <= 10:
            raise ValueError(f"table_size={self.table_size}: expected 1..10 (keys are single digits)")
        bad = [s for s in self.coded_steps if not 0 <= s < self.n_steps]
        if bad or len(set(self.coded_steps)) != len(self.coded_steps):
            raise ValueError(f"coded_steps={self.coded_steps}: expected distinct steps in 0..{self.n_steps - 1}")
        if self.table_size < 10 and self.coded_steps:
            raise ValueError("coded steps need a full code table (table_size=10): any digit can be looked up")


@dataclass(frozen=True)
class Problem:
    """One toy problem. ``hard_spans`` are character spans of ``trace`` (ground truth, never model input)."""

    id: str
    question: str
    trace: str
    answer: str
    hard_spans: tuple[tuple[int, int], ...] = field(default_factory=tuple)

    def to_json(self) -> dict:
        row = asdict(self)
        row["hard_spans"] = [list(s) for s in self.hard_spans]
        return row

    @classmethod
    def from_json(cls, row: dict) -> Problem:
        spans = tuple(tuple(s) for s in row.get("hard_spans", ()))
        return cls(id=row["id"], question=row["question"], trace=row["trace"], answer=row["answer"], hard_spans=spans)


def _labels(n: int) -> list[str]:
    return list(string.ascii_uppercase[:n])


def make_problem(rng: random.Random, cfg: ToyWorldConfig, problem_id: str) -> Problem:
    """Draw one problem from ``rng`` and solve it, recording the hard-step spans."""
    code = {k: rng.randrange(10) for k in range(cfg.table_size)}
    order = list(code)
    rng.shuffle(order)
    x = rng.randrange(10)
    labels = _labels(cfg.n_steps)
    coded = ", ".join(labels[s] for s in sorted(cfg.coded_steps)) or "no step"
    question = (
        "Code: " + " ".join(f"{k}>{code[k]}" for k in order) + f". Start: {x}. "
        f"Step k adds k mod 10, {cfg.n_steps} steps; apply the code after {coded}."
    )
    lines: list[str] = []
    hard: list[tuple[int, int]] = []
    pos = 0
    for i, label in enumerate(labels):
        k = (i + 1) % 10
        s = (x + k) % 10
        line = f"{label}: {x}+{k}={s}"
        if i in cfg.coded_steps:
            step = f" code {s}>{code[s]}"
            start = pos + len(line) + 1  # after the comma
            line += "," + step
            hard.append((start, start + len(step)))
            s = code[s]
        lines.append(line)
        pos += len(line) + 1  # newline
        x = s
    trace = "\n".join(lines) + f"\nAnswer: \\boxed{{{x}}}"
    return Problem(id=problem_id, question=question, trace=trace, answer=str(x), hard_spans=tuple(hard))


def generate(n: int, seed: int, cfg: ToyWorldConfig | None = None, prefix: str = "toy") -> list[Problem]:
    """``n`` problems, identical for identical ``(seed, cfg)``; ids are ``{prefix}-{seed}-{i}``."""
    cfg = cfg or ToyWorldConfig()
    rng = random.Random(seed)
    return [make_problem(rng, cfg, f"{prefix}-{seed}-{i}") for i in range(n)]


def generate_split(n_train: int, n_test: int, seed: int, cfg: ToyWorldConfig | None = None) -> tuple[list[Problem], list[Problem]]:
    """Disjoint train/test sets: test problems whose question also occurs in train are dropped and redrawn."""
    train = generate(n_train, seed, cfg, prefix="train")
    seen = {p.question for p in train}
    test: list[Problem] = []
    rng_seed = seed + 1_000_003
    while len(test) < n_test:
        batch = generate(n_test, rng_seed, cfg, prefix="test")
        test += [p for p in batch if p.question not in seen][: n_test - len(test)]
        rng_seed += 1
    return train, test


def step_spans(trace: str) -> list[tuple[int, int]]:
    """Reasoning steps of a toy trace as character spans: each line, with a coded clause as its own step."""
    out: list[tuple[int, int]] = []
    pos = 0
    for line in trace.split("\n"):
        comma = line.find(", code")
        if comma >= 0:
            out += [(pos, pos + comma + 1), (pos + comma + 1, pos + len(line))]
        else:
            out.append((pos, pos + len(line)))
        pos += len(line) + 1
    return out
