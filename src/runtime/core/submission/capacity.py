"""A task no live node could hold waits for one to join, instead of failing at once.

A new task gets :func:`~runtime.core.control.records.infeasible_after` seconds (nodes may
still be joining), then fails with InfeasibleError; a retry (its node died under it, so a node
of its shape existed) waits for good, warned after
:func:`~runtime.core.control.waiting.warn_after` seconds, as Ray's tasks do. It is placed as
soon as the cluster view shows a node that can hold it (woken by each change of the view).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any, Protocol

from ..common.exceptions import InfeasibleError, RuntimeBaseError
from ..control.records import infeasible_after
from ..control.waiting import warn_after
from ..scheduling.labels import matches
from ..scheduling.scheduler import fits, takes_work
from ..wire import protocol as p
from .pending import PendingTask

log = logging.getLogger("runtime.worker")


class CapacityHost(Protocol):
    """What waiting for capacity needs of the process's worker (the worker is one)."""

    @property
    def view(self) -> dict[str, p.NodeInfo]: ...
    @property
    def view_changed(self) -> asyncio.Event: ...
    @property
    def tasks(self) -> dict[bytes, PendingTask]: ...


def waits_for_capacity(exc: RuntimeBaseError, msg: p.SubmitTask) -> bool:
    """True when placing ``msg`` failed for want of a node of its shape (not for a bundle or
    a node it is pinned to, which no joining node changes)."""
    pinned = msg.strategy is not None and msg.strategy[0] == "node"
    return isinstance(exc, InfeasibleError) and msg.bundle is None and not pinned


def can_hold(view: dict[str, p.NodeInfo], demand: dict[str, float], labels: Any = None) -> bool:
    """A node in the view takes work, has the shape of ``demand`` and, with a label selector
    ``labels``, matches it."""
    return any(
        takes_work(n) and fits(demand, n.resources) and (not labels or matches(n.labels, labels))
        for n in view.values()
    )


async def wait_for_capacity(
    host: CapacityHost,
    task: PendingTask,
    msg: p.SubmitTask,
    error: RuntimeBaseError,
    *,
    place: Callable[[], None],
    fail: Callable[[RuntimeBaseError], Any],
) -> None:
    """Call ``place()`` once a node that can hold the task is in the view; ``fail(error)``
    when a new task's grace period ends first. Returns quietly if the task was cancelled."""
    grace = None if msg.attempt > 0 else infeasible_after()
    warn = warn_after()
    start = time.monotonic()
    strategy = msg.strategy
    labels = strategy[1] if strategy is not None and strategy[0] == "labels" else None
    warned = False
    task.waiting = dict(msg.resources)  # its row says what it waits for (the autoscaler's)
    try:
        while host.tasks.get(msg.task_id) is task:
            pinned = str(strategy[1]) if strategy is not None and strategy[0] == "node" else None
            if (pinned is None or pinned in host.view) and can_hold(
                host.view, msg.resources, labels
            ):
                place()
                return
            waited = time.monotonic() - start
            if grace is not None and waited >= grace:
                fail(InfeasibleError(f"{error} (no such node joined within {grace:g} s)"))
                return
            if not warned and waited >= warn:
                warned = True
                log.warning(
                    "task %s has waited %.0f s for a node with %s: no live node can hold it; "
                    "start one with those resources",
                    msg.fn_name,
                    waited,
                    dict(msg.resources),
                )
            left = [t - waited for t in (grace, None if warned else warn) if t is not None]
            changed = host.view_changed
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(min(left) if left else None):
                    await changed.wait()
    finally:
        task.waiting = None


__all__ = ["CapacityHost", "can_hold", "wait_for_capacity", "waits_for_capacity"]
