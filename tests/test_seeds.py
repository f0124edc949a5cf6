"""splitlib.seeds: the two seed formulas give exactly the values recorded runs were made with."""

from __future__ import annotations

import pytest

from splitlib.seeds import derive_engine_seed, derive_seed


# Values computed with the functions these replaced (evaluate.sample_seed, training.rollout.rollout_seed,
# policies.derive_seed) before they were removed: any change here changes every recorded number.
@pytest.mark.parametrize(("parts", "expected"), [
    ((0, "split", "p0", 0), 1416737121),  # evaluation: run seed, method, problem id, sample
    ((7, "small-only", "aime24-3", 4), 833519651),
    ((123, "r b5", "x|y", 63), 914886922),
    ((0, 0, 0, 0, "What is 1 + 1?"), 651296648),  # rollout: run seed, step, process, generation, question
    ((42, 17, 3, 7, "q"), 1871873423),
])
def test_derive_seed_keeps_the_recorded_values(parts, expected):
    assert derive_seed(*parts) == expected


@pytest.mark.parametrize(("seed", "keys", "expected"), [
    (0, ("seed-5", "small"), 1251950759669111238),  # a backend's sampling seed per (problem key, model)
    (3, ("random_switch", "rollout-9"), 2163777362876537085),  # a policy's generator per (policy, problem key)
])
def test_derive_engine_seed_keeps_the_recorded_values(seed, keys, expected):
    assert derive_engine_seed(seed, *keys) == expected


def test_seeds_are_stable_distinct_and_31_bit():
    grid = [(m, p, s) for m in ("a", "b") for p in ("p0", "p1", "p2", "p3", "p4") for s in range(4)]
    seeds = [derive_seed(7, *k) for k in grid]
    assert seeds == [derive_seed(7, *k) for k in grid]
    assert len(set(seeds)) == len(grid)
    assert all(0 <= s < 2**31 for s in seeds)
    assert derive_seed(8, "a", "p0", 0) != derive_seed(7, "a", "p0", 0)
    assert 0 <= derive_engine_seed(0, "x") < 2**63
