"""The public names are exactly the documented ones."""

from __future__ import annotations

import runtime
import runtime.exceptions


def test_runtime_exports_the_documented_core_api() -> None:
    assert sorted(runtime.__all__) == runtime.__all__
    assert set(runtime.__all__) == {
        "ActorClass", "ActorHandle", "ActorMethod", "Cluster", "DynamicObjectRefGenerator",
        "ObjectRef", "ObjectRefGenerator", "RemoteFunction", "RuntimeContext",
        "available_resources", "cancel", "cluster_resources", "connect", "dag", "exceptions",
        "get", "get_actor", "get_gpu_ids", "get_runtime_context", "init", "is_initialized",
        "kill", "method",
        "nodes", "put", "remote", "shutdown", "timeline", "wait",
    }  # fmt: skip
    for name in runtime.__all__:
        assert getattr(runtime, name).__doc__, f"runtime.{name} has no docstring"


def test_runtime_util_exports_the_documented_names() -> None:
    import runtime.util

    assert sorted(runtime.util.__all__) == runtime.util.__all__
    assert set(runtime.util.__all__) == {
        "ActorPool", "Empty", "Full", "NodeAffinitySchedulingStrategy", "PlacementGroup",
        "PlacementGroupSchedulingStrategy", "Queue", "get_current_placement_group",
        "get_node_ip_address", "get_placement_group", "inspect_serializability",
        "list_named_actors", "placement_group", "placement_group_table", "remove_placement_group",
    }  # fmt: skip
    for name in runtime.util.__all__:
        assert getattr(runtime.util, name).__doc__, f"runtime.util.{name} has no docstring"


def test_the_errors_are_the_documented_ones_with_rays_names_as_aliases() -> None:
    exc = runtime.exceptions
    assert set(exc.__all__) == {
        "ActorDiedError", "ActorError", "ActorUnavailableError", "AuthenticationError",
        "GetTimeoutError", "InfeasibleError", "NodeDiedError", "ObjectLostError",
        "OutOfMemoryError", "OwnerDiedError", "PendingCallsLimitExceeded", "ProtocolError",
        "RuntimeBaseError", "SerializationError", "TaskCancelledError", "TaskError",
        # Ray's names (docs/compat.md)
        "ActorUnschedulableError", "ObjectFetchTimedOutError", "ObjectStoreFullError",
        "RayActorError", "RayError", "RaySystemError", "RayTaskError", "RuntimeEnvSetupError",
        "TaskUnschedulableError", "WorkerCrashedError",
    }  # fmt: skip


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
