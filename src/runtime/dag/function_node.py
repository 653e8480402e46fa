"""Ray's module path ``ray.dag.function_node``: :class:`FunctionNode`."""

from runtime.dag._node import FunctionNode

__all__ = ["FunctionNode"]
