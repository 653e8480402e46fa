"""The head's key-value store: small, namespaced, bounded entries that outlive their writers.

Libraries keep here what must survive the restart of the actor that wrote it (Serve's
controller keeps its applications). Entries live in the head's memory and, when the head
has a state directory, in its SQLite file too, so a restarted head has them again. Keys and
namespaces are strings on the wire (the public API maps bytes to them one to one, as
Latin-1); every entry, and the store as a whole, is bounded.
"""

from __future__ import annotations

import os
from typing import Any

from ..common.exceptions import RuntimeBaseError
from ..wire import protocol as p
from .head_store import HeadStore

#: The longest namespace and key, in characters (bytes, through the public API).
MAX_NAMESPACE_LEN = 256
MAX_KEY_LEN = 1024
#: The largest value one key holds, and all keys and values together (bytes; the head
#: reads ``RUNTIME_KV_MAX_BYTES`` for the second).
MAX_VALUE_BYTES = 64 << 20
MAX_TOTAL_BYTES = 1 << 30
#: The operations of a :class:`~runtime.core.wire.protocol.KvOp`.
OPS = frozenset({"put", "get", "del", "del_prefix", "exists", "keys"})


class KVLimitError(RuntimeBaseError, ValueError):
    """A key, namespace or value over its bound, or a KV store with no room left."""


def check_entry(namespace: str, key: str, value: bytes | None) -> None:
    """Raise :class:`KVLimitError` if the entry is over a bound (the value may be None)."""
    if len(namespace) > MAX_NAMESPACE_LEN:
        raise KVLimitError(
            f"a KV namespace holds at most {MAX_NAMESPACE_LEN} bytes, not {len(namespace)}"
        )
    if len(key) > MAX_KEY_LEN:
        raise KVLimitError(f"a KV key holds at most {MAX_KEY_LEN} bytes, not {len(key)}")
    if value is not None and len(value) > MAX_VALUE_BYTES:
        raise KVLimitError(
            f"a KV value holds at most {MAX_VALUE_BYTES} bytes, not {len(value)}: keep large "
            "data in the object store or in files, and its location here"
        )


class KVStore:
    """The entries, by (namespace, key), written through to the head's SQLite file."""

    def __init__(self) -> None:
        self.entries: dict[tuple[str, str], bytes] = {}
        self.total = 0  # bytes of keys and values held
        self.capacity = int(os.environ.get("RUNTIME_KV_MAX_BYTES", MAX_TOTAL_BYTES))
        self.store: HeadStore | None = None

    def __len__(self) -> int:
        return len(self.entries)

    def load(self, store: HeadStore) -> None:
        """Take up the entries a previous head wrote, and write through to ``store`` from now."""
        self.store = store
        for (namespace, key), value in store.kv().items():
            self._set((namespace, key), value)

    def _set(self, entry: tuple[str, str], value: bytes) -> None:
        old = self.entries.get(entry)
        if old is not None:
            self.total -= len(entry[1]) + len(old)
        self.entries[entry] = value
        self.total += len(entry[1]) + len(value)

    def _drop(self, entry: tuple[str, str]) -> bool:
        old = self.entries.pop(entry, None)
        if old is None:
            return False
        self.total -= len(entry[1]) + len(old)
        if self.store is not None:
            self.store.delete(*entry)
        return True

    def handle(self, msg: p.KvOp) -> Any:
        """Answer one request: put -> added (bool), get -> value or None, del / del_prefix ->
        how many were deleted, exists -> bool, keys -> the keys starting with ``msg.key``."""
        if msg.op not in OPS:
            raise ValueError(f"unknown KV operation {msg.op!r}: one of {sorted(OPS)}")
        try:
            return self._handle(msg)
        except KVLimitError as exc:
            # Sent as a plain ValueError (an error code of its own would be a change to the
            # wire's codes): the only ValueError a well-formed request gets, so the caller's
            # side raises it as a KVLimitError again.
            raise ValueError(str(exc)) from None

    def _handle(self, msg: p.KvOp) -> Any:
        check_entry(msg.namespace, msg.key, msg.value)
        entry = (msg.namespace, msg.key)
        match msg.op:
            case "put":
                return self._put(entry, msg.value, msg.overwrite)
            case "get":
                return self.entries.get(entry)
            case "exists":
                return entry in self.entries
            case "del":
                return int(self._drop(entry))
            case "del_prefix":
                return sum(self._drop(e) for e in self._matching(msg.namespace, msg.key))
            case _:  # "keys"
                return [key for _, key in self._matching(msg.namespace, msg.key)]

    def _put(self, entry: tuple[str, str], value: bytes | None, overwrite: bool) -> bool:
        if value is None:
            raise ValueError("a KV put needs a value")
        old = self.entries.get(entry)
        if old is not None and not overwrite:
            return False
        grows = len(value) - (len(old) if old is not None else -len(entry[1]))
        if self.total + grows > self.capacity:
            raise KVLimitError(
                f"the head's KV store is full ({self.total} of {self.capacity} bytes used): "
                "delete entries first"
            )
        self._set(entry, value)
        if self.store is not None:
            self.store.put(entry[0], entry[1], value)
        return old is None

    def _matching(self, namespace: str, prefix: str) -> list[tuple[str, str]]:
        return [e for e in self.entries if e[0] == namespace and e[1].startswith(prefix)]


__all__ = [
    "MAX_KEY_LEN",
    "MAX_NAMESPACE_LEN",
    "MAX_TOTAL_BYTES",
    "MAX_VALUE_BYTES",
    "KVLimitError",
    "KVStore",
    "check_entry",
]
