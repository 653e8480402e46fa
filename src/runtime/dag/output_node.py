"""Ray's module path ``ray.dag.output_node``: :class:`MultiOutputNode`."""

from runtime.dag._node import MultiOutputNode

__all__ = ["MultiOutputNode"]
