"""What pins memory in the cluster (``python -m runtime memory``, as ``ray memory``): every
object some member owns, stores or borrows, why it is kept, where its bytes are, and the
call site that made it, grouped by owner, call site or node."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..objects.plane import merge_object_rows
from ..wire import protocol as p
from .blocking import blocking as _blocking
from .blocking import current_worker

if TYPE_CHECKING:
    from ..process.worker import Worker


async def read_memory(worker: Worker, group_by: str = "owner") -> dict[str, Any]:
    """What pins memory in the cluster (``python -m runtime memory``), as Ray's ``ray memory``.

    Returns ``objects`` (one row per object: its size, owner, where its bytes are, why it is
    kept, and the call site that made it when recording is on), ``groups`` (objects and
    bytes per owner or per call site, ``group_by``), and ``stores`` (each node's object
    store: used, capacity, spilled). Call sites are recorded only where
    ``RUNTIME_RECORD_REF_CREATION_SITES=1`` (Ray: ``RAY_record_ref_creation_sites``).
    """
    if group_by not in ("owner", "call_site", "node"):
        raise ValueError(f"group_by must be 'owner', 'call_site' or 'node', not {group_by!r}")
    answers = [worker.objects.object_rows(), *await worker.ask_members(p.ListObjects)]
    members = {n.node_id: n for n in worker.view.values()}
    rows = merge_object_rows(answers)
    for row in rows:
        owner = members.get(row["owner"])
        row["owner_pid"] = owner.pid if owner is not None else None
        row["owner_kind"] = "" if owner is None else "driver" if owner.is_driver else "node"
        row["reference_type"] = _reference_type(row)
        row["call_site"] = row.get("call_site") or "(disabled)"
    groups: dict[str, dict[str, Any]] = {}
    for row in rows:
        if group_by == "owner":
            key = f"{row['owner_kind'] or 'member'} {row['owner'][:8]} pid={row['owner_pid']}"
        elif group_by == "node":
            key = f"stored on {row['stored_on']}" if row["stored_on"] else "inline in its owner"
        else:
            key = row["call_site"]
        row["group"] = key
        g = groups.setdefault(key, {"group": key, "objects": 0, "bytes": 0, "where": {}})
        g["objects"] += 1
        g["bytes"] += int(row["size"])
        where = row["where"] or "unknown"
        g["where"][where] = g["where"].get(where, 0) + 1
    stores = [{"node_id": a.get("worker", ""), **a["store"]} for a in answers if a.get("store")]
    return {
        "objects": rows,
        "groups": sorted(groups.values(), key=lambda g: (-g["bytes"], g["group"])),
        "stores": stores,
        "group_by": group_by,
        "total_bytes": sum(int(r["size"]) for r in rows),
    }


def _reference_type(row: dict[str, Any]) -> str:
    """Why it is kept (Ray's reference types): the owner holds a ref, another process
    borrows one, or a value in flight pins it (a call's argument, a ref inside an object)."""
    kinds = []
    if row["local_refs"]:
        kinds.append("LOCAL_REFERENCE")
    if row["borrowers"]:
        kinds.append("BORROWED")
    if int(row["remote_refs"]) > len(row["borrowers"]):
        kinds.append("PINNED_IN_FLIGHT")
    if row["where"] == "spilled":
        kinds.append("SPILLED")
    return ",".join(kinds) or "UNREFERENCED"


def get_memory(group_by: str = "owner") -> dict[str, Any]:
    """:func:`read_memory` for sync code."""
    worker = current_worker()
    summary: dict[str, Any] = _blocking(worker, read_memory(worker, group_by))
    return summary


def format_memory(summary: dict[str, Any], units: str = "B", *, objects: bool = True) -> str:
    """The memory summary as text: one section per group (its objects unless not
    ``objects``), then the stores."""
    scale = {"B": 1, "KB": 1 << 10, "MB": 1 << 20, "GB": 1 << 30}[units]

    def size(n: int) -> str:
        return f"{n} B" if scale == 1 else f"{n / scale:.2f} {units}"

    rows = summary["objects"]
    by = summary["group_by"]
    lines = [f"{len(rows)} objects, {size(summary['total_bytes'])}, grouped by {by}"]
    for g in summary["groups"]:
        where = ", ".join(f"{n} {w}" for w, n in sorted(g["where"].items()))
        lines.append("")
        lines.append(f"--- {g['group']}: {g['objects']} objects, {size(g['bytes'])} ({where})")
        if not objects:
            continue
        head = f"{'OBJECT_ID':<40} {'SIZE':>12} {'WHERE':<8} {'REFERENCE_TYPE':<32}"
        lines.append(f"  {head} CALL_SITE")
        for r in rows:
            if r["group"] != g["group"]:
                continue
            lines.append(
                f"  {r['object_id']:<40} {size(int(r['size'])):>12} {r['where'] or '-':<8} "
                f"{r['reference_type']:<32} {r['call_site']}"
            )
    lines.append("")
    lines.append("object stores:")
    for st in summary["stores"]:
        lines.append(
            f"  {st['node_id'][:8]}: {size(int(st.get('used', 0)))} used of "
            f"{size(int(st.get('capacity', 0)))}, {size(int(st.get('spilled', 0)))} spilled, "
            f"{st.get('objects', 0)} objects"
        )
    return "\n".join(lines)


__all__ = ["format_memory", "get_memory", "read_memory"]
