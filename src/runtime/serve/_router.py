"""Choosing a replica for each request: power of two choices under a per-replica cap.

One :class:`Router` per (event loop, application, deployment) in a process. It learns the
deployment's running replicas from the controller by long poll, never asks the controller
per request, and counts the requests it has in flight on each replica. A request takes the
less busy of two random replicas that are under ``max_ongoing_requests``; when every
replica is full it waits in a FIFO queue of at most ``max_queued_requests``, beyond which it
fails with ``BackPressureError`` (HTTP 503). A freed slot goes straight to the oldest waiter,
so latency grows with the queue, not with the number of clients.

The cap holds across routers: a replica refuses a request beyond its
``max_ongoing_requests`` (``ReplicaFullError``, the request did not run), and the router
then treats that replica as full for a short, growing back-off (5 ms doubling to 100 ms,
reset when one of its requests there ends) and sends the request elsewhere or queues it.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import os
import random
import time
from typing import Any

from runtime.exceptions import ActorDiedError, ActorUnavailableError

from . import _client
from ._exceptions import (
    BackPressureError,
    DeploymentUnavailableError,
    ReplicaDrainingError,
    ReplicaFullError,
)

log = logging.getLogger(__name__)

#: How long a request waits for the first replica list, or for a replica when there is none.
NO_REPLICA_TIMEOUT_S = float(os.environ.get("RUNTIME_SERVE_NO_REPLICA_TIMEOUT_S", "60"))
_QUEUE_REPORT_PERIOD_S = 0.1


class ReplicaSlot:
    """One replica as a router sees it: its handle and this router's requests in flight."""

    __slots__ = ("alive", "backoff", "full_until", "handle", "local", "ongoing", "tag")

    def __init__(self, tag: str, handle: Any, local: bool = False) -> None:
        self.tag = tag
        self.handle = handle
        self.ongoing = 0
        self.alive = True
        #: It runs on the router's own node (a proxy prefers those: no hop to another process).
        self.local = local
        #: When the replica said it was full: skip it until this time.monotonic() (0: not).
        self.full_until = 0.0
        self.backoff = 0.0

    def __repr__(self) -> str:
        return f"ReplicaSlot({self.tag}, ongoing={self.ongoing})"


