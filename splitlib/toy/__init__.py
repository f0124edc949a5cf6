"""The toy world: problems, traces, tokenizer and small/big causal LMs that train on 2 CPU cores.

Why this world has a real small/big gap: every easy step is local (copy a digit from a fixed offset
inside the trace, add two digits mod 10), which a 1-layer transformer can learn; every hard step is a
key->value retrieval from a table in the problem statement, which needs an induction circuit (a
previous-token head composed with a content-matching head) and therefore at least two layers.
The small model has one layer, the big model several, so the small model fails exactly on the hard steps.
"""

from splitlib.toy.world import Problem, ToyWorldConfig, generate, generate_split

__all__ = ["Problem", "ToyWorldConfig", "generate", "generate_split"]
