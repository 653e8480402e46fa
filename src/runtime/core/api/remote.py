"""What ``@runtime.remote`` makes: remote functions, actor classes, actor handles and methods.

These are thin, typed front ends: they serialize the call in the caller's thread, create
the result refs, and hand one message to the worker's loop.
"""

from __future__ import annotations

import functools
import inspect
import os
import threading
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, Generic, ParamSpec, Protocol, TypeVar, overload

import msgspec

from ..common.context import current_task
from ..execution import runtime_env as renv
from ..objects import refs as _refs
from ..objects import serialization as ser
from ..objects.refs import ObjectRef
from ..scheduling.scheduler import normalize
from ..submission.direct import send_call
from ..submission.pending import RetryPolicy
from ..submission.streaming import DEFAULT_WINDOW
from ..wire import protocol as p
from .blocking import blocking as _blocking
from .blocking import current_worker, worker_or_init
from .calling import FIRST, add_child, call_args, prepare_call
from .creation import _env_wire, actor_spec, create_in_background
from .dynamic import DynamicReturns
from .methods import check_call_options
from .options import (
    ACTOR_OPTIONS,
    TASK_OPTIONS,
    captured_bundle,
    check_options,
    concurrency_groups,
    default_num_returns,
    may_be_captured,
    num_returns_option,
    strategy_option,
    window_option,
)

if TYPE_CHECKING:  # the DAG nodes ``.bind()`` makes (runtime.dag, built on this API)
    from runtime.dag._node import ClassMethodNode, ClassNode, FunctionNode

    from ..process.worker import Worker

P = ParamSpec("P")
R = TypeVar("R")
T = TypeVar("T")


class _Pickled:
    """Pickles its target once (cached); travels, e.g. in a task's closure, without the
    lock and the cached blob."""

    _lock: threading.Lock
    _blob: bytes | None
    _env_wire: tuple[Any, Any] | None

    def __getstate__(self) -> dict[str, Any]:
        skip = ("_lock", "_blob", "_env_wire", "_blob_fn")
        return {k: v for k, v in self.__dict__.items() if k not in skip}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()
        self._blob = None
        self._env_wire = None


