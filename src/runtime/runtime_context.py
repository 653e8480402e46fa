"""Ray's module path ``ray.runtime_context``: :class:`RuntimeContext` and
:func:`get_runtime_context`, the same objects as ``runtime`` exports."""

from runtime import RuntimeContext, get_runtime_context

__all__ = ["RuntimeContext", "get_runtime_context"]
