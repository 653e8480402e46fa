"""The calls, tasks and answers of one loop pass to one peer travel in one frame
(``wire.gather``): each caller's order, the resends after a restart, a call that fails alone
and the bound on what is held all stay as they were with one frame per call."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

import runtime
from runtime.core.common.threads import DRAIN_BATCH
from runtime.core.objects.refs import current_worker
from runtime.core.wire import gather as wire_gather
from runtime.core.wire import protocol as p
from runtime.core.wire.gather import LINGER_MOST, LINGER_S, MAX_BATCH, Gather, Linger

from ..actors import PairLog

pytestmark = pytest.mark.timeout(90)


# --- the gather alone ----------------------------------------------------------------------


class Link:
    closed = False

    def __init__(self) -> None:
        self.sent: list[tuple[object, list[object]]] = []

    def send(self, msg: object, buffers: object = ()) -> None:
        self.sent.append((msg, list(buffers)))  # type: ignore[call-overload]


def _call(i: int) -> p.CallActor:
    return p.CallActor(bytes([i]) * 16, b"a" * 16, "m", p.Value(0, b"\x90"), 1, "d", "h:1")


def test_the_first_message_of_a_pass_goes_at_once_and_the_rest_in_one_frame_at_its_end():
    async def main() -> None:
        gather, a, b = Gather(p.CallBatch), Link(), Link()
        calls = [_call(i) for i in range(5)]
        gather.send(a, calls[0], [b"x"])
        gather.send(a, calls[1])
        gather.send(b, calls[2])
        gather.send(a, calls[3], [b"y", b"z"])
        gather.send(b, calls[4])
        assert a.sent == [(calls[0], [b"x"])]
        assert b.sent == [(calls[2], [])]
        await asyncio.sleep(0)  # the pass ends
        assert a.sent[1] == (p.CallBatch([calls[1], calls[3]]), [b"y", b"z"])
        assert b.sent[1] == (calls[4], [])  # one held message goes as itself
        assert (gather.batches, gather.largest) == (1, 2)
        gather.send(a, calls[0])  # a new pass: at once again
        assert a.sent[2] == (calls[0], [])

    asyncio.run(main())


def test_a_flush_sends_what_is_held_before_a_message_that_must_not_overtake_it():
    async def main() -> None:
        gather, a = Gather(p.CallBatch), Link()
        calls = [_call(i) for i in range(3)]
        for call in calls:
            gather.send(a, call)
        gather.flush()
        a.send(p.CancelTask(calls[2].task_id))
        assert [m for m, _ in a.sent] == [
            calls[0],
            p.CallBatch(calls[1:]),
            p.CancelTask(calls[2].task_id),
        ]
        await asyncio.sleep(0)
        assert len(a.sent) == 3  # nothing left to send at the end of the pass

    asyncio.run(main())


def _done(i: int) -> p.TaskDone:
    return p.TaskDone(bytes([i]) * 16, [p.Value(0, b"\x01")])


def test_a_task_answer_with_nothing_under_way_after_it_goes_at_once_with_those_waiting():
    async def main() -> None:
        linger, a, b = Linger(), Link(), Link()
        done = [_done(i) for i in range(4)]
        linger.send(a, done[0], [], more=False)
        assert a.sent == [(done[0], [])]  # alone and nothing under way: at once
        linger.send(a, done[1], [b"x"], more=True)
        linger.send(b, done[2], [], more=True)
        assert len(a.sent) == 1 and b.sent == []  # both wait for what follows
        linger.send(a, done[3], [], more=False)  # the last under way: every answer goes now
        assert a.sent[1] == (p.DoneBatch([done[1], done[3]]), [b"x"])
        assert b.sent == [(done[2], [])]
        linger.send(b, done[0], [], more=True)
        await asyncio.sleep(LINGER_S * 5)  # and none waits longer than LINGER_S
        assert b.sent[1] == (done[0], [])
        assert linger.batches == 1

    asyncio.run(main())


def test_task_answers_wait_together_for_at_most_linger_most():
    async def main() -> None:
        linger, a = Linger(), Link()
        for i in range(LINGER_MOST + 1):
            linger.send(a, _done(i), [], more=True)
        assert [len(m.done) for m, _ in a.sent] == [LINGER_MOST]
        await asyncio.sleep(LINGER_S * 5)
        assert [m.task_id for m, _ in a.sent[1:]] == [_done(LINGER_MOST).task_id]

    asyncio.run(main())


# --- over a real mesh --------------------------------------------------------------------


@runtime.remote(num_cpus=0)
class Log(PairLog):
    def echo(self, x):
        return x

    def total(self, arr):
        return int(arr.sum()), arr * 2

    async def answers_batched(self):
        gather = wire_gather._answers.gather  # this node's loop thread's answers
        return 0 if gather is None else gather.batches


class Unbuildable:
    """Pickles anywhere; raises where it is unpickled."""

    def __reduce__(self):
        return (_explode, ())


def _explode():
    raise ValueError("this argument cannot be rebuilt here")


@runtime.remote(num_cpus=0)
class Caller:
    """Calls from a node's loop thread: every call of one method run goes in one pass."""

    async def flood(self, target, who, n):
        before = current_worker().caller.gather.batches
        out = await asyncio.gather(*[target.add.remote(who, i) for i in range(n)])
        return list(out), current_worker().caller.gather.batches - before

    async def one_bad(self, target, n, bad_at):
        args = [Unbuildable() if i == bad_at else i for i in range(n)]
        refs = [target.echo.remote(a) for a in args]
        out = []
        for ref in refs:
            try:
                out.append(await ref)
            except Exception as exc:
                out.append(f"failed: {exc}")
        return out

    async def arrays(self, target, n):
        refs = [target.total.remote(np.arange(i + 1, dtype=np.int64)) for i in range(n)]
        return [await ref for ref in refs]