class RemoteFunction(_Pickled, Generic[P, R]):
    """A function that runs as a task on the cluster: ``f.remote(*args) -> ObjectRef``."""

    _dynamic = False  # num_returns="dynamic": the task runs DynamicReturns(fn)

    def __init__(self, fn: Callable[..., Any], options: dict[str, Any]) -> None:
        check_options(options, TASK_OPTIONS, "a remote function")
        self._fn = fn
        self._options = options
        self._name = getattr(fn, "__qualname__", repr(fn))
        self._fn_id = os.urandom(12)
        self._blob: bytes | None = None
        self._lock = threading.Lock()
        self._configure()
        self.__doc__ = fn.__doc__
        self.__name__ = getattr(fn, "__name__", self._name)
        self.__wrapped__ = fn

    def _configure(self) -> None:
        o = self._options
        self._demand = normalize(
            o.get("num_cpus"), o.get("num_gpus"), o.get("resources"), default_cpus=1.0,
            memory=o.get("memory"),
        )  # fmt: skip
        n = o.get("num_returns")
        dynamic = n == "dynamic"  # Ray's: one ref to a DynamicObjectRefGenerator (api.dynamic)
        if dynamic != getattr(self, "_dynamic", False):  # another function runs: its own id
            self._fn_id, self._blob, self._dynamic = os.urandom(12), None, dynamic
        if dynamic:
            self._num_returns = 1
        else:
            self._num_returns = (
                default_num_returns(self._fn) if n is None else num_returns_option(n)
            )
        self._window = window_option(o)
        retries = o.get("max_retries", 3)
        if not isinstance(retries, int) or retries < -1:
            raise ValueError(f"max_retries must be an int >= -1 (-1: no limit), got {retries!r}")
        retry_on = o.get("retry_exceptions", False)
        if isinstance(retry_on, list | tuple):
            if not all(isinstance(t, type) and issubclass(t, BaseException) for t in retry_on):
                raise ValueError("retry_exceptions must be a bool or a list of exception types")
            retry_on = tuple(retry_on)
        elif not isinstance(retry_on, bool):
            raise ValueError("retry_exceptions must be a bool or a list of exception types")
        self._retry = RetryPolicy(retries, retry_on)
        self._strategy = strategy_option(o.get("scheduling_strategy"), o.get("label_selector"))
        self._capture = bool(
            getattr(o.get("scheduling_strategy"), "placement_group_capture_child_tasks", False)
        )
        self._may_be_captured = may_be_captured(o)
        self._env = renv.validate(o.get("runtime_env"))
        self._env_wire: tuple[Any, Any] | None = None  # (worker, wire) shipped once
        #: ``_pickled`` bound once: every pending task keeps it (for a retry), and a bound
        #: method made per call would cost each one 48 bytes more.
        self._blob_fn: Callable[[], bytes] = self._pickled

    def _pickled(self) -> bytes:
        blob = self._blob
        if blob is None:
            with self._lock:
                if self._blob is None:
                    fn = DynamicReturns(self._fn) if self._dynamic else self._fn
                    self._blob = ser.dumps_function(fn)
                blob = self._blob
        return blob

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        self._blob_fn = self._pickled

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise TypeError(
            f"remote function {self._name} cannot be called directly; use {self.__name__}.remote()"
        )

    def options(self, **options: Any) -> RemoteFunction[P, R]:
        """A copy with other options (num_cpus, num_gpus, resources, num_returns, ...)."""
        merged = {**self._options, **options}
        other: RemoteFunction[P, R] = RemoteFunction.__new__(RemoteFunction)
        other.__dict__.update(self.__dict__)
        check_options(options, TASK_OPTIONS, "a remote function")
        other._options = merged
        other._configure()
        return other

    def bind(self, *args: Any, **kwargs: Any) -> FunctionNode:
        """A DAG node calling this function with these arguments, run by ``.execute()``
        (Ray's ``.bind``; see :mod:`runtime.dag`)."""
        from runtime.dag._node import FunctionNode

        return FunctionNode(self, args, kwargs)

    def remote(self, *args: P.args, **kwargs: P.kwargs) -> ObjectRef[R]:
        """Submit the task; returns at once with a ref to its result (a list if num_returns > 1)."""
        worker = worker_or_init()
        self._pickled()  # fail here, in the caller, if the function cannot be pickled
        n = self._num_returns
        value, buffers, task_id, oids, out = prepare_call(worker, args, kwargs, n)
        msg = p.SubmitTask(
            task_id,
            self._fn_id,
            self._name,
            None,
            value,
            n,
            self._demand,
            worker.peer_id,
            worker.address,
        )
        msg.runtime_env = _env_wire(self, worker)
        strategy = self._strategy
        if strategy is not None:
            if strategy[0] == "pg":
                msg.bundle = (strategy[1], strategy[2])
                msg.capture = self._capture
            else:
                msg.strategy = strategy
        elif self._may_be_captured and (captured := captured_bundle()) is not None:
            msg.bundle, msg.capture = captured, True
        if n == p.STREAMING:
            msg.stream_window = self._window
            worker.inbox.post(
                functools.partial(
                    worker.submit_task, msg, buffers, self._pickled, oids, stream=out._state
                )
            )
        else:
            worker.inbox.post(worker.submit_task, msg, buffers, self._blob_fn, oids, self._retry)
            worker.inbox.throttle()
        return out  # type: ignore[no-any-return]

    def __repr__(self) -> str:
        return f"RemoteFunction({self._name})"


