"""splitlib.decoding.schedule: how decode_many keeps two engines busy. The rules (gang, overlap) on recording fakes
that finish each op after a set number of polls; the promise that scheduling never changes the text on real vLLM
engines over 32 toy problems."""

from __future__ import annotations

import os

import pytest

from splitlib.backends.base import Decode, Done
from splitlib.decoding import DecodeConfig, decode, decode_many, schedule
from splitlib.policies import RandomSwitch
from splitlib.toy.world import generate

os.environ.setdefault("HF_HUB_OFFLINE", "1")


class _Session:
    def __init__(self, backend):
        self.backend = backend


class _Engine:
    """Finishes an op ``polls`` polls after it was submitted; records every poll and its timeout."""

    concurrent = True

    def __init__(self, name: str, polls: int = 1, remote: bool = False) -> None:
        self.name, self.polls_needed, self.remote = name, polls, remote
        self.inflight: list[list] = []
        self.log: list[tuple[str, int, float | None]] = []  # (name, ops in flight, timeout) per poll

    def submit(self, op) -> None:
        self.inflight.append([op, self.polls_needed])

    def pending(self) -> int:
        return len(self.inflight)

    def poll(self, timeout_s: float | None = None) -> list[Done]:
        self.log.append((self.name, len(self.inflight), timeout_s))
        for item in self.inflight:
            item[1] -= 1
        done = [Done(op, [1], 0.0) for op, left in self.inflight if left <= 0]
        self.inflight = [item for item in self.inflight if item[1] > 0]
        return done


def _loop(plan: list[tuple[_Engine, int]]):
    """A problem's loop: one op per (engine, tokens) entry, then a trace (here: the list of results)."""
    results = []
    for engine, n in plan:
        done = yield Decode(_Session(engine), n)
        results.append(done.value)
    return results


class _Bar:
    def update(self, n: int) -> None:
        pass


def test_every_loop_finishes_in_order_with_its_own_results():
    small, big = _Engine("small"), _Engine("big", polls=3)
    loops = [_loop([(small, 1), (big, 1), (small, 1)] * (i + 1)) for i in range(5)]
    out = schedule.drive_together(loops, small, big, _Bar(), gang=0.5)
    assert [len(r) for r in out] == [3, 6, 9, 12, 15]


def test_gang_lets_the_big_engine_gather_hand_offs_while_the_small_one_has_work():
    small, big = _Engine("small"), _Engine("big")
    # problem i hands off after i small ops: with gang 1.0 the big engine waits until all four have handed off
    loops = [_loop([(small, 1)] * i + [(big, 1)] + [(small, 1)] * (4 - i)) for i in range(1, 5)]
    schedule.drive_together(loops, small, big, _Bar(), gang=1.0)
    big_polls = [n for name, n, _ in big.log if name == "big"]
    assert big_polls == [4]  # one big step carried every hand-off


def test_without_gang_the_big_engine_steps_for_every_straggler():
    small, big = _Engine("small"), _Engine("big")
    loops = [_loop([(small, 1)] * i + [(big, 1)] + [(small, 1)] * (4 - i)) for i in range(1, 5)]
    schedule.drive_together(loops, small, big, _Bar(), gang=0.0)
    assert len(big.log) > 1 and all(n < 4 for _, n, _ in big.log)  # stepped before every hand-off had come


def test_a_gathering_engine_still_steps_when_nothing_else_can_run():
    small, big = _Engine("small"), _Engine("big")
    loops = [_loop([(big, 1), (small, 1)]), _loop([(small, 1)] * 3)]
    out = schedule.drive_together(loops, small, big, _Bar(), gang=1.0)
    assert [len(r) for r in out] == [2, 3]


def test_a_server_is_polled_without_waiting_while_the_local_engine_has_work():
    small, server = _Engine("small"), _Engine("server", polls=4, remote=True)
    loops = [_loop([(server, 1)]), _loop([(small, 1)] * 6)]
    schedule.drive_together(loops, small, server, _Bar())
    timeouts = [t for name, _, t in server.log if name == "server"]
    steps_small = len(small.log)
    assert steps_small == 6 and timeouts[:4] == [0.0] * 4  # the small engine stepped on meanwhile


def test_only_servers_left_are_waited_on():
    small, server = _Engine("small"), _Engine("server", polls=3, remote=True)
    schedule.drive_together([_loop([(server, 1)])], small, server, _Bar())
    assert [t for _, _, t in server.log] == [schedule._REMOTE_WAIT_S] * 3


def test_gang_outside_zero_to_one_is_refused_by_name():
    small, big = _Engine("small"), _Engine("big")
    with pytest.raises(ValueError, match="gang=1.5"):
        schedule.drive_together([], small, big, _Bar(), gang=1.5)


# -- real engines: scheduling never changes the text ------------------------------------------------------------
@pytest.mark.slow
def test_batched_split_equals_batch1_over_32_problems_at_every_gang():
    from splitlib.backends.testing import shared_vllm, tiny_model_dirs

    dirs = tiny_model_dirs()  # the small model was taught to write <bigmodel> spans
    small, big = shared_vllm(str(dirs["small"])), shared_vllm(str(dirs["big"]))
    questions = [p.question for p in generate(32, seed=5)]
    cfg = DecodeConfig(max_new_tokens=64, big_chunk_tokens=4, max_offload_tokens=24)
    want = [decode(q, small, big, "split", cfg) for q in questions]
    assert sum(t.handoffs for t in want) >= 16  # the tiny small model hands off in most problems
    for gang in (0.0, 1.0):  # never gathering, and gathering every active problem's op
        got = decode_many(questions, small, big, "split", cfg, progress=False, gang=gang)
        assert [t.text for t in got] == [t.text for t in want], gang
        assert [t.handoffs for t in got] == [t.handoffs for t in want], gang
    policy = RandomSwitch(ratio=3.0, chunk=6, seed=2)  # big turns at random times: gang reorders the most here
    want = [decode(q, small, big, policy, cfg) for q in questions[:16]]
    got = decode_many(questions[:16], small, big, policy, cfg, progress=False, gang=1.0)
    assert [t.text for t in got] == [t.text for t in want]