def test_each_callers_order_is_kept_when_its_calls_travel_in_batches(cluster):
    log, other = Log.remote(), Caller.remote()
    n = 2_000
    mine_before = current_worker().caller.gather.batches
    theirs = other.flood.remote(log, "actor", n)
    mine = [log.add.remote("driver", i) for i in range(n)]
    assert runtime.get(mine, timeout=60) == list(range(n))
    values, batched = runtime.get(theirs, timeout=60)
    assert values == list(range(n))
    assert batched >= 1  # the caller actor's calls went in batch frames
    assert current_worker().caller.gather.batches > mine_before  # and the driver's
    seen = runtime.get(log.history.remote())
    for who in ("driver", "actor"):
        assert [i for w, i in seen if w == who] == list(range(n))  # each in its own order
    assert runtime.get(log.answers_batched.remote()) >= 1  # answers went in batches too


def test_a_call_whose_arguments_cannot_be_rebuilt_fails_alone_in_its_batch(cluster):
    log, caller = Log.remote(), Caller.remote()
    out = runtime.get(caller.one_bad.remote(log, 50, 20), timeout=60)
    assert out[:20] == list(range(20))
    assert out[21:] == list(range(21, 50))
    assert out[20].startswith("failed:") and "cannot be rebuilt" in out[20]


def test_raw_buffers_of_batched_calls_and_answers_reach_each_their_own_call(cluster):
    log, caller = Log.remote(), Caller.remote()
    out = runtime.get(caller.arrays.remote(log, 40), timeout=60)
    for i, (total, doubled) in enumerate(out):
        assert total == i * (i + 1) // 2
        assert doubled.tolist() == [2 * k for k in range(i + 1)]


def test_batched_tasks_each_get_their_own_result(cluster):
    @runtime.remote(num_cpus=0)
    def square(x):
        return x * x

    before = current_worker().submitter.gather.batches
    assert runtime.get([square.remote(i) for i in range(1_000)], timeout=60) == [
        i * i for i in range(1_000)
    ]
    assert current_worker().submitter.gather.batches > before
    # and one at a time: each answered as soon as it ran (nothing waits with it)
    assert [runtime.get(square.remote(i), timeout=10) for i in range(20)] == [
        i * i for i in range(20)
    ]


def test_a_long_run_of_calls_goes_in_frames_of_at_most_max_batch():
    async def main() -> None:
        gather, a = Gather(p.CallBatch), Link()
        for i in range(2 * MAX_BATCH + 2):
            gather.send(a, _call(i % 256))
        await asyncio.sleep(0)
        sizes = [len(m.calls) if isinstance(m, p.CallBatch) else 1 for m, _ in a.sent]
        assert sizes == [1, MAX_BATCH, MAX_BATCH, 1]

    asyncio.run(main())


def test_a_gather_holds_no_more_than_one_pass_of_a_pipelined_callers_calls(cluster):
    log = Log.remote()
    assert runtime.get(log.echo.remote(0)) == 0  # located: calls go as they are made
    gather = current_worker().caller.gather
    gather.largest = 0
    refs = [log.echo.remote(i) for i in range(20_000)]  # submitted far faster than answered
    assert runtime.get(refs, timeout=90) == list(range(20_000))
    assert 1 < gather.largest <= DRAIN_BATCH  # bounded by the inbox's pass, not the backlog
