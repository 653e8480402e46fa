"""Queue on a real local mesh: order, bounds, timeouts, blocking waits that end when the
other side acts, async use from an async actor, and the queue shared by tasks."""

from __future__ import annotations

import asyncio
import pickle
import queue
import threading
from typing import Any

import pytest

import runtime
from runtime.exceptions import ActorDiedError
from runtime.util import Empty, Full, Queue

pytestmark = pytest.mark.timeout(60)


def test_items_come_out_in_the_order_they_went_in(cluster: Any) -> None:
    q = Queue()
    for i in range(100):
        q.put(i)
    assert q.qsize() == q.size() == len(q) == 100
    assert [q.get() for _ in range(100)] == list(range(100))
    assert q.empty()
    q.shutdown()


def test_empty_and_full_are_the_standard_library_exceptions(cluster: Any) -> None:
    assert issubclass(Empty, queue.Empty)
    assert issubclass(Full, queue.Full)
    q = Queue(maxsize=1)
    with pytest.raises(queue.Empty):
        q.get_nowait()
    q.put_nowait("a")
    with pytest.raises(queue.Full):
        q.put_nowait("b")
    q.shutdown()


def test_a_bounded_queue_refuses_items_past_maxsize(cluster: Any) -> None:
    q = Queue(maxsize=2)
    assert not q.full()
    q.put(1)
    q.put(2)
    assert q.full()
    with pytest.raises(Full):
        q.put(3, timeout=0.1)
    with pytest.raises(Full):
        q.put(3, block=False)
    with pytest.raises(Full):
        q.put_nowait(3)
    assert [q.get(), q.get()] == [1, 2]
    q.put(3, timeout=0)  # room again: a zero timeout takes it at once
    assert q.get_nowait() == 3
    q.shutdown()


def test_get_on_an_empty_queue_times_out_with_empty(cluster: Any) -> None:
    q = Queue()
    with pytest.raises(Empty):
        q.get(timeout=0.1)
    with pytest.raises(Empty):
        q.get(block=False)
    with pytest.raises(Empty):
        q.get(timeout=0)
    q.shutdown()


@runtime.remote
def take(q: Queue, timeout: float | None = None) -> Any:
    return q.get(timeout=timeout)


@runtime.remote
def give(q: Queue, item: Any) -> None:
    q.put(item)


def test_a_blocking_get_without_timeout_returns_when_an_item_arrives(cluster: Any) -> None:
    q = Queue()
    waiting = take.remote(q)  # q.get() with no timeout, in another process
    ready, _ = runtime.wait([waiting], timeout=0.3)
    assert not ready  # still waiting: nothing was put
    assert q.size() == 0
    q.put("hello")  # the size/put calls ran meanwhile: the wait does not block the actor
    assert runtime.get(waiting, timeout=30) == "hello"
    q.shutdown()


def test_a_blocking_put_on_a_full_queue_returns_when_room_is_made(cluster: Any) -> None:
    q = Queue(maxsize=1)
    q.put("first")
    waiting = give.remote(q, "second")  # blocks: the queue is full
    ready, _ = runtime.wait([waiting], timeout=0.3)
    assert not ready
    assert q.get(timeout=30) == "first"
    runtime.get(waiting, timeout=30)
    assert q.get(timeout=30) == "second"
    q.shutdown()


def test_a_blocking_get_in_a_driver_thread(cluster: Any) -> None:
    q = Queue()
    got: list[Any] = []
    t = threading.Thread(target=lambda: got.append(q.get(timeout=30)))
    t.start()
    q.put(42)
    t.join(30)
    assert got == [42]
    q.shutdown()


def test_batches_go_in_whole_or_not_at_all(cluster: Any) -> None:
    q = Queue(maxsize=3)
    q.put_nowait_batch(x for x in [1, 2])
    with pytest.raises(Full, match="nothing was added"):
        q.put_nowait_batch([3, 4])
    assert q.qsize() == 2
    with pytest.raises(Empty, match="none was taken"):
        q.get_nowait_batch(3)
    assert q.get_nowait_batch(2) == [1, 2]
    assert q.get_nowait_batch(0) == []
    with pytest.raises(TypeError):
        q.put_nowait_batch(5)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        q.get_nowait_batch(-1)
    q.shutdown()


def test_bad_arguments_are_refused_before_any_call(cluster: Any) -> None:
    with pytest.raises(ValueError, match="maxsize"):
        Queue(maxsize=-1)
    q = Queue()
    with pytest.raises(ValueError, match="non-negative"):
        q.put(1, timeout=-1)
    with pytest.raises(ValueError, match="non-negative"):
        q.get(timeout=-1)
    with pytest.raises(TypeError, match="timeout"):
        q.get(timeout="soon")  # type: ignore[arg-type]
    assert q.empty()
    q.shutdown()


@runtime.remote
def producer(q: Queue, n: int) -> int:
    for i in range(n):
        q.put(i)
    q.put(None)  # end of stream
    return n


