"""A fixed pool of actors that work through many values, one call per idle actor.

``ActorPool`` follows ``ray.util.ActorPool``: ``submit(fn, value)`` calls ``fn(actor,
value)`` on an idle actor (``fn`` returns the call's ObjectRef) or queues the value until an
actor is free; ``get_next`` returns results in submission order, ``get_next_unordered`` in
completion order; ``map``/``map_unordered`` do both over a list. An actor is busy from the
call until its result is taken from the pool; taking a result hands the actor the next
queued value. The pool lives in the caller (a driver, a task, or a sync actor method); its
waits are ``runtime.wait``/``runtime.get``, so it is for sync code.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

import runtime
from runtime.exceptions import ActorDiedError, GetTimeoutError

__all__ = ["ActorPool"]

V = TypeVar("V")

#: ``fn(actor, value)``: start one call on ``actor`` and return its ObjectRef (or a list of
#: refs, for a method with several returns).
PoolFn = Callable[[runtime.ActorHandle[Any], V], Any]


class ActorPool:
    """Run many values through a fixed set of actors, one call per actor at a time.

    Args:
        actors: the actor handles to use (distinct); more can be added with :meth:`push`.

    Raises:
        TypeError: an element of ``actors`` is not an ActorHandle.
        ValueError: the same actor appears twice.

    Example::

        @runtime.remote
        class Doubler:
            def double(self, v):
                return 2 * v

        pool = ActorPool([Doubler.remote(), Doubler.remote()])
        assert list(pool.map(lambda a, v: a.double.remote(v), [1, 2, 3])) == [2, 4, 6]
    """

    def __init__(self, actors: Iterable[runtime.ActorHandle[Any]]) -> None:
        idle = list(actors)
        for actor in idle:
            _check_actor(actor)
        if len(set(idle)) != len(idle):
            raise ValueError("ActorPool got the same actor twice; pass distinct actors")
        self._idle_actors: list[runtime.ActorHandle[Any]] = idle
        # key (the call's first ref) -> (submission index, actor, what fn returned)
        self._future_to_actor: dict[runtime.ObjectRef[Any], tuple[int, Any, Any]] = {}
        self._index_to_key: dict[int, runtime.ObjectRef[Any]] = {}
        self._next_task_index = 0
        self._next_return_index = 0
        self._pending_submits: deque[tuple[PoolFn[Any], Any]] = deque()

    # --- map ----------------------------------------------------------------------------------

    def map(self, fn: PoolFn[V], values: Iterable[V]) -> Iterator[Any]:
        """Apply ``fn`` over ``values`` on the actors; iterate the results in ``values``' order.

        Results not yet taken from earlier submissions are dropped first (as in Ray). The
        work runs as the iterator is consumed: iterate it to the end.

        Args:
            fn: ``fn(actor, value) -> ObjectRef``; the actor is busy until its result is taken.
            values: the values to process.

        Raises (while iterating):
            the error of a failed call (a TaskError that is also the original type).
        """
        self._drain(ordered=True)
        for v in values:
            self.submit(fn, v)

        def results() -> Iterator[Any]:
            while self.has_next():
                yield self.get_next()

        return results()

    def map_unordered(self, fn: PoolFn[V], values: Iterable[V]) -> Iterator[Any]:
        """As :meth:`map`, but yield each result as soon as it is ready."""
        self._drain(ordered=False)
        for v in values:
            self.submit(fn, v)

        def results() -> Iterator[Any]:
            while self.has_next():
                yield self.get_next_unordered()

        return results()

    def _drain(self, ordered: bool) -> None:
        """Drop the results of earlier submissions, ready or not (Ray's map does this)."""
        while self._future_to_actor:
            try:
                if ordered:
                    self.get_next(timeout=0, ignore_if_timedout=True)
                else:
                    self.get_next_unordered(timeout=0, ignore_if_timedout=True)
            except Exception:  # a dropped result's error or timeout is not ours to raise
                pass
        self._pending_submits.clear()

    # --- submit and take ----------------------------------------------------------------------

    def submit(self, fn: PoolFn[V], value: V) -> None:
        """Run ``fn(actor, value)`` on an idle actor now, or queue it until one is free.

        Take its result with :meth:`get_next` or :meth:`get_next_unordered`.

        Raises:
            TypeError: ``fn`` is not callable, or returned something other than an ObjectRef
                (or a non-empty list of them).
            ValueError: the pool has no actors at all (nothing could ever run it).
        """
        if not callable(fn):
            raise TypeError(f"submit takes a callable fn(actor, value), got {type(fn).__name__}")
        if self._idle_actors:
            actor = self._idle_actors.pop()
            try:
                out = fn(actor, value)
                key = _key_of(out)
            except BaseException:
                self._idle_actors.append(actor)
                raise
            self._future_to_actor[key] = (self._next_task_index, actor, out)
            self._index_to_key[self._next_task_index] = key
            self._next_task_index += 1
        elif self._future_to_actor:
            self._pending_submits.append((fn, value))
        else:
            raise ValueError("the ActorPool has no actors; push() an actor before submitting")

    def has_next(self) -> bool:
        """Whether results are still to be taken (submitted, running or queued)."""
        return bool(self._future_to_actor) or bool(self._pending_submits)

    def get_next(self, timeout: float | None = None, ignore_if_timedout: bool = False) -> Any:
        """The next result in submission order, waiting for it.

        Args:
            timeout: seconds to wait at most; None waits until it is ready.
            ignore_if_timedout: on timeout, skip that submission for good (its actor goes
                back to the pool) before raising, instead of leaving it next in line.

        Raises:
            StopIteration: nothing is left to take (as in Ray).
            GetTimeoutError: (a TimeoutError) the result was not ready within ``timeout``.
            ValueError: called after :meth:`get_next_unordered` took results out of order.
            the error of the call itself (a TaskError, also an instance of the original type).
        """
        self._check_has_next()
        if self._next_return_index >= self._next_task_index:
            raise ValueError("get_next() cannot be called after get_next_unordered()")
        key = self._index_to_key[self._next_return_index]
        timed_out = False
        if timeout is not None:
            ready, _ = runtime.wait([key], timeout=timeout)
            if not ready:
                if not ignore_if_timedout:
                    raise GetTimeoutError(f"the next result was not ready within {timeout} s")
                timed_out = True
        del self._index_to_key[self._next_return_index]
        self._next_return_index += 1
        _, actor, out = self._future_to_actor.pop(key)
        if timed_out:
            self._return_actor(actor)
            raise GetTimeoutError(
                f"the next result was not ready within {timeout} s; its task ({key}) is ignored"
            )
        return self._get_result(out, actor)

    def get_next_unordered(
        self, timeout: float | None = None, ignore_if_timedout: bool = False
    ) -> Any:
        """The first result to be ready, whatever its submission order.

        Args:
            timeout: seconds to wait at most; None waits until one is ready.
            ignore_if_timedout: on timeout, skip the oldest submission for good (its actor
                goes back to the pool) before raising.

        Raises:
            StopIteration: nothing is left to take.
            GetTimeoutError: (a TimeoutError) no result was ready within ``timeout``.
            the error of the call itself (a TaskError, also an instance of the original type).
        """
        self._check_has_next()
        keys = list(self._future_to_actor)
        ready, _ = runtime.wait(keys, num_returns=1, timeout=timeout)
        if ready:
            key = ready[0]
        elif ignore_if_timedout:
            key = keys[0]
        else:
            raise GetTimeoutError(f"no result was ready within {timeout} s")
        index, actor, out = self._future_to_actor.pop(key)
        del self._index_to_key[index]
        self._next_return_index = max(self._next_return_index, index + 1)
        if not ready:
            self._return_actor(actor)
            raise GetTimeoutError(
                f"no result was ready within {timeout} s; the task ({key}) is ignored"
            )
        return self._get_result(out, actor)

    def _check_has_next(self) -> None:
        if self._future_to_actor:
            return
        if self._pending_submits:
            raise RuntimeError(
                f"{len(self._pending_submits)} submissions wait for an actor, but the pool "
                "has none left (they died or were popped): push() an actor to run them"
            )
        raise StopIteration("no more results to get")

    def _get_result(self, out: Any, actor: runtime.ActorHandle[Any]) -> Any:
        alive = True
        try:
            return runtime.get(out)
        except ActorDiedError:
            alive = False  # a dead actor leaves the pool, or submit would keep picking it
            raise
        finally:
            self._return_actor(actor, alive)

    def _return_actor(self, actor: runtime.ActorHandle[Any], alive: bool = True) -> None:
        if alive:
            self._idle_actors.append(actor)
        while self._pending_submits and self._idle_actors:
            fn, value = self._pending_submits.popleft()
            self.submit(fn, value)

    # --- the actors ---------------------------------------------------------------------------

    def has_free(self) -> bool:
        """Whether an actor is idle and no submission is waiting for one."""
        return bool(self._idle_actors) and not self._pending_submits

    def pop_idle(self) -> runtime.ActorHandle[Any] | None:
        """Remove an idle actor from the pool and return it; None if none is free."""
        if self.has_free():
            return self._idle_actors.pop()
        return None

    def push(self, actor: runtime.ActorHandle[Any]) -> None:
        """Add an actor to the pool; it takes a waiting submission at once, if any.

        Raises:
            TypeError: ``actor`` is not an ActorHandle.
            ValueError: the actor is already in the pool.
        """
        _check_actor(actor)
        busy = [a for _, a, _ in self._future_to_actor.values()]
        if actor in self._idle_actors or actor in busy:
            raise ValueError(f"{actor!r} already belongs to this ActorPool")
        self._return_actor(actor)


def _check_actor(actor: object) -> None:
    if not isinstance(actor, runtime.ActorHandle):
        raise TypeError(f"ActorPool takes actor handles, got {type(actor).__name__}")


def _key_of(out: object) -> runtime.ObjectRef[Any]:
    """The ref that stands for a call: the ref itself, or the first of a list of them (the
    returns of one actor call become ready together)."""
    if isinstance(out, runtime.ObjectRef):
        return out
    if isinstance(out, list | tuple) and out and all(isinstance(r, runtime.ObjectRef) for r in out):
        return out[0]
    raise TypeError(
        "the function given to ActorPool must return the ObjectRef of the call it started "
        f"(e.g. lambda a, v: a.method.remote(v)), got {type(out).__name__}"
    )
