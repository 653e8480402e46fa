"""Ray's module path ``ray.dag.input_node``: :class:`InputNode` and the parts
of its input."""

from runtime.dag._node import DAGInputData, InputAttributeNode, InputNode

__all__ = ["DAGInputData", "InputAttributeNode", "InputNode"]