class Router:
    """Routes the requests of one deployment that are made on one event loop."""

    def __init__(
        self,
        app: str,
        deployment: str,
        loop: asyncio.AbstractEventLoop,
        prefer_local: bool = False,
    ) -> None:
        self.app = app
        self.deployment = deployment
        self.loop = loop
        self.replicas: list[ReplicaSlot] = []
        #: Route to a replica on this router's node while one has room (proxies do, as Ray's
        #: do): the request then stays in one process. ``_local``: those replicas.
        self.prefer_local = prefer_local
        self._node_id = _client.node_id() if prefer_local else ""
        self._local: list[ReplicaSlot] = []
        self.max_ongoing = 5
        self.max_queued = 1000
        self.version = -1
        self._queue: collections.deque[asyncio.Future[ReplicaSlot]] = collections.deque()
        self._ready = asyncio.Event()
        self._missing: str | None = None
        self._id = os.urandom(6).hex()
        self._reporting = False
        self._closed = False
        self._timer: asyncio.TimerHandle | None = None
        #: Refused requests waiting in the queue (outside its bound), until they leave it.
        self._readmitted: set[asyncio.Future[ReplicaSlot]] = set()
        self._dead: collections.deque[str] = collections.deque(maxlen=64)
        #: Multiplexed model id -> tags of replicas that hold it (reported by the replicas
        #: through the controller, and those this router sent the model to).
        self._models: dict[str, set[str]] = {}
        self._sent: collections.OrderedDict[str, set[str]] = collections.OrderedDict()
        # Every task this router starts, referenced until it ends (not garbage collected).
        self._tasks: set[asyncio.Task[Any]] = set()
        self._poller = self._spawn(self._poll())

    def _spawn(self, coro: Any) -> asyncio.Task[Any]:
        task = self.loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # --- the hot path -------------------------------------------------------------------------

    def try_assign(self, model_id: str = "") -> ReplicaSlot | None:
        """A replica with room, taken (its count raised), or None; never waits.

        ``model_id``: prefer a replica that holds this multiplexed model.
        """
        if self._queue:
            return None  # first come, first served
        if model_id:
            slot = self._holder(model_id)
            if slot is not None:
                slot.ongoing += 1
                return slot
        cap = self.max_ongoing
        if self._local and not model_id:  # a model goes where it is, or spreads (below)
            slot = self._local_with_room(cap)
            if slot is not None:
                slot.ongoing += 1
                return slot
        reps = self.replicas
        n = len(reps)
        if n == 0:
            return None
        if n == 1:
            best = reps[0]
            if best.ongoing >= cap or (best.full_until and not _full_expired(best)):
                return None
        else:
            a, b = random.sample(reps, 2)
            best = a if a.ongoing <= b.ongoing else b
            if best.ongoing >= cap or (best.full_until and not _full_expired(best)):
                found = self._least_busy()
                if found is None:
                    return None
                best = found
        best.ongoing += 1
        return best

    def _local_with_room(self, cap: int) -> ReplicaSlot | None:
        """The least busy replica on this node under ``cap`` (and not said to be full)."""
        best = None
        for r in self._local:
            if r.ongoing >= cap or (r.full_until and not _full_expired(r)):
                continue
            if best is None or r.ongoing < best.ongoing:
                best = r
        return best

    def _holder(self, model_id: str) -> ReplicaSlot | None:
        """The least busy replica with room that holds ``model_id``, if any."""
        tags = self._models.get(model_id, set()) | self._sent.get(model_id, set())
        if not tags:
            return None
        cap = self.max_ongoing
        now = time.monotonic()
        best = None
        for r in self.replicas:
            if r.tag not in tags or r.ongoing >= cap or r.full_until > now:
                continue
            if best is None or r.ongoing < best.ongoing:
                best = r
        return best

    def note_model(self, model_id: str, slot: ReplicaSlot) -> None:
        """``model_id`` was sent to ``slot``: it holds (or loads) that model now."""
        tags = self._sent.get(model_id)
        if tags is None:
            tags = self._sent[model_id] = set()
            if len(self._sent) > 4096:
                self._sent.popitem(last=False)
        else:
            self._sent.move_to_end(model_id)
        tags.add(slot.tag)

    def _least_busy(self) -> ReplicaSlot | None:
        cap = self.max_ongoing
        now = time.monotonic()
        best = None
        for r in self.replicas:
            if r.ongoing >= cap or r.full_until > now:
                continue
            if best is None or r.ongoing < best.ongoing:
                best = r
        if best is not None:
            best.full_until = 0.0
        return best

    async def assign(self, *, refused: bool = False, model_id: str = "") -> ReplicaSlot:
        """A replica with room, waiting in the bounded queue if every replica is full.

        ``refused``: the request was admitted before and a full replica sent it back; it
        waits at the head of the queue, whatever the queue's bound. Requests made before
        the controller's first replica list came wait in the same queue, so that they go
        out in the order they came (not after requests made just as the list arrived).
        """
        if self._missing is not None:
            raise DeploymentUnavailableError(self._missing)
        if refused:
            slot = self._least_busy()
            if slot is not None:
                slot.ongoing += 1
                return slot
        else:
            slot = self.try_assign(model_id)
            if slot is not None:
                return slot
        queued = len(self._queue) - len(self._readmitted)
        if not refused and 0 <= self.max_queued <= queued:
            raise self._full(queued)
        fut: asyncio.Future[ReplicaSlot] = self.loop.create_future()
        if refused:
            # Admitted before (this router counted it as running): it takes no queue slot.
            self._queue.appendleft(fut)
            self._readmitted.add(fut)
        else:
            self._queue.append(fut)
        if not self._reporting:
            self._reporting = True
            self._spawn(self._report_queue())
        try:
            if self.replicas:
                return await fut
            async with asyncio.timeout(NO_REPLICA_TIMEOUT_S):
                return await fut
        except TimeoutError:
            if not self._ready.is_set():
                raise DeploymentUnavailableError(
                    f"no replica list for deployment {self.deployment!r} of app {self.app!r} "
                    f"within {NO_REPLICA_TIMEOUT_S} s: is Serve running?"
                ) from None
            raise DeploymentUnavailableError(
                f"no replica of deployment {self.deployment!r} came up within "
                f"{NO_REPLICA_TIMEOUT_S} s"
            ) from None
        except BaseException:
            if fut.done() and not fut.cancelled() and fut.exception() is None:
                self.release(fut.result())  # handed a slot just as we gave up
            else:
                fut.cancel()
                with contextlib.suppress(ValueError):
                    self._queue.remove(fut)
                self._readmitted.discard(fut)
            raise

    def _full(self, queued: int) -> BackPressureError:
        return BackPressureError(
            f"deployment {self.deployment!r} of app {self.app!r} is full: "
            f"{len(self.replicas)} replicas x max_ongoing_requests={self.max_ongoing} busy "
            f"and {queued} requests queued (max_queued_requests={self.max_queued})"
        )

    def _shed(self) -> None:
        """Refuse the newest waiters beyond ``max_queued_requests``: those queued before the
        first replica list told the bound, or before a redeploy lowered it."""
        if self.max_queued < 0:
            return
        excess = len(self._queue) - len(self._readmitted) - self.max_queued
        for fut in reversed(list(self._queue)):
            if excess <= 0:
                break
            if fut in self._readmitted:
                continue
            self._queue.remove(fut)
            excess -= 1
            if not fut.done():
                fut.set_exception(self._full(self.max_queued))

    def release(self, slot: ReplicaSlot, *, ran: bool = True) -> None:
        """A request on ``slot`` ended: hand the slot to the oldest waiter, if any.

        ``ran=False``: the replica refused it (other callers fill it): the slot is marked
        full for a moment (:meth:`replica_full`) and handed to no one, as the replica has
        no room now; the refused request itself goes back to the head of the queue.
        """
        slot.ongoing -= 1
        if not ran:
            self.replica_full(slot)
            return
        if slot.full_until:
            slot.full_until = 0.0  # the replica just ended a request: it has room
            slot.backoff = 0.0
        if self._queue and slot.alive:
            self._hand_over(slot)

    def replica_full(self, slot: ReplicaSlot) -> None:
        """The replica refused a request (other callers fill it): skip it for a moment."""
        slot.backoff = min(max(slot.backoff * 2, 0.005), 0.1)
        slot.full_until = time.monotonic() + slot.backoff
        if self._timer is None:
            self._timer = self.loop.call_later(slot.backoff, self._timer_wake)

    def _timer_wake(self) -> None:
        self._timer = None
        self._wake()
        if self._queue:
            pending = [r.full_until for r in self.replicas if r.full_until]
            if pending:
                delay = max(0.001, min(pending) - time.monotonic())
                self._timer = self.loop.call_later(delay, self._timer_wake)

    def replica_failed(self, slot: ReplicaSlot, exc: BaseException) -> None:
        """A call failed because its replica is gone or going: stop routing to it."""
        if not slot.alive:
            return
        slot.alive = False
        self.replicas = [r for r in self.replicas if r is not slot]
        self._local = [r for r in self._local if r is not slot]
        if is_replica_gone(exc):
            # Until the controller hears of it, its lists still name this replica.
            self._dead.append(slot.tag)
        if not is_retryable(exc):
            self._spawn(self._report_dead(slot.tag))

    # --- queue and replica list ---------------------------------------------------------------

    def _hand_over(self, slot: ReplicaSlot) -> None:
        while self._queue and slot.ongoing < self.max_ongoing:
            fut = self._pop()
            if fut.done():
                continue
            slot.ongoing += 1
            fut.set_result(slot)

    def _pop(self) -> asyncio.Future[ReplicaSlot]:
        """The oldest waiter, out of the queue (a readmitted one stops counting as such the
        moment it leaves, not when its task next runs)."""
        fut = self._queue.popleft()
        self._readmitted.discard(fut)
        return fut

    def _wake(self) -> None:
        while self._queue:
            best = self._least_busy()
            if best is None:
                return
            fut = self._pop()
            if fut.done():
                continue
            best.ongoing += 1
            fut.set_result(best)

    def update(self, info: dict[str, Any] | None) -> None:
        """Take a new replica list from the controller (None: the deployment is gone)."""
        if info is None:
            self._missing = (
                f"deployment {self.deployment!r} of app {self.app!r} does not exist "
                "(it was deleted, or never deployed)"
            )
            self.replicas = []
            self._local = []
            for fut in self._queue:
                if not fut.done():
                    fut.set_exception(DeploymentUnavailableError(self._missing))
            self._queue.clear()
            self._readmitted.clear()
        else:
            self._missing = None
            self.max_ongoing = info["max_ongoing_requests"]
            self.max_queued = info["max_queued_requests"]
            old = {r.tag: r for r in self.replicas}
            nodes = info.get("nodes", {})
            new = []
            for tag, handle in info["replicas"]:
                if tag in self._dead:
                    continue
                slot = old.pop(tag, None)
                if slot is None:
                    local = self.prefer_local and nodes.get(tag) == self._node_id
                    slot = ReplicaSlot(tag, handle, local)
                new.append(slot)
            for gone in old.values():
                gone.alive = False
            self.replicas = new
            self._local = [r for r in new if r.local]
            models: dict[str, set[str]] = {}
            for tag, ids in info.get("models", {}).items():
                for model_id in ids:
                    models.setdefault(model_id, set()).add(tag)
            self._models = models
            if old:  # replicas gone: forget that this router sent them models
                for tags in self._sent.values():
                    tags.difference_update(old)
            self._wake()
            self._shed()
        self._ready.set()

    async def _poll(self) -> None:
        """Follow the controller's replica list for this deployment (long poll)."""
        key = f"replicas:{self.app}:{self.deployment}"
        delay = 0.05
        while not self._closed:
            try:
                controller = await _client.controller_async()
                version, info = await controller.listen.remote(key, self.version)
                delay = 0.05
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.debug("serve router %s: long poll failed: %r", key, exc)
                if isinstance(exc, ValueError):  # no controller by that name (yet)
                    _client.forget_controller()
                await asyncio.sleep(delay)
                delay = min(delay * 2, 1.0)
                continue
            if version != self.version:
                self.version = version
                self.update(info)

    async def _report_queue(self) -> None:
        """While requests wait, tell the controller how many (autoscaling, scale from zero)."""
        try:
            controller = await _client.controller_async()
            while self._queue and not self._closed:
                await controller.record_queued.remote(
                    self.app, self.deployment, self._id, len(self._queue)
                )
                await asyncio.sleep(_QUEUE_REPORT_PERIOD_S)
            await controller.record_queued.remote(self.app, self.deployment, self._id, 0)
        except Exception as exc:
            log.debug("serve router: queue report failed: %r", exc)
        finally:
            self._reporting = False

    async def _report_dead(self, tag: str) -> None:
        try:
            controller = await _client.controller_async()
            await controller.report_dead_replica.remote(self.app, self.deployment, tag)
        except Exception as exc:
            log.debug("serve router: dead replica report failed: %r", exc)

    def close(self) -> None:
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for task in list(self._tasks):
            task.cancel()
        for fut in self._queue:
            if not fut.done():
                fut.set_exception(DeploymentUnavailableError("Serve was shut down"))
        self._queue.clear()
        self._readmitted.clear()


