"""The caller's side of one actor, as a state machine without I/O.

:class:`ActorState` knows where the actor is, the calls waiting for it, and the calls in
flight it may have to send again. Events come in as method calls (a call submitted, the
head's answer of where the actor is, its node unreachable or lost, a call answered
``ACTOR_UNAVAILABLE``, a cancel, a kill); each returns what to do: send now, the calls to send
in order, the tasks to fail, whether to start locating the actor. It does no I/O, holds no
event loop and never touches a connection: the connection (``conn``) is the shell's, kept here
only so the shell finds it with the rest of the actor's state; the machine forgets it when the
actor is lost. :class:`~.actor_calls.ActorCaller` is the shell: it asks the head, connects and
sends. ``tests/core/test_submission_state.py`` drives it with tables of events.
"""

from __future__ import annotations

from collections.abc import Awaitable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from ..common.exceptions import ActorDiedError
from ..objects import serialization as ser
from ..wire import protocol as p
from .pending import PendingTask

if TYPE_CHECKING:
    from .streaming import StreamState

#: What :meth:`ActorState.submit` decided for a call.
SEND = 0  # send it now on the actor's connection
QUEUED = 1  # queued behind earlier calls; the actor is being located already
LOCATE = 2  # queued; start locating the actor (ask the head where it is, connect)
DEAD = 3  # the actor is dead: the call fails with ``state.dead``


class Route(Protocol):
    """The shell's connection to the actor, as the state sees it (opaque: never used here)."""

    closed: bool

    def send(self, msg: Any, buffers: Sequence[Any] = ...) -> None: ...