class ActorClass(_Pickled, Generic[T]):
    """A class whose instances live on the cluster: ``Cls.remote(*args) -> ActorHandle``."""

    def __init__(self, cls: type[T], options: dict[str, Any]) -> None:
        check_options(options, ACTOR_OPTIONS, "an actor class")
        self._cls = cls
        self._options = options
        self._cls_id = os.urandom(12)
        self._blob: bytes | None = None
        self._lock = threading.Lock()
        self._methods: dict[str, int] = {}
        self._env = renv.validate(options.get("runtime_env"))
        self._env_wire: tuple[Any, Any] | None = None
        self._is_async = False
        for name, member in inspect.getmembers(cls, predicate=inspect.isfunction):
            self._methods[name] = default_num_returns(member)
            if inspect.iscoroutinefunction(member) or inspect.isasyncgenfunction(member):
                self._is_async = True
        self.__name__ = cls.__name__
        self.__doc__ = cls.__doc__

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise TypeError(
            f"actor class {self.__name__} cannot be instantiated directly; "
            f"use {self.__name__}.remote()"
        )

    def options(self, **options: Any) -> ActorClass[T]:
        """A copy with other options (name, lifetime, resources, max_concurrency, ...)."""
        check_options(options, ACTOR_OPTIONS, "an actor class")
        other: ActorClass[T] = ActorClass.__new__(ActorClass)
        other.__dict__.update(self.__dict__)
        other._options = {**self._options, **options}
        other.__dict__.pop("_checked_options", None)
        if "runtime_env" in options:
            other._env = renv.validate(options["runtime_env"])
            other._env_wire = None
        return other

    def _pickled(self) -> bytes:
        with self._lock:
            if self._blob is None:
                self._blob = ser.dumps_function(self._cls)
            return self._blob

    def bind(self, *args: Any, **kwargs: Any) -> ClassNode:
        """A DAG node creating this actor with these arguments when the graph runs; its
        methods bind as ``node.method.bind(...)`` (Ray's ``.bind``; see :mod:`runtime.dag`)."""
        from runtime.dag._node import ClassNode

        return ClassNode(self, args, kwargs)

    def remote(self, *args: Any, **kwargs: Any) -> ActorHandle[T]:
        """Create the actor; returns a handle at once (calls wait until it is placed)."""
        return create_actor(self, args, kwargs)

    def _checked(self) -> tuple[dict[str, float], dict[str, int]]:
        """The options checked once per class and options, not per actor (10,000 actors
        must not read the class's members 10,000 times): resources, concurrency groups."""
        checked = self.__dict__.get("_checked_options")
        if checked is None:
            o = self._options
            resources = normalize(
                o.get("num_cpus"), o.get("num_gpus"), o.get("resources"), default_cpus=0.0,
                memory=o.get("memory"),
            )  # fmt: skip
            groups = concurrency_groups(self._cls, o.get("concurrency_groups"))
            checked = self._checked_options = (resources, groups)
        return checked

    def _spec(self, worker: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> p.ActorSpec:
        return actor_spec(self, worker, args, kwargs)

    def __repr__(self) -> str:
        return f"ActorClass({self.__name__})"


class ActorHandle(Generic[T]):
    """A reference to a live actor; ``handle.method.remote(*args) -> ObjectRef``.

    Handles pickle: pass them to tasks and other actors. Calls from one caller run in
    the order they were made.
    """

    def __init__(
        self,
        actor_id: bytes,
        class_name: str,
        methods: dict[str, int],
        location: p.ActorLocation | None = None,
        token: ObjectRef[Any] | None = None,
    ) -> None:
        self._actor_id = actor_id
        self._class_name = class_name
        self._method_returns = methods
        self._location = location
        #: The reference every handle of an unnamed, non-detached actor holds (pickled with
        #: the handle, so borrowers count too): the actor is stopped once it is freed.
        self._token = token
        self._method_cache: dict[str, ActorMethod[..., Any]] = {}

    def __getattr__(self, name: str) -> ActorMethod[..., Any]:
        if name.startswith("__") and name.endswith("__"):
            raise AttributeError(name)
        cache: dict[str, ActorMethod[..., Any]] | None = self.__dict__.get("_method_cache")
        if cache is None:
            raise AttributeError(name)
        m = cache.get(name)
        if m is None:
            if self._method_returns and name not in self._method_returns:
                raise AttributeError(f"actor {self._class_name} has no method {name!r}")
            m = cache[name] = ActorMethod(self, name, self._method_returns.get(name, 1))
        # Found as a plain attribute from now on (``handle.m.remote()`` once per call: the
        # instance dict is read before this hook is called).
        self.__dict__[name] = m
        return m

    def __reduce__(self) -> tuple[Any, ...]:
        worker = current_worker()
        state = worker.actors.get(self._actor_id)
        location = state.location if state is not None else self._location
        # state.actor_id: the actor get_if_exists found may not be the one made here
        actor_id = state.actor_id if state is not None else self._actor_id
        return (
            _rebuild_handle,
            (actor_id, self._class_name, self._method_returns, location, self._token),
        )

    def __repr__(self) -> str:
        return f"ActorHandle({self._class_name}, {self._actor_id.hex()})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ActorHandle) and other._actor_id == self._actor_id

    def __hash__(self) -> int:
        return hash(self._actor_id)


def _rebuild_handle(
    actor_id: bytes,
    class_name: str,
    methods: dict[str, int],
    location: p.ActorLocation | None,
    token: ObjectRef[Any] | None = None,
) -> ActorHandle[Any]:
    try:
        worker = current_worker()
    except RuntimeError:
        return ActorHandle(actor_id, class_name, methods, location, token)
    if location is not None and location.state == "ALIVE":
        worker.inbox.post(worker.actor_state, actor_id, location)
    return ActorHandle(actor_id, class_name, methods, location, token)


class ActorMethod(Generic[P, R]):
    """One method of an actor, called with ``.remote(*args)``."""

    def __init__(self, handle: ActorHandle[Any], name: str, num_returns: int) -> None:
        # The actor's id and token, not the handle: the handle caches its methods, and a
        # cycle would keep a dropped handle (and so its actor) alive until a gc pass.
        self._actor_id = handle._actor_id
        self._token = handle._token
        self._name = name
        self._num_returns = num_returns

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise TypeError(
            f"actor method {self._name} cannot be called directly; use .{self._name}.remote()"
        )

    def options(
        self,
        *,
        num_returns: int | str | None = None,
        _generator_backpressure_num_objects: int | None = None,
        **ignored: Any,
    ) -> ActorMethod[P, R]:
        """This method with other call options: ``num_returns``,
        ``_generator_backpressure_num_objects``. Ray's other per-call options are accepted
        with a one-time warning saying what is done instead; unknown ones raise TypeError."""
        if ignored:
            check_call_options(self._name, ignored)
        m: ActorMethod[P, R] = ActorMethod.__new__(ActorMethod)
        m.__dict__.update(self.__dict__)
        if num_returns is not None:
            m._num_returns = num_returns_option(num_returns)
        if _generator_backpressure_num_objects is not None:
            m._window = window_option(
                {"_generator_backpressure_num_objects": _generator_backpressure_num_objects}
            )
        return m

    _window = DEFAULT_WINDOW

    def bind(self, *args: Any, **kwargs: Any) -> ClassMethodNode:
        """A DAG node calling this method of a live actor with these arguments (Ray's
        ``.bind``; see :mod:`runtime.dag`)."""
        from runtime.dag._node import ClassMethodNode

        return ClassMethodNode(self, self._name, args, kwargs)

    def remote(self, *args: P.args, **kwargs: P.kwargs) -> ObjectRef[R]:
        """Call the method; returns at once with a ref to its result."""
        worker: Worker = _refs._worker or current_worker()  # type: ignore[assignment]  # (one read)
        n = self._num_returns
        if n == 1:  # one result (nearly every call): prepare_call's path, inline
            value, buffers = call_args(worker, args, kwargs)
            task_id = worker.new_id()
            parent = current_task.get()
            if parent is not None:  # cancelled with its parent (runtime.cancel(recursive))
                add_child(parent, worker, task_id)
            oid = task_id + FIRST
            ref = worker.new_owned(oid)
            msg = p.CallActor(
                task_id, self._actor_id, self._name, value, 1, worker.peer_id, worker.address
            )
            send_call(worker, msg, buffers, (oid,), None, self._token)
            return ref
        value, buffers, task_id, oids, out = prepare_call(worker, args, kwargs, n)
        msg = p.CallActor(
            task_id, self._actor_id, self._name, value, n, worker.peer_id, worker.address
        )
        stream = None
        if n == p.STREAMING:
            msg.stream_window = self._window
            stream = out._state
        send_call(worker, msg, buffers, oids, stream, self._token)  # direct, or via the loop
        return out  # type: ignore[no-any-return]


class _RemoteDecorator(Protocol):
    """What ``remote(**options)`` returns: a decorator typed like bare ``remote``."""

    @overload
    def __call__(self, fn_or_class: type[T], /) -> ActorClass[T]: ...  # type: ignore[overload-overlap]
    @overload
    def __call__(
        self, fn_or_class: Callable[P, Coroutine[Any, Any, R]], /
    ) -> RemoteFunction[P, R]: ...
    @overload
    def __call__(self, fn_or_class: Callable[P, R], /) -> RemoteFunction[P, R]: ...


# A class is also a callable; the first overload that matches wins, so classes get ActorClass
# (hence the overlap ignores). Only a coroutine function is awaited by the executor, so only
# its result is unwrapped. mypy ignores what a class decorator returns: runtime.mypy_plugin
# gives a decorated class its `remote` and `options`.
@overload
def remote(fn_or_class: type[T], /) -> ActorClass[T]: ...  # type: ignore[overload-overlap]
@overload
def remote(fn_or_class: Callable[P, Coroutine[Any, Any, R]], /) -> RemoteFunction[P, R]: ...
@overload
def remote(fn_or_class: Callable[P, R], /) -> RemoteFunction[P, R]: ...
@overload
def remote(**options: Any) -> _RemoteDecorator: ...
def remote(fn_or_class: Any = None, /, **options: Any) -> Any:
    """Make a function a remote task, or a class an actor class.

    Use bare (``@runtime.remote``) or with options (``@runtime.remote(num_cpus=2)``).

    Example::

        @runtime.remote
        def square(x):
            return x * x

        assert runtime.get(square.remote(3)) == 9
    """
    if fn_or_class is None:
        return lambda target: remote(target, **options)
    if inspect.isclass(fn_or_class):
        return ActorClass(fn_or_class, options)
    if callable(fn_or_class):
        return RemoteFunction(fn_or_class, options)
    raise TypeError(f"@remote applies to functions and classes, not {type(fn_or_class).__name__}")


def create_actor(
    cls: ActorClass[T], args: tuple[Any, ...], kwargs: dict[str, Any]
) -> ActorHandle[T]:
    worker = worker_or_init()
    spec = cls._spec(worker, args, kwargs)
    if spec.args.refs:
        worker.refs.pin(spec.args.refs)  # held for the actor's life (a restart re-reads them)
    get_if_exists = bool(cls._options.get("get_if_exists"))
    methods = cls._methods
    if spec.name is not None and not worker.inbox.on_loop():
        # Named: ask the head now, so a taken name raises here, as in Ray.
        raw = _blocking(worker, worker.head_request(p.CreateActor(0, spec, get_if_exists)))
        loc = msgspec.convert(raw, p.ActorLocation)
        worker.inbox.post(worker.actor_state, loc.actor_id, loc if loc.state == "ALIVE" else None)
        return ActorHandle(loc.actor_id, spec.class_name, methods, loc)
    worker.inbox.post(create_in_background, worker, spec, get_if_exists)
    # Unnamed and not detached: stopped when its last handle is gone (Ray's semantics).
    token = None
    if spec.name is None and not spec.detached:
        token = worker.new_actor_token(spec.actor_id)
    return ActorHandle(spec.actor_id, spec.class_name, methods, token=token)