def _full_expired(slot: ReplicaSlot) -> bool:
    if time.monotonic() >= slot.full_until:
        slot.full_until = 0.0
        return True
    return False


def is_retryable(exc: BaseException) -> bool:
    """Whether the request never ran because its replica was shutting down (send it again)."""
    return isinstance(exc, ReplicaDrainingError)


#: How many times a request is sent again after its replica died (before it started, or,
#: for an idempotent request, at any point).
RETRIES = 3
#: How many draining replicas may refuse one request: each refusal also drops that replica
#: from the router's list (routers hear of a replica's stop a little after it starts
#: refusing, e.g. just after a redeploy), so this bounds only a pathological case.
DRAIN_RETRIES = 16


class Retries:
    """One request's budget of re-sends after a failed attempt."""

    __slots__ = ("died", "drained")

    def __init__(self) -> None:
        self.died = 0
        self.drained = 0

    def again(self, exc: BaseException, *, idempotent: bool = False) -> bool:
        """Whether to send the request again after ``exc``: it surely did not run (a
        draining replica refused it, or its replica was dead before it got there), or it
        may have run but is ``idempotent`` and its replica is gone."""
        if isinstance(exc, ReplicaDrainingError):
            self.drained += 1
            return self.drained <= DRAIN_RETRIES
        if did_not_run(exc) or (idempotent and is_replica_gone(exc)):
            self.died += 1
            return self.died <= RETRIES
        return False


