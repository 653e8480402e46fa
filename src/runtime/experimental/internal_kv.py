"""The head's key-value store under Ray's names (``ray.experimental.internal_kv``).

Keys, values and namespaces are bytes (a ``str`` counts as its UTF-8 bytes); a namespace of
None is the empty one. Each call is one request to the head: the sync functions block, so
call them off the event loop; their ``*_async`` twins are awaited from async code (an async
actor method, for instance). Entries stay until deleted, beyond the life of their writer,
and across a restart of a head that has a state directory. Bounds: a key of at most 1,024
bytes, a namespace of at most 256, a value of at most 64 MiB and 1 GiB in all; beyond them
:class:`KVLimitError` (a ``ValueError``). See docs/core.md.

Example::

    from runtime.experimental import internal_kv

    internal_kv._internal_kv_put(b"model/latest", b"v7", namespace="my-app")
    assert internal_kv._internal_kv_get(b"model/latest", namespace="my-app") == b"v7"
"""

from runtime.core.api.kv import (
    KVLimitError,
    _internal_kv_del,
    _internal_kv_del_async,
    _internal_kv_exists,
    _internal_kv_exists_async,
    _internal_kv_get,
    _internal_kv_get_async,
    _internal_kv_initialized,
    _internal_kv_list,
    _internal_kv_list_async,
    _internal_kv_put,
    _internal_kv_put_async,
)
from runtime.core.control.kv import MAX_KEY_LEN, MAX_NAMESPACE_LEN, MAX_TOTAL_BYTES, MAX_VALUE_BYTES

__all__ = [
    "MAX_KEY_LEN",
    "MAX_NAMESPACE_LEN",
    "MAX_TOTAL_BYTES",
    "MAX_VALUE_BYTES",
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
