"""One call prepared in the caller's thread: its arguments serialized, its task id, the ids
and refs of its results, and what ``.remote()`` hands back.

This is the caller's per-call path (``f.remote()``, ``actor.method.remote()``), so it makes
as few objects as it can: a call with one return (nearly all) gets its result id by appending
a constant to the task id and one ref, with no list of refs made and dropped; a call without
arguments shares one serialized value; a value without buffers or nested refs shares one
empty list for both.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..common.context import current_task
from ..objects import serialization as ser
from ..objects.refs import NO_BUFFERS, ObjectRef, return_id
from ..submission.streaming import ObjectRefGenerator, StreamState
from ..wire import protocol as p

#: ``return_id(task_id, 0)``'s suffix: the first (most often the only) result's id.
FIRST = return_id(b"", 0)
#: The arguments of a call without any (``serialize_args((), {})``), with shared empty lists.
NO_ARGS = ser.serialize_args((), {})[0]
NO_ARGS.bufs = NO_ARGS.refs = NO_BUFFERS
#: How many child task ids a running task keeps for a recursive cancel before it drops the
#: finished ones.
_CHILDREN_MAX = 1024


def call_args(
    worker: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> tuple[p.Value, list[memoryview]]:
    """A call's arguments serialized (their refs pinned until the callee has run)."""
    if not args and not kwargs:  # one value shared by every such call, never mutated
        return NO_ARGS, NO_BUFFERS
    value, buffers = ser.serialize_args(args, kwargs)
    if not buffers:  # kept with the pending call (for a retry): share the empty lists
        buffers = value.bufs = NO_BUFFERS
    if value.refs:
        worker.refs.pin(value.refs)  # held until the callee has run
    else:
        value.refs = NO_BUFFERS
    return value, buffers


def add_child(parent: Any, worker: Any, task_id: bytes) -> None:
    """``task_id`` is cancelled with the running task ``parent`` (``recursive=True``)."""
    children = parent.children
    if len(children) >= _CHILDREN_MAX:
        children[:] = [c for c in children if c in worker.tasks]
    children.append(task_id)


def prepare_call(
    worker: Any, args: tuple[Any, ...], kwargs: dict[str, Any], num_returns: int
) -> tuple[p.Value, list[memoryview], bytes, Sequence[bytes], Any]:
    """Serialize a call in the caller's thread and make its results: (value, buffers, task
    id, result ids, what ``.remote()`` returns: one ref, a list of refs, or for a streaming
    call a generator whose state is ``out._state``). (``ActorMethod.remote`` has the
    one-result path inline.)"""
    value, buffers = call_args(worker, args, kwargs)
    task_id = worker.new_id()
    parent = current_task.get()
    if parent is not None:  # cancelled with its parent (runtime.cancel(recursive=True))
        add_child(parent, worker, task_id)
    if num_returns == 1:
        oid = task_id + FIRST
        return value, buffers, task_id, (oid,), worker.new_owned(oid)
    if num_returns == p.STREAMING:
        return value, buffers, task_id, [], ObjectRefGenerator(StreamState(worker, task_id))
    oids = [return_id(task_id, i) for i in range(max(num_returns, 0))]
    refs: list[ObjectRef[Any]] = [worker.new_owned(oid) for oid in oids]
    return value, buffers, task_id, oids, refs
