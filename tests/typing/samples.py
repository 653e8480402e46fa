"""What mypy must say about typed handles; checked by ``test_typing.py``, never run.

A ``# N: <text>`` comment is a note mypy must print on that line (``reveal_type``), a
``# E: <text>`` comment an error; mypy must report nothing else in this file. It runs
with the project's configuration, so ``runtime.mypy_plugin`` types the actor handles.
"""

# ruff: noqa: E501  # an expectation is mypy's exact output, on the line it is about

from __future__ import annotations

from typing import Any, Generic, TypeVar, overload, reveal_type

import runtime

T = TypeVar("T")
PlainT = TypeVar("PlainT", bound="Plain")


@runtime.remote
def square(x: int) -> int:
    return x * x


@runtime.remote
async def asquare(x: int) -> int:
    return x * x


@runtime.remote(num_cpus=2)
def describe(x: int, *, prefix: str = "") -> str:
    return f"{prefix}{x}"


@runtime.remote
class Counter:
    def __init__(self, start: int = 0) -> None:
        self.value = start

    def incr(self, n: int = 1) -> int:
        self.value += n
        return self.value

    async def aincr(self, n: int = 1) -> int:
        self.value += n
        return self.value

    @staticmethod
    def version() -> str:
        return "1"

    def first(self, items: list[T]) -> T:
        return items[0]

    @property
    def current(self) -> int:
        return self.value


@runtime.remote(max_restarts=1)
class Box(Generic[T]):
    def __init__(self, item: T) -> None:
        self.item = item

    def get(self) -> T:
        return self.item


@runtime.remote
class Shape:
    @overload
    def __init__(self, side: float) -> None: ...
    @overload
    def __init__(self, side: float, other: float) -> None: ...
    def __init__(self, side: float, other: float | None = None) -> None:
        self.area = side * (side if other is None else other)

    def get_area(self) -> float:
        return self.area


class Plain:
    def __init__(self, n: int) -> None:
        self.n = n

    def double(self) -> int:
        return 2 * self.n


# Each expectation trails the line it is about, however long: the formatter must not wrap them.
# fmt: off


def remote_functions() -> None:
    reveal_type(square)  # N: Revealed type is "runtime.core.api.remote.RemoteFunction[[x: int], int]"
    reveal_type(square.remote(1))  # N: Revealed type is "runtime.core.objects.refs.ObjectRef[int]"
    # An async def: the ref holds what the coroutine returns, not the coroutine.
    reveal_type(asquare)  # N: Revealed type is "runtime.core.api.remote.RemoteFunction[[x: int], int]"
    reveal_type(asquare.remote(1))  # N: Revealed type is "runtime.core.objects.refs.ObjectRef[int]"
    # The decorator with options is typed like the bare one.
    reveal_type(describe)  # N: Revealed type is "runtime.core.api.remote.RemoteFunction[[x: int, *, prefix: str =], str]"
    reveal_type(describe.remote(1, prefix="n="))  # N: Revealed type is "runtime.core.objects.refs.ObjectRef[str]"
    reveal_type(square.options(num_cpus=2).remote(1))  # N: Revealed type is "runtime.core.objects.refs.ObjectRef[int]"
    reveal_type(runtime.get(square.remote(1)))  # N: Revealed type is "int"
    reveal_type(runtime.get(asquare.remote(1), timeout=5))  # N: Revealed type is "int"
    reveal_type(square.remote(1).future())  # N: Revealed type is "concurrent.futures._base.Future[int]"


def remote_function_errors() -> None:
    square.remote("1")  # E: Argument 1 to "remote" of "RemoteFunction" has incompatible type "str"; expected "int"  [arg-type]
    asquare.remote()  # E: Missing positional argument "x" in call to "remote" of "RemoteFunction"  [call-arg]
    describe.remote(1, prefix=2)  # E: Argument "prefix" to "remote" of "RemoteFunction" has incompatible type "int"; expected "str"  [arg-type]
    square.options(num_cpus=2).remote(1, 2)  # E: Too many arguments for "remote" of "RemoteFunction"  [call-arg]


async def awaiting() -> None:
    reveal_type(await square.remote(1))  # N: Revealed type is "int"
    reveal_type(await asquare.remote(1))  # N: Revealed type is "int"
    h = Counter.remote()
    reveal_type(await h.incr.remote(1))  # N: Revealed type is "int"
    reveal_type(await h.aincr.remote(1))  # N: Revealed type is "int"


