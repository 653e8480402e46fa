"""Ray's ``num_returns="dynamic"``: a generator task whose one result is a
:class:`DynamicObjectRefGenerator`, the refs of the values it yielded.

The task runs the generator to its end on its node, storing each value as an object owned
by that node's process, and returns the list of their refs (as Ray does: the number of
values is known only once the task has run). An exception raised by the generator is stored
in one more, final ref, as in Ray. Prefer the default, streaming generators
(``ObjectRefGenerator``): they hand each value over as it comes.
"""

from __future__ import annotations

import inspect
import traceback
from collections.abc import Callable, Iterator
from typing import Any

from ..objects import serialization as ser
from ..objects.refs import READY, ObjectRef, OwnedObject
from .blocking import current_worker


class DynamicObjectRefGenerator:
    """The refs of the values a ``num_returns="dynamic"`` task yielded, in order.

    It is what ``runtime.get`` of such a task's ref returns; iterate it for the refs
    (``len()`` tells how many). It pickles, so it may be passed to other tasks and actors.
    """

    def __init__(self, refs: list[ObjectRef[Any]]) -> None:
        self._refs = list(refs)

    def __iter__(self) -> Iterator[ObjectRef[Any]]:
        return iter(self._refs)

    def __len__(self) -> int:
        return len(self._refs)

    def __reduce__(self) -> tuple[Any, ...]:
        return (DynamicObjectRefGenerator, (self._refs,))

    def __repr__(self) -> str:
        return f"DynamicObjectRefGenerator({len(self._refs)} refs)"


class DynamicReturns:
    """The function a ``num_returns="dynamic"`` task runs: the user's generator function,
    drained into a :class:`DynamicObjectRefGenerator` (pickled with the task)."""

    def __init__(self, fn: Callable[..., Any]) -> None:
        self.fn = fn
        self.__name__ = getattr(fn, "__name__", "task")
        self.__qualname__ = getattr(fn, "__qualname__", self.__name__)

    def __call__(self, *args: Any, **kwargs: Any) -> DynamicObjectRefGenerator:
        gen = self.fn(*args, **kwargs)
        if not inspect.isgenerator(gen):
            raise TypeError(
                f"{self.__qualname__} was called with num_returns='dynamic' but returned "
                f"{type(gen).__name__}, not a generator (use `yield` in a `def`)"
            )
        worker = current_worker()
        refs: list[ObjectRef[Any]] = []
        try:
            for item in gen:
                refs.append(worker.put(item))
        except Exception as exc:  # as in Ray: the error is the value of a final ref
            refs.append(_put_error(exc, self.__qualname__))
        return DynamicObjectRefGenerator(refs)


def _put_error(exc: BaseException, name: str) -> ObjectRef[Any]:
    """A ref, owned by this process, whose ``get`` raises ``exc`` as the task's error."""
    worker = current_worker()
    entry = OwnedObject()
    entry.value = ser.error_value(exc, name, tb="".join(traceback.format_exception(exc)))
    entry.state = READY
    oid = worker.new_id()
    with worker.refs.lock:
        worker.refs.owned[oid] = entry
        return ObjectRef(oid, worker.peer_id, worker.address)


__all__ = ["DynamicObjectRefGenerator", "DynamicReturns"]
