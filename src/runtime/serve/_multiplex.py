"""Model multiplexing: many models over one deployment's replicas, loaded on demand.

``@serve.multiplexed(max_num_models_per_replica=N)`` decorates the async method that loads a
model by id; each replica keeps at most N loaded, least recently used first out (the
evicted model's ``__del__`` runs, awaited if it is a coroutine). A request names its model
with the ``serve_multiplexed_model_id`` HTTP header or ``handle.options(multiplexed_model_id=...)``;
inside the replica ``serve.get_multiplexed_model_id()`` returns it. Routers prefer
replicas that hold the request's model: the ones this router sent it to, and the ones the
replicas themselves report (through the controller) once they loaded it.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import inspect
import logging
from collections.abc import Callable
from typing import Any

from ._context import current_replica, current_request

log = logging.getLogger(__name__)

#: The HTTP header that names the model of a request (Ray's name).
MODEL_ID_HEADER = "serve_multiplexed_model_id"

#: Called with the replica's tag and its loaded model ids whenever they change (set by the
#: replica that hosts the object; several replicas may share a process).
_listeners: dict[str, Callable[[list[str]], None]] = {}


def get_multiplexed_model_id() -> str:
    """The model id of the request being served ("" when it names none)."""
    ctx = current_request.get()
    return ctx.model_id if ctx is not None else ""


class _ModelCache:
    """One replica's loaded models for one decorated method, least recently used first."""

    def __init__(self, load: Callable[..., Any], capacity: int) -> None:
        self.load = load
        self.capacity = capacity
        self.models: collections.OrderedDict[str, Any] = collections.OrderedDict()
        self.loading: dict[str, asyncio.Future[Any]] = {}
        self.tag = ""

    async def get(self, owner: Any, model_id: str) -> Any:
        if model_id in self.models:
            self.models.move_to_end(model_id)
            return self.models[model_id]
        pending = self.loading.get(model_id)
        if pending is not None:
            return await asyncio.shield(pending)
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.loading[model_id] = fut
        try:
            while len(self.models) >= self.capacity:
                old_id, old = self.models.popitem(last=False)
                await _unload(old_id, old)
            model = await (self.load(owner, model_id) if owner is not None else self.load(model_id))
        except BaseException as exc:
            fut.set_exception(exc)
            fut.exception()  # retrieved: concurrent waiters re-raise it themselves
            raise
        finally:
            self.loading.pop(model_id, None)
        self.models[model_id] = model
        fut.set_result(model)
        self._changed()
        return model

    def _changed(self) -> None:
        ctx = current_replica.get()
        if ctx is not None:
            self.tag = ctx.replica_tag
        listener = _listeners.get(self.tag)
        if listener is not None:
            listener(list(self.models))


async def _unload(model_id: str, model: Any) -> None:
    """Run an evicted model's ``__del__`` (awaited if it is a coroutine); errors are logged."""
    fn = getattr(model, "__del__", None)
    if fn is None:
        return
    try:
        result = fn()
        if inspect.isawaitable(result):
            await result
    except Exception:
        log.exception("serve: __del__ of the evicted model %r failed", model_id)


def multiplexed(
    func: Callable[..., Any] | None = None, /, *, max_num_models_per_replica: int = 3
) -> Any:
    """Decorate the async method (or function) that loads a model by id.

    Example::

        @serve.deployment
        class Models:
            @serve.multiplexed(max_num_models_per_replica=2)
            async def get_model(self, model_id: str):
                return load_model(model_id)

            async def __call__(self, request):
                model = await self.get_model(serve.get_multiplexed_model_id())
                return model.predict(await request.json())
    """
    if (
        not isinstance(max_num_models_per_replica, int)
        or isinstance(max_num_models_per_replica, bool)
        or max_num_models_per_replica < 1
    ):
        raise ValueError(
            f"max_num_models_per_replica must be an int >= 1, got {max_num_models_per_replica!r}"
        )

    def wrap(fn: Callable[..., Any]) -> Callable[..., Any]:
        if not inspect.iscoroutinefunction(fn):
            raise TypeError(f"@serve.multiplexed needs an async def function, got {fn!r}")
        params = list(inspect.signature(fn).parameters)
        attr = f"__serve_models_{fn.__name__}"
        free: dict[str, _ModelCache] = {}

        if params and params[0] == "self":

            @functools.wraps(fn)
            async def method(self: Any, model_id: str) -> Any:
                cache = self.__dict__.get(attr)
                if cache is None:
                    cache = _ModelCache(fn, max_num_models_per_replica)
                    setattr(self, attr, cache)
                return await cache.get(self, _check_id(model_id))

            return method

        @functools.wraps(fn)
        async def function(model_id: str) -> Any:
            cache = free.get("c")
            if cache is None:
                cache = free["c"] = _ModelCache(fn, max_num_models_per_replica)
            return await cache.get(None, _check_id(model_id))

        return function

    if func is not None:
        return wrap(func)
    return wrap


def _check_id(model_id: Any) -> str:
    if not isinstance(model_id, str) or not model_id:
        raise ValueError(
            f"a multiplexed model id must be a non-empty string, got {model_id!r} (send it "
            f"in the {MODEL_ID_HEADER!r} header or with handle.options(multiplexed_model_id=))"
        )
    return model_id
