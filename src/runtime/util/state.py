"""The cluster's state, named as Ray's ``ray.util.state``: ``list_nodes``, ``list_actors``,
``list_placement_groups`` (the head's tables), ``list_tasks`` (what every member runs,
queues and waits on now) and ``list_objects`` (what pins memory, and who owns it).

Each returns a list of rows; a row is a dict whose keys also read as attributes
(``row["state"]`` or ``row.state``). ``filters`` takes Ray's ``(key, "=" | "!=", value)``
triples, compared as strings; ``limit`` caps the rows. The CLI shows the same tables:
``python -m runtime list nodes|actors|tasks|objects``. See ``docs/util.md``.

``get_log`` yields what an actor or task printed (the lines ``python -m runtime logs``
shows; see ``docs/observability.md``).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from typing import Any

from runtime.core.api.observe import format_line, get_logs
from runtime.core.api.state import list_state

__all__ = [
    "StateRow",
    "get_actor",
    "get_log",
    "list_actors",
    "list_nodes",
    "list_objects",
    "list_placement_groups",
    "list_tasks",
]

#: Ray's default cap on the rows a listing returns.
DEFAULT_LIMIT = 100
Filter = tuple[str, str, Any]


class StateRow(dict[str, Any]):
    """One row: a dict whose keys are also attributes (``row.actor_id``)."""

    def __getattr__(self, key: str) -> Any:
        try:
            return self[key]
        except KeyError:
            raise AttributeError(f"a state row has no field {key!r}: {sorted(self)}") from None


def list_nodes(
    *, filters: Iterable[Filter] | None = None, limit: int = DEFAULT_LIMIT, address: None = None
) -> list[StateRow]:
    """Every member of the cluster (node processes and drivers) the head knows of, and the
    last node processes that died. Besides this runtime's fields, Ray's: ``state``
    (``ALIVE``/``DEAD``), ``is_head_node``, ``node_ip``, ``node_name`` and
    ``resources_total`` (the host's, shared by its processes)."""
    return _listing("nodes", filters, limit, address)


def list_actors(
    *, filters: Iterable[Filter] | None = None, limit: int = DEFAULT_LIMIT, address: None = None
) -> list[StateRow]:
    """Every actor the head knows of: alive, pending, restarting, and the recently dead."""
    return _listing("actors", filters, limit, address)


def list_placement_groups(
    *, filters: Iterable[Filter] | None = None, limit: int = DEFAULT_LIMIT, address: None = None
) -> list[StateRow]:
    """Every placement group the head knows of."""
    return _listing("placement_groups", filters, limit, address)


def list_tasks(
    *, filters: Iterable[Filter] | None = None, limit: int = DEFAULT_LIMIT, address: None = None
) -> list[StateRow]:
    """Every live task and actor call (finished ones are not kept, unlike Ray)."""
    return _listing("tasks", filters, limit, address)


def list_objects(
    *, filters: Iterable[Filter] | None = None, limit: int = DEFAULT_LIMIT, address: None = None
) -> list[StateRow]:
    """Every object some member owns, stores or borrows."""
    return _listing("objects", filters, limit, address)


def get_actor(actor_id: str, *, address: None = None) -> StateRow | None:
    """The row of one actor by its hex id, or None."""
    rows = _listing("actors", [("actor_id", "=", actor_id)], 1, address)
    return rows[0] if rows else None


def get_log(
    *,
    actor_id: str | None = None,
    task_id: str | None = None,
    node_id: str | None = None,
    tail: int = 1000,
    follow: bool = False,
    address: None = None,
) -> Iterator[str]:
    """The output lines an actor, a task or a node printed, oldest first, as Ray's ``get_log``
    (``(name pid=N) text``, as the driver shows them; the last ``tail``). ``actor_id`` and
    ``task_id`` also take a name; ``follow=True`` keeps yielding new lines (until closed).

    Example:
        >>> for line in get_log(actor_id=counter_id, tail=10):   # doctest: +SKIP
        ...     print(line)
    """
    if address is not None:
        raise ValueError("get_log reads the cluster this process is connected to")
    if tail < 0:
        raise ValueError(f"tail must be 0 or more, got {tail}")
    lines, cursor = get_logs(node=node_id, actor=actor_id, task=task_id, tail=tail)
    for line in lines:
        yield format_line(line)
    while follow:
        time.sleep(0.5)
        lines, cursor = get_logs(node=node_id, actor=actor_id, task=task_id, cursor=cursor)
        for line in lines:
            yield format_line(line)


def _listing(
    what: str, filters: Iterable[Filter] | None, limit: int, address: None
) -> list[StateRow]:
    if address is not None:
        raise ValueError(
            "runtime.util.state reads the cluster this process is connected to: call "
            f"runtime.init(address={address!r}) first, then list without address="
        )
    checks = [_check(f) for f in filters or ()]
    rows = []
    raw = list_state(what)
    for row in [_ray_node_fields(r) for r in raw] if what == "nodes" else raw:
        if all(check(row) for check in checks):
            rows.append(StateRow(row))
            if len(rows) >= limit:
                break
    return rows


def _ray_node_fields(row: dict[str, Any]) -> dict[str, Any]:
    ip = str(row.get("address", "")).rpartition(":")[0]
    return {
        **row,
        "state": "ALIVE" if row.get("alive", True) else "DEAD",
        "is_head_node": (row.get("labels") or {}).get("runtime.io/role") == "head",
        "node_ip": ip,
        "node_name": ip,
        "resources_total": dict(row.get("resources") or {}),
    }


def _check(f: Filter) -> Any:
    try:
        key, op, value = f
    except (TypeError, ValueError):
        raise ValueError(f"a filter is a (key, '=' or '!=', value) triple, got {f!r}") from None
    if op not in ("=", "!="):
        raise ValueError(f"filter predicate must be '=' or '!=', got {op!r} in {f!r}")
    want = str(value)

    def check(row: dict[str, Any]) -> bool:
        if key not in row:
            raise ValueError(f"cannot filter on {key!r}: the rows have {sorted(row)}")
        return (str(row[key]) == want) == (op == "=")

    return check
