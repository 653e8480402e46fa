"""A call's returns encoded for its answer (one small value inline, large ones in the node's
store, a generator's n items), and the error value a failed call answers with."""

from __future__ import annotations

import itertools
import logging
import traceback
import types
from collections.abc import Sequence
from typing import Any, Protocol

from ..common.exceptions import RuntimeBaseError
from ..objects import serialization as ser
from ..objects.refs import ReferenceTable, return_id
from ..wire import protocol as p

log = logging.getLogger("runtime.executor")

#: Returns this large or larger stay in the node's store; the answer says where.
INLINE_MAX = 100 * 1024


class ReturnsHost(Protocol):
    """What encoding returns needs of the node's worker (the worker is one)."""

    @property
    def refs(self) -> ReferenceTable: ...
    def store_value(
        self, oid: bytes, value: p.Value, buffers: Sequence[Any], *, what: str | None = None
    ) -> p.Located: ...


def encode_returns(
    worker: ReturnsHost, task_id: bytes, result: Any, num_returns: int
) -> tuple[list[p.Value | p.Located], list[Any]]:
    """Serialize a task's result(s); large ones stay in this node's store (any thread)."""
    if num_returns == 1:
        val, bufs = ser.serialize(result, copy=False)  # the store copies; inline are owned
        if not bufs and not val.refs and len(val.data) < INLINE_MAX:
            return [val], bufs  # most answers: one small value, no buffers (an empty list)
        out: list[p.Value | p.Located] = []
        buffers: list[Any] = []
        _place(worker, task_id, 0, val, bufs, out=out, buffers=buffers)
        return out, buffers
    out, buffers = [], []
    failed: p.Value | None = None
    if isinstance(result, types.GeneratorType):  # as in Ray: a generator of n items
        result, failed = _take(result, num_returns)
    if failed is not None:  # as in Ray: the items it made, then its error in the rest
        result = list(result)
        result += [_Failed(failed)] * (num_returns - len(result))
    if not isinstance(result, tuple | list) or len(result) != num_returns:
        size = f" of length {len(result)}" if isinstance(result, tuple | list) else ""
        raise ValueError(
            f"the task declared num_returns={num_returns} but returned "
            f"{type(result).__name__}{size}"
        )
    for i, v in enumerate(result):
        if isinstance(v, _Failed):
            out.append(v.error)
            continue
        val, bufs = ser.serialize(v, copy=False)  # the store copies; inline ones are owned
        _place(worker, task_id, i, val, bufs, out=out, buffers=buffers)
    return out, buffers


def _place(
    worker: ReturnsHost,
    task_id: bytes,
    i: int,
    val: p.Value,
    bufs: list[memoryview],
    *,
    out: list[p.Value | p.Located],
    buffers: list[Any],
) -> None:
    """Return ``i`` of a task: inline in the answer, or in this node's store when large."""
    if val.refs:
        worker.refs.pin(val.refs)
    if ser.total_size(val) >= INLINE_MAX:
        out.append(worker.store_value(return_id(task_id, i), val, bufs))
    else:
        out.append(val)
        if bufs:  # most values have none: no list made and dropped per call
            buffers.extend(ser.own_buffers(bufs))


class _Failed:
    """A return a generator task did not make: it raised first (its error value)."""

    __slots__ = ("error",)

    def __init__(self, error: p.Value) -> None:
        self.error = error


def _take(gen: types.GeneratorType[Any, Any, Any], n: int) -> tuple[list[Any], p.Value | None]:
    """The first ``n`` items of a generator task with ``num_returns=n``, and its error if it
    raised before them (the returns it did not make hold it). As in Ray, what it does after
    its n items (more items, an error) only goes to the log: its n results stand."""
    items: list[Any] = []
    try:
        items.extend(itertools.islice(gen, n))
    except Exception as exc:
        return items, task_error(exc, getattr(gen, "__qualname__", "generator"))
    if len(items) == n:
        try:
            next(gen)
        except StopIteration:
            pass
        except Exception as exc:
            log.error("a generator task raised after its num_returns=%d items: %r", n, exc)
        else:
            log.error("a generator task yielded more than its num_returns=%d items", n)
        finally:
            gen.close()
    return items, None


def task_error(exc: BaseException, name: str) -> p.Value:
    if isinstance(exc, RuntimeBaseError):
        return ser.error_value(exc, name)
    tb = "".join(traceback.format_exception(exc))
    return ser.error_value(exc, name, tb=tb)


__all__ = ["INLINE_MAX", "ReturnsHost", "encode_returns", "task_error"]
