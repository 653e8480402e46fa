"""Ray's compiled graphs' API (``dag.experimental_compile()``) over ordinary actor calls.

Ray compiles a graph of actor-method calls once, allocating a channel per edge, so each
``execute`` skips the scheduler. Here :class:`CompiledDAG` checks the graph as Ray does
(only calls of live actors' methods, the graph's input and a :class:`MultiOutputNode`),
then runs each ``execute`` as the same calls ``dag.execute`` makes: the results, their
order per actor and the errors (an actor that died raises ``ActorDiedError``) are Ray's,
but there are no channels, so none of the latency a compiled graph saves, and no GPU
transports (``with_tensor_transport``, NCCL). See docs/compat.md.
"""

from __future__ import annotations

import warnings
from collections.abc import Generator
from typing import Any

from runtime.dag._node import (
    ClassMethodNode,
    ClassNode,
    DAGNode,
    InputAttributeNode,
    InputNode,
    MultiOutputNode,
)

#: Ray's tuning options of compiled graphs: accepted, with a one-time warning each.
_TUNING = (
    "_submit_timeout",
    "_buffer_size_bytes",
    "_max_inflight_executions",
    "_max_buffered_results",
    "_overlap_gpu_communication",
    "_default_communicator",
)
_warned: set[str] = set()


class CompiledDAG:
    """A checked graph of actor-method calls; ``execute`` runs it, ``teardown`` ends it."""

    def __init__(self, output: DAGNode, enable_asyncio: bool = False, **tuning: Any) -> None:
        for name in tuning:
            if name not in _TUNING:
                raise TypeError(
                    f"experimental_compile() got an unexpected keyword argument {name!r}"
                )
            if name not in _warned:
                _warned.add(name)
                warnings.warn(
                    f"experimental_compile({name}=...) is accepted and has no effect: "
                    "a compiled graph runs as ordinary actor calls here (no channels)",
                    stacklevel=3,
                )
        _check(output, set())
        self._output = output
        self._enable_asyncio = enable_asyncio
        self._torn_down = False

    def execute(self, *args: Any, **kwargs: Any) -> Any:
        """Run the graph on ``args``/``kwargs``: the output's ``ObjectRef`` (a list of refs
        for a :class:`MultiOutputNode`), for ``runtime.get``."""
        self._check_open()
        if self._enable_asyncio:
            raise ValueError("this graph was compiled with enable_asyncio=True: use execute_async")
        return self._output.execute(*args, **kwargs)

    async def execute_async(self, *args: Any, **kwargs: Any) -> CompiledDAGFuture:
        """Run the graph from async code: ``await`` the returned future for the result."""
        self._check_open()
        if not self._enable_asyncio:
            raise ValueError("execute_async needs experimental_compile(enable_asyncio=True)")
        return CompiledDAGFuture(self._output.execute(*args, **kwargs))

    def teardown(self) -> None:
        """End the graph: later ``execute`` calls raise; its actors stay usable."""
        self._torn_down = True

    def _check_open(self) -> None:
        if self._torn_down:
            raise RuntimeError("this compiled graph was torn down: compile the graph again")


class CompiledDAGFuture:
    """What ``await cdag.execute_async(...)`` gives: ``await`` it for the result (a list
    for a :class:`MultiOutputNode`)."""

    def __init__(self, result: Any) -> None:
        self._result = result

    def __await__(self) -> Generator[Any, None, Any]:
        return self._value().__await__()

    async def _value(self) -> Any:
        if isinstance(self._result, list):
            return [await ref for ref in self._result]
        return await self._result


def _check(node: Any, seen: set[int]) -> None:
    """Raise ``ValueError`` for what Ray's compiled graphs refuse: a remote function's
    call, an actor the graph itself creates."""
    if not isinstance(node, DAGNode) or id(node) in seen:
        if isinstance(node, list | tuple):
            for item in node:
                _check(item, seen)
        elif isinstance(node, dict):
            for item in node.values():
                _check(item, seen)
        return
    seen.add(id(node))
    if isinstance(node, ClassMethodNode):
        if isinstance(node._actor, ClassNode):
            raise ValueError(
                "a compiled graph calls methods of live actors only: create the actor with "
                ".remote() and bind its handle's methods, not Actor.bind()"
            )
    elif not isinstance(node, InputNode | InputAttributeNode | MultiOutputNode):
        raise ValueError(
            f"a compiled graph holds actor-method calls only, not {type(node).__name__} "
            "(a remote function's call): run this graph with dag.execute() instead"
        )
    for value in (*node.get_args(), *node.get_kwargs().values()):
        _check(value, seen)


__all__ = ["CompiledDAG", "CompiledDAGFuture"]
