"""Ray's module path ``ray.util.queue``: the cluster-wide :class:`Queue` and its errors."""

from runtime.util._queue import Empty, Full, Queue

__all__ = ["Empty", "Full", "Queue"]
