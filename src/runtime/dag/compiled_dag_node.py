"""Ray's ``ray.dag.compiled_dag_node``: :class:`CompiledDAG` (see :mod:`runtime.dag._compiled`)."""

from runtime.dag._compiled import CompiledDAG, CompiledDAGFuture

__all__ = ["CompiledDAG", "CompiledDAGFuture"]
