"""Ray's lazy DAG API: ``f.bind(...)`` builds a graph of remote calls, ``.execute()`` runs it.

A node stands for one call that has not run yet: a remote function (:class:`FunctionNode`),
an actor's creation (:class:`ClassNode`), an actor method (:class:`ClassMethodNode`), the
graph's input (:class:`InputNode`, and ``inp[0]`` / ``inp.x`` parts of it), or several
outputs at once (:class:`MultiOutputNode`). ``execute(*args, **kwargs)`` submits every call
with ``.remote()`` in dependency order, passing each result as an ``ObjectRef`` (so calls run
as soon as their inputs are ready), and returns the output node's ref (a list of refs for a
:class:`MultiOutputNode`, a handle for a :class:`ClassNode`). A node used twice runs once per
``execute``. Everything goes through the public API. ``dag.experimental_compile()`` gives
Ray's compiled graphs' API over the same calls (:mod:`runtime.dag._compiled`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from runtime.dag._compiled import CompiledDAG


class DAGNode:
    """One call of the graph, run when the graph is executed."""

    def __init__(self, args: tuple[Any, ...] = (), kwargs: dict[str, Any] | None = None) -> None:
        self._bound_args = tuple(args)
        self._bound_kwargs = dict(kwargs or {})

    def execute(self, *args: Any, **kwargs: Any) -> Any:
        """Run the graph ending here on ``args``/``kwargs`` (what the :class:`InputNode` is).

        Returns:
            An ``ObjectRef`` of this node's result (a list of refs for a
            :class:`MultiOutputNode`, an actor handle for a :class:`ClassNode`).
        """
        return self._resolve(_Run(args, kwargs))

    def experimental_compile(self, enable_asyncio: bool = False, **tuning: Any) -> CompiledDAG:
        """Ray's compiled graph of this graph (actor-method calls only): see
        :class:`runtime.dag.compiled_dag_node.CompiledDAG` for what it does here."""
        from runtime.dag._compiled import CompiledDAG

        return CompiledDAG(self, enable_asyncio=enable_asyncio, **tuning)

    def get_args(self) -> tuple[Any, ...]:
        """The arguments bound to this node (nodes among them stay nodes)."""
        return self._bound_args

    def get_kwargs(self) -> dict[str, Any]:
        """The keyword arguments bound to this node."""
        return dict(self._bound_kwargs)

    def _resolve(self, run: _Run) -> Any:
        key = id(self)
        if key not in run.done:
            run.done[key] = self._run(run)
        return run.done[key]

    def _run(self, run: _Run) -> Any:
        raise NotImplementedError

    def _resolved_args(self, run: _Run) -> tuple[tuple[Any, ...], dict[str, Any]]:
        return (
            tuple(_resolve_value(a, run) for a in self._bound_args),
            {k: _resolve_value(v, run) for k, v in self._bound_kwargs.items()},
        )


class _Run:
    """One execution: its input and the result of every node run so far."""

    def __init__(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        self.args = args
        self.kwargs = kwargs
        self.done: dict[int, Any] = {}


def _resolve_value(value: Any, run: _Run) -> Any:
    """A bound argument with the nodes in it replaced by their results (one level into
    lists, tuples and dicts, as Ray does)."""
    if isinstance(value, DAGNode):
        return value._resolve(run)
    if isinstance(value, list | tuple):
        return type(value)(_resolve_value(v, run) for v in value)
    if isinstance(value, dict):
        return {k: _resolve_value(v, run) for k, v in value.items()}
    return value


class DAGInputData:
    """What an :class:`InputNode` stands for when ``execute`` got several arguments:
    ``inp[i]`` is the i-th positional one, ``inp["k"]`` / ``inp.k`` the keyword ``k``."""

    def __init__(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        self._args = args
        self._kwargs = kwargs

    def __getitem__(self, key: int | str) -> Any:
        if isinstance(key, int):
            return self._args[key]
        return self._kwargs[key]


class InputNode(DAGNode):
    """The graph's input: ``dag.execute(x)`` makes it ``x``.

    Use it as Ray does, as a context manager around the graph's construction::

        with InputNode() as inp:
            dag = add.bind(inp[0], inp[1])
        runtime.get(dag.execute(1, 2))  # 3

    With one positional argument and no keywords it stands for that argument; otherwise
    ``inp[i]`` and ``inp.k`` / ``inp["k"]`` pick one of them.
    """

    def __enter__(self) -> InputNode:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def __getitem__(self, key: int | str) -> InputAttributeNode:
        return InputAttributeNode(self, key)

    def __getattr__(self, key: str) -> InputAttributeNode:
        if key.startswith("_"):
            raise AttributeError(key)
        return InputAttributeNode(self, key)

    def _run(self, run: _Run) -> Any:
        if len(run.args) == 1 and not run.kwargs:
            return run.args[0]
        return DAGInputData(run.args, run.kwargs)


class InputAttributeNode(DAGNode):
    """One part of the input: ``inp[0]``, ``inp["k"]`` or ``inp.k``."""

    def __init__(self, source: InputNode, key: int | str) -> None:
        super().__init__()
        self._source = source
        self._key = key

    def _run(self, run: _Run) -> Any:
        value = self._source._resolve(run)
        if isinstance(value, DAGInputData):
            return value[self._key]
        if isinstance(self._key, str) and not isinstance(value, dict):
            return getattr(value, self._key)
        return value[self._key]


class FunctionNode(DAGNode):
    """A call of a remote function: ``f.bind(*args, **kwargs)``."""

    def __init__(self, fn: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        super().__init__(args, kwargs)
        self._fn = fn

    def options(self, **options: Any) -> FunctionNode:
        """The same call with other task options (``num_cpus``, ...)."""
        return FunctionNode(self._fn.options(**options), self._bound_args, self._bound_kwargs)

    def _run(self, run: _Run) -> Any:
        args, kwargs = self._resolved_args(run)
        return self._fn.remote(*args, **kwargs)


class ClassNode(DAGNode):
    """An actor to create when the graph runs: ``Actor.bind(*args)``; ``node.method.bind()``
    calls one of its methods.

    As in Ray, the method calls bound on one actor node run in the order they were bound:
    a call runs the calls bound before it first, even those no output depends on.
    """

    def __init__(self, cls: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        super().__init__(args, kwargs)
        self._cls = cls
        self._last_call: ClassMethodNode | None = None

    def __getattr__(self, name: str) -> _MethodBinder:
        if name.startswith("_"):
            raise AttributeError(name)
        return _MethodBinder(self, name)

    def _run(self, run: _Run) -> Any:
        args, kwargs = self._resolved_args(run)
        return self._cls.remote(*args, **kwargs)


class _MethodBinder:
    """``actor_node.method``: only ``.bind()`` and ``.options()`` on it."""

    def __init__(self, actor: ClassNode | Any, name: str, options: dict[str, Any] | None = None):
        self._actor = actor
        self._name = name
        self._options = dict(options or {})

    def options(self, **options: Any) -> _MethodBinder:
        return _MethodBinder(self._actor, self._name, {**self._options, **options})

    def bind(self, *args: Any, **kwargs: Any) -> ClassMethodNode:
        node = ClassMethodNode(self._actor, self._name, args, kwargs, self._options)
        if isinstance(self._actor, ClassNode):
            node._previous = self._actor._last_call
            self._actor._last_call = node
        return node


class ClassMethodNode(DAGNode):
    """A call of an actor method: ``handle.method.bind(...)`` on a live actor, or
    ``actor_node.method.bind(...)`` on one the graph creates."""

    def __init__(
        self,
        actor: ClassNode | Any,  # the node creating the actor, or a live actor's method
        name: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        options: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(args, kwargs)
        self._actor = actor
        self._name = name
        self._options = dict(options or {})
        #: The call bound on the same actor node just before this one (run first).
        self._previous: ClassMethodNode | None = None

    def _run(self, run: _Run) -> Any:
        if self._previous is not None:
            self._previous._resolve(run)
        if isinstance(self._actor, DAGNode):  # an actor the graph creates
            method = getattr(self._actor._resolve(run), self._name)
        else:  # a live actor's method, as bound
            method = self._actor
        if self._options:
            method = method.options(**self._options)
        args, kwargs = self._resolved_args(run)
        return method.remote(*args, **kwargs)


class MultiOutputNode(DAGNode):
    """Several outputs at once: ``execute`` returns the list of their refs."""

    def __init__(self, outputs: list[DAGNode] | tuple[DAGNode, ...]) -> None:
        super().__init__(tuple(outputs))
        if not all(isinstance(o, DAGNode) for o in outputs):
            raise TypeError("MultiOutputNode takes a list of DAG nodes (from .bind())")

    def _run(self, run: _Run) -> Any:
        return [node._resolve(run) for node in self._bound_args]
