"""Synthetic arithmetic word problems with integer answers, and DeepSeek-R1-style reasoning traces for them.

Every problem is two arithmetic steps over seeded numbers (products, sums, differences, an exact division), so
``splitlib.grading`` (math-verify) grades answers to them like any competition answer. A trace reads like a
DeepSeek-R1 generation in OpenR1-Math-220k: ``<think>\\n`` … ``\\n</think>\\n\\n`` then a short summary ending in
``\\boxed{N}``; it is always longer than 1,024 characters (the paper keeps only longer traces, PAPER_FACTS §4) and
always contains ``CHECK_SENTENCE``, the sentence the hand-wired annotator stand-in quotes (``annotator``).
``hard_spans`` are the character spans of the steps a stand-in annotation marks (the key multiplication and the
check), so the annotated data sets have spans that sit on real text.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

# The sentence every trace contains and the annotator stand-in quotes as its only snippet.
CHECK_SENTENCE = "Let me double-check this result by working backwards."
MIN_TRACE_CHARS = 1025  # the paper keeps traces longer than 1,024 characters


@dataclass(frozen=True)
class Problem:
    """One problem: statement, the integer answer, a worked solution, and the numbers of its two steps."""

    question: str
    answer: int
    solution: str  # a short worked solution ending in \boxed{answer} (the data sets' ``solution`` column)
    steps: tuple[tuple[str, int, int, int], ...]  # (operator, left, right, result) per step, in order
    topic: str  # "Prealgebra" / "Algebra" / "Number Theory": MATH-500's ``subject`` and OpenR1's ``problem_type``


@dataclass(frozen=True)
class Trace:
    """A DeepSeek-R1-style generation for a problem; ``hard_spans`` are character spans inside ``text``."""

    text: str
    boxed: int  # the answer the trace writes in \boxed{} (differs from the problem's when ``slip`` was set)
    hard_spans: tuple[tuple[int, int], ...]


_OPS: dict[str, Callable[[int, int], int]] = {
    "+": lambda a, b: a + b, "-": lambda a, b: a - b, "*": lambda a, b: a * b, "/": lambda a, b: a // b}
_SIGN = {"+": "+", "-": "-", "*": "\\times", "/": "\\div"}
_WORD = {"+": "plus", "-": "minus", "*": "times", "/": "divided by"}
_PLAIN = {"+": "+", "-": "-", "*": "×", "/": "÷"}


def _bakery(rng: random.Random) -> tuple[str, tuple]:
    a, b = rng.randint(12, 48), rng.randint(12, 36)
    c = rng.randint(10, a * b - 10)
    text = (f"A bakery bakes {a} trays of muffins with {b} muffins on each tray. It sells {c} muffins in the "
            "morning. How many muffins are left?")
    return text, (("*", a, b), ("-", None, c))


def _library(rng: random.Random) -> tuple[str, tuple]:
    a, b, c = rng.randint(11, 39), rng.randint(14, 45), rng.randint(20, 400)
    text = (f"A library has {a} shelves, and each shelf holds {b} books. The library then receives {c} new "
            "books. How many books does the library have now?")
    return text, (("*", a, b), ("+", None, c))


def _school(rng: random.Random) -> tuple[str, tuple]:
    c = rng.randint(3, 12)
    b = rng.randint(12, 30)
    a = c * rng.randint(2, 9)
    text = (f"A school buys {a} boxes of pencils with {b} pencils in each box and shares all the pencils equally "
            f"among {c} classes. How many pencils does each class receive?")
    return text, (("*", a, b), ("/", None, c))


def _stadium(rng: random.Random) -> tuple[str, tuple]:
    a, b, c = rng.randint(13, 41), rng.randint(11, 29), rng.randint(15, 300)
    text = (f"A stadium has {a} rows with {b} seats in each row, and it also has {c} standing places. How many "
            "people can the stadium hold?")
    return text, (("*", a, b), ("+", None, c))


_TEMPLATES = (_bakery, _library, _school, _stadium)
_TOPICS = ("Prealgebra", "Algebra", "Number Theory")


def make_problem(rng: random.Random) -> Problem:
    """A seeded two-step problem (the second step uses the first step's result)."""
    template = _TEMPLATES[rng.randrange(len(_TEMPLATES))]
    text, ops = template(rng)
    (op1, a, b), (op2, _, c) = ops
    first = _OPS[op1](a, b)
    second = _OPS[op2](first, c)
    steps = ((op1, a, b, first), (op2, first, c, second))
    solution = (f"First compute ${a} {_SIGN[op1]} {b} = {first}$. Then ${first} {_SIGN[op2]} {c} = {second}$. "
                f"The answer is $\\boxed{{{second}}}$.")
    return Problem(question=text, answer=second, solution=solution, steps=steps, topic=rng.choice(_TOPICS))


def make_problems(n: int, rng: random.Random, *, max_answer: int | None = None,
                  exclude: set[str] | None = None) -> list[Problem]:
    """``n`` problems with distinct statements (none in ``exclude``), answers at most ``max_answer``."""
    out: list[Problem] = []
    seen: set[str] = set(exclude or ())
    while len(out) < n:
        p = make_problem(rng)
        if p.question not in seen and (max_answer is None or p.answer <= max_answer):
            seen.add(p.question)
            out.append(p)
    return out


def _split_product(a: int, b: int) -> str:
    tens, units = b - b % 10, b % 10
    if units == 0:
        return f"To be careful: {b} is {b // 10} tens, so {a} times {b} is {a * (b // 10)} tens, which is {a * b}."
    return (f"To be careful, I can split {b} into {tens} and {units}: {a} times {tens} is {a * tens}, and {a} "
            f"times {units} is {a * units}. Adding those gives {a * tens} + {a * units} = {a * b}.")


def _inverse(op: str, result: int, right: int) -> str:
    """Undo the second step: "If I add 12 back to 30, I get 42." """
    undo = {"-": ("add", "back to", "+"), "+": ("take", "away from", "-"), "/": ("multiply", "by", "*"),
            "*": ("divide", "by", "/")}[op]
    if op in "/*":
        return f"If I {undo[0]} {result} {undo[1]} {right}, I get {_OPS[undo[2]](result, right)}."
    return f"If I {undo[0]} {right} {undo[1]} {result}, I get {_OPS[undo[2]](result, right)}."


_OPENERS = ("Okay, so I need to solve this problem. Let me read it again carefully.",
            "Alright, let me work through this problem step by step. Here it is again.")


def make_trace(problem: Problem, slip: int = 0, variant: int = 0) -> Trace:
    """The trace for ``problem``; ``slip`` adds an arithmetic slip to the last step (a wrong final answer);
    ``variant`` picks the opening sentence (a problem's generations differ)."""
    (op1, a, b, first), (op2, _, c, second) = problem.steps
    final = second + slip
    parts: list[str] = [
        "<think>\n",
        f"{_OPENERS[variant % len(_OPENERS)]} {problem.question}\n\n",
        (f"Alright, the problem gives two numbers to combine first, {a} and {b}, and then one more number, {c}. "
         "I should work out the first quantity and then use it for the second step.\n\n"),
    ]
    hard_start = sum(map(len, parts))
    parts.append(f"First, the total from the first part is {a} {_WORD[op1]} {b}. Let me compute that: "
                 f"{a} × {b} = {first}.")
    hard = [(hard_start, sum(map(len, parts)))]
    parts.append(f" {_split_product(a, b)} So the first quantity is {first}.\n\n")
    parts.append(f"Next, I need {first} {_WORD[op2]} {c}. That is {first} {_PLAIN[op2]} {c} = {final}.\n\n")
    check_start = sum(map(len, parts))
    parts.append(f"{CHECK_SENTENCE} {_inverse(op2, final, c)}")
    hard.append((check_start, sum(map(len, parts))))
    parts.append(f" That matches the first quantity, {first}, so the second step looks right. The first step also "
                 f"checks out, because {first} divided by {b} gives back {a}.\n\n")
    parts.append("Hmm, is there any other way to read the problem? I don't think so: every number in the statement "
                 "has been used exactly once, and the question asks for a single whole number, which is what I "
                 f"found. So the answer should be {final}.\n</think>\n\n")
    parts.append(f"To solve the problem, we combine the quantities step by step.\n\n1. First step: ${a} {_SIGN[op1]} "
                 f"{b} = {first}$.\n2. Second step: ${first} {_SIGN[op2]} {c} = {final}$.\n\nThe answer is "
                 f"\\boxed{{{final}}}.")
    text = "".join(parts)
    if len(text) < MIN_TRACE_CHARS:
        raise AssertionError(f"trace of {len(text)} characters; the stand-ins need more than {MIN_TRACE_CHARS - 1}")
    return Trace(text=text, boxed=final, hard_spans=tuple(hard))
