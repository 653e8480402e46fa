"""Ray's DAG API (``ray.dag``): build a graph of remote calls with ``.bind()``, run it with
``.execute()``.

Example::

    from runtime.dag import InputNode, MultiOutputNode

    @runtime.remote
    def add(a, b):
        return a + b

    with InputNode() as inp:
        dag = MultiOutputNode([add.bind(inp, 1), add.bind(inp, 2)])
    runtime.get(dag.execute(10))  # [11, 12]

See :mod:`runtime.dag._node` for the semantics and docs/compat.md for the differences from Ray.
"""

from runtime.dag._node import (
    ClassMethodNode,
    ClassNode,
    DAGInputData,
    DAGNode,
    FunctionNode,
    InputAttributeNode,
    InputNode,
    MultiOutputNode,
)

__all__ = [
    "ClassMethodNode",
    "ClassNode",
    "DAGInputData",
    "DAGNode",
    "FunctionNode",
    "InputAttributeNode",
    "InputNode",
    "MultiOutputNode",
]
