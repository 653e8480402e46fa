"""The cyclic garbage collector of a node process.

A pipelined actor call allocates about ten container objects on a node (its job record, its
context, the lists in its decoded arguments and its answer, ...), and thousands of calls are
in flight at once, so with Python's default threshold (a collection of the youngest
generation every 700 container allocations) a collection ran every ~70 calls and found most
of what it scanned still alive: those moved on to the older generations and were scanned
again there, and the full collections that followed walked them once more (~1.7 us of node
CPU per call, measured with ``gc.callbacks`` on a node during pipelined calls; see
docs/performance.md). With :data:`YOUNG` container allocations between collections, the
calls of a batch are mostly answered (and freed) before one runs: ~0.8 us a call.

What it costs: a reference cycle that becomes garbage is freed after at most :data:`YOUNG`
further container allocations instead of 700 (then, like before, once the older generations'
own thresholds come round). Objects freed by their reference count, which is nearly all of
them, are freed at once as before. Every process ``node_main`` runs (nodes, and the head,
the same program) sets it; the driver is left alone: its collector is the program's.
"""

from __future__ import annotations

import gc

#: Container allocations between two collections of the youngest generation (Python: 700).
YOUNG = 10_000


def tune() -> None:
    """Set this process's collector for a node (its main program calls it once)."""
    _, middle, old = gc.get_threshold()
    gc.set_threshold(YOUNG, middle, old)


__all__ = ["YOUNG", "tune"]