@dataclass(slots=True)
class ActorState:
    """What this process knows about an actor it calls: where it is, calls waiting to go."""

    actor_id: bytes
    location: p.ActorLocation | None = None
    conn: Route | None = None  # the shell's connection to it (None: not connected)
    queue: list[tuple[p.CallActor, list[memoryview]]] = field(default_factory=list)
    resolving: bool = False
    dead: p.Value | None = None  # why the actor is dead, as the error its calls get
    creating: Awaitable[None] | None = None
    #: Calls sent and not answered, kept while the actor's calls may be retried (in order).
    inflight: dict[bytes, tuple[p.CallActor, list[memoryview], int]] = field(default_factory=dict)
    #: Retries left of calls that were already re-sent once (else max_task_retries).
    retries_left: dict[bytes, int] = field(default_factory=dict)
    #: The restart count of the incarnation we lost: the next one must have a higher one.
    lost_restarts: int = -1
    #: Refs among the constructor's arguments, pinned by the creator while the actor may
    #: (re)start; released once it is out of scope.
    args_refs: list[tuple[bytes, str, str]] = field(default_factory=list)

    # --- calls going out -------------------------------------------------------------------

    def submit(  # noqa: PLR0917 -- the hot path: one positional call per actor call
        self,
        tasks: dict[bytes, PendingTask],
        msg: p.CallActor,
        buffers: list[memoryview],
        object_ids: Sequence[bytes],
        stream: StreamState | None,
        keep: Any,
        connected: bool,
    ) -> int:
        """A call was submitted (``connected``: the shell's connection is open). Records it in
        ``tasks`` and says what to do: :data:`SEND`, :data:`QUEUED`, :data:`LOCATE` or
        :data:`DEAD` (then it is not recorded)."""
        if self.dead is not None:
            return DEAD
        loc = self.location
        node_id = loc.node_id if loc is not None else ""
        tasks[msg.task_id] = PendingTask(
            object_ids, node_id, msg.method, msg.actor_id, None, stream, keep
        )
        if connected and not self.queue:
            msg.actor_id = self.actor_id
            if stream is None and loc is not None and loc.max_restarts != 0:  # track(), inline
                self.inflight[msg.task_id] = (msg, buffers, loc.num_restarts)
            return SEND
        self.queue.append((msg, buffers))
        if self.resolving:
            return QUEUED
        self.resolving = True
        return LOCATE

    def track(self, msg: p.CallActor, buffers: list[memoryview]) -> None:
        """Keep a sent call (and the incarnation it went to) while the actor may restart."""
        loc = self.location
        if loc is not None and loc.max_restarts != 0:
            self.inflight[msg.task_id] = (msg, buffers, loc.num_restarts)

    def requeue(self, msgs: list[tuple[p.CallActor, list[memoryview]]]) -> None:
        """Put calls to send again back in the queue, in submission order."""
        merged = sorted([*msgs, *self.queue], key=lambda item: item[0].task_id)
        self.queue[:] = merged

    def want_locate(self) -> bool:
        """True when calls wait and nobody locates the actor yet (the shell starts to)."""
        if self.queue and not self.resolving:
            self.resolving = True
            return True
        return False

    def connected(
        self, conn: Route, tasks: dict[bytes, PendingTask]
    ) -> list[tuple[p.CallActor, list[memoryview]]]:
        """The shell reached the actor at ``self.location``: the queued calls to send now, in
        order (those cancelled meanwhile are dropped), each tracked for a resend."""
        assert self.location is not None
        self.conn = conn
        node_id = self.location.node_id
        queue, self.queue = self.queue, []
        out: list[tuple[p.CallActor, list[memoryview]]] = []
        for msg, buffers in queue:
            msg.actor_id = self.actor_id
            task = tasks.get(msg.task_id)
            if task is None:
                continue  # cancelled while it waited
            task.node_id = node_id
            if task.stream is None:
                self.track(msg, buffers)
            out.append((msg, buffers))
        return out

    # --- where the actor is ----------------------------------------------------------------

    def needs_location(self) -> bool:
        """Whether to ask the head where the actor is (again): it is not known, not placed
        yet, or still the incarnation that was lost (unless it is dead for good)."""
        loc = self.location
        return self.dead is None and (
            loc is None
            or loc.state == "PENDING"
            or (loc.num_restarts <= self.lost_restarts and loc.state != "DEAD")
        )

    def located(self, loc: p.ActorLocation, lost: int) -> None:
        """The head answered where the actor is, asked for an incarnation past ``lost`` (the
        ``lost_restarts`` of the question): an ALIVE answer not newer means it did not come
        back."""
        self.location = loc
        self.actor_id = loc.actor_id  # an alias (get_if_exists) resolved
        if loc.state == "ALIVE" and loc.num_restarts <= lost:
            self.dead = ser.system_error_value(
                ActorDiedError, "the actor was lost and did not come back in time"
            )

    def target(self) -> p.ActorLocation | None:
        """Where to connect now that the location is settled; None when the actor is dead."""
        loc = self.location
        if self.dead is None and loc is not None and loc.state == "DEAD":
            self.dead = loc.death_error or ser.system_error_value(
                ActorDiedError, loc.death_cause or "the actor is dead"
            )
        return loc if self.dead is None else None

    def unreachable(self, loc: p.ActorLocation) -> bool:
        """The actor's node could not be reached: True when it may restart elsewhere (locate
        it again, past this incarnation); False when it never restarts (it is lost)."""
        if loc.max_restarts == 0:
            return False
        self.lost_restarts, self.location = loc.num_restarts, None
        return True

    def gave_up(self) -> None:
        """Every placement tried in a row was unreachable."""
        if self.dead is None:
            self.dead = ser.system_error_value(
                ActorDiedError, "the actor could not be reached after its restarts"
            )

    def die(self, reason: str) -> None:
        """The actor cannot be reached or created: its calls fail with ``reason``."""
        self.dead = ser.system_error_value(ActorDiedError, reason)

    def kill(self) -> bool:
        """``runtime.kill(no_restart=True)`` from this process: True when this killed it (the
        shell fails the queued calls); later calls fail at once."""
        if self.dead is not None:
            return False
        self.dead = ser.system_error_value(ActorDiedError, "the actor was killed with runtime.kill")
        return True

    def drop_queue(self, tasks: dict[bytes, PendingTask]) -> list[PendingTask]:
        """The queued calls, taken out of ``tasks``, to fail (with ``self.dead``)."""
        queue, self.queue = self.queue, []
        out = []
        for msg, _ in queue:
            task = tasks.pop(msg.task_id, None)
            if task is not None:
                out.append(task)
        return out

    # --- calls coming back, or lost ----------------------------------------------------------

    def unavailable(
        self, task_id: bytes, task: PendingTask, tasks: dict[bytes, PendingTask]
    ) -> bool:
        """A call reached a node its actor had left for a restart: it did not run. True when
        it goes again (to the actor's next placement, in order; the shell locates it)."""
        entry = self.inflight.pop(task_id, None)
        if entry is None:
            return False
        msg, buffers, incarnation = entry
        tasks[task_id] = task
        self.requeue([(msg, buffers)])
        loc = self.location
        if loc is not None and loc.num_restarts <= incarnation:
            self.location, self.conn, self.lost_restarts = None, None, incarnation
        return True

    def node_lost(self, peer: str, tasks: dict[bytes, PendingTask]) -> set[bytes]:
        """The node hosting the actor died. Returns the calls that go again (once it restarts
        elsewhere: first, in order, while they have retries left); the others in flight fail
        (the task submitter fails them). The shell then locates it if :meth:`want_locate`."""
        loc = self.location
        self.conn = None
        if loc is None or loc.max_restarts == 0:
            self.dead = ser.system_error_value(ActorDiedError, f"the actor's node {peer} died")
            return set()
        again: list[tuple[p.CallActor, list[memoryview]]] = []
        for task_id in sorted(self.inflight):  # ids grow with submission order
            msg, buffers, _ = self.inflight.pop(task_id)
            left = self.retries_left.pop(task_id, loc.max_task_retries)
            if left == 0 or task_id not in tasks:
                continue
            self.retries_left[task_id] = left - 1 if left > 0 else left
            again.append((msg, buffers))
        self.requeue(again)
        self.location, self.lost_restarts = None, loc.num_restarts
        return {msg.task_id for msg, _ in again}

    def cancel(self, task_id: bytes) -> bool:
        """A call was cancelled: True when it was still queued (it never goes out); False
        when it was sent (the shell tells the actor to stop it)."""
        for i, (queued, _) in enumerate(self.queue):
            if queued.task_id == task_id:
                del self.queue[i]
                self.inflight.pop(task_id, None)
                return True
        self.inflight.pop(task_id, None)
        return False
