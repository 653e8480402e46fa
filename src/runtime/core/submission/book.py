"""The task submitter's decisions, as a state machine without I/O.

:class:`TaskBook` keeps the calls this process waits on (``tasks``), how many it has on each
node (``load``), where its placement groups' bundles are, and the actors it calls
(:class:`~.actor_state.ActorState`). Events come in as method calls: a task submitted or
placed, an answer (done, failed, sent back by a busy node, unavailable actor), a node lost or
unreachable, a cancel, a lost object. Each returns what to do: a code and the task it is about
(send it again, place it again later, resolve its results, fail it with an error).
:class:`~.tasks.TaskSubmitter` is its shell: it places (over the cluster view), sends, waits
and resolves. ``tests/core/test_submission_state.py`` drives it with tables of events.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from ..common.errors import ErrorCode
from ..common.exceptions import ActorDiedError, NodeDiedError, TaskCancelledError, TaskError
from ..objects import serialization as ser
from ..objects.refs import PENDING, READY, OwnedObject
from ..wire import protocol as p
from .actor_state import ActorState
from .pending import PendingTask, RetryPolicy, TaskRetry, retry_allowed, take_retry

if TYPE_CHECKING:
    from .streaming import StreamState

#: What an answer (:meth:`TaskBook.answered`) means for its task.
DONE = 0  # resolve its results from the answer
FAILED = 1  # resolve its results with the answer's error
RETRY = 2  # a new attempt: pin its arguments and place it again now
SPILL = 3  # a busy node sent it back: place it again a little later
RESEND = 4  # an actor call that did not run: queued again for the actor (locate it)
STREAM_END = 5  # a streaming call ended (with the answer's error, if any)

#: What a cancel (:meth:`TaskBook.cancel`) sends.
CANCEL_HERE = 0  # nothing: the call never went out (or its actor is unknown)
CANCEL_ACTOR = 1  # CancelTask on the actor's connection
CANCEL_NODE = 2  # CancelTask to the node it was sent to

#: Why a task is tried again after it raised (``retry_exceptions``).
RAISED = "it raised an exception and retry_exceptions allows a retry"


class TaskBook:
    """The tasks and actor calls this process waits on, and what each event does to them."""

    def __init__(
        self,
        tasks: dict[bytes, PendingTask],
        load: dict[str, int],
        group_nodes: dict[bytes, list[str]],
        actors: dict[bytes, ActorState],
        owned: dict[bytes, OwnedObject],
    ) -> None:
        self.tasks = tasks
        self.load = load
        self.group_nodes = group_nodes
        self.actors = actors
        self.owned = owned  # the reference table's owned objects (lineage)

    # --- going out ---------------------------------------------------------------------------

    def submitted(  # noqa: PLR0917 -- the hot path: one positional call per task
        self,
        msg: p.SubmitTask,
        buffers: list[memoryview],
        fn_blob: Callable[[], bytes],
        object_ids: Sequence[bytes],
        policy: RetryPolicy | None,
        stream: StreamState | None,
    ) -> PendingTask:
        """A task was submitted: its record (kept whole to try it again, or to place it again
        after a spill; a streaming task is never tried again)."""
        retry = None
        if policy is not None and stream is None:
            retry = TaskRetry(msg, buffers, fn_blob, policy.max_retries, policy.retry_exceptions)
        return PendingTask(object_ids, "", msg.fn_name, retry=retry, stream=stream)

    def placed(self, task: PendingTask, task_id: bytes, node_id: str) -> None:
        """``task`` goes to ``node_id`` (the shell sends it)."""
        task.node_id = node_id
        if task.stream is not None:
            task.stream.node_id = node_id
        self.tasks[task_id] = task
        self.load[node_id] = self.load.get(node_id, 0) + 1

    def waiting(self, task: PendingTask, task_id: bytes) -> None:
        """No node can hold ``task`` now: it waits (listed, cancellable) for one to join."""
        self.tasks[task_id] = task

    def unplaceable(self, task: PendingTask, task_id: bytes) -> None:
        """``task`` can be placed nowhere: it fails (the shell resolves its error)."""
        if self.tasks.get(task_id) is task:
            del self.tasks[task_id]

    # --- coming back -------------------------------------------------------------------------

    def answered(self, task_id: bytes, error: p.Value | None) -> tuple[int, PendingTask] | None:
        """A task or actor call was answered (``error``: None when it succeeded); None when
        it is not waited on (cancelled, or answered twice)."""
        task = self.tasks.pop(task_id, None)
        if task is None:
            return None
        retry = task.retry
        if (
            error is not None
            and retry is not None
            and ser.system_error_code(error) == ErrorCode.NO_ROOM
        ):
            self.load[task.node_id] = self.load.get(task.node_id, 1) - 1
            retry.msg.spills += 1
            return SPILL, task
        actor_id = task.actor_id
        if task.stream is not None:
            if actor_id is None:
                self.load[task.node_id] = self.load.get(task.node_id, 1) - 1
            else:
                state = self.actors.get(actor_id)
                if state is not None:
                    state.inflight.pop(task_id, None)
            return STREAM_END, task
        if actor_id is None:
            self.load[task.node_id] = self.load.get(task.node_id, 1) - 1
        if error is not None:
            if (
                retry is not None
                and retry_allowed(retry.retry_exceptions, error)
                and take_retry(retry, RAISED)
            ):
                return RETRY, task
            if actor_id is not None and ser.system_error_code(error) == ErrorCode.ACTOR_UNAVAILABLE:
                state = self.actors.get(actor_id)
                if state is not None and state.unavailable(task_id, task, self.tasks):
                    return RESEND, task
        if actor_id is not None:
            state = self.actors.get(actor_id)
            if state is not None and state.inflight:  # answered: it is not resent any more
                state.inflight.pop(task_id, None)
                state.retries_left.pop(task_id, None)
        return (DONE if error is None else FAILED), task

    def call_done(self, task_id: bytes, actor_id: bytes) -> None:
        """An actor call (not streaming) was answered with a value: what :meth:`answered`
        does then, for the shell's path of a plain answer (it has checked the record)."""
        del self.tasks[task_id]
        state = self.actors.get(actor_id)
        if state is not None and state.inflight:  # answered: it is not resent any more
            state.inflight.pop(task_id, None)
            state.retries_left.pop(task_id, None)

    def keeps_lineage(self, task: PendingTask, oid: bytes) -> None:
        """A result of ``task`` is stored on a node (``Located``): a retriable task can make
        it again if it is lost."""
        if task.retry is not None:
            entry = self.owned.get(oid)
            if entry is not None:
                entry.lineage = (task.retry, task.object_ids)

    # --- lost ----------------------------------------------------------------------------------

    def node_lost(self, peer: str, again: set[bytes]) -> list[tuple[PendingTask, p.Value | None]]:
        """``peer`` died. Returns its tasks and actor calls (but ``again``: actor calls that go
        again after a restart), each with None when it is tried again (the shell places it),
        else the error its results get."""
        for pg_id, nodes in list(self.group_nodes.items()):
            if peer in nodes:  # its lost bundles are placed again: ask the head anew
                del self.group_nodes[pg_id]
        out: list[tuple[PendingTask, p.Value | None]] = []
        for task_id, task in list(self.tasks.items()):
            if task.node_id != peer or task_id in again:
                continue
            del self.tasks[task_id]
            if task.actor_id is None:
                self.load[peer] = self.load.get(peer, 1) - 1
                if take_retry(task.retry, f"node {peer} died while running it"):
                    out.append((task, None))
                    continue
                err = node_failure(task, f"node {peer} died while running task {task.name}")
            else:
                lost = self.actors.get(task.actor_id)
                restarts = lost is not None and lost.lost_restarts >= 0
                err = ser.system_error_value(
                    ActorDiedError,
                    f"the actor's node {peer} died while the call {task.name} was in flight;"
                    " the call may have run"
                    + ("; the actor restarts for the calls after it" if restarts else ""),
                )
            out.append((task, err))
        return out

    def unreachable(self, task_id: bytes, node_id: str, why: str) -> tuple[int, Any] | None:
        """The node ``task_id`` was placed on could not be reached. Returns (:data:`RETRY`,
        the task) when it is tried again, (:data:`FAILED`, the error) when not (the shell
        answers it with that error); None when it was answered or placed elsewhere meanwhile."""
        task = self.tasks.get(task_id)
        if task is None or task.node_id != node_id:
            return None
        del self.tasks[task_id]
        self.load[node_id] = self.load.get(node_id, 1) - 1
        if take_retry(task.retry, f"node {node_id} could not be reached: {why}"):
            return RETRY, task
        self.tasks[task_id] = task
        self.load[node_id] = self.load.get(node_id, 0) + 1
        return FAILED, node_failure(task, f"cannot reach node {node_id}: {why}")

    def object_lost(self, entry: OwnedObject) -> PendingTask | None:
        """An object this process owns was lost: the task that made it, to run again (its
        sibling results come again too); None when it cannot be made again."""
        if entry.lineage is None:
            return None
        retry, object_ids = entry.lineage
        if retry.retries_left == 0:
            return None
        for oid in object_ids:
            sibling = self.owned.get(oid)
            if sibling is not None and sibling.state == READY and sibling.location is not None:
                sibling.state, sibling.location, sibling.lineage = PENDING, None, None
        task = PendingTask(object_ids, "", retry.msg.fn_name, retry=retry)
        if not take_retry(retry, "an object it made was lost with its node"):
            return None
        return task

    # --- cancel --------------------------------------------------------------------------------

    def cancel(self, task_id: bytes) -> tuple[int, PendingTask] | None:
        """``runtime.cancel``: never tried again; says where to send ``CancelTask``
        (:data:`CANCEL_HERE`, :data:`CANCEL_ACTOR`, :data:`CANCEL_NODE`). None when it already
        finished. The shell then answers it with :meth:`cancelled_error`."""
        task = self.tasks.get(task_id)
        if task is None:
            return None
        task.retry = None  # a cancelled task is never retried
        if task.actor_id is not None:
            state = self.actors.get(task.actor_id)
            if state is None or state.cancel(task_id):
                return CANCEL_HERE, task
            return CANCEL_ACTOR, task
        return (CANCEL_NODE if task.node_id else CANCEL_HERE), task

    @staticmethod
    def cancelled_error(task: PendingTask) -> p.Value:
        """The error a cancelled call's results get."""
        if task.actor_id is None:
            return ser.system_error_value(TaskCancelledError, f"{task.name} was cancelled")
        # As in Ray, `except RayTaskError` catches a cancelled actor call (Ray raises a
        # RayTaskError for a running async one): the error is a TaskError and a
        # TaskCancelledError at once.
        cancelled = TaskCancelledError(f"{task.name} was cancelled")
        text = f"TaskCancelledError: {cancelled}\n"
        return ser.error_value(TaskError(task.name, text, cancelled))


def node_failure(task: PendingTask, what: str) -> p.Value:
    """The error of a task whose node died or could not be reached (with its tries)."""
    tries = len(task.retry.failures or ()) + 1 if task.retry is not None else 1
    if tries > 1:
        what += f" (the task was tried {tries} times; max_retries stops it there)"
    return ser.system_error_value(NodeDiedError, what)
