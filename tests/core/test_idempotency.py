"""The task id is a call's idempotency key: a call sent again (its answer lost) runs once."""

from __future__ import annotations

import pytest

import runtime
from runtime.core.api.blocking import current_worker
from runtime.core.submission.pending import PendingTask

pytestmark = pytest.mark.timeout(60)


@runtime.remote
class Counter:
    def __init__(self):
        self.n = 0

    def incr(self):
        self.n += 1
        return self.n

    def value(self):
        return self.n


@runtime.remote(max_retries=0)
def bump(counter):
    return runtime.get(counter.incr.remote())


def test_a_resent_task_is_answered_without_running_again(cluster, monkeypatch):
    worker = current_worker()
    sent = []
    original = worker.submit_task

    def recording(msg, buffers, fn_blob, object_ids, policy=None, **kw):
        sent.append((msg, buffers, fn_blob))
        return original(msg, buffers, fn_blob, object_ids, policy, **kw)

    monkeypatch.setattr(worker, "submit_task", recording)
    counter = Counter.remote()
    assert runtime.get(bump.remote(counter)) == 1
    msg, buffers, _ = sent[0]

    # Send the very same call to the same node again, as a retry after a lost answer would.
    again = worker.new_owned(worker.new_id())

    def resend():
        node = next(n for n, c in worker.conns.items() if msg.fn_id in c.known_functions)
        worker.tasks[msg.task_id] = PendingTask([again.id], node, msg.fn_name)
        worker.conns[node].send(msg, buffers)

    worker.inbox.post(resend)
    assert runtime.get(again, timeout=20) == 1  # the first run's answer
    assert runtime.get(counter.value.remote()) == 1  # and it ran once


def test_creating_the_same_actor_twice_makes_one(cluster, monkeypatch):
    import asyncio

    from runtime.core.api import remote as _remote
    from runtime.core.api import state as _state
    from runtime.core.wire import protocol as p

    worker = current_worker()
    specs = []
    original = _remote.create_in_background

    def recording(w, spec, get_if_exists):
        specs.append(spec)
        return original(w, spec, get_if_exists)

    monkeypatch.setattr(_remote, "create_in_background", recording)
    counter = Counter.remote()
    assert runtime.get(counter.incr.remote()) == 1
    before = len(_state.list_state("actors"))

    async def create_again():  # the request again, as after a lost reply
        return await worker.head_request(p.CreateActor(0, specs[0]))

    loc = asyncio.run_coroutine_threadsafe(create_again(), worker.loop).result(10)
    assert bytes(loc["actor_id"] if isinstance(loc, dict) else loc[0]) == counter._actor_id
    assert len(_state.list_state("actors")) == before
    assert runtime.get(counter.incr.remote()) == 2  # the same instance
