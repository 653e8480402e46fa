"""Utilities over the core API, named as in ``ray.util``.

- :class:`ActorPool`: run many values through a fixed set of actors (``map``,
  ``map_unordered``, ``submit``, ``get_next``, ``get_next_unordered``, ``has_next``).
- :class:`Queue`: a first-in, first-out queue shared across the cluster, held by an async
  actor (sync ``put``/``get`` and async ``put_async``/``get_async``, with timeouts).
- :class:`Empty`, :class:`Full`: what ``Queue.get`` and ``Queue.put`` raise when there is
  no item or no room (subclasses of ``queue.Empty`` and ``queue.Full``).

See ``docs/util.md`` for the details and the differences from Ray.
"""

from runtime.util._actor_pool import ActorPool
from runtime.util._queue import Empty, Full, Queue

__all__ = [
    "ActorPool",
    "Empty",
    "Full",
    "Queue",
]