def actors() -> None:
    reveal_type(Counter.remote)  # N: Revealed type is "def (start: int =) -> runtime.core.api.remote.ActorHandle[tests.typing.samples.Counter]"
    h = Counter.remote(5)
    reveal_type(h)  # N: Revealed type is "runtime.core.api.remote.ActorHandle[tests.typing.samples.Counter]"
    reveal_type(Counter.options(name="c"))  # N: Revealed type is "runtime.core.api.remote.ActorClass[tests.typing.samples.Counter]"
    reveal_type(Counter.options(name="c").remote(start=1))  # N: Revealed type is "runtime.core.api.remote.ActorHandle[tests.typing.samples.Counter]"
    reveal_type(h.incr)  # N: Revealed type is "runtime.core.api.remote.ActorMethod[[n: int =], int]"
    reveal_type(h.incr.remote(1))  # N: Revealed type is "runtime.core.objects.refs.ObjectRef[int]"
    reveal_type(h.aincr)  # N: Revealed type is "runtime.core.api.remote.ActorMethod[[n: int =], int]"
    reveal_type(h.aincr.remote(1))  # N: Revealed type is "runtime.core.objects.refs.ObjectRef[int]"
    reveal_type(h.incr.options(num_returns=1).remote(2))  # N: Revealed type is "runtime.core.objects.refs.ObjectRef[int]"
    reveal_type(h.version.remote())  # N: Revealed type is "runtime.core.objects.refs.ObjectRef[str]"
    # A generic method's type variables become Any (the handle cannot carry them).
    reveal_type(h.first.remote([1]))  # N: Revealed type is "runtime.core.objects.refs.ObjectRef[Any]"
    # The handle's own attributes are not taken for methods of the actor.
    reveal_type(h._actor_id)  # N: Revealed type is "bytes"
    reveal_type(runtime.get(h.aincr.remote()))  # N: Revealed type is "int"
    # A generic actor class: its type arguments are inferred from __init__.
    b = Box.remote("x")
    reveal_type(b)  # N: Revealed type is "runtime.core.api.remote.ActorHandle[tests.typing.samples.Box[str]]"
    reveal_type(b.get.remote())  # N: Revealed type is "runtime.core.objects.refs.ObjectRef[str]"
    # An overloaded __init__: remote() takes any of its signatures.
    reveal_type(Shape.remote)  # N: Revealed type is "Overload(def (side: float) -> runtime.core.api.remote.ActorHandle[tests.typing.samples.Shape], def (side: float, other: float) -> runtime.core.api.remote.ActorHandle[tests.typing.samples.Shape])"
    reveal_type(Shape.remote(2.0, 3.0).get_area.remote())  # N: Revealed type is "runtime.core.objects.refs.ObjectRef[float]"
    # remote() called on an undecorated class.
    plain = runtime.remote(Plain)
    reveal_type(plain)  # N: Revealed type is "runtime.core.api.remote.ActorClass[tests.typing.samples.Plain]"
    reveal_type(plain.remote(1).double.remote())  # N: Revealed type is "runtime.core.objects.refs.ObjectRef[int]"


def actor_errors() -> None:
    h = Counter.remote()
    h.incr.remote("1")  # E: Argument 1 to "remote" of "ActorMethod" has incompatible type "str"; expected "int"  [arg-type]
    h.aincr.remote(1, 2)  # E: Too many arguments for "remote" of "ActorMethod"  [call-arg]
    h.decr.remote(1)  # E: Actor class "Counter" has no method "decr"  [attr-defined]
    # A property is not a remote method (ActorClass registers plain functions only).
    h.current  # E: Actor class "Counter" has no method "current"  [attr-defined]
    Counter.remote("5")  # E: Argument 1 to "remote" of "Counter" has incompatible type "str"; expected "int"  [arg-type]
    Counter.options(name="c").remote(start="5")  # E: Argument "start" to "remote" of "Counter" has incompatible type "str"; expected "int"  [arg-type]
    # As at run time, an actor class cannot be instantiated directly.
    Counter(5)  # E: Actor class "Counter" cannot be instantiated directly; use Counter.remote()  [misc]
    runtime.remote(Plain).remote()  # E: Missing positional argument "n" in call to "remote" of "Plain"  [call-arg]


def untyped_handles(h: runtime.ActorHandle[Any]) -> None:
    # A handle of unknown class (from get_actor, say) accepts any method, untyped.
    reveal_type(h.anything)  # N: Revealed type is "runtime.core.api.remote.ActorMethod[..., Any]"
    reveal_type(h.anything.remote(1, "x"))  # N: Revealed type is "runtime.core.objects.refs.ObjectRef[Any]"
    reveal_type(runtime.get_actor("c"))  # N: Revealed type is "runtime.core.api.remote.ActorHandle[Any]"


def bounded_handles(h: runtime.ActorHandle[PlainT]) -> None:
    # A handle whose class is a type variable: the methods of its bound.
    reveal_type(h.double.remote())  # N: Revealed type is "runtime.core.objects.refs.ObjectRef[int]"
    h.triple.remote()  # E: Actor class "Plain" has no method "triple"  [attr-defined]
