"""Ray's module path ``ray.dag.dag_node``: :class:`DAGNode`."""

from runtime.dag._node import DAGNode

__all__ = ["DAGNode"]
