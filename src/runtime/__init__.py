"""runtime: an asyncio-native distributed actor runtime with a Ray-compatible API.

Example::

    import runtime

    runtime.init()

    @runtime.remote
    def square(x):
        return x * x

    print(runtime.get([square.remote(i) for i in range(4)]))
    runtime.shutdown()
"""

from runtime import exceptions
from runtime.core.api.context import RuntimeContext, get_gpu_ids, get_runtime_context
from runtime.core.api.dynamic import DynamicObjectRefGenerator
from runtime.core.api.methods import method
from runtime.core.api.remote import (
    ActorClass,
    ActorHandle,
    ActorMethod,
    RemoteFunction,
    remote,
)
from runtime.core.api.session import (
    Cluster,
    cancel,
    connect,
    get,
    get_actor,
    init,
    is_initialized,
    kill,
    put,
    shutdown,
    wait,
)
from runtime.core.api.state import available_resources, cluster_resources, nodes
from runtime.core.api.timeline import timeline
from runtime.core.objects.refs import ObjectRef
from runtime.core.submission.streaming import ObjectRefGenerator

__version__ = "0.1.0"

__all__ = [
    "ActorClass",
    "ActorHandle",
    "ActorMethod",
    "Cluster",
    "DynamicObjectRefGenerator",
    "ObjectRef",
    "ObjectRefGenerator",
    "RemoteFunction",
    "RuntimeContext",
    "available_resources",
    "cancel",
    "cluster_resources",
    "connect",
    "exceptions",
    "get",
    "get_actor",
    "get_gpu_ids",
    "get_runtime_context",
    "init",
    "is_initialized",
    "kill",
    "method",
    "nodes",
    "put",
    "remote",
    "shutdown",
    "timeline",
    "wait",
]

# Ray's DAG API: ``runtime.dag`` (InputNode, MultiOutputNode, ``.execute()``); the ``.bind()``
# of remote functions, actor classes and actor methods makes its nodes; see docs/compat.md.
from runtime import dag

__all__ += ["dag"]
__all__.sort()

#: The libraries, imported on first access (``runtime.tune``), so ``import runtime`` stays light.
_LIBRARIES = frozenset({"tune", "train", "rllib", "serve", "data", "util"})
#: Ray's other top-level modules, mirrored by the compat layer (also imported on first access).
_LIBRARIES |= {"actor", "air", "job_config", "runtime_context", "runtime_env"}


def __getattr__(name: str) -> object:
    if name in _LIBRARIES:
        import importlib

        return importlib.import_module(f"runtime.{name}")
    raise AttributeError(f"module 'runtime' has no attribute {name!r}")