@runtime.remote
def consumer(q: Queue) -> list[int]:
    out = []
    while (item := q.get(timeout=30)) is not None:
        out.append(item)
    return out


def test_a_producer_and_a_consumer_task_share_a_bounded_queue(cluster: Any) -> None:
    q = Queue(maxsize=4)  # smaller than the stream: the producer waits for the consumer
    n = 50
    consumed = consumer.remote(q)
    produced = producer.remote(q, n)
    assert runtime.get(consumed, timeout=60) == list(range(n))
    assert runtime.get(produced, timeout=60) == n
    q.shutdown()


@runtime.remote
class AsyncUser:
    """An async actor that uses the queue with put_async/get_async on its own loop."""

    async def put_all(self, q: Queue, items: list[Any]) -> None:
        for item in items:
            await q.put_async(item, timeout=30)

    async def get_n(self, q: Queue, n: int) -> list[Any]:
        return [await q.get_async(timeout=30) for _ in range(n)]

    async def get_times_out(self, q: Queue) -> str:
        try:
            await q.get_async(timeout=0.1)
        except Empty:
            return "empty"
        return "got an item"

    async def put_times_out(self, q: Queue) -> str:
        try:
            await q.put_async("x", timeout=0.1)
        except Full:
            return "full"
        return "put"

    async def nowait(self, q: Queue) -> list[str]:
        out = []
        try:
            await q.get_async(block=False)
        except Empty:
            out.append("empty")
        await q.put_async("a", block=False)
        try:
            await q.put_async("b", block=False)
        except Full:
            out.append("full")
        out.append(await q.get_async(block=False))
        return out


def test_async_put_and_get_from_an_async_actor(cluster: Any) -> None:
    q = Queue(maxsize=1)
    user = AsyncUser.remote()
    assert runtime.get(user.get_times_out.remote(q), timeout=30) == "empty"
    assert runtime.get(user.nowait.remote(q), timeout=30) == ["empty", "full", "a"]
    q.put("fill")
    assert runtime.get(user.put_times_out.remote(q), timeout=30) == "full"
    assert q.get() == "fill"
    # a consumer actor waits in get_async while the producer fills a one-slot queue
    reader = AsyncUser.remote()
    got = reader.get_n.remote(q, 20)
    runtime.get(user.put_all.remote(q, list(range(20))), timeout=30)
    assert runtime.get(got, timeout=30) == list(range(20))
    q.shutdown()


def test_put_async_and_get_async_on_the_driver_loop(cluster: Any) -> None:
    q = Queue()

    async def main() -> list[Any]:
        waiter = asyncio.ensure_future(q.get_async(timeout=30))  # may wait for the put below
        await q.put_async(1)
        first = await waiter
        await q.put_async(2)
        second = await q.get_async()
        with pytest.raises(Empty):
            await q.get_async(timeout=0.1)
        return [first, second]

    assert asyncio.run(main()) == [1, 2]
    q.shutdown()


def test_a_queue_pickles_and_its_copies_share_the_actor(cluster: Any) -> None:
    q = Queue(maxsize=5)
    copy = pickle.loads(pickle.dumps(q))
    copy.put("via the copy")
    assert q.get(timeout=30) == "via the copy"
    assert copy.maxsize == 5
    q.shutdown()


def test_an_object_ref_put_in_comes_out_as_the_same_ref(cluster: Any) -> None:
    q = Queue()
    ref = runtime.put([1, 2, 3])
    q.put(ref)
    out = q.get(timeout=30)
    assert isinstance(out, runtime.ObjectRef)
    assert out == ref
    assert runtime.get(out) == [1, 2, 3]
    q.shutdown()


def test_actor_options_reach_the_queue_actor(cluster: Any) -> None:
    q = Queue(actor_options={"name": "util-test-queue", "resources": {"custom": 1}})
    q.put("named")
    same = runtime.get_actor("util-test-queue")
    assert same == q.actor
    assert q.get(timeout=30) == "named"
    q.shutdown()


def test_shutdown_ends_waiting_calls_and_later_calls(cluster: Any) -> None:
    q = Queue()
    waiting = take.remote(q)
    ready, _ = runtime.wait([waiting], timeout=0.2)
    assert not ready
    copy = pickle.loads(pickle.dumps(q))
    q.shutdown()
    q.shutdown()  # twice is harmless
    with pytest.raises(ActorDiedError):
        runtime.get(waiting, timeout=30)
    with pytest.raises(ActorDiedError, match="shut down"):
        q.put(1)
    with pytest.raises(ActorDiedError):
        copy.get(timeout=30)  # another holder: the actor is gone


def test_force_shutdown_kills_the_actor(cluster: Any) -> None:
    q = Queue()
    q.put(1)
    copy = pickle.loads(pickle.dumps(q))
    q.shutdown(force=True)
    with pytest.raises(ActorDiedError):
        copy.get(timeout=30)
