"""How ``decode_many`` keeps two engines busy: the scheduler that steps many problems' loops over batching backends.

Each problem's loop (``loop.ProblemRun.steps``) yields one op at a time. The scheduler submits every problem's next
op to the backend it names and steps the backends in turn. One engine step advances every op in flight on that
engine (vLLM's continuous batching): a hand-off's catch-up prefill, a take-back check's one-pass read and the other
sequences' decode steps share the step, and prefix caching keeps re-read context cheap. So the small engine keeps
stepping the sequences that are not handed off while the big engine serves the ones that are.

Two rules decide what runs when:

- **gang**: a local big engine (in this process, stepped by this thread) is stepped only once it holds at least
  ``gang`` × the active problems' ops, or when nothing else can run. One decode step of a big model costs almost
  the same for one sequence as for many (it reads all its weights either way), so stepping it for every straggler
  would cost a big step per small step; waiting lets hand-offs gather into shared steps. ``gang=0`` steps it
  whenever it holds an op. Who waits changes only when ops run, never what they compute.
- **overlap**: a remote backend (an OpenAI-compatible server: ``remote = True``) works on its own; while a local
  engine has work it is polled without waiting, so the small engine steps on while the server decodes (real
  parallelism: the server has its own devices or cores). Only when no local engine has work does the scheduler
  wait on a server.
"""

from __future__ import annotations

import math
from collections.abc import Generator, Sequence

from splitlib.backends.base import Backend, Done, Op
from splitlib.trace import Trace

# Measured on the toy models (300 problems, random switching at ratio 9, whose big turns fall at random times): the
# big engine took 116 steps at gang 0 and 82 at 0.25 or more, 12-15 % faster; the split policy's toy hand-offs fall
# at the same steps in every problem, so they gather by themselves and gang changes nothing there.
DEFAULT_GANG = 0.25
_REMOTE_WAIT_S = 0.05  # longest wait on one server while another may finish first


def _remote(backend: Backend) -> bool:
    return bool(getattr(backend, "remote", False))


def _poll(backend: Backend, timeout_s: float | None) -> list[Done]:
    """A remote backend's poll waits at most ``timeout_s``; a local engine's poll is one step (or one op)."""
    return backend.poll(timeout_s) if _remote(backend) else backend.poll()


def drive_together(loops: Sequence[Generator[Op, Done, Trace]], small: Backend | None, big: Backend | None,
                   bar, gang: float = DEFAULT_GANG) -> list[Trace]:
    """Run every problem's loop to its ``Trace``; results in the order of ``loops``."""
    if not 0.0 <= gang <= 1.0:
        raise ValueError(f"gang={gang}: expected a fraction of the active problems in [0, 1]")
    backends = list({id(b): b for b in (small, big) if b is not None}.values())
    held = big if (big is not None and big is not small and not _remote(big)) else None  # the gang-stepped engine
    traces: list[Trace | None] = [None] * len(loops)
    waiting: dict[int, int] = {}

    def advance(i: int, done: Done | None) -> None:
        try:
            op = loops[i].send(done)
        except StopIteration as stop:
            traces[i] = stop.value
            bar.update(1)
            return
        waiting[id(op)] = i
        op.session.backend.submit(op)

    for i in range(len(loops)):
        advance(i, None)
    while waiting:
        gathering = held is not None and _gathering(held, backends, len(waiting), gang)
        ready = [b for b in backends if b.pending() and not (gathering and b is held)]
        local_work = any(not _remote(b) for b in ready)
        for backend in ready:
            for done in _poll(backend, 0.0 if local_work else _REMOTE_WAIT_S):
                advance(waiting.pop(id(done.op)), done)
    return traces


def _gathering(held: Backend, backends: list[Backend], active: int, gang: float) -> bool:
    """Whether the held engine should wait for more ops: it has fewer than ``gang`` × ``active`` and another local
    engine (which shares this thread) still has work that may bring it more."""
    if held.pending() >= max(1, math.ceil(gang * active)):
        return False
    return any(b.pending() for b in backends if b is not held and not _remote(b))
