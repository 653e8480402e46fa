"""The head's key-value store, for any process of the cluster: Ray's ``internal_kv`` calls.

Keys, namespaces and values are bytes (a ``str`` is taken as its UTF-8 bytes). Each call is
one request to the head; the sync functions block (call them off the event loop), their
``*_async`` twins are awaited from async code (an actor's async method, a task, a driver's
loop). Entries stay until deleted: they outlive the actor or driver that wrote them, and a
head with a state directory keeps them across its own restart.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

from ..control.kv import KVLimitError, check_entry
from ..objects import refs as _refs
from ..wire import protocol as p
from .blocking import blocking, current_worker

Bytes = str | bytes


def _text(value: Bytes | None, what: str) -> str:
    """The wire form of a key or namespace: its bytes, one character each (Latin-1)."""
    if value is None:
        return ""
    if isinstance(value, str):
        value = value.encode()
    if not isinstance(value, bytes | bytearray | memoryview):
        raise TypeError(f"a KV {what} must be str or bytes, not {type(value).__name__}")
    return bytes(value).decode("latin-1")


def _value(value: Bytes) -> bytes:
    if isinstance(value, str):
        return value.encode()
    if not isinstance(value, bytes | bytearray | memoryview):
        raise TypeError(f"a KV value must be str or bytes, not {type(value).__name__}")
    return bytes(value)


def _op(
    op: str, key: Bytes, namespace: Bytes | None, value: Bytes | None = None, overwrite: bool = True
) -> p.KvOp:
    msg = p.KvOp(0, op, _text(namespace, "namespace"), _text(key, "key"), overwrite=overwrite)
    if value is not None:
        msg.value = _value(value)
    check_entry(msg.namespace, msg.key, msg.value)
    return msg


async def _request(msg: p.KvOp) -> Any:
    """Send ``msg`` to the head from the worker's loop; a refused put is a KVLimitError."""
    worker = current_worker()
    try:
        if asyncio.get_running_loop() is worker.loop:
            return await worker.head_request(msg)
        fut = asyncio.run_coroutine_threadsafe(worker.head_request(msg), worker.loop)
        return await asyncio.wrap_future(fut)
    except ValueError as exc:
        if type(exc) is ValueError:
            # The head answers a well-formed request with a ValueError only for a bound
            # (its store is full): see KVStore.handle.
            raise KVLimitError(str(exc)) from None
        raise


def _sync(coro: Coroutine[Any, Any, Any]) -> Any:
    try:
        worker = current_worker()
    except RuntimeError:
        coro.close()
        raise
    return blocking(worker, coro)


# --- async ---------------------------------------------------------------------------------


async def _internal_kv_put_async(
    key: Bytes, value: Bytes, overwrite: bool = True, *, namespace: Bytes | None = None
) -> bool:
    """Store ``value`` under ``key`` (kept if it exists and ``overwrite`` is False).

    Returns whether the key already existed, as Ray's does. Raises :class:`KVLimitError`
    for a key, namespace or value over its bound, or when the head's store is full.
    """
    added = await _request(_op("put", key, namespace, value, overwrite))
    return not added


async def _internal_kv_get_async(key: Bytes, *, namespace: Bytes | None = None) -> bytes | None:
    """The value under ``key``, or None."""
    value = await _request(_op("get", key, namespace))
    return None if value is None else bytes(value)


async def _internal_kv_exists_async(key: Bytes, *, namespace: Bytes | None = None) -> bool:
    """Whether ``key`` holds a value."""
    return bool(await _request(_op("exists", key, namespace)))


async def _internal_kv_del_async(
    key: Bytes, *, del_by_prefix: bool = False, namespace: Bytes | None = None
) -> int:
    """Delete ``key`` (every key starting with it, with ``del_by_prefix``); returns how many
    were deleted."""
    return int(await _request(_op("del_prefix" if del_by_prefix else "del", key, namespace)))


async def _internal_kv_list_async(prefix: Bytes, *, namespace: Bytes | None = None) -> list[bytes]:
    """The keys that start with ``prefix``, as bytes."""
    keys = await _request(_op("keys", prefix, namespace))
    return [k.encode("latin-1") for k in keys]


# --- sync ----------------------------------------------------------------------------------


def _internal_kv_initialized() -> bool:
    """Whether this process is connected to a cluster (and so has a KV store to talk to)."""
    return _refs.current_worker_or_none() is not None


def _internal_kv_put(
    key: Bytes, value: Bytes, overwrite: bool = True, *, namespace: Bytes | None = None
) -> bool:
    """Store ``value`` under ``key``; returns whether the key already existed (see
    :func:`_internal_kv_put_async`)."""
    return bool(_sync(_internal_kv_put_async(key, value, overwrite, namespace=namespace)))


def _internal_kv_get(key: Bytes, *, namespace: Bytes | None = None) -> bytes | None:
    """The value under ``key``, or None."""
    value: bytes | None = _sync(_internal_kv_get_async(key, namespace=namespace))
    return value


def _internal_kv_exists(key: Bytes, *, namespace: Bytes | None = None) -> bool:
    """Whether ``key`` holds a value."""
    return bool(_sync(_internal_kv_exists_async(key, namespace=namespace)))


def _internal_kv_del(
    key: Bytes, *, del_by_prefix: bool = False, namespace: Bytes | None = None
) -> int:
    """Delete ``key`` (or every key starting with it); returns how many were deleted."""
    return int(_sync(_internal_kv_del_async(key, del_by_prefix=del_by_prefix, namespace=namespace)))


def _internal_kv_list(prefix: Bytes, *, namespace: Bytes | None = None) -> list[bytes]:
    """The keys that start with ``prefix``, as bytes."""
    keys: list[bytes] = _sync(_internal_kv_list_async(prefix, namespace=namespace))
    return keys


__all__ = [
    "KVLimitError",
    "_internal_kv_del",
    "_internal_kv_del_async",
    "_internal_kv_exists",
    "_internal_kv_exists_async",
    "_internal_kv_get",
    "_internal_kv_get_async",
    "_internal_kv_initialized",
    "_internal_kv_list",
    "_internal_kv_list_async",
    "_internal_kv_put",
    "_internal_kv_put_async",
]
