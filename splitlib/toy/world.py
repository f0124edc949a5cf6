"""Seeded generator of toy problems with step-by-step traces and ground-truth difficulty labels.

A problem lists a few bonus digits. The value starts at 0; step k (labelled A, B, C, ...) adds k to it mod 10, and
after each step listed in ``coded_steps`` the value becomes the next bonus digit. Example (bonus 7 2 5 9)::

    A: 0+1=1
    B: 1+2=3
    C: 3+3=6, bonus 7       <- " bonus 7" is a hard step: a digit copied from the problem statement
    D: 7+4=1
    ...
    Answer: \\boxed{4}

Why the gap is architectural: every easy step reads tokens at fixed, short offsets inside the trace (the previous
value is the last digit before the newline, the added number follows from the step label), which a 1-layer model
learns in a few hundred steps. A hard step copies a bonus digit from the start of the problem statement, a long
way back. The small model attends through a sliding window (``ToyModelConfig.sliding_window``) that never reaches
the bonus list, so it can only guess hard steps (1 in 9); the big model attends to the whole context. The final
answer depends on the last bonus digit, so a small model alone is right about 1 time in 9.

Hard-step spans start at a space and end before a newline, i.e. on tokenizer pre-token boundaries, so inserting
``<bigmodel>``/``</bigmodel>`` around them never changes the token ids of the rest. Difficulty labels are
character spans over the trace; they are never shown to a model. (An earlier design added the bonus with a second
sum on the same line, "bonus 7 gives 3": even the 4-layer big model only reached 82 % on those sums in 600 steps,
and a start digit copied from ~60 tokens back defeated the 1-layer small model; both were removed.)
"""

from __future__ import annotations

import itertools
import random
import string
from dataclasses import asdict, dataclass, field


@dataclass(frozen=True)
class ToyWorldConfig:
    n_steps: int = 10  # labelled addition steps per trace
    coded_steps: tuple[int, ...] = (2, 4, 6, 8)  # 0-based steps after which the value becomes the next bonus digit

    def __post_init__(self) -> None:
        if not 2 <= self.n_steps <= 26:
            raise ValueError(f"n_steps={self.n_steps}: expected 2..26 (steps are labelled A..Z)")
        bad = [s for s in self.coded_steps if not 0 <= s < self.n_steps]
        if bad or len(set(self.coded_steps)) != len(self.coded_steps):
            raise ValueError(f"coded_steps={self.coded_steps}: expected distinct steps in 0..{self.n_steps - 1}")

    @property
    def n_questions(self) -> int:
        """Distinct problems this world can draw: one per bonus list (digits 1..9)."""
        return 9 ** len(self.coded_steps)


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
    coded = sorted(cfg.coded_steps)
    bonus = [rng.randrange(1, 10) for _ in coded]
    labels = _labels(cfg.n_steps)
    where = ", ".join(labels[s] for s in coded) or "no step"
    question = (
        "Bonus: " + (" ".join(map(str, bonus)) or "none") + f". Start at 0; step k adds k mod 10, for {cfg.n_steps} "
        f"steps; after steps {where} the value becomes the next bonus number from the list."
    )
    lines: list[str] = []
    hard: list[tuple[int, int]] = []
    pos, x = 0, 0
    for i, label in enumerate(labels):
        k = (i + 1) % 10
        s = (x + k) % 10
        line = f"{label}: {x}+{k}={s}"
        if i in cfg.coded_steps:
            s = bonus[coded.index(i)]
            step = f" bonus {s}"
            start = pos + len(line) + 1  # after the comma
            hard.append((start, start + len(step)))
            line += f",{step}"
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
    cfg = cfg or ToyWorldConfig()
    # disjoint sets need enough distinct questions; 2x leaves room for the duplicates a random draw makes
    if 2 * (n_train + n_test) > cfg.n_questions:
        raise ValueError(f"n_train + n_test = {n_train + n_test} needs at least {2 * (n_train + n_test)} distinct "
                         f"questions, but {len(cfg.coded_steps)} coded steps give {cfg.n_questions} (9 per bonus "
                         "digit): add coded steps or ask for fewer problems")
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
    """Reasoning steps of a toy trace as character spans: each line, with a bonus clause a step of its own."""
    out: list[tuple[int, int]] = []
    pos = 0
    for line in trace.split("\n"):
        comma = line.find(", bonus ")
        cuts = [0, comma + 1, len(line)] if comma >= 0 else [0, len(line)]
        out += [(pos + a, pos + b) for a, b in itertools.pairwise(cuts)]
        pos += len(line) + 1
    return out
