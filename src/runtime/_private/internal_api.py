"""Ray's ``ray._private.internal_api``: ``memory_summary`` and ``free``.

``memory_summary()`` is the text of ``python -m runtime memory`` (Ray's ``ray memory``);
``free(refs)`` drops the pins that pickling a ref in user code (out-of-band serialization)
put on its object. Ray's ``free`` deletes the values at once; here an object stays while
a ref to it is alive anywhere, and goes when the last one does (docs/compat.md).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from runtime.core.api.blocking import current_worker
from runtime.core.api.memory import format_memory, get_memory
from runtime.core.objects.refs import ObjectRef

#: Ray's ``group_by`` names and ours.
_GROUP_BY = {
    "NODE_ADDRESS": "node",
    "STACK_TRACE": "call_site",
    "OWNER": "owner",
    "node": "node",
    "call_site": "call_site",
    "owner": "owner",
}
_SORT_BY = {
    "OBJECT_SIZE": lambda r: -int(r["size"]),
    "REFERENCE_TYPE": lambda r: r["reference_type"],
    "PID": lambda r: r["owner_pid"] or 0,
}
_UNITS = ("B", "KB", "MB", "GB")


def memory_summary(  # noqa: PLR0917 -- Ray's signature, positional as there
    address: str | None = None,
    redis_password: str | None = None,
    group_by: str = "NODE_ADDRESS",
    sort_by: str = "OBJECT_SIZE",
    units: str = "B",
    line_wrap: bool = True,
    stats_only: bool = False,
    num_entries: int | None = None,
) -> str:
    """What pins memory in the cluster this process belongs to, as text.

    ``group_by`` is Ray's ``"NODE_ADDRESS"`` or ``"STACK_TRACE"`` (or ``"OWNER"``; this
    runtime's ``"node"``, ``"call_site"``, ``"owner"`` also work), ``sort_by`` one of
    ``"OBJECT_SIZE"``, ``"REFERENCE_TYPE"``, ``"PID"``, ``units`` one of B, KB, MB, GB;
    ``num_entries`` keeps that many objects. ``address`` and ``redis_password`` must be
    None (the summary is of the cluster this process is in); ``line_wrap`` is accepted and
    has no effect (lines are never wrapped).
    """
    if address is not None or redis_password is not None:
        raise ValueError(
            "memory_summary() reads the cluster this process belongs to; "
            "address and redis_password must be None"
        )
    if group_by not in _GROUP_BY:
        raise ValueError(f"group_by must be one of {sorted(_GROUP_BY)}, not {group_by!r}")
    if sort_by not in _SORT_BY:
        raise ValueError(f"sort_by must be one of {sorted(_SORT_BY)}, not {sort_by!r}")
    if units not in _UNITS:
        raise ValueError(f"units must be one of {list(_UNITS)}, not {units!r}")
    if num_entries is not None and num_entries < 0:
        raise ValueError(f"num_entries must be >= 0, not {num_entries}")
    summary = get_memory(_GROUP_BY[group_by])
    rows = sorted(summary["objects"], key=_SORT_BY[sort_by])
    if num_entries is not None:
        rows = rows[:num_entries]
    summary["objects"] = rows
    return format_memory(summary, units, objects=not stats_only)


def free(object_refs: ObjectRef[Any] | Iterable[ObjectRef[Any]], local_only: bool = False) -> int:
    """Release the objects ``object_refs`` name from the pins that pickling them in user
    code put on them (in this process); returns how many pins were dropped.

    An object goes as soon as no ref to it is alive anywhere. ``local_only`` is accepted
    for Ray's signature (there is one store per process here).
    """
    refs = [object_refs] if isinstance(object_refs, ObjectRef) else list(object_refs)
    for ref in refs:
        if not isinstance(ref, ObjectRef):
            raise TypeError(f"free() takes ObjectRefs, got {type(ref).__name__}")
    table = current_worker().refs
    return sum(table.release_out_of_band(ref.id) for ref in refs)


__all__ = ["free", "memory_summary"]