def did_not_run(exc: BaseException) -> bool:
    """Whether the request surely never started on its replica, so sending it again is safe.

    A draining or full replica refused it, or the replica was dead before the call reached
    it (core's ``ActorDiedError`` says "the call may have run" when the call was in flight).
    """
    if isinstance(exc, ReplicaDrainingError | ReplicaFullError):
        return True
    return isinstance(exc, ActorDiedError) and "may have run" not in str(exc)


def is_replica_gone(exc: BaseException) -> bool:
    """Whether a call failed because its replica (or the replica's node) is gone."""
    return isinstance(exc, ActorDiedError | ActorUnavailableError)


# --- one router per (loop, app, deployment) -------------------------------------------------

_routers: dict[tuple[int, str, str, bool], tuple[int, Router]] = {}


def get_router(
    app: str, deployment: str, loop: asyncio.AbstractEventLoop, prefer_local: bool = False
) -> Router:
    """The router for this deployment on ``loop`` (call on ``loop``); ``prefer_local``: one
    that sends requests to a replica on this node while one has room (the proxies' own)."""
    key = (id(loop), app, deployment, prefer_local)
    entry = _routers.get(key)
    if entry is not None:
        gen, router = entry
        if gen == _client.generation and router.loop is loop and not loop.is_closed():
            return router
        router.close()
    router = Router(app, deployment, loop, prefer_local)
    _routers[key] = (_client.generation, router)
    return router


def close_routers() -> None:
    """Stop every router of this process (on serve.shutdown)."""
    for _, router in list(_routers.values()):
        if router.loop.is_closed():
            continue
        try:
            if _client.running_loop() is router.loop:
                router.close()
            else:
                router.loop.call_soon_threadsafe(router.close)
        except RuntimeError:
            pass
    _routers.clear()
