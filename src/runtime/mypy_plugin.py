"""A mypy plugin that types actors: ``Cls.remote(...)`` and ``handle.method.remote(...)``.

Plain typing already covers remote functions (``RemoteFunction[P, R]``) and refs
(``ObjectRef[T]``), but it cannot map a class's methods onto its handle, and mypy ignores
what a class decorator returns. This plugin fills both gaps:

* A class decorated with ``@runtime.remote`` (bare or with options) gets the class methods
  ``remote(...)``, checked against its ``__init__`` and returning ``ActorHandle[Cls]``, and
  ``options(...)``, returning ``ActorClass[Cls]``. Calling the class directly is an error,
  as it is at run time.
* ``ActorClass[T].remote(...)`` is checked against ``T.__init__``.
* ``ActorHandle[T].name`` is ``ActorMethod[<parameters of T.name>, <its result>]``, where
  the result of an ``async def`` is what it returns when awaited. So ``h.name.remote(...)``
  checks its arguments and returns ``ObjectRef[<result>]``; a name that is not a method of
  ``T`` is an error, as it is at run time.

Enable it in the mypy configuration of the code that uses the runtime::

    # pyproject.toml
    [tool.mypy]
    plugins = ["runtime.mypy_plugin"]

    # mypy.ini or setup.cfg
    [mypy]
    plugins = runtime.mypy_plugin

Example::

    @runtime.remote
    class Counter:
        def __init__(self, start: int = 0) -> None: ...
        async def incr(self, n: int) -> int: ...

    h = Counter.remote(5)       # ActorHandle[Counter]
    ref = h.incr.remote(1)      # ObjectRef[int]
    h.incr.remote("1")          # error: incompatible type "str"; expected "int"
    h.decr.remote(1)            # error: Actor class "Counter" has no method "decr"

Only mypy imports this module; ``import runtime`` does not.

Limits: an overloaded method is not mapped (its handle attribute stays
``ActorMethod[..., Any]``), nor is a method of a union of handles; the type variables of a
generic method become ``Any``; ``num_returns`` (from ``@runtime.method`` or ``.options``) is
not seen, so a call that returns several refs is still typed as one ref; a decorated class is
still ``type[Cls]`` to mypy, so it is not accepted where an ``ActorClass`` is expected
(``runtime.remote(Cls)`` gives one).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

from mypy.erasetype import erase_typevars
from mypy.errorcodes import ATTR_DEFINED, MISC
from mypy.expandtype import expand_type_by_instance
from mypy.nodes import ARG_STAR, ARG_STAR2, Argument, Decorator, FuncBase, SymbolNode, TypeInfo, Var
from mypy.plugin import (
    AttributeContext,
    CheckerPluginInterface,
    ClassDefContext,
    FunctionSigContext,
    MethodSigContext,
    Plugin,
)
from mypy.plugins.common import add_method_to_class
from mypy.subtypes import find_member
from mypy.typeops import type_object_type
from mypy.types import (
    AnyType,
    CallableType,
    FunctionLike,
    Instance,
    Overloaded,
    Parameters,
    Type,
    TypeOfAny,
    TypeVarType,
    get_proper_type,
)
from mypy.typevars import fill_typevars_with_any

_MODULE = "runtime.core.api.remote"
_REMOTE = f"{_MODULE}.remote"
_ACTOR_CLASS = f"{_MODULE}.ActorClass"
_ACTOR_HANDLE = f"{_MODULE}.ActorHandle"
_ACTOR_METHOD = f"{_MODULE}.ActorMethod"
#: ``TypeInfo.metadata`` key that marks a class decorated with ``@runtime.remote``.
_MARK = "runtime.actor_class"


class RuntimePlugin(Plugin):
    """Hooks for ``@runtime.remote`` classes, ``ActorClass.remote`` and ``ActorHandle``."""

    def get_class_decorator_hook_2(self, fullname: str) -> Callable[[ClassDefContext], bool] | None:
        return _add_actor_class_methods if fullname == _REMOTE else None

    def get_attribute_hook(self, fullname: str) -> Callable[[AttributeContext], Type] | None:
        # ActorHandle has __getattr__, so mypy asks here for every name it does not define.
        owner, _, name = fullname.rpartition(".")
        if owner != _ACTOR_HANDLE:
            return None
        method = self._type_info(_ACTOR_METHOD)
        return partial(_actor_method, name, method) if method is not None else None

    def get_method_signature_hook(
        self, fullname: str
    ) -> Callable[[MethodSigContext], FunctionLike] | None:
        return _actor_constructor if fullname == f"{_ACTOR_CLASS}.remote" else None

    def get_class_attribute_hook(self, fullname: str) -> Callable[[AttributeContext], Type] | None:
        owner, _, name = fullname.rpartition(".")
        return _actor_class_remote if name == "remote" and self._is_actor_class(owner) else None

    def get_function_signature_hook(
        self, fullname: str
    ) -> Callable[[FunctionSigContext], FunctionLike] | None:
        return _no_direct_instantiation if self._is_actor_class(fullname) else None

    def _is_actor_class(self, fullname: str) -> bool:
        info = self._type_info(fullname) if "." in fullname else None
        return info is not None and _MARK in info.metadata

    def _type_info(self, fullname: str) -> TypeInfo | None:
        sym = self.lookup_fully_qualified(fullname)
        return sym.node if sym is not None and isinstance(sym.node, TypeInfo) else None


def plugin(version: str) -> type[Plugin]:
    """The entry point mypy calls (with its version, which this plugin does not need)."""
    del version
    return RuntimePlugin


# --- semantic analysis: what @runtime.remote adds to a class ------------------------------


def _add_actor_class_methods(ctx: ClassDefContext) -> bool:
    """Give the class ``remote(*args, **kwargs) -> ActorHandle[Cls]`` and ``options``.

    The arguments of ``remote`` are checked against ``__init__`` later, when the types are
    complete (:func:`_actor_class_remote`).
    """
    info = ctx.cls.info
    self_type = fill_typevars_with_any(info)
    handle = ctx.api.named_type_or_none(_ACTOR_HANDLE, [self_type])
    actor_class = ctx.api.named_type_or_none(_ACTOR_CLASS, [self_type])
    if handle is None or actor_class is None:
        return False  # runtime.core.api.remote is not analyzed yet: ask again later
    info.metadata[_MARK] = {}
    anything = AnyType(TypeOfAny.explicit)
    args = [
        Argument(Var("args"), anything, None, ARG_STAR),
        Argument(Var("kwargs"), anything, None, ARG_STAR2),
    ]
    options = [Argument(Var("options"), anything, None, ARG_STAR2)]
    for name, arguments, result in (("remote", args, handle), ("options", options, actor_class)):
        existing = info.names.get(name)
        if existing is None or not existing.plugin_generated:  # the hook may run again
            # At run time ``Cls.remote`` is ActorClass's even if the class has a method of that
            # name; mypy keeps such a method as "<name>-redefinition" (see _actor_method).
            add_method_to_class(ctx.api, ctx.cls, name, arguments, result, is_classmethod=True)
    return True


# --- type checking ------------------------------------------------------------------------


def _no_direct_instantiation(ctx: FunctionSigContext) -> FunctionLike:
    ret = get_proper_type(ctx.default_signature.ret_type)
    name = ret.type.name if isinstance(ret, Instance) else "this class"
    ctx.api.fail(
        f'Actor class "{name}" cannot be instantiated directly; use {name}.remote()',
        ctx.context,
        code=MISC,
    )
    return ctx.default_signature


def _actor_constructor(ctx: MethodSigContext) -> FunctionLike:
    """``ActorClass[T].remote`` takes the arguments of ``T.__init__``."""
    return _constructor_signature(ctx.default_signature, ctx.api)


def _actor_class_remote(ctx: AttributeContext) -> Type:
    """``Cls.remote`` of a decorated class takes the arguments of ``Cls.__init__``.

    An attribute hook rather than a call hook: mypy names no method for a call on a class
    whose ``__init__`` is overloaded, and this way ``Cls.remote`` itself is typed too.
    """
    default = get_proper_type(ctx.default_attr_type)
    if not isinstance(default, CallableType):
        return ctx.default_attr_type
    return _constructor_signature(default, ctx.api)


def _constructor_signature(default: CallableType, api: CheckerPluginInterface) -> FunctionLike:
    """``default`` (returning ``ActorHandle[T]``) with the parameters of ``T.__init__``."""
    ret = get_proper_type(default.ret_type)
    if not (isinstance(ret, Instance) and ret.type.fullname == _ACTOR_HANDLE and ret.args):
        return default
    actor = get_proper_type(ret.args[0])
    if not isinstance(actor, Instance):
        return default
    ctor = type_object_type(actor.type, lambda name: api.named_generic_type(name, []))
    if not isinstance(ctor, FunctionLike):
        return default
    class_vars = {tv.id for tv in actor.type.defn.type_vars}
    bind = bool(class_vars) and not all(isinstance(get_proper_type(a), AnyType) for a in actor.args)

    def remote(item: CallableType) -> CallableType:
        if bind:  # ActorClass[Box[int]]: the class's type variables are fixed
            item = expand_type_by_instance(item, actor).copy_modified(
                variables=[tv for tv in item.variables if tv.id not in class_vars]
            )
        return item.copy_modified(
            ret_type=Instance(ret.type, [item.ret_type]),  # ActorHandle[<what __init__ makes>]
            fallback=default.fallback,
            name=f"remote of {actor.type.name}",
            definition=None,  # else mypy shows __init__'s `self` in its notes on overloads
        )

    if isinstance(ctor, Overloaded):
        return Overloaded([remote(item) for item in ctor.items])
    assert isinstance(ctor, CallableType)
    return remote(ctor)


def _actor_method(name: str, actor_method: TypeInfo, ctx: AttributeContext) -> Type:
    """``ActorHandle[T].name`` is ``ActorMethod[<params of T.name>, <its result>]``."""
    handle = ctx.type
    if not (isinstance(handle, Instance) and handle.type.fullname == _ACTOR_HANDLE):
        return ctx.default_attr_type  # a union of handles, say: mypy does not say which item
    if handle.type.get(name) is not None:
        return ctx.default_attr_type  # an attribute of the handle itself (``_actor_id``)
    actor = get_proper_type(handle.args[0]) if handle.args else None
    if isinstance(actor, TypeVarType):  # ActorHandle[T], T bound to a class: its methods
        bound = get_proper_type(actor.upper_bound)
        if isinstance(bound, Instance) and bound.type.fullname != "builtins.object":
            actor = bound
    if not isinstance(actor, Instance) or ctx.is_lvalue:
        return ctx.default_attr_type  # ActorHandle[Any], an unbounded type variable, ...
    member_name = name
    sym = actor.type.get(name)
    if sym is not None and sym.plugin_generated and name in ("remote", "options"):
        member_name = f"{name}-redefinition"  # the class's own method, if it has one
        sym = actor.type.get(member_name)
    dunder = name.startswith("__") and name.endswith("__")
    if sym is None and actor.type.fallback_to_any:
        return ctx.default_attr_type  # a base class is Any: the method may be there
    if sym is None or dunder or not _is_remote_method(sym.node):
        ctx.api.fail(
            f'Actor class "{actor.type.name}" has no method "{name}"',
            ctx.context,
            code=ATTR_DEFINED,
        )
        return AnyType(TypeOfAny.from_error)
    member = get_proper_type(find_member(member_name, actor, actor))
    if not isinstance(member, CallableType):
        return ctx.default_attr_type  # overloaded, or typed Any by a decorator
    result = get_proper_type(member.ret_type)
    if (
        isinstance(result, Instance)
        and result.type.fullname == "typing.Coroutine"
        and len(result.args) == 3
    ):
        result = get_proper_type(result.args[2])  # an async def: what it returns when awaited
    params: Type = Parameters(member.arg_types, member.arg_kinds, member.arg_names)
    ret: Type = result
    if member.variables:  # a generic method: its type variables cannot escape into R
        ids = {tv.id for tv in member.variables}
        params, ret = erase_typevars(params, ids), erase_typevars(ret, ids)
    return Instance(actor_method, [params, ret])


def _is_remote_method(node: SymbolNode | None) -> bool:
    """Mirror ``ActorClass``: plain and static methods are remote; properties and
    classmethods are not; nor are attributes, except functions assigned in the class body."""
    if isinstance(node, FuncBase):
        return not node.is_class and not node.is_property
    if isinstance(node, Decorator):
        return not node.func.is_class and not node.func.is_property
    if isinstance(node, Var):
        return node.is_initialized_in_class and isinstance(get_proper_type(node.type), FunctionLike)
    return False
