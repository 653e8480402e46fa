"""Ray's module path ``ray.dag.class_node``: :class:`ClassNode`, :class:`ClassMethodNode`."""

from runtime.dag._node import ClassMethodNode, ClassNode

__all__ = ["ClassMethodNode", "ClassNode"]
