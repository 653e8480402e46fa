"""An autoscaler: pending demand and idle nodes turned into launches and stops through a
node provider (``ray.autoscaler`` through ``runtime.compat``). See docs/deploy.md.

Example::

    import runtime
    from runtime.autoscaler import Autoscaler, LocalProcessProvider, NodeType

    runtime.init(address="HEAD:6380")
    scaler = Autoscaler(
        LocalProcessProvider("HEAD:6380", token_file="token"),
        [NodeType("cpu2", {"CPU": 2}, max_workers=4)],
        idle_timeout_s=60,
    )
    scaler.start()
"""

from . import sdk
from ._decide import Decision, NodeType, NodeView, decide
from ._kubernetes import KubernetesProvider
from ._monitor import Autoscaler, pending_demand
from ._providers import NODE_LABEL, LocalProcessProvider, NodeProvider
from ._slurm import SlurmProvider

__all__ = [
    "NODE_LABEL",
    "Autoscaler",
    "Decision",
    "KubernetesProvider",
    "LocalProcessProvider",
    "NodeProvider",
    "NodeType",
    "NodeView",
    "SlurmProvider",
    "decide",
    "pending_demand",
    "sdk",
]
