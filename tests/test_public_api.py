"""The public names are exactly the documented ones."""

from __future__ import annotations

import runtime
import runtime.exceptions


def test_runtime_exports_the_documented_core_api() -> None:
    assert sorted(runtime.__all__) == runtime.__all__
    assert set(runtime.__all__) == {
        "ActorClass", "ActorHandle", "ActorMethod", "Cluster", "ObjectRef", "ObjectRefGenerator",
        "RemoteFunction", "RuntimeContext", "available_resources", "cancel", "cluster_resources",
        "connect", "exceptions",
        "get", "get_actor", "get_runtime_context", "init", "is_initialized", "kill", "method",
        "nodes", "put", "remote", "shutdown", "wait",
    }  # fmt: skip
    for name in runtime.__all__:
        assert getattr(runtime, name).__doc__, f"runtime.{name} has no docstring"


def test_every_error_derives_from_the_root_and_its_builtin() -> None:
    exc = runtime.exceptions
    assert sorted(exc.__all__) == exc.__all__
    for name in exc.__all__:
        assert issubclass(getattr(exc, name), exc.RuntimeBaseError)
    assert issubclass(exc.GetTimeoutError, TimeoutError)
    assert issubclass(exc.SerializationError, TypeError)
    assert issubclass(exc.AuthenticationError, PermissionError)
    assert issubclass(exc.ProtocolError, ValueError)
    assert issubclass(exc.OutOfMemoryError, MemoryError)
